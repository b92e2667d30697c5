//! content-moderator: guardrails on what the model reads and what it writes: text normalisation
//! ([`normalize`]), built-in PII and secret detectors ([`detect`]), deny/allow rules ([`config`]),
//! scanning with masks ([`moderate`]) and whole request/response bodies ([`body`]). The callbacks
//! (`filter.rs`) only move bytes.

pub mod body;
pub mod config;
pub mod detect;
pub mod moderate;
pub mod normalize;
pub mod stream;

#[cfg(not(all(test, target_arch = "wasm32")))]
mod filter;
