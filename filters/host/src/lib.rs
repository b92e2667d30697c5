//! The thin proxy-wasm adapter every Tollgate filter uses: configuration loading, logging with the
//! filter name and context id, a panic hook, metrics, local error replies, bounded body buffering,
//! and `Result`-returning wrappers for the host calls that can fail at run time.
//!
//! Decisions live in `filter-core` and in each filter's pure modules; this crate only moves bytes
//! between them and the host.

pub mod body;
pub mod call;
pub mod config;
pub mod log;
pub mod metrics;
pub mod reply;
pub mod shared;
pub mod sidecar;
pub mod state;

pub use proxy_wasm;

/// Call once from `proxy_wasm::main!`: names the filter in every log line and installs the panic
/// hook that logs at critical before the VM aborts.
pub fn init(filter: &'static str) {
    log::set_filter_name(filter);
    log::install_panic_hook();
}
