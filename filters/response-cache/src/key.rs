//! Whether a request may be cached, and its key: a SHA-256 of everything that determines the
//! answer — scope, API, template, and the body in a canonical form (object keys sorted, integral
//! numbers written one way, message texts trimmed) without the fields that only shape the
//! transport (`stream`, `stream_options`, `user`, `metadata`, `store`).

use crate::config::Config;
use filter_core::Provider;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Why a request is not cached (the `reason` of the bypass metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// An API the cache does not serve (embeddings, completions, files …).
    Api,
    /// The body is not the API's JSON.
    InvalidBody,
    /// `temperature` > 0 or absent, and `cache_sampled` is off.
    Sampled,
    /// More than one choice (`n` > 1).
    Choices,
    /// The scope's identity header is missing.
    NoScope,
    /// `cache-control: no-cache` / `no-store` from the client.
    ClientAsked,
    /// `logprobs` asked for: not replayed from a cache.
    Logprobs,
    /// The body is larger than `max_body_bytes`.
    TooLarge,
    /// A Responses API request continuing a stored response (`previous_response_id`), and
    /// `cache_continued_responses` is off.
    Continued,
}

impl Bypass {
    pub const ALL: [Self; 9] = [
        Self::Api,
        Self::InvalidBody,
        Self::Sampled,
        Self::Choices,
        Self::NoScope,
        Self::ClientAsked,
        Self::Logprobs,
        Self::TooLarge,
        Self::Continued,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::InvalidBody => "invalid_body",
            Self::Sampled => "sampled",
            Self::Choices => "choices",
            Self::NoScope => "no_scope",
            Self::ClientAsked => "client",
            Self::Logprobs => "logprobs",
            Self::TooLarge => "too_large",
            Self::Continued => "continued",
        }
    }
}

/// A cacheable request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    /// 32 hex digits.
    pub exact: String,
    /// The request's model and a hash of everything but the last user message: a semantic match
    /// is only looked for among entries with the same one (sent as the sidecar's `model`).
    pub namespace: String,
    /// The last user message, when the request may be matched by meaning.
    pub semantic_text: Option<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`: a replayed stream ends with a usage chunk.
    pub include_usage: bool,
}

/// Top-level fields that do not change the answer.
const TRANSPORT_FIELDS: [&str; 7] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "prompt_cache_key",
    "safety_identifier",
];

/// What besides the body decides the answer: the cache's scope, the scope semantic matches are
/// confined to, and the request's headers that select a route, an upstream or provider features.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context<'a> {
    pub scope: &'a str,
    /// `None`: no semantic match for this request (its semantic scope is unknown).
    pub semantic_scope: Option<&'a str>,
    /// `x-tollgate-template`, `x-tollgate-route`, `:path`, `anthropic-version`, `anthropic-beta`,
    /// in this order (empty when absent).
    pub headers: [&'a str; 5],
}

pub fn build(provider: Provider, body: &[u8], ctx: &Context<'_>, cfg: &Config) -> Result<Keyed, Bypass> {
    if !cacheable(provider) {
        return Err(Bypass::Api);
    }
    let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(body) else {
        return Err(Bypass::InvalidBody);
    };
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(Bypass::InvalidBody),
    };
    let responses = provider == Provider::OpenAiResponses;
    if responses {
        if !matches!(req.get("input"), Some(Value::String(_) | Value::Array(_))) {
            return Err(Bypass::InvalidBody);
        }
        if req.get("previous_response_id").is_some_and(|v| !v.is_null()) && !cfg.cache_continued_responses {
            return Err(Bypass::Continued);
        }
        // A background response answers with a handle to poll, not the answer.
        if req.get("background").and_then(Value::as_bool) == Some(true) {
            return Err(Bypass::Api);
        }
    } else if !req.get("messages").is_some_and(Value::is_array) {
        return Err(Bypass::InvalidBody);
    }
    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(Bypass::Choices);
    }
    let logprobs = req.get("logprobs").is_some_and(|l| l.as_bool() == Some(true))
        || req.get("top_logprobs").is_some_and(|t| !t.is_null())
        || req.get("include").and_then(Value::as_array).is_some_and(|i| {
            i.iter()
                .any(|x| x.as_str().is_some_and(|s| s.ends_with("logprobs")))
        });
    if logprobs {
        return Err(Bypass::Logprobs);
    }
    // Both APIs default to temperature 1: an absent temperature is sampled output.
    let sampled = req
        .get("temperature")
        .and_then(Value::as_f64)
        .is_none_or(|t| t > 0.0);
    if sampled && !cfg.cache_sampled {
        return Err(Bypass::Sampled);
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // A Responses stream always ends with its usage.
    let include_usage = !responses
        && req
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    for f in TRANSPORT_FIELDS {
        req.remove(f);
    }
    trim_texts(&mut req);

    let mut head = Sha256::new();
    head.update(b"tollgate-response-cache-v1\0");
    head.update(provider_name(provider).as_bytes());
    head.update(b"\0");
    head.update(ctx.scope.as_bytes());
    head.update(b"\0");
    for h in ctx.headers {
        head.update(h.as_bytes());
        head.update(b"\0");
    }
    let mut canonical_bytes = Vec::with_capacity(body.len());
    canonical_map(&req, &mut canonical_bytes);
    let mut h = head.clone();
    h.update(&canonical_bytes);
    let exact = hex(&h.finalize()[..16]);

    let semantic_text = match ctx.semantic_scope {
        Some(_) if cfg.semantic.enabled => take_last_user_text(&mut req, responses, cfg.semantic.multi_turn)
            .filter(|t| !t.is_empty() && t.len() <= cfg.semantic.max_text_bytes),
        _ => None,
    };
    // The sidecar's `model` for this request: the model, and a hash of the context — the same
    // request with the last user message blanked out, and the semantic scope — so a paraphrase
    // only matches within the same conversation, parameters and (by default) subject.
    let namespace = if semantic_text.is_some() || cfg.backend == crate::config::Backend::Sidecar {
        canonical_bytes.clear();
        canonical_map(&req, &mut canonical_bytes);
        let mut h = head;
        h.update(ctx.semantic_scope.unwrap_or_default().as_bytes());
        h.update(b"\0");
        h.update(&canonical_bytes);
        format!("{model}#{}", hex(&h.finalize()[..8]))
    } else {
        String::new()
    };
    Ok(Keyed {
        exact,
        namespace,
        semantic_text,
        stream,
        include_usage,
    })
}

/// The APIs whose answers are stored and replayed.
pub fn cacheable(p: Provider) -> bool {
    matches!(
        p,
        Provider::OpenAiChat | Provider::Anthropic | Provider::OpenAiResponses
    )
}

fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::OpenAiChat => "openai-chat",
        Provider::OpenAiCompletions => "openai-completions",
        Provider::OpenAiEmbeddings => "openai-embeddings",
        Provider::Anthropic => "anthropic-messages",
        Provider::AnthropicCountTokens => "anthropic-count-tokens",
        Provider::OpenAiResponses => "openai-responses",
        Provider::OpenAiResponsesInputTokens => "openai-responses-input-tokens",
        Provider::OpenAiResponsesCompact => "openai-responses-compact",
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Trims the texts of messages (string contents and text parts), of Anthropic's `system` and of
/// the Responses API's `instructions` and `input`: surrounding whitespace does not make another
/// question.
fn trim_texts(req: &mut Map<String, Value>) {
    fn trim(v: &mut Value) {
        match v {
            Value::String(s) => {
                let t = s.trim();
                if t.len() != s.len() {
                    *s = t.to_owned();
                }
            }
            Value::Array(parts) => {
                for p in parts {
                    if let Some(t) = p.get_mut("text") {
                        trim(t);
                    }
                }
            }
            _ => {}
        }
    }
    for f in ["system", "instructions"] {
        if let Some(s) = req.get_mut(f) {
            trim(s);
        }
    }
    if let Some(Value::String(s)) = req.get_mut("input") {
        let t = s.trim();
        if t.len() != s.len() {
            *s = t.to_owned();
        }
    }
    for list in ["messages", "input"] {
        if let Some(Value::Array(msgs)) = req.get_mut(list) {
            for m in msgs {
                if let Some(c) = m.get_mut("content") {
                    trim(c);
                }
            }
        }
    }
}

/// Removes and returns the text of the last message when it is the user's, the only non-system
/// message (unless `multi_turn`), and text only. In the Responses API the messages are `input`'s
/// items (any item that is not a system or developer message is a turn), or `input` is the one
/// user message.
fn take_last_user_text(req: &mut Map<String, Value>, responses: bool, multi_turn: bool) -> Option<String> {
    let list = if responses { "input" } else { "messages" };
    if let Some(Value::String(s)) = req.get_mut(list) {
        return Some(std::mem::take(s));
    }
    let Some(Value::Array(msgs)) = req.get_mut(list) else {
        return None;
    };
    let turns = msgs
        .iter()
        .filter(|m| {
            !matches!(
                m.get("role").and_then(Value::as_str),
                Some("system" | "developer")
            )
        })
        .count();
    if turns == 0 || (turns > 1 && !multi_turn) {
        return None;
    }
    let last = msgs.last_mut()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let content = last.get_mut("content")?;
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts.iter() {
                if !matches!(p.get("type").and_then(Value::as_str), Some("text" | "input_text")) {
                    return None;
                }
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(p.get("text").and_then(Value::as_str)?);
            }
            out
        }
        _ => return None,
    };
    *content = Value::String(String::new());
    Some(text)
}

/// JSON with object keys sorted at every level and integral numbers without a fraction, so two
/// bodies that mean the same hash the same.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => canonical_map(m, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                out.extend_from_slice(format!("{}", f as i64).as_bytes());
            }
            _ => write_json(v, out),
        },
        _ => write_json(v, out),
    }
}

fn canonical_map(m: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, x)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        canonical(x, out);
    }
    out.push(b'}');
}

fn write_json(v: &Value, out: &mut Vec<u8>) {
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

#[cfg(test)]
mod tests;
