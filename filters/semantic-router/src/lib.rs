//! semantic-router: decides which route an LLM request takes by what its prompt means, and leaves
//! the routing itself to Envoy. [`config`] parses and compiles the routes; [`decide`] holds the
//! per-request logic (explicit choices, keyword fast path, nearest example by cosine similarity).
//! The callbacks (`filter.rs`) only move bytes and call the sidecar.

pub mod config;
pub mod decide;
pub mod index;

#[cfg(not(all(test, target_arch = "wasm32")))]
mod filter;
