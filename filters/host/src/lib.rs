//! The thin proxy-wasm adapter every Tollgate filter uses: configuration loading, logging with the
//! filter name and context id, a panic hook, metrics, local error replies, bounded body buffering,
//! and `Result`-returning wrappers for every host call the filters make (`http`, `root`, `shared`):
//! proxy-wasm's own trait methods unwrap, and `clippy.toml` forbids them.
//!
//! Decisions live in `filter-core` and in each filter's pure modules; this crate only moves bytes
//! between them and the host.

pub mod abi;
pub mod body;
pub mod call;
pub mod config;
pub mod configured;
pub mod error;
pub mod http;
pub mod log;
pub mod metrics;
pub mod reply;
pub mod root;
pub mod shared;
pub mod sidecar;
pub mod state;

pub use error::HostError;
pub use proxy_wasm;

/// Call once from `proxy_wasm::main!`: names the filter in every log line and installs the panic
/// hook that logs at critical before the VM aborts.
pub fn init(filter: &'static str) {
    // The SDK's logger installs its own panic hook; ours replaces it, so it comes second.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    log::set_filter_name(filter);
    log::install_panic_hook();
}
