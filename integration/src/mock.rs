//! A mock LLM provider speaking the OpenAI and Anthropic HTTP APIs on the wire as the real ones do:
//! `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/messages`, JSON and SSE
//! streaming (OpenAI chunks with `stream_options.include_usage`; Anthropic `message_start` …
//! `message_stop`). Replies are derived from the request, so the same request always gets the same
//! bytes. `usage` carries real tiktoken counts.
//!
//! Test controls (request headers):
//! - `x-mock-status: 429` — answer with that status and the provider's error shape.
//! - `x-mock-latency-ms: 200` — wait before the response headers.
//! - `x-mock-chunks: 20` — number of content deltas in a stream (default: one per word).
//! - `x-mock-chunk-bytes: 100` — with `x-mock-chunks`, make each delta this many bytes of filler.
//! - `x-mock-chunk-delay-ms: 10` — pause between streamed events.
//! - `x-mock-reset-after: 3` — reset the connection after that many streamed events.
//! - `x-mock-echo: 1` — the reply text is the request body as received.
//! - `x-mock-cached-tokens: 50` — report that many prompt tokens as read from the provider cache.

use crate::tokens;
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

/// Largest request body the mock accepts (the real APIs accept far more; tests need no more).
const MAX_BODY: usize = 64 << 20;

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
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
        self.requests.lock().map(|q| q.iter().cloned().collect()).unwrap_or_default()
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
        let Ok((stream, _)) = listener.accept().await else { continue };
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
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        std::thread::Builder::new().name("mock-llm".into()).spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else { return };
                tokio::select! {
                    () = serve(listener, j) => {}
                    _ = stopped => {}
                }
            });
        })?;
        Ok(Self { addr, journal, _stop: stop })
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
}

#[derive(Debug, Default)]
struct Controls {
    status: Option<u16>,
    latency: Option<Duration>,
    chunks: Option<usize>,
    chunk_bytes: Option<usize>,
    chunk_delay: Option<Duration>,
    reset_after: Option<usize>,
    echo: bool,
    cached_tokens: u64,
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
        }
    }
}

async fn handle(req: Request<Incoming>, journal: Arc<Journal>) -> Result<Response<MockBody>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(json_response(StatusCode::PAYLOAD_TOO_LARGE, &openai_error("request too large", "invalid_request_error"))),
    };
    let rec = Recorded { method: parts.method.to_string(), path: path.clone(), headers, body };
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
        _ => {
            return Ok(json_response(
                StatusCode::NOT_FOUND,
                &openai_error(&format!("Unknown request URL: {} {path}", parts.method), "invalid_request_error"),
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
        let body = if api == Api::Messages { anthropic_error(&msg, kind) } else { openai_error(&msg, kind) };
        return Ok(json_response(code, &body));
    }
    let Ok(request) = serde_json::from_slice::<Value>(&rec.body) else {
        let msg = "We could not parse the JSON body of your request.";
        let body =
            if api == Api::Messages { anthropic_error(msg, "invalid_request_error") } else { openai_error(msg, "invalid_request_error") };
        return Ok(json_response(StatusCode::BAD_REQUEST, &body));
    };
    Ok(match api {
        Api::Chat => chat(&rec, &request, &ctl),
        Api::Completions => completions(&rec, &request, &ctl),
        Api::Embeddings => embeddings(&request),
        Api::Messages => messages(&rec, &request, &ctl),
    })
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// What the mock "generates": derived from the prompt, cut to the completion budget.
struct Reply {
    text: String,
    /// Deltas for streaming; concatenated they equal `text`.
    pieces: Vec<String>,
    finish_length: bool,
    completion_tokens: u64,
}

fn reply(model: &str, prompt: &str, rec: &Recorded, ctl: &Controls, max_tokens: Option<u64>) -> Reply {
    let (text, pieces) = match (ctl.chunks, ctl.chunk_bytes) {
        (Some(n), Some(b)) => {
            let piece: String = "lorem ipsum dolor sit amet ".chars().cycle().take(b).collect();
            (piece.repeat(n), vec![piece; n])
        }
        _ => {
            let base = if ctl.echo {
                String::from_utf8_lossy(&rec.body).into_owned()
            } else {
                let first_line: String = prompt.lines().next().unwrap_or("").chars().take(200).collect();
                format!("Mock reply from {model}: {first_line}")
            };
            let pieces = split_pieces(&base, ctl.chunks);
            (base, pieces)
        }
    };
    let (text, finish_length, pieces) = match max_tokens {
        Some(max) => match tokens::truncate(model, &text, max) {
            (cut, true) => {
                let p = split_pieces(&cut, ctl.chunks);
                (cut, true, p)
            }
            (t, false) => (t, false, pieces),
        },
        None => (text, false, pieces),
    };
    let completion_tokens = tokens::count(model, &text);
    Reply { text, pieces, finish_length, completion_tokens }
}

/// Splits into `n` pieces at char boundaries, or word by word (a leading space stays with its word,
/// as tokens do) when `n` is not given.
fn split_pieces(text: &str, n: Option<usize>) -> Vec<String> {
    if text.is_empty() {
        return vec![String::new()];
    }
    match n {
        Some(n) => {
            let chars: Vec<char> = text.chars().collect();
            let per = chars.len().div_ceil(n.max(1)).max(1);
            chars.chunks(per).map(|c| c.iter().collect()).collect()
        }
        None => {
            let mut out = Vec::new();
            let mut start = 0;
            for (i, c) in text.char_indices().skip(1) {
                if c == ' ' {
                    out.push(text.get(start..i).unwrap_or_default().to_owned());
                    start = i;
                }
            }
            out.push(text.get(start..).unwrap_or_default().to_owned());
            out
        }
    }
}

fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

fn chat(rec: &Recorded, req: &Value, ctl: &Controls) -> Response<MockBody> {
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return json_response(StatusCode::BAD_REQUEST, &openai_error("you must provide a model parameter", "invalid_request_error"));
    };
    let Some(messages) = req.get("messages").and_then(Value::as_array) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &openai_error("Missing required parameter: 'messages'.", "invalid_request_error"),
        );
    };
    let max = req.get("max_completion_tokens").or_else(|| req.get("max_tokens")).and_then(Value::as_u64);
    let r = reply(model, &last_user_text(messages), rec, ctl, max);
    let prompt_tokens = tokens::chat_prompt_tokens(model, messages);
    let h = fnv(&rec.body);
    let id = format!("chatcmpl-mock{h:016x}");
    let created = 1_700_000_000 + h % 100_000_000;
    let fingerprint = "fp_mock0001";
    let finish = if r.finish_length { "length" } else { "stop" };
    let usage = openai_usage(prompt_tokens, r.completion_tokens, ctl.cached_tokens);
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text, "refusal": null, "annotations": []},
                             "logprobs": null, "finish_reason": finish}],
                "usage": usage, "service_tier": "default", "system_fingerprint": fingerprint
            }),
        );
    }
    let include_usage = req.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "service_tier": "default", "system_fingerprint": fingerprint, "choices": choices});
        if include_usage {
            c["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        openai_event(&c)
    };
    let mut events = vec![chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]),
        None,
    )];
    for p in &r.pieces {
        events.push(chunk(json!([{"index": 0, "delta": {"content": p}, "logprobs": null, "finish_reason": null}]), None));
    }
    events.push(chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}]), None));
    if include_usage {
        events.push(chunk(json!([]), Some(&usage)));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(events, ctl)
}

fn completions(rec: &Recorded, req: &Value, ctl: &Controls) -> Response<MockBody> {
    let model = req.get("model").and_then(Value::as_str).unwrap_or("gpt-3.5-turbo-instruct");
    let prompt = match req.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    };
    // The legacy endpoint defaults max_tokens to 16.
    let max = req.get("max_tokens").and_then(Value::as_u64).unwrap_or(16);
    let r = reply(model, &prompt, rec, ctl, Some(max));
    let prompt_tokens = tokens::count(model, &prompt);
    let h = fnv(&rec.body);
    let id = format!("cmpl-mock{h:016x}");
    let created = 1_700_000_000 + h % 100_000_000;
    let finish = if r.finish_length { "length" } else { "stop" };
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": r.completion_tokens,
                       "total_tokens": prompt_tokens + r.completion_tokens});
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        return json_response(
            StatusCode::OK,
            &json!({"id": id, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"text": r.text, "index": 0, "logprobs": null, "finish_reason": finish}],
                    "usage": usage, "system_fingerprint": null}),
        );
    }
    let include_usage = req.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    let chunk = |text: &str, finish: Option<&str>, usage: Option<&Value>, choices_empty: bool| {
        let choices = if choices_empty {
            json!([])
        } else {
            json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}])
        };
        let mut c = json!({"id": id, "object": "text_completion", "created": created, "choices": choices,
                           "model": model, "system_fingerprint": null});
        if include_usage {
            c["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        openai_event(&c)
    };
    let mut events: Vec<Bytes> = r.pieces.iter().map(|p| chunk(p, None, None, false)).collect();
    events.push(chunk("", Some(finish), None, false));
    if include_usage {
        events.push(chunk("", None, Some(&usage), true));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(events, ctl)
}

fn embeddings(req: &Value) -> Response<MockBody> {
    let model = req.get("model").and_then(Value::as_str).unwrap_or("text-embedding-3-small");
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &openai_error("'input' must be a string or an array of strings", "invalid_request_error"),
            );
        }
    };
    let default_dim = if model.contains("large") { 3072 } else { 1536 };
    let dim = req.get("dimensions").and_then(Value::as_u64).unwrap_or(default_dim).clamp(1, 8192) as usize;
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut tokens_used = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens_used += tokens::count(model, text);
            let v = pseudo_embedding(text, dim);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens_used, "total_tokens": tokens_used}}),
    )
}

fn messages(rec: &Recorded, req: &Value, ctl: &Controls) -> Response<MockBody> {
    let bad = |msg: &str| json_response(StatusCode::BAD_REQUEST, &anthropic_error(msg, "invalid_request_error"));
    let Some(model) = req.get("model").and_then(Value::as_str) else { return bad("model: Field required") };
    let Some(max_tokens) = req.get("max_tokens").and_then(Value::as_u64) else {
        return bad("max_tokens: Field required");
    };
    let Some(msgs) = req.get("messages").and_then(Value::as_array) else { return bad("messages: Field required") };
    let r = reply(model, &last_user_text(msgs), rec, ctl, Some(max_tokens));
    // Anthropic's tokenizer is not public; the mock counts with o200k_base, which keeps the numbers
    // real (same text, same count) without pretending to be Anthropic's exact figures.
    let mut prompt_text = String::new();
    if let Some(system) = req.get("system") {
        collect_text(system, &mut prompt_text);
    }
    for m in msgs {
        if let Some(c) = m.get("content") {
            collect_text(c, &mut prompt_text);
        }
    }
    let all_input = tokens::count(model, &prompt_text) + 4 * msgs.len() as u64;
    let cached = ctl.cached_tokens.min(all_input);
    let input_tokens = all_input - cached;
    let h = fnv(&rec.body);
    let id = format!("msg_mock{h:016x}");
    let stop = if r.finish_length { "max_tokens" } else { "end_turn" };
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        return json_response(
            StatusCode::OK,
            &json!({"id": id, "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": r.text}], "stop_reason": stop, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": cached, "output_tokens": r.completion_tokens,
                              "service_tier": "standard"}}),
        );
    }
    let ev = |name: &str, data: &Value| {
        Bytes::from(format!("event: {name}\ndata: {}\n\n", serde_json::to_string(data).unwrap_or_default()))
    };
    let mut events = vec![
        ev(
            "message_start",
            &json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
                    "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": cached, "output_tokens": 1, "service_tier": "standard"}}}),
        ),
        ev("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev("ping", &json!({"type": "ping"})),
    ];
    for p in &r.pieces {
        events.push(ev(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    events.push(ev("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    events.push(ev(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": r.completion_tokens}}),
    ));
    events.push(ev("message_stop", &json!({"type": "message_stop"})));
    sse_response(events, ctl)
}

fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(blocks) => {
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    out.push_str(t);
                    out.push('\n');
                } else if let Some(c) = b.get("content") {
                    collect_text(c, out);
                }
            }
        }
        _ => {}
    }
}

fn openai_usage(prompt: u64, completion: u64, cached: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached.min(prompt), "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                         "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

fn openai_event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {}\n\n", serde_json::to_string(v).unwrap_or_default()))
}

fn openai_error(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

fn anthropic_error(message: &str, kind: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn json_response(status: StatusCode, v: &Value) -> Response<MockBody> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(MockBody::Full(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    resp
}

fn text_response(status: StatusCode, text: &'static str) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::Full(Full::new(Bytes::from_static(text.as_bytes()))));
    *resp.status_mut() = status;
    resp
}

fn sse_response(events: Vec<Bytes>, ctl: &Controls) -> Response<MockBody> {
    let (tx, rx) = mpsc::channel(16);
    let delay = ctl.chunk_delay;
    let reset_after = ctl.reset_after;
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if reset_after == Some(i) {
                let _ = tx.send(Err(std::io::Error::other("mock reset mid-stream"))).await;
                return;
            }
            if i > 0 {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
            }
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(MockBody::Stream(rx));
    let h = resp.headers_mut();
    h.insert("content-type", hyper::header::HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert("cache-control", hyper::header::HeaderValue::from_static("no-cache"));
    resp
}

/// Unit vector derived from the text (splitmix64 over its hash): same text, same vector.
fn pseudo_embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut state = fnv(text.as_bytes());
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = c.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")];
        for (input, want) in cases {
            assert_eq!(base64_encode(input.as_bytes()), want);
        }
    }

    #[test]
    fn pieces_concatenate_to_the_text() {
        for n in [None, Some(1), Some(3), Some(50)] {
            let t = "héllo wörld, this is a test";
            assert_eq!(split_pieces(t, n).concat(), t);
        }
        assert_eq!(split_pieces("a b c", None), ["a", " b", " c"]);
    }

    #[test]
    fn embeddings_are_unit_length_and_deterministic() {
        let a = pseudo_embedding("x", 64);
        assert_eq!(a, pseudo_embedding("x", 64));
        assert_ne!(a, pseudo_embedding("y", 64));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
