//! The proxy-wasm callbacks. The request headers wait for the body; a cacheable request is looked
//! up in shared data, then (semantic or `backend: sidecar`) through the sidecar, and a hit is a
//! local reply. A miss goes upstream, and its response is recorded as it passes — never held —
//! and stored when complete. Sidecar stores start from the root context, so they outlive the
//! request.

use crate::config::Config;
use crate::decide::{self, ClientControl, Recording, ResponseHead};
use crate::entry::{Entry, Recorder};
use crate::key::{self, Bypass, Context as KeyContext, Keyed};
use filter_core::{Provider, headers};
use filter_host::body::{self as host_body, Body};
use filter_host::metrics::Record as _;
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::sidecar::{self, Sidecar, v1};
use filter_host::{http, log, root, state};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

mod cache;
mod metrics;
mod setup;
use metrics::Metrics;

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
    /// The client's `cache-control`.
    client: ClientControl,
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
            .filter(|e| similarity.is_none_or(|s| self.verified(&e.prompt, &prompt, s)))
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
            Some(p) if key::cacheable(p) => {}
            Some(_) => return self.bypass(Bypass::Api),
        }
        let shared = self.shared.clone();
        let cfg = &shared.config;
        self.client = ClientControl::parse(http::request_header(self.id, "cache-control").as_deref());
        if self.client.bypass() {
            return self.bypass(Bypass::ClientAsked);
        }
        let tenant = http::request_header(self.id, &cfg.tenant_header);
        let subject = http::request_header(self.id, &cfg.subject_header);
        (self.scope, self.semantic_scope) = match decide::scopes(cfg, tenant.as_deref(), subject.as_deref()) {
            Ok(s) => s,
            Err(why) => return self.bypass(why),
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
                        if self.client.no_cache {
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
        let header = |name| http::response_header(self.id, name);
        let (status, encoding, cc, ct) = (
            header(":status"),
            header("content-encoding"),
            header("cache-control"),
            header("content-type"),
        );
        let head = ResponseHead {
            status: status.as_deref(),
            set_cookie: header("set-cookie").is_some(),
            content_encoding: encoding.as_deref(),
            cache_control: cc.as_deref(),
            content_type: ct.as_deref(),
        };
        let cfg = &self.shared.config;
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        self.record = match decide::recording(&head, cfg.scope, self.client, k.stream, end_of_stream) {
            Recording::Json => Record::Json(Vec::new()),
            Recording::Stream => Record::Stream(Box::new(Recorder::new(provider, cfg.max_entry_bytes))),
            Recording::No(why) => {
                log!(Debug, Some(self.id), "response not stored: {why:?}");
                self.keyed = None;
                Record::None
            }
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
