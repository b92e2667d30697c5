//! The proxy-wasm callbacks. The request headers wait for the body; a cacheable request is looked
//! up in shared data, then (semantic or `backend: sidecar`) through the sidecar, and a hit is a
//! local reply. A miss goes upstream, and its response is recorded as it passes — never held —
//! and stored when complete. Sidecar stores start from the root context, so they outlive the
//! request.

use crate::config::{self, Backend, Config, Scope, SemanticScope};
use crate::entry::{self, Entry, Recorder};
use crate::key::{self, Bypass, Context as KeyContext, Keyed};
use filter_core::{Provider, headers};
use filter_host::body::{self as host_body, Body};
use filter_host::configured::Filter;
use filter_host::metrics::{Family, Metric, Record as _};
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::shared as shared_data;
use filter_host::sidecar::{self, Sidecar, v1};
use filter_host::{http, log, root, state};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    filter_host::configured::main::<Shared>("response-cache");
}}

/// Request headers that select a template, route, upstream or provider feature: part of the key.
/// (`:authority` is not: replicas behind one name must share entries.)
const KEY_HEADERS: [&str; 5] = [
    headers::TEMPLATE,
    headers::ROUTE,
    ":path",
    "anthropic-version",
    "anthropic-beta",
];

/// Response header with the similarity of a semantic hit.
const SIMILARITY_HEADER: &str = "x-tollgate-cache-similarity";
/// Stores waiting for the root context; more are dropped (counted), so memory stays bounded.
const MAX_QUEUED_STORES: usize = 64;

/// `tollgate_response_cache_*`.
struct Metrics {
    hits: Option<Metric>,
    semantic_hits: Option<Metric>,
    misses: Option<Metric>,
    bypass: Family,
    stores: Option<Metric>,
    /// Live entries overwritten in a shared-data slot.
    evictions: Option<Metric>,
    bytes_stored: Option<Metric>,
    /// Prompt + completion tokens of the responses served from the cache.
    tokens_saved: Option<Metric>,
    /// Similarity × 1000 of semantic hits.
    similarity: Option<Metric>,
    sidecar_errors: Option<Metric>,
}

impl Metrics {
    fn new() -> Self {
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
            sidecar_errors: Metric::counter("tollgate_response_cache_sidecar_errors"),
        }
    }
}

struct Shared {
    config: Config,
    sidecar: Option<Sidecar>,
    metrics: RefCell<Metrics>,
    root_id: u32,
    stores: RefCell<Vec<v1::CacheStoreRequest>>,
}

impl Shared {
    /// Hands a store to the root context, which sends it on its next tick.
    fn queue_store(&self, req: v1::CacheStoreRequest, from: u32) {
        let mut q = self.stores.borrow_mut();
        if q.len() >= MAX_QUEUED_STORES {
            drop(q);
            self.metrics.borrow().sidecar_errors.inc();
            return;
        }
        q.push(req);
        drop(q);
        root::wake(self.root_id, from, Duration::from_millis(1));
    }
}

impl Filter for Shared {
    fn configure(root_id: u32) -> Option<Self> {
        let config = filter_host::config::load(config::compile)?;
        Some(Self {
            sidecar: config
                .uses_sidecar()
                .then(|| Sidecar::new(config.sidecar.clone())),
            config,
            metrics: RefCell::new(Metrics::new()),
            root_id,
            stores: RefCell::new(Vec::new()),
        })
    }

    fn http_context(shared: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext> {
        Box::new(Http {
            id: context_id,
            shared: shared.clone(),
            provider: None,
            scope: String::new(),
            semantic_scope: None,
            key_headers: Default::default(),
            keyed: None,
            status: None,
            no_cache: false,
            no_store: false,
            looking_up: false,
            served: false,
            record: Record::None,
        })
    }

    /// Sends the stores streams queued (a stream's own calls die with it).
    fn on_tick(this: &Rc<Self>) {
        let _ = root::set_tick_period(Duration::ZERO);
        let Some(sidecar) = &this.sidecar else { return };
        let queued = std::mem::take(&mut *this.stores.borrow_mut());
        for req in queued {
            if let Err(e) = sidecar.cache_store(&req) {
                this.metrics.borrow().sidecar_errors.inc();
                log!(Warn, None, "cache store in the sidecar not sent: {e}");
            }
        }
    }

    fn on_grpc_call_response(this: &Rc<Self>, _token: u32, status_code: u32, size: usize) {
        if let Err(e) = sidecar::reply::<v1::CacheStoreResponse>(status_code, size) {
            this.metrics.borrow().sidecar_errors.inc();
            log!(Warn, None, "cache store in the sidecar failed: {e}");
        }
    }
}

/// A response being recorded as it passes.
enum Record {
    None,
    Json(Vec<u8>),
    Stream(Box<Recorder>),
}

struct Http {
    id: u32,
    shared: Rc<Shared>,
    provider: Option<Provider>,
    scope: String,
    semantic_scope: Option<String>,
    key_headers: [String; 5],
    keyed: Option<Keyed>,
    /// The `x-tollgate-cache` value for a response from upstream.
    status: Option<&'static str>,
    no_cache: bool,
    no_store: bool,
    looking_up: bool,
    /// The response is a cache hit this filter sent.
    served: bool,
    record: Record,
}

impl Http {
    fn now(&self) -> u64 {
        root::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn bypass(&mut self, why: Bypass) -> Action {
        self.status = Some(headers::cache::BYPASS);
        self.keyed = None;
        self.shared.metrics.borrow_mut().bypass.get(why.name()).inc();
        state::set(headers::state::CACHE, headers::cache::BYPASS);
        Action::Continue
    }

    fn miss(&mut self, paused: bool) -> Action {
        self.status = Some(headers::cache::MISS);
        self.shared.metrics.borrow().misses.inc();
        state::set(headers::state::CACHE, headers::cache::MISS);
        if paused {
            let _ = http::resume_request(self.id);
        }
        Action::Continue
    }

    fn slot_key(&self, exact: &str) -> String {
        let h = exact
            .get(..16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        format!(
            "tollgate.response_cache.{}",
            h % u64::from(self.shared.config.slots)
        )
    }

    /// Looks the request up; returns the callback's action.
    fn lookup(&mut self) -> Action {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let Some(k) = self.keyed.clone() else {
            return Action::Continue;
        };
        if cfg.backend == Backend::SharedData {
            let now = self.now();
            let found = shared_data::get(&self.slot_key(&k.exact))
                .ok()
                .and_then(|(v, _)| v)
                .and_then(|v| Entry::decode(&v))
                .filter(|e| e.key == k.exact && e.is_fresh(now, cfg.ttl_s));
            if let Some(e) = found {
                let age = e.age(now);
                if self.serve(&e.body, age, None) {
                    return Action::Pause;
                }
            }
        }
        let ask_sidecar = cfg.backend == Backend::Sidecar || k.semantic_text.is_some();
        let Some(sidecar) = shared.sidecar.as_ref().filter(|_| ask_sidecar) else {
            return self.miss(false);
        };
        let req = v1::CacheLookupRequest {
            scope: self.scope.clone(),
            model: k.namespace.clone(),
            key: k.exact.clone(),
            vector: Vec::new(),
            text: k.semantic_text.clone().unwrap_or_default(),
            threshold: cfg.semantic.threshold,
        };
        match sidecar.cache_lookup(&req) {
            Ok(_) => {
                self.looking_up = true;
                Action::Pause
            }
            Err(e) => {
                shared.metrics.borrow().sidecar_errors.inc();
                log!(Warn, Some(self.id), "cache lookup not sent: {e}");
                self.miss(false)
            }
        }
    }

    /// Answers from the cache, as JSON or as the provider's stream. `similarity`: a semantic hit.
    /// False when the entry cannot be served to this request (then it is a miss).
    fn serve(&mut self, body: &[u8], age: u64, similarity: Option<f32>) -> bool {
        let (Some(k), Some(provider)) = (&self.keyed, self.provider) else {
            return false;
        };
        let (payload, content_type) = if k.stream {
            match entry::to_sse(provider, body, k.include_usage) {
                Some(s) => (s, "text/event-stream"),
                None => return false,
            }
        } else {
            (body.to_vec(), "application/json")
        };
        let status = if similarity.is_some() {
            headers::cache::SEMANTIC_HIT
        } else {
            headers::cache::HIT
        };
        let age = age.to_string();
        let sim = similarity.map(|s| format!("{s:.3}"));
        let mut hdrs = vec![
            ("content-type", content_type),
            (headers::CACHE, status),
            ("age", age.as_str()),
        ];
        if let Some(s) = &sim {
            hdrs.push((SIMILARITY_HEADER, s.as_str()));
        }
        if http::send_response(self.id, 200, hdrs, Some(&payload)).is_err() {
            return false;
        }
        self.served = true;
        state::set(headers::state::CACHE, status);
        let m = self.shared.metrics.borrow();
        match similarity {
            Some(s) => {
                m.semantic_hits.inc();
                if let Some(h) = m.similarity {
                    h.record((s.clamp(0.0, 1.0) * 1000.0).round() as u64);
                }
            }
            None => m.hits.inc(),
        }
        if let (Some(t), Some(u)) = (m.tokens_saved, filter_core::usage::from_response(provider, body)) {
            t.add(i64::try_from(u.total()).unwrap_or(i64::MAX));
        }
        log!(
            Debug,
            Some(self.id),
            "served from the cache ({status}, age {age} s)"
        );
        true
    }

    /// Stores a complete response under the request's key.
    fn store(&mut self, body: Vec<u8>) {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let (Some(k), Some(provider)) = (self.keyed.take(), self.provider) else {
            return;
        };
        if body.len() > cfg.max_entry_bytes {
            return;
        }
        if let Err(why) = entry::storable(provider, &body) {
            log!(Debug, Some(self.id), "response not stored: {why}");
            return;
        }
        let now = self.now();
        let e = Entry {
            key: k.exact.clone(),
            created: now,
            ttl: cfg.ttl_s,
            prompt: k.semantic_text.clone().unwrap_or_default(),
            body,
        };
        let encoded = e.encode();
        let m = shared.metrics.borrow();
        if cfg.backend == Backend::SharedData {
            let slot = self.slot_key(&k.exact);
            let (old, cas) = shared_data::get(&slot).unwrap_or((None, None));
            let evicts = old
                .and_then(|v| Entry::decode(&v))
                .is_some_and(|old| old.key != k.exact && old.is_fresh(now, cfg.ttl_s));
            // Conditional on what was read: when another response took the slot meanwhile, the
            // newer entry stays and the eviction count stays true.
            match shared_data::replace(&slot, &encoded, cas) {
                Ok(()) => {
                    m.stores.inc();
                    if evicts {
                        m.evictions.inc();
                    }
                    if let Some(b) = m.bytes_stored {
                        b.add(encoded.len() as i64);
                    }
                }
                Err(err) => log!(Warn, Some(self.id), "cache store in shared data failed: {err:?}"),
            }
        }
        if cfg.backend == Backend::Sidecar || k.semantic_text.is_some() {
            if cfg.backend == Backend::Sidecar {
                m.stores.inc();
                if let Some(b) = m.bytes_stored {
                    b.add(encoded.len() as i64);
                }
            }
            drop(m);
            let req = v1::CacheStoreRequest {
                scope: self.scope.clone(),
                model: k.namespace,
                key: k.exact,
                vector: Vec::new(),
                text: k.semantic_text.unwrap_or_default(),
                value: encoded,
                ttl_seconds: cfg.ttl_s,
            };
            shared.queue_store(req, self.id);
        }
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, size: usize) {
        if !self.looking_up {
            return;
        }
        self.looking_up = false;
        let reply = match sidecar::reply::<v1::CacheLookupResponse>(status_code, size) {
            Ok(r) => r,
            Err(e) => {
                // The cache is an optimisation: unavailable means a miss, never an error.
                self.shared.metrics.borrow().sidecar_errors.inc();
                log!(Warn, Some(self.id), "cache lookup failed, treated as a miss: {e}");
                self.miss(true);
                return;
            }
        };
        let outcome = v1::cache_lookup_response::Outcome::try_from(reply.outcome)
            .unwrap_or(v1::cache_lookup_response::Outcome::Miss);
        let similarity = match outcome {
            v1::cache_lookup_response::Outcome::ExactHit => None,
            v1::cache_lookup_response::Outcome::SemanticHit => Some(reply.similarity),
            _ => {
                self.miss(true);
                return;
            }
        };
        let now = self.now();
        let ttl = self.shared.config.ttl_s;
        let exact = self.keyed.as_ref().map(|k| k.exact.clone()).unwrap_or_default();
        let prompt = self
            .keyed
            .as_ref()
            .and_then(|k| k.semantic_text.clone())
            .unwrap_or_default();
        let served = Entry::decode(&reply.value)
            .filter(|e| e.is_fresh(now, ttl) && (similarity.is_some() || e.key == exact))
            .filter(|e| {
                let refused = similarity.is_some() && entry::reordered(&e.prompt, &prompt);
                if refused {
                    log!(
                        Debug,
                        Some(self.id),
                        "semantic match refused: the same words in another order"
                    );
                }
                !refused
            })
            .is_some_and(|e| self.serve(&e.body, reply.age_seconds, similarity));
        if !served {
            self.miss(true);
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let path = http::request_header(self.id, ":path").unwrap_or_default();
        self.provider = Provider::from_path(&path);
        match self.provider {
            None => return Action::Continue,
            Some(Provider::OpenAiChat | Provider::Anthropic) => {}
            Some(_) => return self.bypass(Bypass::Api),
        }
        let shared = self.shared.clone();
        let cfg = &shared.config;
        if let Some(cc) = http::request_header(self.id, "cache-control") {
            for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
                match d.as_str() {
                    "no-cache" => self.no_cache = true,
                    "no-store" => self.no_store = true,
                    _ => {}
                }
            }
        }
        if self.no_cache && self.no_store {
            return self.bypass(Bypass::ClientAsked);
        }
        let identity = |h: &str| http::request_header(self.id, h).filter(|v| !v.is_empty());
        let semantic_scope = match cfg.semantic.scope {
            SemanticScope::Subject => identity(&cfg.subject_header).map(|s| format!("subject:{s}")),
            SemanticScope::Cache => None,
        };
        self.scope = match cfg.scope {
            Scope::Shared => "shared".to_owned(),
            Scope::Tenant => match identity(&cfg.tenant_header) {
                Some(t) => format!("tenant:{t}"),
                None => return self.bypass(Bypass::NoScope),
            },
            Scope::Subject => match identity(&cfg.subject_header) {
                Some(s) => format!("subject:{s}"),
                None => return self.bypass(Bypass::NoScope),
            },
        };
        self.semantic_scope = match cfg.semantic.scope {
            SemanticScope::Subject => semantic_scope,
            SemanticScope::Cache => Some(self.scope.clone()),
        };
        for (slot, name) in self.key_headers.iter_mut().zip(KEY_HEADERS) {
            *slot = http::request_header(self.id, name).unwrap_or_default();
        }
        if end_of_stream {
            return self.bypass(Bypass::InvalidBody);
        }
        // Wait for the body (needs allow_on_headers_stop_iteration: true in the Envoy config).
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        if self.looking_up || self.served {
            return Action::Pause;
        }
        if self.status.is_some() || self.keyed.is_some() {
            return Action::Continue;
        }
        let shared = self.shared.clone();
        match host_body::collect(
            BufferType::HttpRequestBody,
            body_size,
            end_of_stream,
            shared.config.max_body_bytes,
        ) {
            Body::Wait(a) => a,
            // The cache never fails a request: what it cannot read, it passes.
            Body::TooLarge(_) => self.bypass(Bypass::TooLarge),
            Body::Complete(b) => {
                let [h0, h1, h2, h3, h4] = &self.key_headers;
                let ctx = KeyContext {
                    scope: &self.scope,
                    semantic_scope: self.semantic_scope.as_deref(),
                    headers: [h0, h1, h2, h3, h4].map(String::as_str),
                };
                match key::build(provider, &b, &ctx, &shared.config) {
                    Err(why) => self.bypass(why),
                    Ok(k) => {
                        self.keyed = Some(k);
                        // A compressed answer could not be recorded: ask for identity.
                        let _ = http::set_request_header(self.id, "accept-encoding", None);
                        if self.no_cache {
                            // Refresh: not looked up, stored again (unless no-store).
                            self.status = Some(headers::cache::BYPASS);
                            state::set(headers::state::CACHE, headers::cache::BYPASS);
                            if let Some(m) =
                                shared.metrics.borrow_mut().bypass.get(Bypass::ClientAsked.name())
                            {
                                m.inc();
                            }
                            return Action::Continue;
                        }
                        self.lookup()
                    }
                }
            }
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        if self.served {
            return Action::Continue;
        }
        let Some(status) = self.status else {
            return Action::Continue;
        };
        let _ = http::set_response_header(self.id, headers::CACHE, Some(status));
        let Some(k) = &self.keyed else {
            return Action::Continue;
        };
        let ok = http::response_header(self.id, ":status").as_deref() == Some("200");
        let cookie = http::response_header(self.id, "set-cookie").is_some();
        let encoded = http::response_header(self.id, "content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let response_cc = http::response_header(self.id, "cache-control")
            .unwrap_or_default()
            .to_ascii_lowercase();
        // `private`: not for a cache other users read.
        let upstream_no_store = response_cc.contains("no-store")
            || (response_cc.contains("private") && self.shared.config.scope == Scope::Shared);
        if !ok || cookie || encoded || upstream_no_store || self.no_store || end_of_stream {
            self.keyed = None;
            return Action::Continue;
        }
        let content_type = http::response_header(self.id, "content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (Some(provider), stream) = (self.provider, k.stream) else {
            return Action::Continue;
        };
        self.record = if stream && content_type.starts_with("text/event-stream") {
            Record::Stream(Box::new(Recorder::new(
                provider,
                self.shared.config.max_entry_bytes,
            )))
        } else if !stream && content_type.starts_with("application/json") {
            Record::Json(Vec::new())
        } else {
            Record::None
        };
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.served || matches!(self.record, Record::None) {
            return Action::Continue;
        }
        // The chunk passes as it is; the filter keeps a copy.
        let chunk = http::response_body(self.id, 0, body_size).unwrap_or_default();
        let limit = self.shared.config.max_entry_bytes;
        let mut complete = None;
        match &mut self.record {
            Record::Json(buf) => {
                if buf.len() + chunk.len() > limit {
                    self.record = Record::None;
                    return Action::Continue;
                }
                buf.extend_from_slice(&chunk);
                if end_of_stream {
                    complete = Some(std::mem::take(buf));
                }
            }
            Record::Stream(r) => {
                r.feed(&chunk);
                if r.failed().is_some() {
                    self.record = Record::None;
                    return Action::Continue;
                }
            }
            Record::None => {}
        }
        if end_of_stream {
            if let Record::Stream(r) = std::mem::replace(&mut self.record, Record::None) {
                match r.finish() {
                    Ok(json) => complete = Some(json),
                    Err(why) => log!(Debug, Some(self.id), "stream not stored: {why}"),
                }
            }
            self.record = Record::None;
        }
        if let Some(body) = complete {
            self.store(body);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        // Trailers end the body without an end-of-stream body callback: nothing is stored.
        self.record = Record::None;
        Action::Continue
    }
}
