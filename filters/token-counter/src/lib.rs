//! token-counter: counts prompt tokens before a request leaves, enforces context limits and token
//! budgets, reads the real usage from the response (JSON or SSE, OpenAI or Anthropic) as it passes,
//! settles budgets with it, and reports tokens and cost. Last filter before the router.
//!
//! The callbacks (`filter.rs`) only move bytes: counting is in [`count`], what a request reserves and
//! every refusal in [`decide`], the budget ledger in [`budget`], usage extraction in [`response`],
//! configuration and cost in [`config`].

pub mod budget;
pub mod config;
pub mod count;
pub mod decide;
pub mod response;

#[cfg(not(all(test, target_arch = "wasm32")))]
mod filter;
