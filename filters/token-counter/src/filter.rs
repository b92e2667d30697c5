//! The proxy-wasm callbacks: they fetch bytes from Envoy, call the pure modules and turn the result
//! into an `Action` or a local reply (kept out of `lib.rs`, so the pure modules' tests run as wasm).

use crate::config::{Backend, Config, Price};
use crate::count::{self, Counter};
use crate::decide::{self, Refusal, Settlement};
use crate::response::{Chunk, Tap};
use filter_core::api::{Provider, Request};
use filter_core::{Shape, headers};
use filter_host::body::{self, Body};
use filter_host::metrics::Record as _;
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::reply::send_error;
use filter_host::sidecar::{Sidecar, v1};
use filter_host::{http, log, root, state};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

mod budgets;
mod ledger;
mod metrics;
mod setup;
use metrics::{Metrics, add};

proxy_wasm::main! {{
    filter_host::configured::main::<Shared>("token-counter");
}}

struct Shared {
    config: Config,
    counter: RefCell<Counter>,
    metrics: RefCell<Metrics>,
    sidecar: Option<Sidecar>,
    /// Sidecar settlements waiting for the root context's next tick: a stream context's own calls
    /// are cancelled when it is destroyed, and settlement must outlive an aborted request.
    settle_queue: RefCell<Vec<v1::SettleRequest>>,
}

/// A reservation this request holds.
#[derive(Debug)]
enum Held {
    Shared(ledger::Slot),
    Sidecar { request_id: String },
}

/// Why a budget refused the request.
struct Denial {
    rule: usize,
    used: u64,
    retry_after: u64,
}

struct Http {
    id: u32,
    shared: Rc<Shared>,
    provider: Option<Provider>,
    pub(crate) shape: Shape, // the client API's error shape, from the path
    model: String,
    price: Option<Price>,
    counted: Option<u64>,
    identity: Option<String>,
    tenant: Option<String>,
    request_id: String,
    /// Tokens reserved per rule (prompt + completion limit or estimate).
    amount: u64,
    held: Vec<Held>,
    /// Sidecar reservations in flight: call token → rule index.
    pending: HashMap<u32, usize>,
    denied: Option<Denial>,
    remaining: Option<u64>,
    drop_usage_chunk: bool,
    tap: Option<Tap>,
    status: Option<u32>,
    finished: bool,
    replied: bool,
    /// The request went on to the upstream (all reservations made).
    forwarded: bool,
}

impl Http {
    /// Answers the request itself: the one place a refusal becomes a reply.
    fn refuse(&mut self, why: &Refusal) -> Action {
        self.replied = true;
        let retry = why.retry_after().map(|s| [("retry-after", s.to_string())]);
        let extra: Vec<(&str, &str)> = retry.iter().flatten().map(|(k, v)| (*k, v.as_str())).collect();
        send_error(self.id, self.shape, &why.to_error(), &extra);
        Action::Pause
    }

    fn now_secs(&self) -> u64 {
        root::now_secs()
    }

    fn on_request(&mut self, provider: Provider, mut body: Vec<u8>) -> Action {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let mut req = match Request::parse(provider, &body) {
            Ok(r) => r,
            Err(e) => {
                shared.metrics.borrow().invalid_requests.inc();
                return self.refuse(&Refusal::invalid_body(&e));
            }
        };
        self.model = req.model().to_owned();
        let entry = cfg.model(&self.model);
        self.price = entry.and_then(|m| m.price);
        let encoding = cfg.encoding_for(&self.model, entry);

        let first = !count::is_loaded(encoding);
        let started = root::now();
        let counted = shared.counter.borrow_mut().prompt(encoding, &req);
        let counted = match counted {
            Ok(n) => n,
            Err(e) => {
                // Cannot happen with the embedded tables; fail open rather than stop traffic.
                log!(Error, Some(self.id), "not counted: {e}");
                return Action::Continue;
            }
        };
        let built = first.then(|| root::now().duration_since(started).unwrap_or_default());
        metrics::counted(&shared.metrics.borrow(), &mut shared.counter.borrow_mut(), built);
        if built.is_some() {
            log!(Info, Some(self.id), "{} table built for this VM", encoding.name());
        }
        self.counted = Some(counted);
        state::set(headers::state::MODEL, &self.model);
        state::set(headers::state::COUNTED_PROMPT_TOKENS, &counted.to_string());

        let limit = entry.and_then(|m| m.max_context_tokens);
        if let Err(why) = decide::check_context(limit, counted, req.max_output_tokens()) {
            add(
                &mut shared.metrics.borrow_mut().context_rejections,
                &self.model,
                1,
            );
            return self.refuse(&why);
        }

        if decide::inject_usage(&mut req) {
            match req.to_vec() {
                Ok(new_body) => {
                    if let Err(s) = body::replace(BufferType::HttpRequestBody, body.len(), &new_body) {
                        log!(Error, Some(self.id), "cannot rewrite the body: {s:?}");
                    } else {
                        self.drop_usage_chunk = true;
                        body = new_body;
                    }
                }
                Err(e) => log!(Error, Some(self.id), "cannot serialise the body: {e}"),
            }
        }
        drop(body);

        let Some(budgets) = &cfg.budgets else {
            return Action::Continue;
        };
        self.amount = match decide::reservation(cfg, &req, counted) {
            Ok(n) => n,
            Err(why) => return self.refuse(&why),
        };
        let rules = decide::rules_for(budgets, entry.and_then(|m| m.group.as_deref()));
        if rules.is_empty() {
            return Action::Continue;
        }
        let identity = match decide::identity(budgets, self.identity.as_deref()) {
            Ok(i) => i,
            Err(why) => return self.refuse(&why),
        };
        match budgets.backend {
            Backend::SharedData => self.reserve_shared(budgets, &rules, &identity),
            Backend::Sidecar => self.reserve_sidecar(budgets, &rules, &identity),
        }
    }

    /// The response has ended: report usage and cost, settle with the real numbers.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.tap.as_ref().is_some_and(|t| t.cut) {
            self.shared.metrics.borrow().streams_cut.inc();
        }
        self.charge(true);
    }

    /// Reports the usage the provider sent and applies the settlement `decide` chose.
    fn charge(&mut self, complete: bool) {
        let usage = self.tap.as_ref().and_then(Tap::usage);
        let ok = self.status.is_some_and(|s| (200..300).contains(&s));
        if let Some(u) = usage.as_ref().filter(|_| ok) {
            let m = &mut self.shared.metrics.borrow_mut();
            metrics::report(m, &self.model, self.tenant.as_deref(), self.price, u);
        }
        let final_usage = self.provider.is_some_and(Provider::is_openai);
        match decide::settlement(self.status, usage.map(|u| u.total()), complete, final_usage) {
            Settlement::Release => self.release_all(),
            Settlement::Actual(n) => self.settle(n),
            Settlement::Keep => {
                if complete {
                    self.shared.metrics.borrow().responses_without_usage.inc();
                }
                self.held.clear();
            }
        }
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, size: usize) {
        self.on_reserved(token, status_code, size);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        if end_of_stream || http::request_header(self.id, ":method").as_deref() != Some("POST") {
            return Action::Continue;
        }
        let Some(path) = http::request_header(self.id, ":path") else {
            return Action::Continue;
        };
        self.shape = Shape::from_path(&path);
        self.provider = Provider::from_path(&path).filter(|p| p.generates()); // count_tokens: never charged
        if self.provider.is_none() {
            return Action::Continue;
        }
        if let Some(t) = &self.shared.config.tenant_metrics {
            self.tenant = http::request_header(self.id, &t.header).filter(|v| !v.is_empty());
        }
        if let Some(b) = &self.shared.config.budgets {
            self.identity = http::request_header(self.id, &b.identity_header).filter(|v| !v.is_empty());
            if b.backend == Backend::Sidecar {
                self.request_id = http::request_header(self.id, "x-request-id").unwrap_or_default();
            }
        }
        // The body may be rewritten (stream_options.include_usage) after these headers went on.
        let _ = http::set_request_header(self.id, "content-length", None);
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        if self.replied || !self.pending.is_empty() {
            return Action::Pause;
        }
        if self.counted.is_some() {
            return Action::Continue;
        }
        let limit = self.shared.config.max_body_bytes;
        match body::collect(BufferType::HttpRequestBody, body_size, end_of_stream, limit) {
            Body::Wait(a) => a,
            Body::TooLarge(_) => self.refuse(&Refusal::BodyTooLarge { limit }),
            Body::Complete(b) => {
                let action = self.on_request(provider, b);
                if action == Action::Continue {
                    self.forwarded = true;
                }
                action
            }
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        if self.replied {
            return Action::Continue;
        }
        self.status = http::response_header(self.id, ":status").and_then(|s| s.parse().ok());
        let ct = http::response_header(self.id, "content-type").unwrap_or_default();
        let ok = self.status == Some(200);
        let tap = Tap::new(provider, &ct, self.drop_usage_chunk && ok);
        if tap.rewrites() {
            let _ = http::set_response_header(self.id, "content-length", None);
        }
        self.tap = Some(tap);
        if self.shared.config.response_headers {
            if let Some(n) = self.counted {
                let _ = http::set_response_header(self.id, headers::PROMPT_TOKENS, Some(&n.to_string()));
            }
            if let Some(r) = self.remaining {
                let _ = http::set_response_header(self.id, headers::BUDGET_REMAINING, Some(&r.to_string()));
            }
        }
        if end_of_stream {
            self.finish();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.tap.is_none() {
            return Action::Continue;
        }
        let bytes = if body_size == 0 {
            Vec::new()
        } else {
            http::response_body(self.id, 0, body_size).unwrap_or_default()
        };
        let Some(tap) = self.tap.as_mut() else {
            return Action::Continue;
        };
        if let Chunk::Replace(out) = tap.chunk(&bytes, end_of_stream) {
            if out.len() != bytes.len() {
                self.shared.metrics.borrow().usage_chunks_removed.inc();
            }
            if out != bytes {
                let _ = http::set_response_body(self.id, 0, body_size, &out);
            }
        }
        if end_of_stream {
            self.finish();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // A local reply of ours released its reservations already.
        if self.finished || self.provider.is_none() || self.replied {
            return;
        }
        self.finished = true;
        if !self.forwarded {
            // Ended while reservations were being made: the provider never saw it.
            self.release_all();
            return;
        }
        // The stream ended early (client gone, upstream reset). An error status means the provider
        // billed nothing. OpenAI's usage chunk is final, so with it the charge is exact; otherwise
        // the provider may have billed, and the reservation stands.
        self.shared.metrics.borrow().aborted.inc();
        if self.tap.is_some() && self.status.is_some_and(|s| (200..300).contains(&s)) {
            self.shared.metrics.borrow().streams_cut.inc();
        }
        self.charge(false);
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        if self.provider.is_none() || self.counted.is_some() || self.replied {
            return Action::Continue;
        }
        // The body ended without end_of_stream (trailers follow): counting would be skipped.
        self.refuse(&Refusal::Trailers)
    }
}
