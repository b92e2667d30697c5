//! Moderating an SSE response as it passes. Generated text is kept in sliding windows, one per
//! choice and field (OpenAI `content`, `refusal`, each tool call's `arguments`, legacy `text`) or
//! per content block (Anthropic `text_delta`, `input_json_delta`, `thinking_delta`). Each event
//! releases the text that can no longer be part of a match that is still arriving, masked where it
//! matched: it holds back only the suffix from the earliest position where a masking or blocking
//! match may still be forming ([`crate::partial`]), at most `stream_holdback_bytes`, and any match
//! that reaches into it. So a match split across events or body chunks is still caught, and masks
//! are written into the events in place. What is held goes out in a delta just before the choice's finish event, the
//! block's `content_block_stop`, `data: [DONE]`, or the end of the body.
//!
//! A blocking match ends the stream with a well-formed error event in the provider's format (and
//! `data: [DONE]` for OpenAI); everything after it is dropped. Events that carry no generated text
//! (roles, usage, pings) pass unchanged.

use crate::config::{Action, MAX_WINDOW, Rules};
use crate::moderate;
use crate::normalize::Normalized;
use filter_core::Provider;
use filter_core::api::responses::OutputText;
use filter_core::sse::{Event, SseParser};
use serde_json::{Map, Value, json};

/// The stream's API: its event shapes and how it ends with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Anthropic,
    Responses,
}

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
    /// A Responses API output text of the item at the window's key (its `output_index`).
    Responses(OutputText),
}

#[derive(Debug)]
struct Window {
    /// OpenAI choice index or Anthropic block index.
    key: u64,
    slot: Slot,
    text: String,
    /// Responses API only: everything released so far, which the `.done` events and the final
    /// `response` repeat whole; and the window's first delta event, the template of the delta
    /// that releases what is held.
    sent: Option<(String, Value)>,
}

#[derive(Debug)]
pub struct Stream {
    api: Api,
    parser: SseParser,
    hold: Hold,
    windows: Vec<Window>,
    done: bool,
    /// `id`, `object`, `created`, `model` of the last OpenAI chunk, for the flushing chunks; the
    /// Responses API's `response` object as last announced, for `response.failed`.
    envelope: Map<String, Value>,
    /// Responses API: the `sequence_number` the next event out carries (events the filter adds
    /// renumber the ones after them), and the released texts of finished windows.
    seq: Option<u64>,
    finals: Vec<(u64, OutputText, String)>,
    /// `(category, action)` of every finding released or blocking, for metrics and the verdict.
    pub findings: Vec<(usize, Action)>,
    /// The category that ended the stream.
    pub blocked: Option<usize>,
}

impl Stream {
    pub fn new(provider: Provider, holdback: usize) -> Self {
        Self {
            api: match provider {
                p if p.is_anthropic() => Api::Anthropic,
                Provider::OpenAiResponses => Api::Responses,
                _ => Api::Chat,
            },
            parser: SseParser::default(),
            hold: Hold {
                max: holdback,
                cache: None,
            },
            windows: Vec::new(),
            done: false,
            envelope: Map::new(),
            seq: None,
            finals: Vec::new(),
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

    /// Writes an event the filter adds (named by its `type` where the API names events).
    fn emit(&mut self, out: &mut Vec<u8>, v: &mut Value) {
        if self.api == Api::Responses {
            let n = self.next_seq();
            v["sequence_number"] = Value::from(n);
        }
        let name = match self.api {
            Api::Chat => None,
            Api::Anthropic | Api::Responses => v.get("type").and_then(Value::as_str),
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
        let changed = match self.api {
            Api::Anthropic => self.anthropic_event(rules, &mut v, out),
            Api::Chat => self.openai_event(rules, &mut v, out),
            Api::Responses => self.responses_event(rules, &mut v, out),
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
                let Some(released) = self.release(rules, key, slot, false) else {
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
                let Some(released) = self.release(rules, key, slot, false) else {
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
        self.flush_where(rules, out, |k, _| key.is_none_or(|key| key == k));
    }

    /// Releases all held text of the windows `which` picks, as delta events written to `out`.
    fn flush_where(&mut self, rules: &Rules, out: &mut Vec<u8>, which: impl Fn(u64, Slot) -> bool) {
        let targets: Vec<(u64, Slot)> = self
            .windows
            .iter()
            .filter(|w| which(w.key, w.slot))
            .map(|w| (w.key, w.slot))
            .collect();
        for (k, slot) in targets {
            let Some(text) = self.release(rules, k, slot, true) else {
                self.block_event(rules, out);
                return;
            };
            let Some(pos) = self.windows.iter().position(|w| w.key == k && w.slot == slot) else {
                continue;
            };
            let w = self.windows.remove(pos);
            let mut ev = match (slot, w.sent) {
                (Slot::Responses(t), Some((sent, mut template))) => {
                    self.finals.push((k, t, sent));
                    if text.is_empty() {
                        continue;
                    }
                    template["delta"] = Value::String(text);
                    template
                }
                _ if text.is_empty() => continue,
                _ => self.flush_event(k, slot, text),
            };
            self.emit(out, &mut ev);
        }
    }

    /// The event that releases `text`, the held end of window `(k, slot)`.
    fn flush_event(&self, k: u64, slot: Slot, text: String) -> Value {
        match slot {
                Slot::TextDelta => json!({"type": "content_block_delta", "index": k, "delta": {"type": "text_delta", "text": text}}),
                Slot::JsonDelta => json!({"type": "content_block_delta", "index": k, "delta": {"type": "input_json_delta", "partial_json": text}}),
                Slot::ThinkingDelta => json!({"type": "content_block_delta", "index": k, "delta": {"type": "thinking_delta", "thinking": text}}),
                Slot::Text => self.chunk(json!({"index": k, "text": text, "finish_reason": null})),
                Slot::Content => self.chunk(json!({"index": k, "delta": {"content": text}, "finish_reason": null})),
                Slot::Refusal => self.chunk(json!({"index": k, "delta": {"refusal": text}, "finish_reason": null})),
                Slot::ToolArgs(t) => self.chunk(json!({"index": k, "delta": {"tool_calls": [{"index": t, "function": {"arguments": text}}]}, "finish_reason": null})),
                // Flushed from their template above.
                Slot::Responses(_) => Value::Null,
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
        match self.api {
            Api::Anthropic => {
                let e = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message, "code": code}});
                out.extend_from_slice(&Event::encode(Some("error"), &e.to_string()));
            }
            Api::Chat => {
                let e = json!({"error": {"message": message, "type": "invalid_request_error", "code": code}});
                out.extend_from_slice(&Event::encode(None, &e.to_string()));
                out.extend_from_slice(&Event::encode(None, "[DONE]"));
            }
            Api::Responses => self.responses_error(out, message, code),
        }
        self.done = true;
        self.windows.clear();
    }
}

impl Stream {
    /// [`release`] on this stream's windows, findings and holdback.
    fn release(&mut self, rules: &Rules, key: u64, slot: Slot, last: bool) -> Option<String> {
        release(
            &mut self.windows,
            &mut self.findings,
            &mut self.blocked,
            rules,
            &mut self.hold,
            key,
            slot,
            last,
        )
    }
}

/// How much of a window is held back: from where a match may still be forming
/// ([`crate::partial`]), at most `max` bytes.
#[derive(Debug)]
struct Hold {
    max: usize,
    /// The partial-match automaton's cache, made on the first release.
    cache: Option<regex_automata::hybrid::dfa::Cache>,
}

impl Hold {
    /// Where the released part of `text` ends, before the findings are considered.
    fn cut(&mut self, rules: &Rules, text: &str) -> usize {
        let Some(partial) = &rules.partial else {
            return text.len();
        };
        let cache = self.cache.get_or_insert_with(|| partial.cache());
        let n = Normalized::new(text);
        let from = partial
            .live_from(cache, &n.text)
            .map_or(text.len(), |s| n.original_range(s, s + 1).0);
        from.max(text.len().saturating_sub(self.max))
    }
}

fn push(windows: &mut Vec<Window>, key: u64, slot: Slot, text: &str) {
    match windows.iter_mut().find(|w| w.key == key && w.slot == slot) {
        Some(w) => w.text.push_str(text),
        None => windows.push(Window {
            key,
            slot,
            text: text.to_owned(),
            sent: None,
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
    hold: &mut Hold,
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
        hold.cut(rules, &w.text)
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
    if let Some((sent, _)) = &mut w.sent {
        sent.push_str(&text);
    }
    Some(text)
}

mod responses;
#[cfg(test)]
mod tests;
