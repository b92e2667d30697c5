//! Calls out of the filter through Envoy clusters, as `Result`s: an unknown cluster or a bad
//! argument is a run-time condition to handle (fail open or closed), never a panic.
//!
//! These two go through the SDK's hostcalls, the one exception to `abi`: the SDK's dispatcher must
//! register the call's token to route the answer back to the stream, and only its own
//! `dispatch_*` functions do that. They panic only on statuses Envoy does not return for a call
//! (Envoy's `httpCall` answers Ok, BadArgument or InternalFailure; `grpcCall` Ok, ParseFailure or
//! InternalFailure, and the SDK maps those to `Err`).
#![allow(clippy::disallowed_methods)]

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The cluster does not exist or the arguments were rejected.
    #[error("bad argument (unknown cluster?)")]
    BadArgument,
    /// gRPC: Envoy found no cluster of that name (it reports that as a parse failure), or could
    /// not parse the metadata or message.
    #[error("parse failure (for gRPC: unknown cluster, or not yet initialised)")]
    ParseFailure,
    /// Envoy could not start the call (e.g. cluster not yet ready).
    #[error("internal failure")]
    InternalFailure,
    #[error("status {0}")]
    Other(u32),
}

impl From<Status> for CallError {
    fn from(s: Status) -> Self {
        match s {
            Status::BadArgument => Self::BadArgument,
            Status::ParseFailure => Self::ParseFailure,
            Status::InternalFailure => Self::InternalFailure,
            other => Self::Other(other as u32),
        }
    }
}

/// HTTP call; the reply arrives in `on_http_call_response` with the returned token.
pub fn http(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, CallError> {
    hostcalls::dispatch_http_call(cluster, headers, body, vec![], timeout).map_err(CallError::from)
}

/// Unary gRPC call; the reply arrives in `on_grpc_call_response` with the returned token.
pub fn grpc(
    cluster: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout: Duration,
) -> Result<u32, CallError> {
    hostcalls::dispatch_grpc_call(cluster, service, method, vec![], Some(message), timeout)
        .map_err(CallError::from)
}
