//! Local replies: an [`ApiError`] in the error shape of the client's API (Anthropic's on its
//! paths, else OpenAI's; [`filter_core::Shape::from_path`]). A filter notes the shape when it reads
//! the request headers: Envoy withholds them from a filter that let them go on, so a later error
//! path could not read `:path` any more.

use crate::abi;
use crate::log;
use filter_core::{ApiError, ErrorKind, Shape};
use proxy_wasm::types::LogLevel;

/// The shape of the request's `:path`, read now: only while the filter holds the request headers
/// (in `on_http_request_headers`, or resumed from a pause there). OpenAI's when it cannot be read.
pub fn shape_of_request(context_id: u32) -> Shape {
    crate::http::request_header(context_id, ":path").map_or(Shape::OpenAi, |p| Shape::from_path(&p))
}

/// Sends `err` as the response (its status, the JSON body in the request API's shape,
/// `content-type`), plus `extra_headers` (e.g. `retry-after`). Logs the cause at info with the
/// context id; the message never holds prompt text or credentials.
pub fn send_error(context_id: u32, shape: Shape, err: &ApiError, extra_headers: &[(&str, &str)]) {
    send_error_with_status(context_id, shape, err.status(), err, extra_headers);
}

/// [`send_error`] with a status of the filter's choosing (a configured block status); the error's
/// type follows that status (a 403 is a `permission_error` in either shape).
pub fn send_error_with_status(
    context_id: u32,
    shape: Shape,
    status: u32,
    err: &ApiError,
    extra_headers: &[(&str, &str)],
) {
    let retyped;
    let err = match ErrorKind::from_status(status) {
        Some(kind) if kind != err.kind => {
            retyped = ApiError { kind, ..err.clone() };
            &retyped
        }
        _ => err,
    };
    log::write(
        LogLevel::Info,
        Some(context_id),
        format_args!("local reply {err}"),
    );
    let body = err.to_json_in(shape);
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra_headers.len() + 1);
    headers.push(("content-type", "application/json"));
    headers.extend_from_slice(extra_headers);
    if let Err(status) = abi::send_local_response(status, &headers, &body) {
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
