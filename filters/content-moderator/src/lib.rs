//! content-moderator: guardrails on what the model reads and what it writes: text normalisation
//! ([`normalize`]), built-in PII and secret detectors ([`detect`]), deny/allow rules ([`config`]),
//! scanning with masks ([`moderate`]) and whole request/response bodies ([`body`]); every reply the
//! moderator sends itself is a [`refusal::Refusal`]. The callbacks (`filter.rs`) only move bytes.

pub mod body;
pub mod classify;
pub mod config;
pub mod detect;
pub mod moderate;
pub mod normalize;
pub mod partial;
pub mod refusal;
pub mod stream;

#[cfg(not(all(test, target_arch = "wasm32")))]
mod filter;
