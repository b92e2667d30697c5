//! Test fixture, not a product filter: `POST /v1/probe/embed` and `POST /v1/probe/classify` (body = the
//! text) are answered with what the inference sidecar returns through `filter_host::sidecar`, so the
//! integration tests exercise `dispatch_grpc_call` and reply decoding inside a real Envoy. Every
//! other request passes through untouched.

use filter_core::config::{ConfigError, SidecarConfig};
use filter_core::{ApiError, ErrorKind};
use filter_host::body::{self, Body};
use filter_host::log;
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::reply::{send_error, send_json};
use filter_host::sidecar::{Sidecar, SidecarError, reply, v1};
use std::rc::Rc;

proxy_wasm::main! {{
    filter_host::init("sidecar-probe");
    proxy_wasm::set_root_context(|_| Box::new(Root { probe: None }));
}}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeConfig {
    #[serde(default)]
    sidecar: SidecarConfig,
    label_set: String,
}

struct Probe {
    sidecar: Sidecar,
    label_set: String,
}

fn compile(c: ProbeConfig) -> Result<Probe, ConfigError> {
    c.sidecar.validate("sidecar")?;
    if c.label_set.is_empty() {
        return Err(ConfigError::field("label_set", "must not be empty"));
    }
    Ok(Probe {
        sidecar: Sidecar::new(c.sidecar),
        label_set: c.label_set,
    })
}

struct Root {
    probe: Option<Rc<Probe>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.probe = filter_host::config::load(compile).map(Rc::new);
        self.probe.is_some()
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let probe = self.probe.clone()?;
        Some(Box::new(Http {
            id: context_id,
            probe,
            op: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Clone, Copy)]
enum Op {
    Embed,
    Classify,
}

struct Http {
    id: u32,
    probe: Rc<Probe>,
    op: Option<Op>,
}

impl Http {
    fn fail(&self, e: &SidecarError) {
        let err = if e.is_invalid_argument() {
            ApiError::new(ErrorKind::InvalidRequest, "sidecar_rejected_input", e.to_string())
        } else {
            ApiError::new(ErrorKind::Unavailable, "sidecar_unavailable", e.to_string())
        };
        send_error(self.id, filter_core::Shape::OpenAi, &err, &[]);
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, response_size: usize) {
        let out = match self.op {
            Some(Op::Embed) => reply::<v1::EmbedResponse>(status_code, response_size).map(|r| {
                let e = r.embeddings.first();
                serde_json::json!({
                    "model": r.model,
                    "dimension": r.dimension,
                    "tokens": e.map(|e| e.tokens),
                    "truncated": e.map(|e| e.truncated),
                    "values": e.map(|e| e.values.clone()),
                })
            }),
            Some(Op::Classify) => reply::<v1::ClassifyResponse>(status_code, response_size).map(|r| {
                let scores: Vec<_> = r
                    .scores
                    .iter()
                    .map(|s| serde_json::json!({"label": s.label, "score": s.score}))
                    .collect();
                serde_json::json!({"model": r.model, "scores": scores, "truncated": r.truncated})
            }),
            None => return,
        };
        match out {
            Ok(v) => send_json(self.id, 200, v.to_string().as_bytes()),
            Err(e) => {
                log!(Warn, Some(self.id), "{e}");
                self.fail(&e);
            }
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        self.op = match filter_host::http::request_header(self.id, ":path").as_deref() {
            Some("/v1/probe/embed") => Some(Op::Embed),
            Some("/v1/probe/classify") => Some(Op::Classify),
            _ => None,
        };
        // As in the product filters: the headers go on (pausing them would also stop the body
        // callbacks), and the body is held until the filter has answered.
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(op) = self.op else {
            return Action::Continue;
        };
        let text = match body::collect(BufferType::HttpRequestBody, body_size, end_of_stream, 1 << 20) {
            Body::Wait(a) => return a,
            Body::TooLarge(e) => {
                send_error(self.id, filter_core::Shape::OpenAi, &e, &[]);
                return Action::Pause;
            }
            Body::Complete(b) => String::from_utf8_lossy(&b).into_owned(),
        };
        let started = match op {
            Op::Embed => self.probe.sidecar.embed(vec![text]),
            Op::Classify => self.probe.sidecar.classify(&self.probe.label_set, text),
        };
        if let Err(e) = started {
            log!(Warn, Some(self.id), "{e}");
            self.fail(&e);
        }
        Action::Pause
    }
}
