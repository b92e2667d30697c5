//! Moderating an SSE response as it passes. Generated text is kept in sliding windows, one per
//! choice and field (OpenAI `content`, `refusal`, each tool call's `arguments`, legacy `text`) or
//! per content block (Anthropic `text_delta`, `input_json_delta`, `thinking_delta`). Each event
//! releases the text that can no longer be part of a match that is still arriving, masked where it
//! matched, and holds back the last `holdback` bytes (and any match that reaches into them). So a
//! match split across events or body chunks is still caught, and masks are written into the
//! events in place. What is held goes out in a delta just before the choice's finish event, the
//! block's `content_block_stop`, `data: [DONE]`, or the end of the body.
//!
//! A blocking match ends the stream with a well-formed error event in the provider's format (and
//! `data: [DONE]` for OpenAI); everything after it is dropped. Events that carry no generated text
//! (roles, usage, pings) pass unchanged.

use crate::config::{Action, MAX_WINDOW, Rules};
use crate::moderate;
use filter_core::Provider;
use filter_core::sse::{Event, SseParser};
use serde_json::{Map, Value, json};

/// Which field of which event a window's text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// OpenAI `delta.content`, `delta.refusal`, or legacy `text`.
    Content,
    Refusal,
    Text,
    /// OpenAI `delta.tool_calls[index].function.arguments`.
    ToolArgs(u64),
    /// Anthropic delta types.
    TextDelta,
    JsonDelta,
    ThinkingDelta,
}

#[derive(Debug)]
struct Window {
    /// OpenAI choice index or Anthropic block index.
    key: u64,
    slot: Slot,
    text: String,
}

#[derive(Debug)]
pub struct Stream {
    anthropic: bool,
    parser: SseParser,
    holdback: usize,
    windows: Vec<Window>,
    done: bool,
    /// `id`, `object`, `created`, `model` of the last OpenAI chunk, for the flushing chunks.
    envelope: Map<String, Value>,
    /// `(category, action)` of every finding released or blocking, for metrics and the verdict.
    pub findings: Vec<(usize, Action)>,
    /// The category that ended the stream.
    pub blocked: Option<usize>,
}

impl Stream {
    pub fn new(provider: Provider, holdback: usize) -> Self {
        Self {
            anthropic: provider == Provider::Anthropic,
            parser: SseParser::default(),
            holdback,
            windows: Vec::new(),
            done: false,
            envelope: Map::new(),
            findings: Vec::new(),
            blocked: None,
        }
    }

    /// Whether the stream was ended (blocked or unreadable); later chunks are dropped.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The bytes to send in place of `chunk` (`end`: the upstream body ends with it).
    pub fn feed(&mut self, rules: &Rules, chunk: &[u8], end: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + 64);
        if self.done {
            return out;
        }
        let mut events = Vec::new();
        if self.parser.feed(chunk, &mut events).is_err() {
            // An event over the parser's bound cannot be read, so it cannot be checked.
            self.end_with_error(
                &mut out,
                "the provider's stream could not be read for moderation",
                "unreadable_response",
            );
            return out;
        }
        for ev in events {
            self.event(rules, ev, &mut out);
            if self.done {
                return out;
            }
        }
        if end {
            // A stream that ended without its finish events: release what is held.
            self.flush(rules, None, &mut out);
        }
        out
    }

    /// Unreadable input (e.g. a compressed body): ends the stream with an error event.
    pub fn refuse(&mut self, out: &mut Vec<u8>) {
        self.end_with_error(
            out,
            "the provider's stream could not be read for moderation",
            "unreadable_response",
        );
    }

    fn emit(&self, out: &mut Vec<u8>, v: &Value) {
        let name = if self.anthropic {
            v.get("type").and_then(Value::as_str)
        } else {
            None
        };
        out.extend_from_slice(&Event::encode(name, &v.to_string()));
    }

    fn event(&mut self, rules: &Rules, ev: Event, out: &mut Vec<u8>) {
        let Some(data) = ev.data.as_deref() else {
            out.extend_from_slice(&ev.raw);
            return;
        };
        if ev.is_done() {
            self.flush(rules, None, out);
            if !self.done {
                out.extend_from_slice(&ev.raw);
            }
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            out.extend_from_slice(&ev.raw);
            return;
        };
        let changed = if self.anthropic {
            self.anthropic_event(rules, &mut v, out)
        } else {
            self.openai_event(rules, &mut v, out)
        };
        if self.done {
            return;
        }
        if changed {
            out.extend_from_slice(&Event::encode(ev.event.as_deref(), &v.to_string()));
        } else {
            out.extend_from_slice(&ev.raw);
        }
    }

    /// Rewrites the generated text of each choice in `v` (and flushes a finishing choice's
    /// windows in a chunk written before it); true when `v` changed.
    fn openai_event(&mut self, rules: &Rules, v: &mut Value, out: &mut Vec<u8>) -> bool {
        if let Some(obj) = v.as_object() {
            for k in ["id", "object", "created", "model"] {
                if let Some(x) = obj.get(k) {
                    self.envelope.insert(k.to_owned(), x.clone());
                }
            }
        }
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            return false;
        };
        let mut changed = false;
        let mut finishing = Vec::new();
        for (pos, c) in choices.iter_mut().enumerate() {
            let key = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
            if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                finishing.push(key);
            }
            // (slot, the string to rewrite)
            let mut fields: Vec<(Slot, &mut String)> = Vec::new();
            let Some(obj) = c.as_object_mut() else { continue };
            for (k, val) in obj.iter_mut() {
                match (k.as_str(), val) {
                    ("text", Value::String(s)) => fields.push((Slot::Text, s)),
                    ("delta", Value::Object(d)) => {
                        for (dk, dv) in d.iter_mut() {
                            match (dk.as_str(), dv) {
                                ("content", Value::String(s)) => fields.push((Slot::Content, s)),
                                ("refusal", Value::String(s)) => fields.push((Slot::Refusal, s)),
                                ("tool_calls", Value::Array(calls)) => {
                                    for (i, call) in calls.iter_mut().enumerate() {
                                        let idx =
                                            call.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                                        if let Some(Value::String(args)) =
                                            call.get_mut("function").and_then(|f| f.get_mut("arguments"))
                                        {
                                            fields.push((Slot::ToolArgs(idx), args));
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            for (slot, s) in fields {
                push(&mut self.windows, key, slot, s);
                let Some(released) = release(
                    &mut self.windows,
                    &mut self.findings,
                    &mut self.blocked,
                    rules,
                    self.holdback,
                    key,
                    slot,
                    false,
                ) else {
                    self.block_event(rules, out);
                    return false;
                };
                *s = released;
                changed = true;
            }
        }
        for key in finishing {
            self.flush(rules, Some(key), out);
            if self.done {
                return false;
            }
        }
        changed
    }

    /// Handles one Anthropic event; may write a flushing delta before it. True when `v` changed.
    fn anthropic_event(&mut self, rules: &Rules, v: &mut Value, out: &mut Vec<u8>) -> bool {
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let key = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind.as_str() {
            "content_block_delta" => {
                let Some(delta) = v.get_mut("delta").and_then(Value::as_object_mut) else {
                    return false;
                };
                let (slot, field) = match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => (Slot::TextDelta, "text"),
                    Some("input_json_delta") => (Slot::JsonDelta, "partial_json"),
                    Some("thinking_delta") => (Slot::ThinkingDelta, "thinking"),
                    _ => return false,
                };
                let Some(Value::String(s)) = delta.get_mut(field) else {
                    return false;
                };
                push(&mut self.windows, key, slot, s);
                let Some(released) = release(
                    &mut self.windows,
                    &mut self.findings,
                    &mut self.blocked,
                    rules,
                    self.holdback,
                    key,
                    slot,
                    false,
                ) else {
                    self.block_event(rules, out);
                    return false;
                };
                *s = released;
                true
            }
            "content_block_stop" => {
                self.flush(rules, Some(key), out);
                false
            }
            _ => false,
        }
    }

    /// Releases all held text of `key` (all keys when `None`) as delta events written to `out`.
    fn flush(&mut self, rules: &Rules, key: Option<u64>, out: &mut Vec<u8>) {
        let targets: Vec<(u64, Slot)> = self
            .windows
            .iter()
            .filter(|w| key.is_none_or(|k| k == w.key))
            .map(|w| (w.key, w.slot))
            .collect();
        for (k, slot) in targets {
            let Some(text) = release(
                &mut self.windows,
                &mut self.findings,
                &mut self.blocked,
                rules,
                self.holdback,
                k,
                slot,
                true,
            ) else {
                self.block_event(rules, out);
                return;
            };
            self.windows.retain(|w| !(w.key == k && w.slot == slot));
            if text.is_empty() {
                continue;
            }
            let ev = match slot {
                Slot::TextDelta => json!({"type": "content_block_delta", "index": k, "delta": {"type": "text_delta", "text": text}}),
                Slot::JsonDelta => json!({"type": "content_block_delta", "index": k, "delta": {"type": "input_json_delta", "partial_json": text}}),
                Slot::ThinkingDelta => json!({"type": "content_block_delta", "index": k, "delta": {"type": "thinking_delta", "thinking": text}}),
                Slot::Text => self.chunk(json!({"index": k, "text": text, "finish_reason": null})),
                Slot::Content => self.chunk(json!({"index": k, "delta": {"content": text}, "finish_reason": null})),
                Slot::Refusal => self.chunk(json!({"index": k, "delta": {"refusal": text}, "finish_reason": null})),
                Slot::ToolArgs(t) => self.chunk(json!({"index": k, "delta": {"tool_calls": [{"index": t, "function": {"arguments": text}}]}, "finish_reason": null})),
            };
            self.emit(out, &ev);
        }
    }

    /// An OpenAI chunk with one choice, in the stream's envelope.
    fn chunk(&self, choice: Value) -> Value {
        let mut v = Value::Object(self.envelope.clone());
        v["choices"] = json!([choice]);
        v
    }

    fn block_event(&mut self, rules: &Rules, out: &mut Vec<u8>) {
        let category = self
            .blocked
            .and_then(|c| rules.categories.get(c))
            .map_or("unknown", |c| c.name.as_str())
            .to_owned();
        let message = format!("the response was blocked by the content policy (category: {category})");
        self.end_with_error(out, &message, "content_blocked");
    }

    fn end_with_error(&mut self, out: &mut Vec<u8>, message: &str, code: &str) {
        if self.anthropic {
            let e = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message, "code": code}});
            out.extend_from_slice(&Event::encode(Some("error"), &e.to_string()));
        } else {
            let e = json!({"error": {"message": message, "type": "invalid_request_error", "code": code}});
            out.extend_from_slice(&Event::encode(None, &e.to_string()));
            out.extend_from_slice(&Event::encode(None, "[DONE]"));
        }
        self.done = true;
        self.windows.clear();
    }
}

fn push(windows: &mut Vec<Window>, key: u64, slot: Slot, text: &str) {
    match windows.iter_mut().find(|w| w.key == key && w.slot == slot) {
        Some(w) => w.text.push_str(text),
        None => windows.push(Window {
            key,
            slot,
            text: text.to_owned(),
        }),
    }
}

/// Releases what may go out of window `(key, slot)` (all of it when `last`), masked; `None` when a
/// blocking match was found (`blocked` is set).
#[allow(clippy::too_many_arguments)]
fn release(
    windows: &mut [Window],
    findings_out: &mut Vec<(usize, Action)>,
    blocked: &mut Option<usize>,
    rules: &Rules,
    holdback: usize,
    key: u64,
    slot: Slot,
    last: bool,
) -> Option<String> {
    let Some(w) = windows.iter_mut().find(|w| w.key == key && w.slot == slot) else {
        return Some(String::new());
    };
    let findings = moderate::scan(rules, &w.text);
    // A blocking match blocks as soon as it is seen, even while still arriving.
    if let Some(b) = moderate::first_block(&findings) {
        findings_out.push((b.category, b.action));
        *blocked = Some(b.category);
        return None;
    }
    let len = w.text.len();
    let forced = len > MAX_WINDOW;
    let mut cut = if last || forced {
        len
    } else {
        len.saturating_sub(holdback)
    };
    // Hold back every match that reaches past the cut; lowering the cut can put another match
    // across it, so repeat until it stays.
    if !forced {
        loop {
            let lowest = findings
                .iter()
                .filter(|f| f.start < cut && f.end > cut)
                .map(|f| f.start)
                .min();
            match lowest {
                Some(s) => cut = s,
                None => break,
            }
        }
    }
    while !w.text.is_char_boundary(cut) {
        cut -= 1;
    }
    let released: Vec<_> = findings.into_iter().filter(|f| f.end <= cut).collect();
    findings_out.extend(released.iter().map(|f| (f.category, f.action)));
    let head = w.text.get(..cut).unwrap_or_default();
    let text = moderate::apply_masks(head, &released).unwrap_or_else(|| head.to_owned());
    w.text.drain(..cut);
    Some(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use crate::config::{RawRules, compile_rules};

    fn rules() -> Rules {
        let v = json!({"detectors": {"payment_card": {"action": "mask", "mask": "last4"},
                                     "email": {"action": "mask"},
                                     "private_key": {"action": "block"}}});
        compile_rules(
            filter_core::config::parse::<RawRules>(v.to_string().as_bytes()).unwrap(),
            "response",
        )
        .unwrap()
    }

    fn openai_stream(pieces: &[&str]) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&Event::encode(
            None,
            &json!({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]})
                .to_string(),
        ));
        for p in pieces {
            s.extend_from_slice(&Event::encode(
                None,
                &json!({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
                    .to_string(),
            ));
        }
        s.extend_from_slice(&Event::encode(
            None,
            &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).to_string(),
        ));
        s.extend_from_slice(&Event::encode(None, "[DONE]"));
        s
    }

    fn anthropic_stream(pieces: &[&str]) -> Vec<u8> {
        let mut s = Vec::new();
        let ev = |name: &str, v: Value| Event::encode(Some(name), &v.to_string());
        s.extend(ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "content": []}}),
        ));
        s.extend(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        for p in pieces {
            s.extend(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})));
        }
        s.extend(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        s.extend(ev("message_stop", json!({"type": "message_stop"})));
        s
    }

    /// The text a client reads from `out` (every delta joined) and whether the stream is well formed.
    fn client_text(anthropic: bool, out: &[u8]) -> (String, Vec<Value>) {
        let mut events = Vec::new();
        SseParser::default().feed(out, &mut events).unwrap();
        let mut text = String::new();
        let mut parsed = Vec::new();
        for e in &events {
            let d = e.data.as_deref().unwrap();
            if d == "[DONE]" {
                parsed.push(json!("[DONE]"));
                continue;
            }
            let v: Value = serde_json::from_str(d).unwrap();
            let piece = if anthropic {
                v.pointer("/delta/text")
            } else {
                v.pointer("/choices/0/delta/content")
            };
            if let Some(t) = piece.and_then(Value::as_str) {
                text.push_str(t);
            }
            parsed.push(v);
        }
        (text, parsed)
    }

    /// Feeds `body` cut at `cuts` (byte offsets) through a fresh stream.
    fn run(anthropic: bool, body: &[u8], cuts: &[usize], holdback: usize) -> (Vec<u8>, Stream) {
        let r = rules();
        let provider = if anthropic {
            Provider::Anthropic
        } else {
            Provider::OpenAiChat
        };
        let mut s = Stream::new(provider, holdback);
        let mut out = Vec::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&body.len())) {
            out.extend(s.feed(&r, &body[prev..c], c == body.len()));
            prev = c;
        }
        (out, s)
    }

    #[test]
    fn a_match_split_at_every_event_and_byte_boundary_is_masked() {
        let text = "Your card 4111 1111 1111 1111 and mail bob@example.com are on file.";
        let want = "Your card **** **** **** 1111 and mail [EMAIL] are on file.";
        for anthropic in [false, true] {
            // Split the text into two deltas at every character position.
            for split in 1..text.len() {
                let (a, b) = text.split_at(split);
                let body = if anthropic {
                    anthropic_stream(&[a, b])
                } else {
                    openai_stream(&[a, b])
                };
                let (out, s) = run(anthropic, &body, &[], 32);
                let (got, _) = client_text(anthropic, &out);
                assert_eq!(got, want, "anthropic={anthropic} split at {split}");
                assert_eq!(s.findings.len(), 2);
            }
            // One character per delta, and the body cut at every byte.
            let pieces: Vec<String> = text.chars().map(String::from).collect();
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let body = if anthropic {
                anthropic_stream(&refs)
            } else {
                openai_stream(&refs)
            };
            let cuts: Vec<usize> = (1..body.len()).collect();
            let (out, _) = run(anthropic, &body, &cuts, 32);
            assert_eq!(
                client_text(anthropic, &out).0,
                want,
                "anthropic={anthropic} byte by byte"
            );
        }
    }

    #[test]
    fn text_is_held_back_only_by_the_window() {
        let long = "a".repeat(100);
        let body = openai_stream(&[&long, "b"]);
        let r = rules();
        let mut s = Stream::new(Provider::OpenAiChat, 16);
        // Only the role event and the first delta.
        let first_two: usize = {
            let mut events = Vec::new();
            SseParser::default().feed(&body, &mut events).unwrap();
            events[0].raw.len() + events[1].raw.len()
        };
        let out = s.feed(&r, &body[..first_two], false);
        let (got, _) = client_text(false, &out);
        assert_eq!(got, "a".repeat(84), "all but the last 16 bytes go out at once");
    }

    #[test]
    fn a_block_ends_the_stream_with_a_well_formed_error() {
        for anthropic in [false, true] {
            let pieces = [
                "Here is the key: -----BEGIN PRIV",
                "ATE KEY-----\nMIIE",
                "more",
                "and more",
            ];
            let body = if anthropic {
                anthropic_stream(&pieces)
            } else {
                openai_stream(&pieces)
            };
            let (out, s) = run(anthropic, &body, &[], 32);
            assert!(s.blocked.is_some());
            let (text, events) = client_text(anthropic, &out);
            assert!(!text.contains("BEGIN PRIVATE"), "{text}");
            let last_two = &events[events.len().saturating_sub(2)..];
            if anthropic {
                assert_eq!(events.last().unwrap()["type"], "error");
                assert_eq!(events.last().unwrap()["error"]["code"], "content_blocked");
            } else {
                assert_eq!(last_two[0]["error"]["code"], "content_blocked");
                assert_eq!(last_two[1], json!("[DONE]"));
            }
            let msg = out.windows(11).any(|w| w == b"private_key");
            assert!(msg, "the error names the category");
        }
    }

    #[test]
    fn tool_call_arguments_refusals_json_deltas_and_several_choices_are_moderated() {
        let ev = |v: Value| Event::encode(None, &v.to_string());
        let mut body = Vec::new();
        for piece in ["{\"to\": \"bob@exa", "mple.com\"}"] {
            body.extend(ev(json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, "finish_reason": null}]})));
        }
        body.extend(ev(json!({"choices": [
            {"index": 0, "delta": {"refusal": "mail ann@"}, "finish_reason": null},
            {"index": 1, "delta": {"content": "card 4111 1111 "}, "finish_reason": null}]})));
        body.extend(ev(json!({"choices": [
            {"index": 0, "delta": {"refusal": "example.com"}, "finish_reason": null},
            {"index": 1, "delta": {"content": "1111 1111"}, "finish_reason": null}]})));
        body.extend(ev(
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"},
                                          {"index": 1, "delta": {}, "finish_reason": "stop"}]}),
        ));
        body.extend(Event::encode(None, "[DONE]"));
        let (out, s) = run(false, &body, &[], 32);
        let mut events = Vec::new();
        SseParser::default().feed(&out, &mut events).unwrap();
        let mut args = String::new();
        let mut refusal = String::new();
        let mut content = String::new();
        for e in &events {
            let Ok(v) = serde_json::from_str::<Value>(e.data.as_deref().unwrap()) else {
                continue;
            };
            for c in v["choices"].as_array().into_iter().flatten() {
                let d = &c["delta"];
                args.push_str(
                    d.pointer("/tool_calls/0/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
                refusal.push_str(d["refusal"].as_str().unwrap_or_default());
                if c["index"] == 1 {
                    content.push_str(d["content"].as_str().unwrap_or_default());
                }
            }
        }
        assert_eq!(args, "{\"to\": \"[EMAIL]\"}");
        assert_eq!(refusal, "mail [EMAIL]");
        assert_eq!(content, "card **** **** **** 1111");
        assert_eq!(s.findings.len(), 3);
        assert!(
            out.ends_with(b"data: [DONE]\n\n"),
            "the held text goes out before [DONE]"
        );

        let an = |v: Value| Event::encode(Some(v["type"].as_str().unwrap()), &v.to_string());
        let mut body = Vec::new();
        for piece in ["{\"email\": \"eve@", "evil.example\"}"] {
            body.extend(an(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": piece}})));
        }
        body.extend(an(json!({"type": "content_block_stop", "index": 1})));
        let (out, _) = run(true, &body, &[], 32);
        let mut events = Vec::new();
        SseParser::default().feed(&out, &mut events).unwrap();
        let json: String = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
            .filter_map(|v| {
                v.pointer("/delta/partial_json")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(json, "{\"email\": \"[EMAIL]\"}");
    }

    #[test]
    fn other_events_pass_byte_for_byte() {
        let usage = Event::encode(
            None,
            &json!({"choices": [], "usage": {"prompt_tokens": 3}}).to_string(),
        );
        let ping = b": keep-alive\n\n".to_vec();
        let mut body = ping.clone();
        body.extend_from_slice(&usage);
        let (out, _) = run(false, &body, &[5], 32);
        assert_eq!(out, body);
    }
}
