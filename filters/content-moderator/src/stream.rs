//! Moderating an SSE response as it passes. Generated text is kept per choice (OpenAI) or content
//! block (Anthropic) in a sliding window: each event releases the text that can no longer be part
//! of a match that is still arriving, masked where it matched, and holds back the last
//! `holdback` bytes (and any match that reaches into them). So a match split across events or body
//! chunks is still caught, and masks are written into the events in place. The rest of the window
//! goes out with the choice's finish event (or before the block's stop event).
//!
//! A blocking match ends the stream with a well-formed error event in the provider's format (and
//! `data: [DONE]` for OpenAI); everything after it is dropped. Events that carry no generated text
//! (roles, tool calls, usage, pings) pass unchanged.

use crate::config::{Action, Rules};
use crate::moderate;
use filter_core::Provider;
use filter_core::sse::{Event, SseParser};
use serde_json::{Value, json};

/// A text buffer that may not grow past this (a match longer than this is released anyway).
pub const MAX_WINDOW: usize = 64 * 1024;

#[derive(Debug)]
struct Window {
    key: u64,
    text: String,
}

#[derive(Debug)]
pub struct Stream {
    anthropic: bool,
    parser: SseParser,
    holdback: usize,
    windows: Vec<Window>,
    done: bool,
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
            findings: Vec::new(),
            blocked: None,
        }
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
            let keys: Vec<u64> = self.windows.iter().map(|w| w.key).collect();
            for key in keys {
                let Some(text) = self.release(rules, key, true) else {
                    break;
                };
                if text.is_empty() {
                    continue;
                }
                let ev = if self.anthropic {
                    json!({"type": "content_block_delta", "index": key, "delta": {"type": "text_delta", "text": text}})
                } else {
                    json!({"object": "chat.completion.chunk", "choices": [{"index": key, "delta": {"content": text}, "finish_reason": null}]})
                };
                self.emit(&mut out, &ev);
            }
            if self.blocked.is_some() {
                self.block_event(rules, &mut out);
            }
        }
        out
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
            out.extend_from_slice(&ev.raw);
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            out.extend_from_slice(&ev.raw);
            return;
        };
        let changed = if self.anthropic {
            self.anthropic_event(rules, &mut v, out)
        } else {
            self.openai_event(rules, &mut v)
        };
        if self.blocked.is_some() {
            self.block_event(rules, out);
            return;
        }
        if changed {
            out.extend_from_slice(&Event::encode(ev.event.as_deref(), &v.to_string()));
        } else {
            out.extend_from_slice(&ev.raw);
        }
    }

    /// Rewrites the text of each choice in `v`; true when `v` changed.
    fn openai_event(&mut self, rules: &Rules, v: &mut Value) -> bool {
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            return false;
        };
        let mut changed = false;
        for (pos, c) in choices.iter_mut().enumerate() {
            let key = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
            let finished = c.get("finish_reason").is_some_and(|f| !f.is_null());
            // Chat chunks carry `delta.content`; completions chunks carry `text`.
            let slot = if c.get("delta").is_some() {
                c.get_mut("delta")
                    .and_then(|d| d.as_object_mut())
                    .map(|d| (d, "content"))
            } else {
                c.as_object_mut().map(|o| (o, "text"))
            };
            let Some((obj, field)) = slot else { continue };
            let incoming = obj.get(field).and_then(Value::as_str).map(str::to_owned);
            if incoming.is_none() && !finished {
                continue;
            }
            self.push(key, incoming.as_deref().unwrap_or_default());
            let Some(text) = self.release(rules, key, finished) else {
                return true;
            };
            if incoming.is_some() || !text.is_empty() {
                obj.insert(field.to_owned(), Value::String(text));
                changed = true;
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
                if delta.get("type").and_then(Value::as_str) != Some("text_delta") {
                    return false;
                }
                let incoming = delta
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.push(key, &incoming);
                let Some(text) = self.release(rules, key, false) else {
                    return true;
                };
                delta.insert("text".to_owned(), Value::String(text));
                true
            }
            "content_block_stop" => {
                let Some(text) = self.release(rules, key, true) else {
                    return true;
                };
                if !text.is_empty() {
                    let flush = json!({"type": "content_block_delta", "index": key,
                                       "delta": {"type": "text_delta", "text": text}});
                    self.emit(out, &flush);
                }
                false
            }
            _ => false,
        }
    }

    fn push(&mut self, key: u64, text: &str) {
        match self.windows.iter_mut().find(|w| w.key == key) {
            Some(w) => w.text.push_str(text),
            None => self.windows.push(Window {
                key,
                text: text.to_owned(),
            }),
        }
    }

    /// Releases what may go out of window `key` (all of it when `last`), masked; `None` when a
    /// blocking match was found (`self.blocked` is set).
    fn release(&mut self, rules: &Rules, key: u64, last: bool) -> Option<String> {
        let holdback = self.holdback;
        let w = self.windows.iter_mut().find(|w| w.key == key)?;
        let findings = moderate::scan(rules, &w.text);
        // A blocking match blocks as soon as it is seen, even while still arriving.
        if let Some(b) = moderate::first_block(&findings) {
            self.findings.push((b.category, b.action));
            self.blocked = Some(b.category);
            return None;
        }
        let len = w.text.len();
        let mut cut = if last || len > MAX_WINDOW {
            len
        } else {
            len.saturating_sub(holdback)
        };
        for f in &findings {
            if f.end > cut && f.start < cut && len <= MAX_WINDOW {
                cut = f.start;
            }
        }
        while !w.text.is_char_boundary(cut) {
            cut -= 1;
        }
        let released: Vec<_> = findings.into_iter().filter(|f| f.end <= cut).collect();
        self.findings
            .extend(released.iter().map(|f| (f.category, f.action)));
        let head = w.text.get(..cut).unwrap_or_default();
        let text = moderate::apply_masks(head, &released).unwrap_or_else(|| head.to_owned());
        w.text.drain(..cut);
        Some(text)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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
