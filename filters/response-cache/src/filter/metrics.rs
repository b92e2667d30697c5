//! The cache's Envoy stats.

use crate::key::Bypass;
use filter_core::verify::Contrast;
use filter_host::metrics::{Family, Metric};

/// `tollgate_response_cache_*`.
pub struct Metrics {
    pub hits: Option<Metric>,
    pub semantic_hits: Option<Metric>,
    pub misses: Option<Metric>,
    pub bypass: Family,
    pub stores: Option<Metric>,
    /// Live entries overwritten in a shared-data slot.
    pub evictions: Option<Metric>,
    pub bytes_stored: Option<Metric>,
    /// Prompt + completion tokens of the responses served from the cache.
    pub tokens_saved: Option<Metric>,
    /// Similarity × 1000 of semantic hits.
    pub similarity: Option<Metric>,
    /// Semantic candidates the verifier refused, by the contrast it found.
    pub refused: Family,
    pub sidecar_errors: Option<Metric>,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            hits: Metric::counter("tollgate_response_cache_hits"),
            semantic_hits: Metric::counter("tollgate_response_cache_semantic_hits"),
            misses: Metric::counter("tollgate_response_cache_misses"),
            bypass: Family::counter("tollgate_response_cache_bypass", "reason", Bypass::ALL.len()),
            stores: Metric::counter("tollgate_response_cache_stores"),
            evictions: Metric::counter("tollgate_response_cache_evictions"),
            bytes_stored: Metric::counter("tollgate_response_cache_bytes_stored"),
            tokens_saved: Metric::counter("tollgate_response_cache_tokens_saved"),
            similarity: Metric::histogram("tollgate_response_cache_similarity"),
            refused: Family::counter(
                "tollgate_response_cache_semantic_refused",
                "contrast",
                Contrast::ALL.len(),
            ),
            sidecar_errors: Metric::counter("tollgate_response_cache_sidecar_errors"),
        }
    }
}
