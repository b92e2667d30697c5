//! The router's Envoy stats.

use crate::config::Config;
use crate::decide::Method;
use filter_host::metrics::{Family, Metric};

/// `tollgate_semantic_router_*`.
pub struct Metrics {
    pub decisions: Family,
    pub methods: Family,
    /// Similarity × 1000 of the chosen (or best, below threshold) route.
    pub similarity: Option<Metric>,
    /// Time from the `Embed` call to its answer, in microseconds.
    pub sidecar_us: Option<Metric>,
    pub sidecar_errors: Option<Metric>,
    /// Example vectors loaded (per VM; every VM loads the same).
    pub examples: Option<Metric>,
    /// VMs (one per worker thread, plus the main thread's) whose examples are loaded.
    pub ready_vms: Option<Metric>,
}

impl Metrics {
    pub fn new(cfg: &Config) -> Self {
        Self {
            decisions: Family::counter("tollgate_semantic_router_decisions", "route", cfg.routes.len()),
            methods: Family::counter("tollgate_semantic_router_methods", "method", Method::ALL.len()),
            similarity: Metric::histogram("tollgate_semantic_router_similarity"),
            sidecar_us: Metric::histogram("tollgate_semantic_router_sidecar_us"),
            sidecar_errors: Metric::counter("tollgate_semantic_router_sidecar_errors"),
            examples: Metric::gauge("tollgate_semantic_router_examples"),
            ready_vms: Metric::gauge("tollgate_semantic_router_ready_vms"),
        }
    }
}
