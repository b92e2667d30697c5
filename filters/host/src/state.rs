//! Per-request facts for access logs and later filters, as Envoy filter state. Envoy stores a value
//! set under `key` as `wasm.<key>`: log it with `%FILTER_STATE(wasm.<key>:PLAIN)%`.

use crate::abi;

/// Sets `key` to `value` for this request. Failure (no stream, host refused) only loses a log field.
pub fn set(key: &str, value: &str) {
    let _ = abi::set_property(key, value.as_bytes());
}
