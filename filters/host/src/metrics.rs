//! Envoy stats defined through proxy-wasm. Names follow `tollgate_<filter>_<what>`; Envoy shows them
//! under the `wasmcustom.` prefix in `/stats` (Prometheus drops it: `tollgate_…`). Dimensions are
//! encoded into the name as `.<tag>.<value>` segments, which the Envoy configs turn back into tags
//! with `stats_config.stats_tags`.

use crate::abi;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

/// A defined metric. Recording never fails the request: a host error is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    id: u32,
}

impl Metric {
    pub fn counter(name: &str) -> Option<Self> {
        define(MetricType::Counter, name)
    }

    pub fn gauge(name: &str) -> Option<Self> {
        define(MetricType::Gauge, name)
    }

    pub fn histogram(name: &str) -> Option<Self> {
        define(MetricType::Histogram, name)
    }

    pub fn add(self, delta: i64) {
        let _ = abi::increment_metric(self.id, delta);
    }

    pub fn inc(self) {
        self.add(1);
    }

    /// Histogram sample or gauge value.
    pub fn record(self, value: u64) {
        let _ = abi::record_metric(self.id, value);
    }
}

/// A metric the host may have refused to define (`None`): recording into it is then a no-op, so a
/// filter writes `m.requests.inc()` without checking.
pub trait Record {
    fn add(self, delta: i64);
    fn inc(self);
    fn record(self, value: u64);
}

impl Record for Option<Metric> {
    fn add(self, delta: i64) {
        if let Some(m) = self {
            m.add(delta);
        }
    }

    fn inc(self) {
        self.add(1);
    }

    fn record(self, value: u64) {
        if let Some(m) = self {
            m.record(value);
        }
    }
}

fn define(kind: MetricType, name: &str) -> Option<Metric> {
    abi::define_metric(kind, name).ok().map(|id| Metric { id })
}

/// Metrics with one bounded dimension (model, route, template…), defined on first use and cached.
/// Past `max_values` distinct values, new ones are counted under `other` so a client cannot grow
/// Envoy's stat table without bound.
#[derive(Debug)]
pub struct Family {
    kind: MetricType,
    base: String,
    tag: &'static str,
    max_values: usize,
    ids: HashMap<String, Option<Metric>>,
}

impl Family {
    pub fn counter(base: impl Into<String>, tag: &'static str, max_values: usize) -> Self {
        Self {
            kind: MetricType::Counter,
            base: base.into(),
            tag,
            max_values,
            ids: HashMap::new(),
        }
    }

    pub fn histogram(base: impl Into<String>, tag: &'static str, max_values: usize) -> Self {
        Self {
            kind: MetricType::Histogram,
            base: base.into(),
            tag,
            max_values,
            ids: HashMap::new(),
        }
    }

    pub fn get(&mut self, value: &str) -> Option<Metric> {
        if let Some(m) = self.ids.get(value) {
            return *m;
        }
        let key = if self.ids.len() >= self.max_values {
            "other"
        } else {
            value
        };
        if let Some(m) = self.ids.get(key) {
            return *m;
        }
        let name = format!("{}.{}.{}", self.base, self.tag, sanitize(key));
        let m = define(self.kind, &name);
        self.ids.insert(key.to_owned(), m);
        m
    }
}

/// Stat names allow `[A-Za-z0-9_-]` in a segment; anything else becomes `_`.
fn sanitize(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
