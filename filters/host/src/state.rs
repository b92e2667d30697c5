//! Per-request facts for access logs and later filters, as Envoy filter state. Envoy stores a value
//! set under `key` as `wasm.<key>`: log it with `%FILTER_STATE(wasm.<key>:PLAIN)%`.

use proxy_wasm::hostcalls;

/// Sets `key` to `value` for this request. Failure (no stream, host refused) only loses a log field.
pub fn set(key: &str, value: &str) {
    let _ = hostcalls::set_property(vec![key], Some(value.as_bytes()));
}
