//! The Responses API's typed events (platform.openai.com/docs/api-reference/responses-streaming).
//! Each `*.delta` of generated text goes through its window as chat deltas do; its `*.done`
//! event first gets a delta with what is held, then carries the text as released (masks and
//! all), as do `response.content_part.done`, `response.output_item.done` and the final
//! `response` — so every copy of a text the client reads agrees. A text the stream never sent as
//! deltas is moderated whole where it first appears. Events the filter adds are numbered in
//! sequence and the provider's after them renumbered, so `sequence_number` stays consecutive. A
//! block ends the stream with an `error` event and `response.failed`.

use super::{Slot, Stream, Window};
use crate::config::Rules;
use crate::moderate;
use filter_core::api::responses::{OutputText, StreamText, for_each_item_text_mut, for_each_output_text_mut};
use serde_json::{Value, json};

impl Stream {
    /// Handles one Responses event (may write events before it); true when `v` changed.
    pub(super) fn responses_event(&mut self, rules: &Rules, v: &mut Value, out: &mut Vec<u8>) -> bool {
        let key = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
        let mut changed = false;
        let whole = if let Some(st) = StreamText::of(v) {
            let slot = Slot::Responses(st.text);
            if !st.done {
                match self.delta(rules, key, slot, v, out) {
                    Some(c) => changed = c,
                    None => return false,
                }
                Ok(false)
            } else {
                self.flush_where(rules, out, |k, s| k == key && s == slot);
                match v.get_mut(st.field) {
                    Some(Value::String(s)) if !self.done => self.whole(rules, key, st.text, s),
                    _ => Ok(false),
                }
            }
        } else {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
            match kind {
                "response.created" | "response.in_progress" | "response.queued" => {
                    if let Some(Value::Object(r)) = v.get("response") {
                        self.envelope.clone_from(r);
                    }
                    Ok(false)
                }
                "response.content_part.done" | "response.reasoning_summary_part.done" => {
                    let summary = kind == "response.reasoning_summary_part.done";
                    let index = v
                        .get(if summary { "summary_index" } else { "content_index" })
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let part = v.get_mut("part");
                    let refusal = part.as_ref().and_then(|p| p.get("refusal")).is_some();
                    let (text, field) = match (summary, refusal) {
                        (true, _) => (OutputText::Summary(index), "text"),
                        (false, true) => (OutputText::Refusal(index), "refusal"),
                        (false, false) => (OutputText::Text(index), "text"),
                    };
                    match part.and_then(|p| p.get_mut(field)) {
                        Some(Value::String(s)) => self.whole(rules, key, text, s),
                        _ => Ok(false),
                    }
                }
                "response.output_item.done" => {
                    self.flush(rules, Some(key), out);
                    let mut res = Ok(false);
                    if let Some(item) = v.get_mut("item").filter(|_| !self.done) {
                        for_each_item_text_mut(item, |t, s| {
                            res = and(res, || self.whole(rules, key, t, s));
                        });
                    }
                    res
                }
                "response.completed" | "response.incomplete" | "response.failed" => {
                    self.flush(rules, None, out);
                    let mut res = Ok(false);
                    if let Some(r) = v.get_mut("response").filter(|_| !self.done) {
                        for_each_output_text_mut(r, |k, t, s| {
                            res = and(res, || self.whole(rules, k, t, s));
                        });
                    }
                    res
                }
                _ => Ok(false),
            }
        };
        if self.done {
            return false;
        }
        match whole {
            Ok(c) => changed |= c,
            Err(()) => {
                self.block_event(rules, out);
                return false;
            }
        }
        self.renumber(v) | changed
    }

    /// A `*.delta` event: its text through the window (opened with this event as the template of
    /// the delta that flushes it). `None` when it blocked (the stream has ended).
    fn delta(
        &mut self,
        rules: &Rules,
        key: u64,
        slot: Slot,
        v: &mut Value,
        out: &mut Vec<u8>,
    ) -> Option<bool> {
        if !self.windows.iter().any(|w| w.key == key && w.slot == slot) {
            let mut template = v.clone();
            template["delta"] = Value::String(String::new());
            self.windows.push(Window {
                key,
                slot,
                text: String::new(),
                sent: Some((String::new(), template)),
            });
        }
        let Some(Value::String(s)) = v.get_mut("delta") else {
            return Some(false);
        };
        super::push(&mut self.windows, key, slot, s);
        let released = self.release(rules, key, slot, false);
        let Some(released) = released else {
            self.block_event(rules, out);
            return None;
        };
        *s = released;
        Some(true)
    }

    /// A whole text of output item `key`: as its deltas were released, or, never streamed,
    /// moderated now (and kept, so later copies of it agree). `Err` when it blocks.
    fn whole(&mut self, rules: &Rules, key: u64, text: OutputText, s: &mut String) -> Result<bool, ()> {
        if let Some((_, _, sent)) = self.finals.iter().find(|(k, t, _)| *k == key && *t == text) {
            if s == sent {
                return Ok(false);
            }
            s.clone_from(sent);
            return Ok(true);
        }
        let findings = moderate::scan(rules, s);
        if let Some(b) = moderate::first_block(&findings) {
            self.findings.push((b.category, b.action));
            self.blocked = Some(b.category);
            return Err(());
        }
        self.findings
            .extend(findings.iter().map(|f| (f.category, f.action)));
        let masked = moderate::apply_masks(s, &findings);
        let changed = masked.is_some();
        if let Some(m) = masked {
            *s = m;
        }
        self.finals.push((key, text, s.clone()));
        Ok(changed)
    }

    /// Gives a provider event the next `sequence_number`; true when that changed it.
    fn renumber(&mut self, v: &mut Value) -> bool {
        let Some(up) = v.get("sequence_number").and_then(Value::as_u64) else {
            return false;
        };
        let n = *self.seq.get_or_insert(up);
        self.seq = Some(n + 1);
        if up == n {
            return false;
        }
        v["sequence_number"] = Value::from(n);
        true
    }

    /// The `sequence_number` of an event the filter adds.
    pub(super) fn next_seq(&mut self) -> u64 {
        let n = self.seq.unwrap_or(0);
        self.seq = Some(n + 1);
        n
    }

    /// An `error` event, then `response.failed` with the response as last announced.
    pub(super) fn responses_error(&mut self, out: &mut Vec<u8>, message: &str, code: &str) {
        let mut error = json!({"type": "error", "code": code, "message": message, "param": null});
        self.emit(out, &mut error);
        let mut response = Value::Object(std::mem::take(&mut self.envelope));
        response["object"] = json!("response");
        response["status"] = json!("failed");
        response["error"] = json!({"code": code, "message": message});
        response["output"] = json!([]);
        let mut failed = json!({"type": "response.failed", "response": response});
        self.emit(out, &mut failed);
    }
}

/// Folds one more whole-text result into `acc`: stops at the first block.
fn and(acc: Result<bool, ()>, next: impl FnOnce() -> Result<bool, ()>) -> Result<bool, ()> {
    let a = acc?;
    Ok(next()? | a)
}

#[cfg(test)]
mod tests;
