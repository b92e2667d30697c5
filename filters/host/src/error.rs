//! The one error type of a failed host call.

use proxy_wasm::types::Status;

/// A host call returned a status other than `Ok`. proxy-wasm's trait methods would panic here (and
/// a panic aborts the VM and every stream on its worker); filter-host returns this instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("host call {call} failed: {status:?}")]
pub struct HostError {
    /// The hostcall, e.g. `set_map_value(HttpResponseHeaders)`.
    pub call: &'static str,
    pub status: Status,
}

impl HostError {
    pub(crate) const fn at(call: &'static str) -> impl Fn(Status) -> Self {
        move |status| Self { call, status }
    }
}
