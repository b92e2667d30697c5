//! Tollgate's project tools (`cargo xtask …`, see `main.rs`). The filter table (`filters`) is the
//! one list of the filters and their facts; the other modules build from it.

pub mod chain;
pub mod filters;
pub mod istio;
pub mod oci;
