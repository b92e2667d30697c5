//! Test tooling: the mock LLM upstream, an HTTP client, and a harness that runs the real Envoy on
//! free loopback ports with a config rendered from `envoy/`.

pub mod bench;
pub mod client;
pub mod envoy;
pub mod issuer;
pub mod labelled;
pub mod mock;
pub mod ports;
pub mod tokens;

use std::path::PathBuf;

/// The repository root (the workspace this crate lives in).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
