//! prompt-templater: expands a named, versioned prompt template (chosen in the body's
//! `tollgate_template` field or by header) into the request's messages, with typed, checked
//! variables inserted as data, sticky A/B splits between versions, and decorator messages
//! prepended or appended on matching paths.
//!
//! The callbacks (`filter.rs`) only move bytes: templates are in [`template`], request rewriting
//! in [`render`], configuration in [`config`].

pub mod config;
pub mod refusal;
pub mod render;
pub mod template;

#[cfg(not(all(test, target_arch = "wasm32")))]
mod filter;
