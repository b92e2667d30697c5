//! The proxy-wasm callbacks. The request headers wait for the body (`allow_on_headers_stop_iteration`
//! in the filter's Envoy config), so nothing reaches the upstream before it is moderated and a
//! masked body can drop `content-length`. JSON responses are held until complete, then passed,
//! masked or replaced by an error.

use crate::body::{self, BodyError, Outcome};
use crate::config::{self, Action as Verdict, Config};
use crate::refusal::{Refusal, Side};
use crate::stream::Stream;
use filter_core::{Provider, Shape, headers};
use filter_host::body::{self as host_body, Body};
use filter_host::configured::Filter;
use filter_host::metrics::Record as _;
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::sidecar::Sidecar;
use filter_host::{http, log, state};
use std::cell::RefCell;
use std::rc::Rc;

mod classify;
mod metrics;
mod stream;
use metrics::Metrics;

proxy_wasm::main! {{
    filter_host::configured::main::<Shared>("content-moderator");
}}

struct Shared {
    config: Config,
    sidecar: Option<Sidecar>,
    metrics: RefCell<Metrics>,
}

impl Filter for Shared {
    fn configure(_root_id: u32) -> Option<Self> {
        let config = filter_host::config::load(config::compile)?;
        Some(Self {
            metrics: RefCell::new(Metrics::new(&config)),
            sidecar: config.classify.as_ref().map(|c| Sidecar::new(c.sidecar.clone())),
            config,
        })
    }

    fn http_context(shared: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext> {
        Box::new(Http {
            id: context_id,
            shared: shared.clone(),
            provider: None,
            shape: Shape::OpenAi,
            request_done: false,
            moderate_response: false,
            stream: None,
            recorded: 0,
            classifying: false,
            replied: false,
            verdict: Vec::new(),
        })
    }
}

struct Http {
    id: u32,
    shared: Rc<Shared>,
    provider: Option<Provider>,
    /// The error shape of the client's API, from the path (read while the headers are held).
    shape: Shape,
    request_done: bool,
    moderate_response: bool,
    /// A streamed response being moderated, and how many of its findings are already counted.
    stream: Option<Stream>,
    recorded: usize,
    /// The request waits for the sidecar's `Classify`.
    classifying: bool,
    replied: bool,
    /// `side:action:category` of every finding, for the filter-state verdict.
    verdict: Vec<String>,
}

impl Http {
    /// Answers the request itself: the one place a refusal becomes a reply.
    fn refuse(&mut self, why: &Refusal) -> Action {
        self.replied = true;
        let err = why.to_error();
        let status = why.status(self.shared.config.block_status);
        filter_host::reply::send_error_with_status(self.id, self.shape, status, &err, &[]);
        Action::Pause
    }

    fn block(&mut self, side: Side, category: &str) -> Action {
        self.refuse(&Refusal::Blocked {
            side,
            category: category.to_owned(),
        })
    }

    /// Records the outcome; `Some(action)` when the callback must return it (blocked or failed).
    fn apply(
        &mut self,
        side: Side,
        outcome: Result<Outcome, BodyError>,
        buffer: BufferType,
        old_len: usize,
    ) -> Option<Action> {
        let shared = self.shared.clone();
        let rules = match side {
            Side::Request => &shared.config.request,
            Side::Response => &shared.config.response,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(BodyError::Invalid(why)) => {
                shared.metrics.borrow_mut().invalid.get(side.name()).inc();
                log!(Info, Some(self.id), "{} body not moderated: {why}", side.name());
                return Some(match side {
                    Side::Request => self.refuse(&Refusal::UnreadableRequest { why }),
                    // An upstream answer that is not the API's JSON cannot be checked: refuse it.
                    Side::Response => self.refuse(&Refusal::UnreadableResponse),
                });
            }
            Err(BodyError::Serialize(why)) => {
                log!(
                    Error,
                    Some(self.id),
                    "cannot serialise the moderated {}: {why}",
                    side.name()
                );
                return Some(self.refuse(&Refusal::RewriteFailed));
            }
        };
        self.record(side, &outcome.findings);
        if let Some(c) = outcome.blocked {
            let name = rules.categories.get(c).map_or("unknown", |c| c.name.as_str());
            return Some(self.block(side, name));
        }
        if let Some(new_body) = outcome.body
            && let Err(s) = host_body::replace(buffer, old_len, &new_body)
        {
            log!(
                Error,
                Some(self.id),
                "cannot rewrite the {} body: {s:?}",
                side.name()
            );
            return Some(self.refuse(&Refusal::RewriteFailed));
        }
        None
    }

    /// Counts findings and updates the verdict in filter state.
    fn record(&mut self, side: Side, findings: &[(usize, Verdict)]) {
        let shared = self.shared.clone();
        let rules = match side {
            Side::Request => &shared.config.request,
            Side::Response => &shared.config.response,
        };
        for &(c, action) in findings {
            if let Some(cat) = rules.categories.get(c) {
                self.note(side, &cat.name, action);
            }
        }
        self.publish();
    }

    /// Counts one finding and adds it to the verdict in filter state.
    fn note(&mut self, side: Side, category: &str, action: Verdict) {
        self.shared.metrics.borrow_mut().count(side, category, action);
        let v = format!("{}:{}:{category}", side.name(), action.name());
        if !self.verdict.contains(&v) {
            self.verdict.push(v);
        }
    }

    /// Puts the verdict in filter state (once per callback, after its findings are noted).
    fn publish(&self) {
        state::set(headers::state::MODERATION, &self.verdict_text());
    }

    fn verdict_text(&self) -> String {
        if self.verdict.is_empty() {
            "pass".to_owned()
        } else {
            self.verdict.join(",")
        }
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, size: usize) {
        self.on_classified(status_code, size);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let path = http::request_header(self.id, ":path").unwrap_or_default();
        self.shape = Shape::from_path(&path);
        self.provider = Provider::from_path(&path).or_else(|| {
            // Reading a stored response (`GET /v1/responses/{id}`, as JSON or replayed as events)
            // returns generated text: it is moderated as the answer was.
            let read = end_of_stream && filter_core::api::responses::reads_stored_response(&path);
            read.then_some(Provider::OpenAiResponses)
        });
        if self.provider.is_none() {
            let unknown_with_body =
                !end_of_stream && self.shared.config.unknown_apis == config::UnknownApis::Reject;
            if unknown_with_body {
                return self.refuse(&Refusal::UnsupportedApi);
            }
            return Action::Continue;
        }
        if !self.shared.config.response.categories.is_empty() {
            // Compressed responses cannot be read: ask the provider for identity encoding.
            let _ = http::set_request_header(self.id, "accept-encoding", None);
        }
        if end_of_stream {
            return Action::Continue;
        }
        if self.shared.config.request.categories.is_empty() && self.shared.config.classify.is_none() {
            self.request_done = true;
            return Action::Continue;
        }
        // A masked body has another length.
        let _ = http::set_request_header(self.id, "content-length", None);
        // Wait for the body (needs allow_on_headers_stop_iteration: true in the Envoy config).
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        if self.replied {
            return Action::Pause;
        }
        if self.request_done {
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
            Body::TooLarge(_) => self.refuse(&Refusal::RequestTooLarge {
                limit: shared.config.max_body_bytes,
            }),
            Body::Complete(b) => {
                self.request_done = true;
                let outcome = body::request(&shared.config.request, provider, &b);
                if let Some(a) = self.apply(Side::Request, outcome, BufferType::HttpRequestBody, b.len()) {
                    return a;
                }
                self.classify(provider, &b).unwrap_or(Action::Continue)
            }
        }
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        if self.provider.is_none() || self.request_done || self.replied {
            return Action::Continue;
        }
        self.refuse(&Refusal::Trailers)
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        if self.replied
            || end_of_stream
            || self.provider.is_none()
            || self.shared.config.response.categories.is_empty()
        {
            return Action::Continue;
        }
        let status = http::response_header(self.id, ":status").unwrap_or_default();
        if status != "200" {
            return Action::Continue;
        }
        let content_type = http::response_header(self.id, "content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let encoded = http::response_header(self.id, "content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        if encoded {
            // The filter asked for identity; a compressed answer cannot be checked, so it is not passed.
            return self.refuse(&Refusal::CompressedResponse);
        }
        if content_type.starts_with("text/event-stream") {
            // Events pass as they come, rewritten; their length changes.
            let Some(provider) = self.provider else {
                return Action::Continue;
            };
            self.stream = Some(Stream::new(provider, self.shared.config.stream_holdback_bytes));
            let _ = http::set_response_header(self.id, "content-length", None);
            return Action::Continue;
        }
        // Anything else on an LLM API path must be the API's JSON, or it is refused when read.
        self.moderate_response = true;
        let _ = http::set_response_header(self.id, "content-length", None);
        Action::Pause
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        if self.moderate_response && !self.replied {
            // The buffered JSON would be released unchecked with the trailers.
            self.moderate_response = false;
            return self.refuse(&Refusal::ResponseTrailers);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.stream.is_some() {
            self.on_stream_chunk(body_size, end_of_stream);
            return Action::Continue;
        }
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        if !self.moderate_response || self.replied {
            return Action::Continue;
        }
        let shared = self.shared.clone();
        match host_body::collect(
            BufferType::HttpResponseBody,
            body_size,
            end_of_stream,
            shared.config.max_body_bytes,
        ) {
            Body::Wait(a) => a,
            Body::TooLarge(_) => {
                self.moderate_response = false;
                self.refuse(&Refusal::ResponseTooLarge)
            }
            Body::Complete(b) => {
                self.moderate_response = false;
                let outcome = body::response(&shared.config.response, provider, &b);
                self.apply(Side::Response, outcome, BufferType::HttpResponseBody, b.len())
                    .unwrap_or(Action::Continue)
            }
        }
    }
}
