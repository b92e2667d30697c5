//! Pure logic shared by the Tollgate filters. Nothing here imports `proxy_wasm`, so every module is
//! unit-tested natively and, compiled to `wasm32-wasip1`, again in V8 under Node's WASI
//! (`cargo wasm-test`): what runs inside Envoy is what was tested.

pub mod api;
pub mod config;
pub mod error;
pub mod hash;
pub mod headers;
pub mod prompt;
pub mod reads;
pub mod sse;
pub mod usage;
pub mod verify;

pub use api::Provider;
pub use error::{ApiError, ErrorKind, Shape};
