//! What is stored and how it is served. An entry holds one complete, text-only response as the
//! provider's non-streaming JSON: a JSON response as received, a streamed one as the same JSON
//! rebuilt from its events. A hit is served as the client asked: that JSON, or a well-formed
//! stream in the provider's SSE format (OpenAI chunks and `[DONE]`; Anthropic's event sequence;
//! the Responses API's typed events, see the `responses` module).

use filter_core::Provider;
use filter_core::sse::{DEFAULT_MAX_EVENT_BYTES, Event, SseParser};
use serde_json::{Map, Value, json};

const MAGIC: &[u8; 4] = b"TGC2";

/// A stored response with the key it answers and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// Unix seconds.
    pub created: u64,
    pub ttl: u32,
    /// The prompt a semantic match compares with (empty when the entry is exact only).
    pub prompt: String,
    pub body: Vec<u8>,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let key = self.key.as_bytes();
        let prompt = self.prompt.as_bytes();
        let mut out = Vec::with_capacity(22 + key.len() + prompt.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.ttl.to_le_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(prompt.len() as u32).to_le_bytes());
        out.extend_from_slice(prompt);
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for anything that is not an entry (an empty slot, another version's format).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let created = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let ttl = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?);
        let key_len = usize::from(u16::from_le_bytes(rest.get(12..14)?.try_into().ok()?));
        let key = std::str::from_utf8(rest.get(14..14 + key_len)?).ok()?.to_owned();
        let rest = rest.get(14 + key_len..)?;
        let prompt_len = usize::try_from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
        let prompt = std::str::from_utf8(rest.get(4..4 + prompt_len)?).ok()?.to_owned();
        let body = rest.get(4 + prompt_len..)?.to_vec();
        Some(Self {
            key,
            created,
            ttl,
            prompt,
            body,
        })
    }

    /// Fresh at `now` for the shorter of its own TTL and `max_ttl` (a lowered `ttl_s` applies
    /// to entries stored before).
    pub fn is_fresh(&self, now: u64, max_ttl: u32) -> bool {
        now < self.created.saturating_add(u64::from(self.ttl.min(max_ttl)))
    }

    pub fn age(&self, now: u64) -> u64 {
        now.saturating_sub(self.created)
    }
}

/// Checks that a JSON response can be stored and replayed: the provider's success shape, one
/// choice, text only (tool calls and refusals are passed, not stored).
pub fn storable(provider: Provider, body: &[u8]) -> Result<(), &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    match provider {
        Provider::OpenAiChat => {
            let choices = v.get("choices").and_then(Value::as_array).ok_or("no choices")?;
            let [choice] = choices.as_slice() else {
                return Err("not exactly one choice");
            };
            let msg = choice.get("message").ok_or("no message")?;
            if !msg.get("content").is_some_and(Value::is_string) {
                return Err("no text content");
            }
            if !choice.get("finish_reason").is_some_and(Value::is_string) {
                return Err("no finish_reason");
            }
            let has = |f: &str| {
                msg.get(f)
                    .is_some_and(|x| !x.is_null() && x.as_array().is_none_or(|a| !a.is_empty()))
            };
            if has("tool_calls") || has("function_call") || has("refusal") {
                return Err("tool calls or a refusal");
            }
            Ok(())
        }
        Provider::Anthropic => {
            let content = v.get("content").and_then(Value::as_array).ok_or("no content")?;
            if v.get("type").and_then(Value::as_str) != Some("message") || content.is_empty() {
                return Err("not a message");
            }
            if content
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) != Some("text"))
            {
                return Err("not text only");
            }
            Ok(())
        }
        Provider::OpenAiResponses => responses::storable(&v),
        _ => Err("API not cached"),
    }
}

/// Replays a stored JSON response as the provider's stream. `include_usage`: OpenAI's final
/// usage chunk (the client asked for it with `stream_options`).
pub fn to_sse(provider: Provider, body: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut out = Vec::with_capacity(body.len() + 512);
    let mut push = |event: Option<&str>, data: &Value| out.extend(Event::encode(event, &data.to_string()));
    match provider {
        Provider::OpenAiChat => {
            let choice = v.get("choices")?.get(0)?;
            let text = choice.get("message")?.get("content")?.as_str()?;
            let chunk = |choices: Value| {
                let mut c = Map::new();
                for f in ["id", "created", "model", "system_fingerprint"] {
                    if let Some(x) = v.get(f) {
                        c.insert(f.to_owned(), x.clone());
                    }
                }
                c.insert("object".to_owned(), json!("chat.completion.chunk"));
                c.insert("choices".to_owned(), choices);
                Value::Object(c)
            };
            push(
                None,
                &chunk(
                    json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
                ),
            );
            if !text.is_empty() {
                push(
                    None,
                    &chunk(json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}])),
                );
            }
            let finish = choice.get("finish_reason").cloned().unwrap_or(json!("stop"));
            push(
                None,
                &chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}])),
            );
            if include_usage && let Some(u) = v.get("usage") {
                let mut c = chunk(json!([]));
                if let Some(o) = c.as_object_mut() {
                    o.insert("usage".to_owned(), u.clone());
                }
                push(None, &c);
            }
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        Provider::Anthropic => {
            let usage = v.get("usage").cloned().unwrap_or(json!({}));
            let mut start_usage = usage.clone();
            if let Some(o) = start_usage.as_object_mut() {
                o.insert("output_tokens".to_owned(), json!(1));
            }
            push(
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                "id": v.get("id"), "type": "message", "role": "assistant", "model": v.get("model"),
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
            );
            for (i, block) in v.get("content")?.as_array()?.iter().enumerate() {
                let text = block.get("text")?.as_str()?;
                push(
                    Some("content_block_start"),
                    &json!({"type": "content_block_start", "index": i,
                    "content_block": {"type": "text", "text": ""}}),
                );
                push(
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": i,
                    "delta": {"type": "text_delta", "text": text}}),
                );
                push(
                    Some("content_block_stop"),
                    &json!({"type": "content_block_stop", "index": i}),
                );
            }
            push(
                Some("message_delta"),
                &json!({"type": "message_delta",
                "delta": {"stop_reason": v.get("stop_reason"), "stop_sequence": v.get("stop_sequence")},
                "usage": {"output_tokens": usage.get("output_tokens").cloned().unwrap_or(json!(0))}}),
            );
            push(Some("message_stop"), &json!({"type": "message_stop"}));
        }
        Provider::OpenAiResponses => responses::to_sse(&v, &mut out)?,
        _ => return None,
    }
    Some(out)
}

/// Rebuilds a streamed response, event by event as it passes, into the provider's JSON. Stops
/// recording (and the response is not stored) at anything it cannot replay faithfully: tool
/// calls, refusals, thinking, several choices, errors, more than `max_bytes` of text.
#[derive(Debug)]
pub struct Recorder {
    provider: Provider,
    parser: SseParser,
    events: Vec<Event>,
    max_bytes: usize,
    head: Map<String, Value>,
    text: Vec<String>,
    text_bytes: usize,
    finish: Option<Value>,
    stop_sequence: Option<Value>,
    usage: Option<Value>,
    /// The Responses API's whole response, from its terminal event.
    response: Option<Value>,
    done: bool,
    failed: Option<&'static str>,
}

impl Recorder {
    pub fn new(provider: Provider, max_bytes: usize) -> Self {
        Self {
            provider,
            parser: SseParser::new(DEFAULT_MAX_EVENT_BYTES.min(max_bytes.max(4096) * 2)),
            events: Vec::new(),
            max_bytes,
            head: Map::new(),
            text: Vec::new(),
            text_bytes: 0,
            finish: None,
            stop_sequence: None,
            usage: None,
            response: None,
            done: false,
            failed: None,
        }
    }

    pub fn failed(&self) -> Option<&'static str> {
        self.failed
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        if self.parser.feed(chunk, &mut events).is_err() {
            self.failed = Some("an event is too large");
        }
        for e in events.drain(..) {
            self.event(&e);
            if self.failed.is_some() {
                break;
            }
        }
        self.events = events;
        if self.text_bytes > self.max_bytes {
            self.failed = Some("larger than max_entry_bytes");
        }
    }

    fn fail(&mut self, why: &'static str) {
        self.failed.get_or_insert(why);
    }

    fn event(&mut self, e: &Event) {
        let Some(data) = e.data.as_deref() else { return };
        if e.is_done() {
            self.done = self.finish.is_some();
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return self.fail("an event is not JSON");
        };
        match self.provider {
            Provider::OpenAiChat => self.openai(&v),
            Provider::Anthropic => self.anthropic(&v),
            Provider::OpenAiResponses => match responses::record(&v) {
                responses::Recorded::Completed(r) => {
                    self.text_bytes += data.len();
                    self.response = Some(r);
                    self.done = true;
                }
                responses::Recorded::Failed(why) => self.fail(why),
                responses::Recorded::Other => {}
            },
            _ => self.fail("API not cached"),
        }
    }

    fn openai(&mut self, v: &Value) {
        // Each field from the first chunk that has it (Azure's first chunk has empty ones).
        for f in ["id", "created", "model", "system_fingerprint"] {
            let given = v.get(f).filter(|x| !x.is_null() && x.as_str() != Some(""));
            if let (Some(x), false) = (given, self.head.contains_key(f)) {
                self.head.insert(f.to_owned(), x.clone());
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return self.fail("a chunk without choices");
        };
        for c in choices {
            if c.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                return self.fail("several choices");
            }
            if let Some(d) = c.get("delta") {
                let has = |f: &str| d.get(f).is_some_and(|x| !x.is_null());
                if has("tool_calls") || has("function_call") || has("refusal") {
                    return self.fail("tool calls or a refusal");
                }
                if let Some(t) = d.get("content").and_then(Value::as_str) {
                    self.text_bytes += t.len();
                    self.text.push(t.to_owned());
                }
            }
            if let Some(f) = c.get("finish_reason").filter(|f| !f.is_null()) {
                self.finish = Some(f.clone());
            }
        }
    }

    fn anthropic(&mut self, v: &Value) {
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(m) = v.get("message") {
                    for f in ["id", "model"] {
                        if let Some(x) = m.get(f) {
                            self.head.insert(f.to_owned(), x.clone());
                        }
                    }
                    self.usage = m.get("usage").cloned();
                }
            }
            Some("content_block_start") => {
                let text = v.pointer("/content_block/type").and_then(Value::as_str) == Some("text");
                if !text {
                    return self.fail("not text only");
                }
                self.text.push(String::new());
            }
            Some("content_block_delta") => match v.pointer("/delta/type").and_then(Value::as_str) {
                Some("text_delta") => {
                    let t = v
                        .pointer("/delta/text")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    self.text_bytes += t.len();
                    match self.text.last_mut() {
                        Some(last) => last.push_str(t),
                        None => self.fail("a delta outside a block"),
                    }
                }
                _ => self.fail("not text only"),
            },
            Some("message_delta") => {
                self.finish = v.pointer("/delta/stop_reason").cloned();
                self.stop_sequence = v.pointer("/delta/stop_sequence").cloned();
                if let (Some(out), Some(Value::Object(u))) =
                    (v.pointer("/usage/output_tokens"), self.usage.as_mut())
                {
                    u.insert("output_tokens".to_owned(), out.clone());
                }
            }
            Some("message_stop") => self.done = true,
            Some("error") => self.fail("the stream ended in an error"),
            _ => {}
        }
    }

    /// The response as the provider's JSON, when the stream completed and was replayable.
    pub fn finish(self) -> Result<Vec<u8>, &'static str> {
        if let Some(why) = self.failed {
            return Err(why);
        }
        let complete = self.done || (self.provider == Provider::OpenAiChat && self.finish.is_some());
        if !complete {
            return Err("the stream did not complete");
        }
        if let Some(r) = self.response {
            responses::storable(&r)?;
            return serde_json::to_vec(&r).map_err(|_| "cannot serialise");
        }
        let mut v = self.head;
        match self.provider {
            Provider::OpenAiResponses => return Err("the stream did not complete"),
            Provider::OpenAiChat => {
                // Usage is part of the answer a hit reports; a stream without it (the client did
                // not ask, or a filter after this one removed it) is not stored.
                if self.usage.is_none() {
                    return Err("the stream carried no usage");
                }
                v.insert("object".to_owned(), json!("chat.completion"));
                v.insert(
                    "choices".to_owned(),
                    json!([{"index": 0, "message": {"role": "assistant", "content": self.text.concat()},
                            "logprobs": null, "finish_reason": self.finish}]),
                );
            }
            _ => {
                if self.text.is_empty() {
                    return Err("no content");
                }
                v.insert("type".to_owned(), json!("message"));
                v.insert("role".to_owned(), json!("assistant"));
                let blocks: Vec<Value> = self
                    .text
                    .into_iter()
                    .map(|t| json!({"type": "text", "text": t}))
                    .collect();
                v.insert("content".to_owned(), Value::Array(blocks));
                v.insert("stop_reason".to_owned(), self.finish.unwrap_or(Value::Null));
                v.insert(
                    "stop_sequence".to_owned(),
                    self.stop_sequence.unwrap_or(Value::Null),
                );
            }
        }
        if let Some(u) = self.usage {
            v.insert("usage".to_owned(), u);
        }
        serde_json::to_vec(&Value::Object(v)).map_err(|_| "cannot serialise")
    }
}

mod responses;
#[cfg(test)]
mod tests;
