//! Moderating whole bodies: a request's texts (everything the model reads, in the order
//! `filter_core::prompt` walks them) and a JSON response's generated texts. A block stops at the
//! first blocking finding; masks rewrite the texts and the body is serialised again.

use crate::config::{Action, Rules};
use crate::moderate::{self, Finding};
use filter_core::api::{Provider, Request, anthropic, openai, responses};
use filter_core::reads;
use serde_json::Value;

/// What moderation decided for a body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The category (index into the rules) that blocks, if any.
    pub blocked: Option<usize>,
    /// The rewritten body when something was masked (and nothing blocked).
    pub body: Option<Vec<u8>>,
    /// `(category, action)` of every finding, for metrics and the verdict.
    pub findings: Vec<(usize, Action)>,
}

/// Why a body could not be moderated.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not the JSON the API expects (the serde message, with quoted values redacted).
    Invalid(String),
    Serialize(String),
}

fn invalid(e: &serde_json::Error) -> BodyError {
    BodyError::Invalid(filter_core::error::redact_quoted(&e.to_string()))
}

/// Scans each text; returns the findings per text and the outcome so far.
fn scan_texts<'a>(rules: &Rules, texts: impl Iterator<Item = &'a str>) -> (Vec<Vec<Finding>>, Outcome) {
    let mut per_text = Vec::new();
    let mut out = Outcome::default();
    for t in texts {
        let f = moderate::scan(rules, t);
        out.findings.extend(f.iter().map(|x| (x.category, x.action)));
        if out.blocked.is_none() {
            out.blocked = moderate::first_block(&f).map(|b| b.category);
        }
        per_text.push(f);
    }
    (per_text, out)
}

/// Every string inside a JSON value (tool inputs and schemas), in document order.
fn json_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| json_strings(i, out)),
        Value::Object(m) => m.values().for_each(|i| json_strings(i, out)),
        _ => {}
    }
}

fn json_strings_mut<'a>(v: &'a mut Value, out: &mut Vec<&'a mut String>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter_mut().for_each(|i| json_strings_mut(i, out)),
        Value::Object(m) => m.values_mut().for_each(|i| json_strings_mut(i, out)),
        _ => {}
    }
}

pub fn request(rules: &Rules, provider: Provider, body: &[u8]) -> Result<Outcome, BodyError> {
    let mut req = Request::parse(provider, body).map_err(|e| invalid(&e))?;
    if rules.categories.is_empty() {
        return Ok(Outcome::default());
    }
    if reads::token_id_prompt(&req) {
        return Err(BodyError::Invalid(
            "a prompt given as token ids cannot be moderated; send it as text".into(),
        ));
    }
    // Every text the model reads, in the order the mutable walk below visits them.
    let mut texts = Vec::new();
    reads::for_each(&req, &mut |t| texts.push(t));
    let (per_text, mut out) = scan_texts(rules, texts.into_iter());
    if out.blocked.is_some() || !out.findings.iter().any(|(_, a)| *a == Action::Mask) {
        return Ok(out);
    }
    let mut k = 0;
    reads::for_each_mut(&mut req, &mut |t| {
        if let Some(masked) = per_text.get(k).and_then(|f| moderate::apply_masks(t, f)) {
            *t = masked;
        }
        k += 1;
    });
    out.body = Some(req.to_vec().map_err(|e| BodyError::Serialize(e.to_string()))?);
    Ok(out)
}

/// A non-streaming response of `provider` (OpenAI chat and completions share the `choices` shape).
pub fn response(rules: &Rules, provider: Provider, body: &[u8]) -> Result<Outcome, BodyError> {
    if rules.categories.is_empty() {
        return Ok(Outcome::default());
    }
    let ser = |r: Result<Vec<u8>, serde_json::Error>| r.map_err(|e| BodyError::Serialize(e.to_string()));
    match provider {
        Provider::Anthropic => {
            let mut r: anthropic::MessagesResponse = serde_json::from_slice(body).map_err(|e| invalid(&e))?;
            // Text, thinking, and the input of tool calls.
            let mut texts: Vec<&str> = Vec::new();
            for b in &r.content {
                if let Some(t) = &b.text {
                    texts.push(t);
                }
                for (key, v) in &b.extra {
                    if key == "thinking" || key == "input" {
                        json_strings(v, &mut texts);
                    }
                }
            }
            let (per_text, mut out) = scan_texts(rules, texts.into_iter());
            let mut texts_mut: Vec<&mut String> = Vec::new();
            for b in &mut r.content {
                if let Some(t) = &mut b.text {
                    texts_mut.push(t);
                }
                for (key, v) in b.extra.iter_mut() {
                    if key == "thinking" || key == "input" {
                        json_strings_mut(v, &mut texts_mut);
                    }
                }
            }
            if mask(&out, &per_text, texts_mut.into_iter()) {
                out.body = Some(ser(serde_json::to_vec(&r))?);
            }
            Ok(out)
        }
        Provider::OpenAiChat | Provider::OpenAiCompletions => {
            let mut r: openai::ChatCompletionResponse =
                serde_json::from_slice(body).map_err(|e| invalid(&e))?;
            let texts: Vec<String> = r.texts_mut().into_iter().map(|t| t.clone()).collect();
            let (per_text, mut out) = scan_texts(rules, texts.iter().map(String::as_str));
            if mask(&out, &per_text, r.texts_mut().into_iter()) {
                out.body = Some(ser(serde_json::to_vec(&r))?);
            }
            Ok(out)
        }
        // A compaction's `output` has the same items (its `compaction` item is encrypted: nothing
        // to read).
        Provider::OpenAiResponses | Provider::OpenAiResponsesCompact => {
            let mut r: Value = serde_json::from_slice(body).map_err(|e| invalid(&e))?;
            if !r.is_object() {
                return Err(BodyError::Invalid("the response is not a JSON object".into()));
            }
            let mut texts: Vec<String> = Vec::new();
            responses::for_each_output_text_mut(&mut r, |_, _, t| texts.push(t.clone()));
            let (per_text, mut out) = scan_texts(rules, texts.iter().map(String::as_str));
            // The walk visits the same texts in the same order, so `texts` can take the masks
            // and go back in.
            if mask(&out, &per_text, texts.iter_mut()) {
                let mut texts = texts.into_iter();
                responses::for_each_output_text_mut(&mut r, |_, _, t| {
                    if let Some(masked) = texts.next() {
                        *t = masked;
                    }
                });
                out.body = Some(ser(serde_json::to_vec(&r))?);
            }
            Ok(out)
        }
        // Embeddings are vectors and a token count is a number: nothing to read.
        Provider::OpenAiEmbeddings
        | Provider::AnthropicCountTokens
        | Provider::OpenAiResponsesInputTokens => Ok(Outcome::default()),
    }
}

/// Applies the masks of `per_text` to `texts` (same order) unless the outcome blocks; whether any
/// text changed.
fn mask<'a>(out: &Outcome, per_text: &[Vec<Finding>], texts: impl Iterator<Item = &'a mut String>) -> bool {
    if out.blocked.is_some() || !out.findings.iter().any(|(_, a)| *a == Action::Mask) {
        return false;
    }
    let mut changed = false;
    for (t, f) in texts.zip(per_text) {
        if let Some(masked) = moderate::apply_masks(t, f) {
            *t = masked;
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use crate::config::{RawRules, compile_rules};
    use serde_json::{Value, json};

    fn rules(v: Value) -> Rules {
        compile_rules(
            filter_core::config::parse::<RawRules>(v.to_string().as_bytes()).unwrap(),
            "request",
            true,
        )
        .unwrap()
    }

    #[test]
    fn request_masks_every_text_the_model_reads_and_keeps_the_rest() {
        let r =
            rules(json!({"detectors": {"email": {"action": "mask"}, "aws_access_key": {"action": "mask"}}}));
        let body = json!({"model": "gpt-4o", "temperature": 0.2, "messages": [
            {"role": "system", "content": "Reply to ops@corp.example"},
            {"role": "user", "content": [{"type": "text", "text": "key AKIAIOSFODNN7EXAMPLE"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function",
              "function": {"name": "mail", "arguments": "{\"to\": \"eve@x.example\"}"}}]}]});
        let out = request(&r, Provider::OpenAiChat, body.to_string().as_bytes()).unwrap();
        assert_eq!(out.blocked, None);
        let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!(v["messages"][0]["content"], "Reply to [EMAIL]");
        assert_eq!(v["messages"][1]["content"][0]["text"], "key [AWS_ACCESS_KEY]");
        assert_eq!(
            v["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"to\": \"[EMAIL]\"}"
        );
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(out.findings.len(), 3);
    }

    #[test]
    fn anthropic_system_and_tool_results_are_read_and_a_block_wins() {
        let r =
            rules(json!({"detectors": {"email": {"action": "mask"}, "private_key": {"action": "block"}}}));
        // A key-block header, built here rather than written out in the repository.
        let key_block = format!("-----BEGIN {} {}-----\nabc", "PRIVATE", "KEY");
        let body = json!({"model": "claude", "max_tokens": 10, "system": "mail a@b.example",
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                "content": key_block}]}]});
        let out = request(&r, Provider::Anthropic, body.to_string().as_bytes()).unwrap();
        assert_eq!(
            out.blocked.map(|c| r.categories[c].name.as_str()),
            Some("private_key")
        );
        assert_eq!(out.body, None);
    }

    #[test]
    fn responses_of_both_apis_are_masked() {
        let r = rules(json!({"detectors": {"us_ssn": {"action": "mask", "mask": "last4"}}}));
        let oa = json!({"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "SSN 123-45-6789"}, "finish_reason": "stop"}]});
        let out = response(&r, Provider::OpenAiChat, oa.to_string().as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "SSN ***-**-6789");
        let an = json!({"id": "x", "type": "message", "model": "m", "role": "assistant",
            "content": [{"type": "text", "text": "SSN 123-45-6789"}], "stop_reason": "end_turn"});
        let out = response(&r, Provider::Anthropic, an.to_string().as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!(v["content"][0]["text"], "SSN ***-**-6789");
        assert_eq!(v["stop_reason"], "end_turn");
        let rs = json!({"id": "resp", "object": "response", "status": "completed", "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "look up 123-45-6789"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "SSN 123-45-6789"}]},
            {"type": "function_call", "name": "f", "arguments": "{\"ssn\": \"123-45-6789\"}"}],
            "usage": {"input_tokens": 3, "output_tokens": 9}});
        let out = response(&r, Provider::OpenAiResponses, rs.to_string().as_bytes()).unwrap();
        assert_eq!(out.findings.len(), 3);
        let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!(v["output"][0]["summary"][0]["text"], "look up ***-**-6789");
        assert_eq!(v["output"][1]["content"][0]["text"], "SSN ***-**-6789");
        assert_eq!(v["output"][2]["arguments"], "{\"ssn\": \"***-**-6789\"}");
        assert_eq!(v["usage"], rs["usage"]);
        let clean =
            json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}]});
        let out = response(&r, Provider::OpenAiResponses, clean.to_string().as_bytes()).unwrap();
        assert_eq!(
            out.body, None,
            "an answer with nothing to mask goes out as it came"
        );
    }

    #[test]
    fn tool_definitions_tool_inputs_and_tool_call_outputs_are_read() {
        let r = rules(json!({"detectors": {"email": {"action": "mask"}}}));
        let body = json!({"model": "claude", "max_tokens": 10,
            "tools": [{"name": "mail", "description": "Sends mail as ops@corp.example", "input_schema": {"type": "object"}}],
            "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "mail",
                                                            "input": {"to": ["eve@x.example"]}}]}]});
        let out = request(&r, Provider::Anthropic, body.to_string().as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!(v["tools"][0]["description"], "Sends mail as [EMAIL]");
        assert_eq!(v["messages"][0]["content"][0]["input"]["to"][0], "[EMAIL]");
        let resp = json!({"id": "x", "object": "chat.completion", "model": "m", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "send", "arguments": "{\"to\":\"bob@example.com\"}"}}]}, "finish_reason": "tool_calls"}]});
        let out = response(&r, Provider::OpenAiChat, resp.to_string().as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"to\":\"[EMAIL]\"}"
        );
        let an = json!({"id": "x", "type": "message", "model": "m", "content": [
            {"type": "thinking", "thinking": "mail bob@example.com", "signature": "s"},
            {"type": "tool_use", "id": "t", "name": "mail", "input": {"to": "bob@example.com"}}]});
        let out = response(&r, Provider::Anthropic, an.to_string().as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        assert_eq!(v["content"][0]["thinking"], "mail [EMAIL]");
        assert_eq!(v["content"][1]["input"]["to"], "[EMAIL]");
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        let r = rules(json!({"detectors": {"email": {"action": "mask"}}}));
        for body in [&b"{not json"[..], b"\xff\xfe", b"[]", &[b'['; 10_000][..]] {
            assert!(matches!(
                request(&r, Provider::OpenAiChat, body),
                Err(BodyError::Invalid(_))
            ));
        }
        let deep = format!(
            "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"x\",\"extra\":{}1{}}}]}}",
            "[".repeat(500),
            "]".repeat(500)
        );
        assert!(matches!(
            request(&r, Provider::OpenAiChat, deep.as_bytes()),
            Err(BodyError::Invalid(_))
        ));
        // Without rules (classification only), a body that cannot be read is still refused.
        assert!(matches!(
            request(&Rules::default(), Provider::OpenAiChat, b"{not json"),
            Err(BodyError::Invalid(_))
        ));
        assert_eq!(
            request(
                &Rules::default(),
                Provider::OpenAiChat,
                br#"{"model":"m","messages":[]}"#
            ),
            Ok(Outcome::default())
        );
    }
}
