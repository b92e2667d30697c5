//! The proxy-wasm callbacks. The root context embeds the route examples through the sidecar when the
//! filter starts (retried with backoff until it answers); each request holds its headers until the
//! body is read (`allow_on_headers_stop_iteration`), decides, sets the route header — which makes
//! Envoy pick the route again — and lets the request go.

use crate::config::{ClientRoute, Config, FailureMode};
use crate::decide::{self, Decision, Index, Method, Refusal};
use filter_core::api::Request;
use filter_core::{Provider, Shape, headers};
use filter_host::body::{self as host_body, Body};
use filter_host::metrics::Record as _;
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::reply::send_error;
use filter_host::sidecar::{self, Sidecar, v1};
use filter_host::{http, log, root, state};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

mod examples;
mod metrics;
mod setup;
use metrics::Metrics;

proxy_wasm::main! {{
    filter_host::configured::main::<Shared>("semantic-router");
}}

/// Texts per `Embed` call when loading examples (the sidecar accepts 64 by default).
const EXAMPLE_BATCH: usize = 32;
/// Deadline of a configure-time `Embed`: many examples take longer than one prompt.
const EXAMPLE_TIMEOUT_MS: u64 = 30_000;
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// A request that finds the examples missing starts a new attempt at once when the last one began
/// at least this long ago (the sidecar may be back before the backoff ends).
const RETRY_NUDGE: Duration = Duration::from_secs(5);
/// The keyword fast path reads this much of the text (a stack trace is near the start).
const KEYWORD_BYTES: usize = 16 * 1024;

/// Filter-state keys next to `tollgate.route`.
const STATE_METHOD: &str = "tollgate.route.method";
const STATE_SCORE: &str = "tollgate.route.score";

struct Shared {
    config: Config,
    sidecar: Sidecar,
    /// The example vectors, once every example is embedded (or at once when all are precomputed).
    index: RefCell<Option<Index>>,
    metrics: RefCell<Metrics>,
    scratch: RefCell<decide::Scratch>,
    /// Set when the sidecar's vectors cannot be used with the precomputed ones; stops retries.
    broken: Cell<bool>,
    root_id: u32,
    /// Example calls are in flight.
    loading: Cell<bool>,
    loader: RefCell<examples::Loader>,
    last_attempt: Cell<SystemTime>,
}

impl Shared {
    /// Asks the root context for an attempt now (a request found the examples missing).
    fn nudge(&self, now: SystemTime, from: u32) {
        let due = now
            .duration_since(self.last_attempt.get())
            .is_ok_and(|d| d >= RETRY_NUDGE);
        if due && !self.loading.get() && !self.broken.get() {
            self.last_attempt.set(now);
            // The calls start from the root (a request's own call would die with the request).
            root::wake(self.root_id, from, Duration::from_millis(1));
        }
    }

    fn ready(&self, index: Index) {
        if let Ok(m) = self.metrics.try_borrow() {
            if let Some(g) = m.examples {
                g.record(index.len() as u64);
            }
            if let Some(g) = m.ready_vms {
                g.add(1);
            }
        }
        *self.index.borrow_mut() = Some(index);
    }
}

struct Http {
    id: u32,
    shared: Rc<Shared>,
    provider: Option<Provider>,
    /// The error shape of the client's API, from the path (read while the headers are held).
    pub(crate) shape: Shape,
    /// The buffered request body, kept while the sidecar answers (for a `model` rewrite).
    body: Vec<u8>,
    /// An `Embed` in flight, and when it started.
    embedding: Option<SystemTime>,
    /// Decided (or replied); later callbacks pass.
    done: bool,
}

impl Http {
    /// Answers the request itself: the one place a refusal becomes a reply.
    fn refuse(&self, why: Refusal) -> Action {
        send_error(self.id, self.shape, &why.to_error(), &[]);
        Action::Pause
    }

    /// Acts on a decision: sets the route header and filter state, rewrites `model` when the route
    /// says so, counts it. `paused`: the request waits in the body phase and must be resumed.
    fn apply(&mut self, d: Decision, paused: bool) -> Action {
        self.done = true;
        let shared = self.shared.clone();
        let cfg = &shared.config;
        if d.method.is_failure() && cfg.failure_mode == FailureMode::Closed {
            state::set(STATE_METHOD, d.method.name());
            if let Some(c) = shared.metrics.borrow_mut().methods.get(d.method.name()) {
                c.inc();
            }
            return self.refuse(Refusal::RoutingUnavailable);
        }
        let Some(route) = cfg.routes.get(d.route) else {
            return self.resume(paused);
        };
        let _ = http::set_request_header(self.id, &cfg.header, Some(&route.value));
        if d.method != Method::Explicit
            && let (Some(model), Some(provider)) = (&route.model, self.provider)
        {
            self.rewrite_model(provider, model);
        }
        state::set(headers::state::ROUTE, &route.name);
        state::set(STATE_METHOD, d.method.name());
        {
            let mut m = shared.metrics.borrow_mut();
            if let Some(c) = m.decisions.get(&route.name) {
                c.inc();
            }
            if let Some(c) = m.methods.get(d.method.name()) {
                c.inc();
            }
            if let (Some(s), Some(h)) = (d.score, m.similarity) {
                h.record((s.clamp(0.0, 1.0) * 1000.0).round() as u64);
            }
        }
        if let Some(s) = d.score {
            state::set(STATE_SCORE, &format!("{s:.3}"));
        }
        log!(
            Debug,
            Some(self.id),
            "route {} by {}{}",
            route.name,
            d.method.name(),
            d.score
                .map(|s| format!(" (similarity {s:.3})"))
                .unwrap_or_default()
        );
        self.resume(paused)
    }

    fn resume(&mut self, paused: bool) -> Action {
        self.body = Vec::new();
        if paused {
            let _ = http::resume_request(self.id);
        }
        Action::Continue
    }

    /// Writes the route's model into the buffered body, unless the request already names it.
    fn rewrite_model(&mut self, provider: Provider, model: &str) {
        let Ok(mut req) = Request::parse(provider, &self.body) else {
            return;
        };
        if req.model() == model {
            return;
        }
        req.set_model(model);
        let rewritten = req.to_vec().map_err(|e| e.to_string()).and_then(|b| {
            host_body::replace(BufferType::HttpRequestBody, self.body.len(), &b).map_err(|s| format!("{s:?}"))
        });
        if let Err(e) = rewritten {
            // The request still goes on its route, with the model the client asked for.
            log!(Error, Some(self.id), "cannot rewrite the model: {e}");
        }
    }

    /// The sidecar could not embed this request's text.
    fn sidecar_failed(&mut self, why: &str, paused: bool) -> Action {
        self.shared.metrics.borrow().sidecar_errors.inc();
        log!(Warn, Some(self.id), "no embedding for routing: {why}");
        self.apply(
            Decision::new(self.shared.config.default, Method::SidecarFailed),
            paused,
        )
    }

    fn decide(&mut self, provider: Provider, body: Vec<u8>) -> Action {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        self.body = body;
        let Ok(req) = Request::parse(provider, &self.body) else {
            return self.apply(Decision::new(cfg.default, Method::InvalidBody), false);
        };
        if let Some(r) = decide::explicit_model(cfg, req.model()) {
            return self.apply(Decision::new(r, Method::Explicit), false);
        }
        let Some(text) = decide::routing_text(&req, cfg.input.source) else {
            return self.apply(Decision::new(cfg.default, Method::NoText), false);
        };
        if let Some(r) = decide::fast_path(cfg, decide::truncate(&text, KEYWORD_BYTES)) {
            return self.apply(Decision::new(r, Method::Keyword), false);
        }
        if !cfg.is_semantic() {
            return self.apply(Decision::new(cfg.default, Method::BelowThreshold), false);
        }
        if shared.index.borrow().is_none() {
            shared.nudge(root::now(), self.id);
            shared.metrics.borrow().sidecar_errors.inc();
            return self.apply(Decision::new(cfg.default, Method::NotReady), false);
        }
        let input = decide::truncate(&text, cfg.input.max_bytes()).to_owned();
        match shared.sidecar.embed(vec![input]) {
            Ok(_) => {
                self.embedding = Some(root::now());
                Action::Pause
            }
            Err(e) => self.sidecar_failed(&e.to_string(), false),
        }
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, size: usize) {
        let Some(started) = self.embedding.take() else {
            return;
        };
        let shared = self.shared.clone();
        if let (Ok(d), Some(h)) = (
            root::now().duration_since(started),
            shared.metrics.borrow().sidecar_us,
        ) {
            h.record(d.as_micros() as u64);
        }
        let reply = match sidecar::reply::<v1::EmbedResponse>(status_code, size) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.sidecar_failed(&e.to_string(), true);
                return;
            }
        };
        let Some(q) = reply.embeddings.first() else {
            let _ = self.sidecar_failed("the reply holds no embedding", true);
            return;
        };
        let decision = {
            let index = shared.index.borrow();
            let mut scratch = shared.scratch.borrow_mut();
            index
                .as_ref()
                .and_then(|i| decide::nearest(&shared.config, i, &q.values, &mut scratch))
        };
        match decision {
            Some(d) => {
                let _ = self.apply(d, true);
            }
            None => {
                let why = format!(
                    "the sidecar's vector has {} values, the examples another dimension",
                    q.values.len()
                );
                let _ = self.sidecar_failed(&why, true);
            }
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        if let Some(sent) = http::request_header(self.id, &cfg.header) {
            if cfg.client_route == ClientRoute::Honor
                && let Some(r) = cfg.route_by_value(&sent)
            {
                return self.apply(Decision::new(r, Method::Explicit), false);
            }
            // The route is the gateway's decision: a client's copy never reaches the route table.
            let _ = http::set_request_header(self.id, &cfg.header, None);
        }
        let path = http::request_header(self.id, ":path").unwrap_or_default();
        self.shape = Shape::from_path(&path);
        // Embeddings and token counts generate nothing: there is no model to choose.
        self.provider = Provider::from_path(&path).filter(|p| p.routable());
        if self.provider.is_none() || end_of_stream {
            // Not a prompt: Envoy's routes without the header take it.
            self.done = true;
            return Action::Continue;
        }
        if cfg.rewrites_model {
            // A rewritten body has another length.
            let _ = http::set_request_header(self.id, "content-length", None);
        }
        // Wait for the body (needs allow_on_headers_stop_iteration: true in the Envoy config).
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.done {
            return Action::Continue;
        }
        if self.embedding.is_some() {
            return Action::Pause;
        }
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        match host_body::collect(
            BufferType::HttpRequestBody,
            body_size,
            end_of_stream,
            self.shared.config.max_body_bytes,
        ) {
            Body::Wait(a) => a,
            Body::TooLarge(_) => {
                self.done = true;
                self.refuse(Refusal::TooLarge {
                    limit: self.shared.config.max_body_bytes,
                })
            }
            Body::Complete(b) => self.decide(provider, b),
        }
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        if self.done {
            return Action::Continue;
        }
        // Trailers end the body without an end-of-stream body callback: decide on what came.
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        if self.embedding.is_some() {
            return Action::Pause;
        }
        let size = self.shared.config.max_body_bytes;
        let body = http::request_body(self.id, 0, size).unwrap_or_default();
        self.decide(provider, body)
    }
}
