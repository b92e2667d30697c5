//! The proxy-wasm callbacks. The request headers wait for the body (`allow_on_headers_stop_iteration`
//! in the filter's Envoy config), so the template's version can be set as a header for the upstream
//! and `content-length` dropped before anything leaves.

use crate::config::{self, Config, Decorator};
use crate::refusal::Refusal;
use crate::render::{self, RenderError};
use filter_core::hash::Fnv;
use filter_core::{Provider, Shape, headers};
use filter_host::body::{self, Body};
use filter_host::configured::Filter;
use filter_host::metrics::{Family, Record as _};
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::reply::send_error;
use filter_host::{http, log, state};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    filter_host::configured::main::<Shared>("prompt-templater");
}}

struct Metrics {
    /// Per template: renders by version.
    renders: HashMap<String, Family>,
    /// Per template (`none` when the id is unknown): errors by reason.
    errors: HashMap<String, Family>,
}

impl Metrics {
    fn new(cfg: &Config) -> Self {
        let mut renders = HashMap::new();
        let mut errors = HashMap::new();
        for (id, t) in &cfg.library.templates {
            renders.insert(
                id.clone(),
                Family::counter(
                    format!("tollgate_prompt_templater_renders.template.{id}"),
                    "version",
                    t.versions.len(),
                ),
            );
            errors.insert(id.clone(), error_family(id));
        }
        errors.insert("none".to_owned(), error_family("none"));
        Self { renders, errors }
    }

    fn error(&mut self, template: Option<&str>, reason: &str) {
        let key = template
            .filter(|t| self.errors.contains_key(*t))
            .unwrap_or("none");
        self.errors.get_mut(key).and_then(|f| f.get(reason)).inc();
    }
}

fn error_family(id: &str) -> Family {
    Family::counter(
        format!("tollgate_prompt_templater_errors.template.{id}"),
        "reason",
        8,
    )
}

struct Shared {
    config: Config,
    metrics: RefCell<Metrics>,
}

impl Filter for Shared {
    fn configure(_root_id: u32) -> Option<Self> {
        let config = filter_host::config::load(config::compile)?;
        Some(Self {
            metrics: RefCell::new(Metrics::new(&config)),
            config,
        })
    }

    fn http_context(shared: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext> {
        Box::new(Http {
            id: context_id,
            shared: shared.clone(),
            provider: None,
            path: String::new(),
            select: None,
            sticky_key: None,
            chosen: None,
            replied: false,
            done: false,
        })
    }
}

struct Http {
    id: u32,
    shared: Rc<Shared>,
    provider: Option<Provider>,
    path: String,
    select: Option<String>,
    /// The identity (or, without one, the request id) that keeps a caller on one A/B version.
    sticky_key: Option<String>,
    /// `id@version` of the rendered template.
    chosen: Option<String>,
    replied: bool,
    done: bool,
}

impl Http {
    /// Answers the request itself: the one place a refusal becomes a reply.
    fn refuse(&mut self, why: Refusal) -> Action {
        self.replied = true;
        send_error(self.id, Shape::from_path(&self.path), &why.to_error(), &[]);
        Action::Pause
    }

    fn on_body(&mut self, provider: Provider, bytes: &[u8]) -> Action {
        let shared = self.shared.clone();
        let decorators: Vec<&Decorator> = match provider {
            Provider::OpenAiChat
            | Provider::OpenAiResponses
            | Provider::OpenAiResponsesInputTokens
            | Provider::OpenAiResponsesCompact
            | Provider::Anthropic
            | Provider::AnthropicCountTokens => shared
                .config
                .decorators
                .iter()
                .filter(|d| self.path.starts_with(&d.path_prefix))
                .collect(),
            _ => Vec::new(),
        };
        // Most requests name no template: don't parse what will not change.
        // (`\u` escapes could spell the field name; such bodies are parsed.)
        if self.select.is_none()
            && decorators.is_empty()
            && !contains(bytes, render::FIELD_KEY)
            && !contains(bytes, b"\\u")
        {
            return Action::Continue;
        }
        let mut body: Map<String, Value> = match serde_json::from_slice(bytes) {
            Ok(b) => b,
            Err(e) => {
                shared.metrics.borrow_mut().error(None, "invalid_body");
                return self.refuse(Refusal::invalid_body(&e));
            }
        };
        let ask = match render::take_ask(&mut body, self.select.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                shared
                    .metrics
                    .borrow_mut()
                    .error(None, "invalid_template_request");
                return self.refuse(Refusal::Request(e));
            }
        };
        let rendered = match &ask {
            None => None,
            Some(a) => {
                let key = self.sticky_key.as_deref().unwrap_or("");
                let sticky = Fnv::default()
                    .field(a.id.as_bytes())
                    .field(key.as_bytes())
                    .finish();
                match render::resolve(&shared.config.library, a, sticky) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        let template = match &e {
                            RenderError::UnknownTemplate(_) => None,
                            _ => Some(a.id.as_str()),
                        };
                        shared.metrics.borrow_mut().error(template, e.reason());
                        log!(Info, Some(self.id), "template not rendered: {}", e.reason());
                        return self.refuse(Refusal::Render(e));
                    }
                }
            }
        };
        if rendered.is_none() && decorators.is_empty() {
            return Action::Continue;
        }
        if let Err(e) = render::apply(&mut body, provider, rendered.as_ref(), &decorators) {
            let template = ask.as_ref().map(|a| a.id.as_str());
            shared.metrics.borrow_mut().error(template, e.code);
            return self.refuse(Refusal::Request(e));
        }
        let new_body = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => {
                log!(Error, Some(self.id), "cannot serialise the body: {e}");
                return self.refuse(Refusal::RewriteFailed);
            }
        };
        if let Err(s) = body::replace(BufferType::HttpRequestBody, bytes.len(), &new_body) {
            log!(Error, Some(self.id), "cannot rewrite the body: {s:?}");
            return self.refuse(Refusal::RewriteFailed);
        }
        let _ = http::set_request_header(self.id, "content-length", None);
        if let Some(r) = &rendered {
            let chosen = format!("{}@{}", r.template.id, r.version_name());
            let _ = http::set_request_header(self.id, headers::TEMPLATE, Some(&chosen));
            state::set(headers::state::TEMPLATE, &chosen);
            if let Some(m) = shared
                .metrics
                .borrow_mut()
                .renders
                .get_mut(&r.template.id)
                .and_then(|f| f.get(r.version_name()))
            {
                m.inc();
            }
            self.chosen = Some(chosen);
        }
        Action::Continue
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        // Only this filter says which template version a request got.
        let _ = http::set_request_header(self.id, headers::TEMPLATE, None);
        if http::request_header(self.id, ":method").as_deref() != Some("POST") {
            return Action::Continue;
        }
        self.path = http::request_header(self.id, ":path").unwrap_or_default();
        if end_of_stream {
            // Without a body there is nothing to render into.
            let select_header = self.shared.config.select_header.clone();
            if http::request_header(self.id, &select_header).is_some() {
                return self.refuse(Refusal::NeedsBody);
            }
            return Action::Continue;
        }
        self.provider = Provider::from_path(&self.path);
        if self.provider.is_none() {
            return Action::Continue;
        }
        let cfg = &self.shared.config;
        let (select_header, identity_header) = (cfg.select_header.clone(), cfg.identity_header.clone());
        self.select = http::request_header(self.id, &select_header).filter(|v| !v.trim().is_empty());
        if self.select.is_some() {
            // Read; the provider has no use for it.
            let _ = http::set_request_header(self.id, &select_header, None);
        }
        self.sticky_key = http::request_header(self.id, &identity_header)
            .filter(|v| !v.is_empty())
            .or_else(|| http::request_header(self.id, "x-request-id"));
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
        if self.done {
            return Action::Continue;
        }
        let limit = self.shared.config.max_body_bytes;
        match body::collect(BufferType::HttpRequestBody, body_size, end_of_stream, limit) {
            Body::Wait(a) => a,
            Body::TooLarge(_) => self.refuse(Refusal::TooLarge { limit }),
            Body::Complete(b) => {
                self.done = true;
                self.on_body(provider, &b)
            }
        }
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        if self.provider.is_none() || self.done || self.replied {
            return Action::Continue;
        }
        // The body ended without end_of_stream: it would go on unrendered.
        self.refuse(Refusal::Trailers)
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if let Some(chosen) = &self.chosen {
            let chosen = chosen.clone();
            let _ = http::set_response_header(self.id, headers::TEMPLATE, Some(&chosen));
        }
        Action::Continue
    }
}
