//! Bounded body buffering: a filter that needs the whole body asks Envoy to buffer it, up to a limit.

use crate::abi;
use filter_core::ApiError;
use proxy_wasm::types::{Action, BufferType};

/// What to do with a body callback.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    /// More is coming: return this action (keep buffering).
    Wait(Action),
    /// The whole body is buffered.
    Complete(Vec<u8>),
    /// Over the limit: answer with this error (413).
    TooLarge(ApiError),
}

/// Call from `on_http_request_body`/`on_http_response_body` with the callback's arguments.
pub fn collect(buffer: BufferType, body_size: usize, end_of_stream: bool, limit: usize) -> Body {
    if body_size > limit {
        return Body::TooLarge(ApiError::too_large(limit));
    }
    if !end_of_stream {
        return Body::Wait(Action::Pause);
    }
    match abi::get_buffer(buffer, 0, body_size) {
        Ok(b) => Body::Complete(b.unwrap_or_default()),
        Err(_) => Body::Complete(Vec::new()),
    }
}

/// Replaces the whole buffered body. The caller must have removed `content-length` in the headers
/// callback (Envoy would otherwise send the old length with the new body).
pub fn replace(buffer: BufferType, old_len: usize, new_body: &[u8]) -> Result<(), proxy_wasm::types::Status> {
    abi::set_buffer(buffer, 0, old_len, new_body)
}
