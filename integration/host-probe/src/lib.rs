//! Test fixture, not a product filter: makes host calls that Envoy refuses in normal operation, so
//! an integration test can show that a refused call through `filter_host` is logged and handled
//! while the VM keeps serving. The request header `x-probe` picks the case:
//!
//! - `late-response-header`: sets a response header from the response body callback, after the
//!   headers went on (Envoy has dropped that header map: `BadArgument`); the body passes.
//! - `late-request-header`: sets a request header from the request body callback, after the
//!   headers went on; the filter answers 500 in the OpenAI error shape.
//!
//! With the configuration `{"sdk": true}` the same calls go through proxy-wasm's own trait methods,
//! which unwrap the status: the control that shows what the wrappers prevent (a VM abort).

use filter_core::config::ConfigError;
use filter_core::{ApiError, ErrorKind};
use filter_host::http;
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::reply::send_error;
use std::rc::Rc;

proxy_wasm::main! {{
    filter_host::init("host-probe");
    proxy_wasm::set_root_context(|_| Box::new(Root { config: None }));
}}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeConfig {
    /// Call the SDK's unwrapping methods instead of filter-host's.
    #[serde(default)]
    sdk: bool,
}

#[allow(clippy::unnecessary_wraps)]
fn compile(c: ProbeConfig) -> Result<ProbeConfig, ConfigError> {
    Ok(c)
}

struct Root {
    config: Option<Rc<ProbeConfig>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.config = filter_host::config::load(compile).map(Rc::new);
        self.config.is_some()
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            id: context_id,
            config: self.config.clone()?,
            case: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    LateResponseHeader,
    LateRequestHeader,
}

struct Http {
    id: u32,
    config: Rc<ProbeConfig>,
    case: Option<Case>,
}

impl Http {
    /// The refused call, through filter-host or (control) through the SDK.
    #[allow(clippy::disallowed_methods)]
    fn set_header(&self, map: MapType, name: &str, value: &str) -> Result<(), filter_host::HostError> {
        match (self.config.sdk, map) {
            (true, MapType::HttpRequestHeaders) => {
                self.set_http_request_header(name, Some(value));
                Ok(())
            }
            (true, _) => {
                self.set_http_response_header(name, Some(value));
                Ok(())
            }
            (false, MapType::HttpRequestHeaders) => http::set_request_header(self.id, name, Some(value)),
            (false, _) => http::set_response_header(self.id, name, Some(value)),
        }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        self.case = match http::request_header(self.id, "x-probe").as_deref() {
            Some("late-response-header") => Some(Case::LateResponseHeader),
            Some("late-request-header") => Some(Case::LateRequestHeader),
            _ => None,
        };
        Action::Continue
    }

    fn on_http_request_body(&mut self, _size: usize, end_of_stream: bool) -> Action {
        if self.case != Some(Case::LateRequestHeader) || !end_of_stream {
            return Action::Continue;
        }
        if self
            .set_header(MapType::HttpRequestHeaders, "x-probe-late", "1")
            .is_err()
        {
            let err = ApiError::new(
                ErrorKind::Internal,
                "host_error",
                "the gateway could not edit the request; it was not sent",
            );
            send_error(self.id, filter_core::Shape::OpenAi, &err, &[]);
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _size: usize, _end_of_stream: bool) -> Action {
        if self.case == Some(Case::LateResponseHeader) {
            // Once per response. A refused header edit only loses the header: the body goes on.
            self.case = None;
            let _ = self.set_header(MapType::HttpResponseHeaders, "x-probe-late", "1");
        }
        Action::Continue
    }
}
