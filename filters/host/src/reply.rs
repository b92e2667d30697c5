//! Local replies in the OpenAI error shape.

use crate::abi;
use crate::log;
use filter_core::ApiError;
use proxy_wasm::types::LogLevel;

/// Sends `err` as the response (status, JSON body, `content-type`), plus `extra_headers`
/// (e.g. `retry-after`). Logs the cause at info with the context id; the message never holds
/// prompt text or credentials.
pub fn send_error(context_id: u32, err: &ApiError, extra_headers: &[(&str, &str)]) {
    log::write(
        LogLevel::Info,
        Some(context_id),
        format_args!("local reply {err}"),
    );
    let body = err.to_json();
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra_headers.len() + 1);
    headers.push(("content-type", "application/json"));
    headers.extend_from_slice(extra_headers);
    if let Err(status) = abi::send_local_response(err.status(), &headers, &body) {
        log::write(
            LogLevel::Error,
            Some(context_id),
            format_args!("send_http_response failed: {status:?}"),
        );
    }
}

/// Sends a local `status` reply with a JSON `body` (already serialised).
pub fn send_json(context_id: u32, status: u32, body: &[u8]) {
    if let Err(s) = abi::send_local_response(status, &[("content-type", "application/json")], body) {
        log::write(
            LogLevel::Error,
            Some(context_id),
            format_args!("send_http_response failed: {s:?}"),
        );
    }
}
