//! Moderating whole bodies: a request's texts (everything the model reads, in the order
//! `filter_core::prompt` walks them) and a JSON response's generated texts. A block stops at the
//! first blocking finding; masks rewrite the texts and the body is serialised again.

use crate::config::{Action, Rules};
use crate::moderate::{self, Finding};
use filter_core::api::{Provider, Request, anthropic, openai};
use filter_core::prompt;

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

pub fn request(rules: &Rules, provider: Provider, body: &[u8]) -> Result<Outcome, BodyError> {
    if rules.categories.is_empty() {
        return Ok(Outcome::default());
    }
    let mut req = Request::parse(provider, body).map_err(|e| invalid(&e))?;
    let segments = prompt::segments(&req);
    let (per_text, mut out) = scan_texts(rules, segments.iter().map(|s| s.text));
    drop(segments);
    if out.blocked.is_some() || !out.findings.iter().any(|(_, a)| *a == Action::Mask) {
        return Ok(out);
    }
    let mut k = 0;
    prompt::for_each_text_mut(&mut req, |t| {
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
            let (per_text, mut out) = scan_texts(rules, r.content.iter().filter_map(|b| b.text.as_deref()));
            if mask(
                &out,
                &per_text,
                r.content.iter_mut().filter_map(|b| b.text.as_mut()),
            ) {
                out.body = Some(ser(serde_json::to_vec(&r))?);
            }
            Ok(out)
        }
        Provider::OpenAiChat | Provider::OpenAiCompletions => {
            let mut r: openai::ChatCompletionResponse =
                serde_json::from_slice(body).map_err(|e| invalid(&e))?;
            let texts: Vec<String> = r.texts_mut().map(|t| t.clone()).collect();
            let (per_text, mut out) = scan_texts(rules, texts.iter().map(String::as_str));
            if mask(&out, &per_text, r.texts_mut()) {
                out.body = Some(ser(serde_json::to_vec(&r))?);
            }
            Ok(out)
        }
        // Embeddings are vectors: nothing to read.
        Provider::OpenAiEmbeddings => Ok(Outcome::default()),
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
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::{RawRules, compile_rules};
    use serde_json::{Value, json};

    fn rules(v: Value) -> Rules {
        compile_rules(
            filter_core::config::parse::<RawRules>(v.to_string().as_bytes()).unwrap(),
            "request",
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
        let body = json!({"model": "claude", "max_tokens": 10, "system": "mail a@b.example",
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                "content": "-----BEGIN PRIVATE KEY-----\nabc"}]}]});
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
        // No rules: the body is not even parsed.
        assert_eq!(
            request(&Rules::default(), Provider::OpenAiChat, b"{not json"),
            Ok(Outcome::default())
        );
    }
}
