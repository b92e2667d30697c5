//! The filter's Envoy stats, and what one finished response adds to them.

use filter_core::headers;
use filter_core::usage::TokenUsage;
use filter_host::metrics::{Family, Metric};
use filter_host::state;

use crate::config::Price;
use crate::count::Counter;
use std::time::Duration;

pub struct Metrics {
    pub prompt_tokens: Family,
    pub completion_tokens: Family,
    pub cache_read_tokens: Family,
    pub cache_write_tokens: Family,
    pub cost_micro_usd: Family,
    pub tenant_tokens: Family,
    pub tenant_cost_micro_usd: Family,
    pub context_rejections: Family,
    pub budget_rejections: Family,
    pub invalid_requests: Option<Metric>,
    pub responses_without_usage: Option<Metric>,
    pub aborted: Option<Metric>,
    pub streams_cut: Option<Metric>,
    pub usage_chunks_removed: Option<Metric>,
    pub budget_errors: Option<Metric>,
    pub count_cache_hits: Option<Metric>,
    pub count_cache_misses: Option<Metric>,
    pub table_load_ms: Option<Metric>,
}

impl Metrics {
    pub fn new(rules: usize, max_tenants: usize) -> Self {
        const MODELS: usize = 64;
        let model = |what: &str| Family::counter(format!("tollgate_token_counter_{what}"), "model", MODELS);
        let counter = |what: &str| Metric::counter(&format!("tollgate_token_counter_{what}"));
        Self {
            prompt_tokens: model("prompt_tokens"),
            completion_tokens: model("completion_tokens"),
            cache_read_tokens: model("cache_read_tokens"),
            cache_write_tokens: model("cache_write_tokens"),
            cost_micro_usd: model("cost_micro_usd"),
            tenant_tokens: Family::counter("tollgate_token_counter_tenant_tokens", "tenant", max_tenants),
            tenant_cost_micro_usd: Family::counter(
                "tollgate_token_counter_tenant_cost_micro_usd",
                "tenant",
                max_tenants,
            ),
            context_rejections: model("context_rejections"),
            budget_rejections: Family::counter(
                "tollgate_token_counter_budget_rejections",
                "rule",
                rules.max(1),
            ),
            invalid_requests: counter("invalid_requests"),
            responses_without_usage: counter("responses_without_usage"),
            aborted: counter("aborted"),
            streams_cut: counter("streams_cut"),
            usage_chunks_removed: counter("usage_chunks_removed"),
            budget_errors: counter("budget_errors"),
            count_cache_hits: counter("count_cache_hits"),
            count_cache_misses: counter("count_cache_misses"),
            table_load_ms: Metric::histogram("tollgate_token_counter_table_load_ms"),
        }
    }
}

pub fn add(f: &mut Family, model: &str, n: u64) {
    if n > 0
        && let Some(m) = f.get(model)
    {
        m.add(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Counts `u` for `model` (and `tenant`), priced at `price`, and puts the numbers in filter state
/// for the access log.
pub fn report(m: &mut Metrics, model: &str, tenant: Option<&str>, price: Option<Price>, u: &TokenUsage) {
    add(&mut m.prompt_tokens, model, u.total_input());
    add(&mut m.completion_tokens, model, u.output_tokens);
    add(&mut m.cache_read_tokens, model, u.cache_read_tokens);
    add(&mut m.cache_write_tokens, model, u.cache_write_tokens);
    state::set(headers::state::PROMPT_TOKENS, &u.total_input().to_string());
    state::set(headers::state::COMPLETION_TOKENS, &u.output_tokens.to_string());
    state::set(
        headers::state::CACHE_READ_TOKENS,
        &u.cache_read_tokens.to_string(),
    );
    state::set(
        headers::state::CACHE_WRITE_TOKENS,
        &u.cache_write_tokens.to_string(),
    );
    let micro_usd = price.map(|p| {
        let usd = p.cost(u);
        state::set(headers::state::COST_USD, &format!("{usd:.6}"));
        (usd * 1e6).round() as u64
    });
    if let Some(micro) = micro_usd {
        add(&mut m.cost_micro_usd, model, micro);
    }
    if let Some(t) = tenant {
        add(&mut m.tenant_tokens, t, u.total());
        if let Some(micro) = micro_usd {
            add(&mut m.tenant_cost_micro_usd, t, micro);
        }
    }
}

/// After a count: the counter's cache hits and misses since the last call, and the time it took to
/// build the encoding's table when this count built it.
pub fn counted(m: &Metrics, counter: &mut Counter, table_built_in: Option<Duration>) {
    if let (Some(h), Some(d)) = (m.table_load_ms, table_built_in) {
        h.record(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }
    let (hits, misses) = (
        std::mem::take(&mut counter.hits),
        std::mem::take(&mut counter.misses),
    );
    for (metric, n) in [(m.count_cache_hits, hits), (m.count_cache_misses, misses)] {
        if let (Some(metric), Ok(n)) = (metric, i64::try_from(n)) {
            metric.add(n);
        }
    }
}
