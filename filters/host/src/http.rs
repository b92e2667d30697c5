//! The current stream's headers, bodies and flow control, without panics.
//!
//! proxy-wasm's `HttpContext` methods `unwrap` the host's status, and Envoy does return errors in
//! normal operation: once a callback has returned `Continue`, that direction's header map is gone,
//! and reading or setting a header there is `BadArgument`. `clippy.toml` forbids those methods in
//! the filters, which call these instead. Each function logs a failure at warn with the context
//! id, so callers only decide what the failure means for the request: a read that fails is treated
//! as absent; a write whose loss matters (an identity header) is checked.

use crate::abi;
use crate::error::HostError;
use crate::log;
use proxy_wasm::types::{BufferType, LogLevel, MapType, StreamType};

fn logged<T>(context_id: u32, r: Result<T, HostError>) -> Result<T, HostError> {
    if let Err(e) = &r {
        log::write(LogLevel::Warn, Some(context_id), format_args!("{e}"));
    }
    r
}

fn header(context_id: u32, map: MapType, call: &'static str, name: &str) -> Option<String> {
    logged(
        context_id,
        abi::get_map_value(map, name).map_err(HostError::at(call)),
    )
    .ok()
    .flatten()
}

fn set_header(
    context_id: u32,
    map: MapType,
    call: &'static str,
    name: &str,
    value: Option<&str>,
) -> Result<(), HostError> {
    logged(
        context_id,
        abi::set_map_value(map, name, value).map_err(HostError::at(call)),
    )
}

/// A request header (the first value); `None` when absent or when the host refused the read.
pub fn request_header(context_id: u32, name: &str) -> Option<String> {
    header(
        context_id,
        MapType::HttpRequestHeaders,
        "get_map_value(request headers)",
        name,
    )
}

/// A response header (the first value); `None` when absent or when the host refused the read.
pub fn response_header(context_id: u32, name: &str) -> Option<String> {
    header(
        context_id,
        MapType::HttpResponseHeaders,
        "get_map_value(response headers)",
        name,
    )
}

/// Every request header, in order; empty when the host refused the read.
pub fn request_headers(context_id: u32) -> Result<Vec<(String, String)>, HostError> {
    logged(
        context_id,
        abi::get_map(MapType::HttpRequestHeaders).map_err(HostError::at("get_map(request headers)")),
    )
}

/// Sets (or with `None` removes) a request header.
pub fn set_request_header(context_id: u32, name: &str, value: Option<&str>) -> Result<(), HostError> {
    set_header(
        context_id,
        MapType::HttpRequestHeaders,
        "set_map_value(request headers)",
        name,
        value,
    )
}

/// Sets (or with `None` removes) a response header.
pub fn set_response_header(context_id: u32, name: &str, value: Option<&str>) -> Result<(), HostError> {
    set_header(
        context_id,
        MapType::HttpResponseHeaders,
        "set_map_value(response headers)",
        name,
        value,
    )
}

/// Bytes `start..start + len` of the request body Envoy holds now; empty when there is none.
pub fn request_body(context_id: u32, start: usize, len: usize) -> Result<Vec<u8>, HostError> {
    body(
        context_id,
        BufferType::HttpRequestBody,
        "get_buffer(request body)",
        start,
        len,
    )
}

/// Bytes `start..start + len` of the response body Envoy holds now; empty when there is none.
pub fn response_body(context_id: u32, start: usize, len: usize) -> Result<Vec<u8>, HostError> {
    body(
        context_id,
        BufferType::HttpResponseBody,
        "get_buffer(response body)",
        start,
        len,
    )
}

fn body(
    context_id: u32,
    buffer: BufferType,
    call: &'static str,
    start: usize,
    len: usize,
) -> Result<Vec<u8>, HostError> {
    logged(
        context_id,
        abi::get_buffer(buffer, start, len)
            .map(Option::unwrap_or_default)
            .map_err(HostError::at(call)),
    )
}

/// Replaces bytes `start..start + len` of the response body Envoy holds now with `value`.
pub fn set_response_body(context_id: u32, start: usize, len: usize, value: &[u8]) -> Result<(), HostError> {
    logged(
        context_id,
        abi::set_buffer(BufferType::HttpResponseBody, start, len, value)
            .map_err(HostError::at("set_buffer(response body)")),
    )
}

/// Lets a paused request go on (after an async call). The context must be the effective one, as
/// it is in its own callbacks.
pub fn resume_request(context_id: u32) -> Result<(), HostError> {
    logged(
        context_id,
        abi::continue_stream(StreamType::HttpRequest).map_err(HostError::at("resume_http_request")),
    )
}

/// Sends a local reply. Prefer [`crate::reply`], which builds the error body.
pub fn send_response(
    context_id: u32,
    status: u32,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
) -> Result<(), HostError> {
    logged(
        context_id,
        abi::send_local_response(status, &headers, body.unwrap_or_default())
            .map_err(HostError::at("send_http_response")),
    )
}
