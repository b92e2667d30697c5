//! jwt-auth: verifies JWTs (RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512) against
//! key sets given inline or fetched through an Envoy cluster, applies path rules, and hands the
//! identity to the rest of the chain: client-sent copies of the identity headers are removed, then
//! set from the verified claims.
//!
//! The callbacks (`filter.rs`) only move bytes: tokens are split in [`token`], keys and signatures
//! are in [`jwks`], claim checks in [`claims`], the per-request decision in [`auth`].

pub mod auth;
pub mod cache;
pub mod claims;
pub mod config;
pub mod jwks;
pub mod native;
pub mod reason;
pub mod token;

#[cfg(test)]
mod tests;

#[cfg(not(all(test, target_arch = "wasm32")))]
mod filter;
