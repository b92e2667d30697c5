//! A mock LLM provider speaking the OpenAI and Anthropic HTTP APIs on the wire as the real ones do:
//! `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/messages` (and
//! `/v1/messages/count_tokens`) and `/v1/responses` (and `POST /v1/responses/input_tokens`,
//! `POST /v1/responses/compact`, `GET /v1/responses/{id}`), JSON and SSE streaming (OpenAI chunks with
//! `stream_options.include_usage`; Anthropic `message_start` … `message_stop`; the Responses API's
//! typed events). Replies are derived from the request, so the same request always gets the same
//! bytes. `usage` carries real tiktoken counts.
//!
//! Test controls (request headers):
//! - `x-mock-status: 429` — answer with that status and the provider's error shape.
//! - `x-mock-latency-ms: 200` — wait before the response headers.
//! - `x-mock-chunks: 20` — number of content deltas in a stream (default: one per word).
//! - `x-mock-chunk-bytes: 100` — with `x-mock-chunks`, make each delta this many bytes of filler.
//! - `x-mock-chunk-delay-ms: 10` — pace of streamed events: event i goes out i × 10 ms after the first.
//! - `x-mock-reset-after: 3` — reset the connection after that many streamed events.
//! - `x-mock-echo: 1` — the reply text is the request body as received.
//! - `x-mock-cached-tokens: 50` — report that many prompt tokens as read from the provider cache.
//! - `x-mock-no-usage: 1` — OpenAI chat: leave `usage` out (as some OpenAI-compatible servers do).
//! - `x-mock-malformed-sse: 1` — after the first streamed event, send events no provider should:
//!   broken JSON, a wrong-typed `usage`, a line without a field name, invalid UTF-8, a 64 KiB line
//!   split across writes, CR line endings; then the rest of the stream as usual.
//! - `x-mock-tool-call: 1` (or a JSON object: the arguments) — on a request that defines tools,
//!   call the first one (OpenAI `tool_calls`, Anthropic `tool_use`; streamed in fragments).
//! - `x-mock-thinking: 1` — Anthropic: a `thinking` block, with its signature, before the answer.

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod anthropic;
mod openai;
mod reply;
mod responses;
mod tools;

/// Largest request body the mock accepts (the real APIs accept far more; tests need no more).
const MAX_BODY: usize = 64 << 20;

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// What the mock has seen; shared with the test that started it.
#[derive(Debug, Default)]
pub struct Journal {
    requests: Mutex<VecDeque<Recorded>>,
}

impl Journal {
    const KEEP: usize = 1024;

    fn push(&self, r: Recorded) {
        if let Ok(mut q) = self.requests.lock() {
            if q.len() == Self::KEEP {
                q.pop_front();
            }
            q.push_back(r);
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.requests.lock().ok().and_then(|q| q.back().cloned())
    }

    pub fn count(&self) -> usize {
        self.requests.lock().map(|q| q.len()).unwrap_or(0)
    }
}

/// Serves the mock on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, journal: Arc<Journal>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Streamed events go out as they are written, as a provider's do: without this, Nagle's
        // algorithm holds the second small write until the first is acknowledged, which with
        // delayed ACKs adds ~40 ms to the first streamed token.
        let _ = stream.set_nodelay(true);
        let journal = journal.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, journal.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A mock running on its own thread and runtime, for tests. Stops when dropped.
pub struct MockLlm {
    pub addr: SocketAddr,
    pub journal: Arc<Journal>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl MockLlm {
    pub fn start() -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let journal = Arc::new(Journal::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let j = journal.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("mock-llm".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        () = serve(listener, j) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self {
            addr,
            journal,
            _stop: stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The body type of every mock response: a fixed body, or events from a channel (streaming). An
/// `Err` item resets the connection mid-stream.
pub enum MockBody {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Result<Bytes, std::io::Error>>),
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Full(f) => Pin::new(f).poll_frame(cx).map_err(|never| match never {}),
            Self::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completions,
    Embeddings,
    Messages,
    CountTokens,
    Responses,
    ResponsesInputTokens,
    ResponsesCompact,
}

impl Api {
    const fn is_anthropic(self) -> bool {
        matches!(self, Self::Messages | Self::CountTokens)
    }
}

#[derive(Debug, Default)]
pub(super) struct Controls {
    status: Option<u16>,
    latency: Option<Duration>,
    chunks: Option<usize>,
    chunk_bytes: Option<usize>,
    chunk_delay: Option<Duration>,
    reset_after: Option<usize>,
    echo: bool,
    cached_tokens: u64,
    no_usage: bool,
    malformed_sse: bool,
    /// `x-mock-tool-call`: call the request's first tool (see `tools`).
    tool_call: Option<String>,
    /// `x-mock-thinking`: an Anthropic thinking block before the answer.
    thinking: bool,
}

impl Controls {
    fn from(req: &Recorded) -> Self {
        let num = |h: &str| req.header(h).and_then(|v| v.trim().parse::<u64>().ok());
        Self {
            status: num("x-mock-status").and_then(|s| u16::try_from(s).ok()),
            latency: num("x-mock-latency-ms").map(Duration::from_millis),
            chunks: num("x-mock-chunks").map(|n| n.clamp(1, 100_000) as usize),
            chunk_bytes: num("x-mock-chunk-bytes").map(|n| n.clamp(1, 1 << 20) as usize),
            chunk_delay: num("x-mock-chunk-delay-ms").map(Duration::from_millis),
            reset_after: num("x-mock-reset-after").map(|n| n as usize),
            echo: req.header("x-mock-echo").is_some_and(|v| v == "1" || v == "true"),
            cached_tokens: num("x-mock-cached-tokens").unwrap_or(0),
            no_usage: req
                .header("x-mock-no-usage")
                .is_some_and(|v| v == "1" || v == "true"),
            malformed_sse: req
                .header("x-mock-malformed-sse")
                .is_some_and(|v| v == "1" || v == "true"),
            tool_call: req.header("x-mock-tool-call").map(str::to_owned),
            thinking: req
                .header("x-mock-thinking")
                .is_some_and(|v| v == "1" || v == "true"),
        }
    }
}

async fn handle(req: Request<Incoming>, journal: Arc<Journal>) -> Result<Response<MockBody>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &openai_error("request too large", "invalid_request_error"),
            ));
        }
    };
    let rec = Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
    };
    journal.push(rec.clone());
    let ctl = Controls::from(&rec);
    if let Some(d) = ctl.latency {
        tokio::time::sleep(d).await;
    }

    let api = match (parts.method.as_str(), path.as_str()) {
        ("GET", "/healthz") => return Ok(text_response(StatusCode::OK, "ok")),
        ("POST", "/v1/chat/completions") => Api::Chat,
        ("POST", "/v1/completions") => Api::Completions,
        ("POST", "/v1/embeddings") => Api::Embeddings,
        ("POST", "/v1/messages") => Api::Messages,
        ("POST", "/v1/messages/count_tokens") => Api::CountTokens,
        ("POST", "/v1/responses") => Api::Responses,
        ("POST", "/v1/responses/input_tokens") => Api::ResponsesInputTokens,
        ("POST", "/v1/responses/compact") => Api::ResponsesCompact,
        ("GET", p)
            if p.strip_prefix("/v1/responses/")
                .is_some_and(|id| !id.contains('/')) =>
        {
            return Ok(responses::retrieve(&journal, &p["/v1/responses/".len()..]));
        }
        _ => {
            return Ok(json_response(
                StatusCode::NOT_FOUND,
                &openai_error(
                    &format!("Unknown request URL: {} {path}", parts.method),
                    "invalid_request_error",
                ),
            ));
        }
    };
    if let Some(status) = ctl.status {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        let msg = format!("mock error {status}");
        let body = if api.is_anthropic() {
            anthropic_error(&msg, kind)
        } else {
            openai_error(&msg, kind)
        };
        return Ok(json_response(code, &body));
    }
    let Ok(request) = serde_json::from_slice::<Value>(&rec.body) else {
        let msg = "We could not parse the JSON body of your request.";
        let body = if api.is_anthropic() {
            anthropic_error(msg, "invalid_request_error")
        } else {
            openai_error(msg, "invalid_request_error")
        };
        return Ok(json_response(StatusCode::BAD_REQUEST, &body));
    };
    Ok(match api {
        Api::Chat => openai::chat(&rec, &request, &ctl),
        Api::Completions => openai::completions(&rec, &request, &ctl),
        Api::Embeddings => openai::embeddings(&request),
        Api::Messages => anthropic::messages(&rec, &request, &ctl),
        Api::CountTokens => anthropic::count_tokens(&request),
        Api::Responses => responses::create(&rec, &request, &ctl),
        Api::ResponsesInputTokens => responses::input_tokens(&request),
        Api::ResponsesCompact => responses::compact(&rec, &request),
    })
}

pub(super) fn openai_error(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

pub(super) fn anthropic_error(message: &str, kind: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

pub(super) fn json_response(status: StatusCode, v: &Value) -> Response<MockBody> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(MockBody::Full(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

pub(super) fn text_response(status: StatusCode, text: &'static str) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::Full(Full::new(Bytes::from_static(text.as_bytes()))));
    *resp.status_mut() = status;
    resp
}

pub(super) fn sse_response(mut events: Vec<Bytes>, ctl: &Controls) -> Response<MockBody> {
    if ctl.malformed_sse {
        let at = events.len().min(1);
        events.splice(at..at, malformed_events());
    }
    let (tx, rx) = mpsc::channel(16);
    let delay = ctl.chunk_delay;
    let reset_after = ctl.reset_after;
    tokio::spawn(async move {
        // A fixed pace: event i goes out i delays after the first, however long sending took
        // (so two streams of the same reply keep the same schedule and can be compared).
        let start = tokio::time::Instant::now();
        for (i, e) in events.into_iter().enumerate() {
            if reset_after == Some(i) {
                let _ = tx.send(Err(std::io::Error::other("mock reset mid-stream"))).await;
                return;
            }
            if let Some(d) = delay.filter(|_| i > 0) {
                let at = u32::try_from(i).map_or(d, |i| d * i);
                tokio::time::sleep_until(start + at).await;
            }
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(MockBody::Stream(rx));
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// The events `x-mock-malformed-sse` inserts: each breaks the SSE or JSON grammar a different way.
fn malformed_events() -> Vec<Bytes> {
    let long = format!(
        "data: {{\"choices\": [{{\"delta\": {{\"content\": \"{}",
        "x".repeat(64 << 10)
    );
    let (a, b) = long.split_at(long.len() / 2);
    vec![
        Bytes::from_static(b"data: {\"id\": \"chatcmpl-broken\", \"choices\": [{\"delta\": {\"content\": \"cut\n\n"),
        Bytes::from_static(
            b"data: {\"choices\": \"not a list\", \"usage\": {\"prompt_tokens\": -5, \"completion_tokens\": \"many\"}}\n\n",
        ),
        Bytes::from_static(b"this line has no field name\n\n"),
        Bytes::from_static(b": a comment\nevent: ping\ndata: \xff\xfe\xfd\n\n"),
        Bytes::copy_from_slice(a.as_bytes()),
        Bytes::from(format!("{b}\"}}}}]}}\n\n")),
        Bytes::from_static(b"data: {\"choices\": []}\r\r"),
    ]
}
