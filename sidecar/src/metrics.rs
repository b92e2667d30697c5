//! Prometheus metrics, served as text on their own port (`--metrics-addr`, path `/metrics`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    /// Sum in millionths, to stay lock-free.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        self.observe_value(d.as_secs_f64());
    }

    pub fn observe_value(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            if v <= *b {
                c.fetch_add(1, Relaxed);
            }
        }
        self.sum_micros.fetch_add((v * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                c.load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// The gRPC methods, for per-method request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Embed,
    Classify,
    CacheLookup,
    CacheStore,
    Reserve,
    Settle,
}

impl Method {
    const ALL: [Self; 6] = [
        Self::Embed,
        Self::Classify,
        Self::CacheLookup,
        Self::CacheStore,
        Self::Reserve,
        Self::Settle,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Embed => "Embed",
            Self::Classify => "Classify",
            Self::CacheLookup => "Lookup",
            Self::CacheStore => "Store",
            Self::Reserve => "Reserve",
            Self::Settle => "Settle",
        }
    }
}

#[derive(Debug)]
pub struct MethodMetrics {
    pub ok: Counter,
    pub error: Counter,
    pub latency: Histogram,
}

#[derive(Debug)]
pub struct Metrics {
    methods: Vec<MethodMetrics>,
    pub batch_size: Histogram,
    pub queue_wait: Histogram,
    pub inference: Histogram,
    pub queue_depth: Gauge,
    pub lru_hits: Counter,
    pub lru_misses: Counter,
    pub cache_exact_hits: Counter,
    pub cache_semantic_hits: Counter,
    pub cache_misses: Counter,
    pub cache_stores: Counter,
    pub budget_denied: Counter,
    /// Jobs dropped before inference because their caller had gone (disconnect, deadline).
    pub cancelled: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            methods: Method::ALL
                .iter()
                .map(|_| MethodMetrics {
                    ok: Counter::default(),
                    error: Counter::default(),
                    latency: Histogram::new(SECONDS),
                })
                .collect(),
            batch_size: Histogram::new(SIZES),
            queue_wait: Histogram::new(SECONDS),
            inference: Histogram::new(SECONDS),
            queue_depth: Gauge::default(),
            lru_hits: Counter::default(),
            lru_misses: Counter::default(),
            cache_exact_hits: Counter::default(),
            cache_semantic_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_stores: Counter::default(),
            budget_denied: Counter::default(),
            cancelled: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn method(&self, m: Method) -> Option<&MethodMetrics> {
        self.methods.get(Method::ALL.iter().position(|x| *x == m)?)
    }

    pub fn record(&self, m: Method, ok: bool, elapsed: Duration) {
        if let Some(mm) = self.method(m) {
            if ok {
                mm.ok.inc()
            } else {
                mm.error.inc()
            }
            mm.latency.observe(elapsed);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# TYPE tollgate_sidecar_requests_total counter\n");
        for (m, mm) in Method::ALL.iter().zip(&self.methods) {
            let _ = writeln!(
                out,
                "tollgate_sidecar_requests_total{{method=\"{}\",outcome=\"ok\"}} {}",
                m.name(),
                mm.ok.get()
            );
            let _ = writeln!(
                out,
                "tollgate_sidecar_requests_total{{method=\"{}\",outcome=\"error\"}} {}",
                m.name(),
                mm.error.get()
            );
        }
        out.push_str("# TYPE tollgate_sidecar_request_seconds histogram\n");
        for (m, mm) in Method::ALL.iter().zip(&self.methods) {
            mm.latency.render(
                &mut out,
                "tollgate_sidecar_request_seconds",
                &format!("method=\"{}\"", m.name()),
            );
        }
        for (name, h) in [
            ("tollgate_sidecar_batch_size", &self.batch_size),
            ("tollgate_sidecar_queue_wait_seconds", &self.queue_wait),
            ("tollgate_sidecar_inference_seconds", &self.inference),
        ] {
            let _ = writeln!(out, "# TYPE {name} histogram");
            h.render(&mut out, name, "");
        }
        let _ = writeln!(
            out,
            "# TYPE tollgate_sidecar_queue_depth gauge\ntollgate_sidecar_queue_depth {}",
            self.queue_depth.0.load(Relaxed)
        );
        for (name, c) in [
            ("tollgate_sidecar_embedding_lru_hits_total", &self.lru_hits),
            ("tollgate_sidecar_embedding_lru_misses_total", &self.lru_misses),
            ("tollgate_sidecar_cache_exact_hits_total", &self.cache_exact_hits),
            (
                "tollgate_sidecar_cache_semantic_hits_total",
                &self.cache_semantic_hits,
            ),
            ("tollgate_sidecar_cache_misses_total", &self.cache_misses),
            ("tollgate_sidecar_cache_stores_total", &self.cache_stores),
            ("tollgate_sidecar_budget_denied_total", &self.budget_denied),
            ("tollgate_sidecar_cancelled_jobs_total", &self.cancelled),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", c.get());
        }
        out
    }
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let mut resp = if req.uri().path() == "/metrics" {
                        let mut r = Response::new(Full::new(bytes::Bytes::from(metrics.render())));
                        r.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        r
                    } else {
                        Response::new(Full::new(bytes::Bytes::from_static(b"not found\n")))
                    };
                    if req.uri().path() != "/metrics" {
                        *resp.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}
