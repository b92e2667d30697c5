//! response-cache: answers repeated LLM requests from a cache. [`config`] parses the settings;
//! [`key`] decides whether a request may be cached and builds its key from everything that
//! determines the answer; [`decide`] reads what the headers ask (the client's `cache-control`, the
//! scope, whether a response is recorded); [`entry`] stores responses (JSON as received, streams
//! recorded into the same JSON) and replays them as JSON or as each provider's SSE. The callbacks
//! (`filter.rs`) only move bytes and call the sidecar.

pub mod config;
pub mod decide;
pub mod entry;
pub mod key;

#[cfg(not(all(test, target_arch = "wasm32")))]
mod filter;
