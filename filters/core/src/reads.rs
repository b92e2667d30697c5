//! Every text the model reads in a request, in one fixed order: the conversation's segments
//! ([`crate::prompt::for_each_segment`]), then everything else the API references say reaches the
//! model — tool and legacy function definitions, structured-output schemas, predicted output,
//! message names, earlier function calls and refusals, the completions `suffix`, Anthropic tool
//! inputs, thinking, documents with a text source and search results. This is what a moderator
//! scans and masks: a field missing here is a field a blocked secret reaches the provider through.
//!
//! Object keys are not visited (a JSON-schema property name is read but cannot be masked), nor
//! `type`/`media_type` values, which name formats. Binary sources (images, PDFs as base64) are not
//! text. A completions prompt given as token ids cannot be read without the model's tokenizer:
//! [`token_id_prompt`] says so, and a reader that must see every text refuses it.

use crate::api::{Request, anthropic, openai};
use crate::prompt;
use serde_json::Value;

/// Keys whose values name formats rather than carry text.
const NOT_TEXT: [&str; 2] = ["type", "media_type"];

/// Calls `f` for every text the model reads, in the order of [`for_each_mut`].
pub fn for_each<'a>(req: &'a Request, f: &mut dyn FnMut(&'a str)) {
    prompt::for_each_segment(req, |s| f(s.text));
    match req {
        Request::Chat(r) => {
            for m in &r.messages {
                chat_message(m, f);
            }
            r.tools.iter().flatten().for_each(|t| json(t, f));
            for key in ["functions", "response_format", "prediction"] {
                if let Some(v) = r.extra.get(key) {
                    json(v, f);
                }
            }
        }
        Request::Completions(r) => {
            if let Some(v) = r.extra.get("suffix") {
                json(v, f);
            }
        }
        Request::Embeddings(_) => {}
        Request::Responses(r) => {
            r.tools.iter().flatten().for_each(|t| json(t, f));
            if let Some(v) = r.extra.get("text") {
                json(v, f);
            }
        }
        Request::Messages(r) => {
            for m in &r.messages {
                if let anthropic::Content::Blocks(blocks) = &m.content {
                    blocks.iter().for_each(|b| block(b, f));
                }
            }
            r.tools.iter().flatten().for_each(|t| json(t, f));
        }
    }
}

/// [`for_each`], mutable (a moderator masks in place): the same texts in the same order.
pub fn for_each_mut(req: &mut Request, f: &mut dyn FnMut(&mut String)) {
    prompt::for_each_text_mut(req, &mut *f);
    match req {
        Request::Chat(r) => {
            for m in &mut r.messages {
                chat_message_mut(m, f);
            }
            r.tools.iter_mut().flatten().for_each(|t| json_mut(t, f));
            for key in ["functions", "response_format", "prediction"] {
                if let Some(v) = r.extra.get_mut(key) {
                    json_mut(v, f);
                }
            }
        }
        Request::Completions(r) => {
            if let Some(v) = r.extra.get_mut("suffix") {
                json_mut(v, f);
            }
        }
        Request::Embeddings(_) => {}
        Request::Responses(r) => {
            r.tools.iter_mut().flatten().for_each(|t| json_mut(t, f));
            if let Some(v) = r.extra.get_mut("text") {
                json_mut(v, f);
            }
        }
        Request::Messages(r) => {
            for m in &mut r.messages {
                if let anthropic::Content::Blocks(blocks) = &mut m.content {
                    blocks.iter_mut().for_each(|b| block_mut(b, f));
                }
            }
            r.tools.iter_mut().flatten().for_each(|t| json_mut(t, f));
        }
    }
}

/// Whether `req` is a completions request whose prompt is (partly) token ids.
pub fn token_id_prompt(req: &Request) -> bool {
    let Request::Completions(r) = req else {
        return false;
    };
    match &r.prompt {
        Value::Number(_) => true,
        Value::Array(items) => items
            .iter()
            .any(|i| matches!(i, Value::Number(_) | Value::Array(_))),
        _ => false,
    }
}

/// What a chat message carries besides its content and tool-call arguments (those are segments).
fn chat_message<'a>(m: &'a openai::ChatMessage, f: &mut dyn FnMut(&'a str)) {
    if let Some(name) = &m.name {
        f(name);
    }
    for key in ["function_call", "refusal"] {
        if let Some(v) = m.extra.get(key) {
            json(v, f);
        }
    }
    if let Some(openai::Content::Parts(parts)) = &m.content {
        for p in parts.iter().filter(|p| p.kind == "refusal") {
            if let Some(v) = p.extra.get("refusal") {
                json(v, f);
            }
        }
    }
}

fn chat_message_mut(m: &mut openai::ChatMessage, f: &mut dyn FnMut(&mut String)) {
    if let Some(name) = &mut m.name {
        f(name);
    }
    for key in ["function_call", "refusal"] {
        if let Some(v) = m.extra.get_mut(key) {
            json_mut(v, f);
        }
    }
    if let Some(openai::Content::Parts(parts)) = &mut m.content {
        for p in parts.iter_mut().filter(|p| p.kind == "refusal") {
            if let Some(v) = p.extra.get_mut("refusal") {
                json_mut(v, f);
            }
        }
    }
}

/// Whether a document's source is text (`text`, or `content` blocks), not base64 or a URL.
fn text_source(source: &Value) -> bool {
    matches!(
        source.get("type").and_then(Value::as_str),
        Some("text" | "content")
    )
}

/// What an Anthropic content block carries besides its `text` and tool results (segments).
fn block<'a>(b: &'a anthropic::Block, f: &mut dyn FnMut(&'a str)) {
    match b.kind.as_str() {
        "tool_use" | "server_tool_use" => b.extra.get("input").into_iter().for_each(|v| json(v, f)),
        "thinking" => b.extra.get("thinking").into_iter().for_each(|v| json(v, f)),
        "document" | "search_result" => {
            for key in ["title", "context"] {
                b.extra.get(key).into_iter().for_each(|v| json(v, f));
            }
            match b.extra.get("source") {
                Some(s) if b.kind == "search_result" || text_source(s) => json(s, f),
                _ => {}
            }
            if let Some(c) = &b.content {
                content(c, f);
            }
        }
        _ => {}
    }
}

fn block_mut(b: &mut anthropic::Block, f: &mut dyn FnMut(&mut String)) {
    match b.kind.as_str() {
        "tool_use" | "server_tool_use" => b.extra.get_mut("input").into_iter().for_each(|v| json_mut(v, f)),
        "thinking" => b
            .extra
            .get_mut("thinking")
            .into_iter()
            .for_each(|v| json_mut(v, f)),
        "document" | "search_result" => {
            for key in ["title", "context"] {
                b.extra.get_mut(key).into_iter().for_each(|v| json_mut(v, f));
            }
            let search = b.kind == "search_result";
            match b.extra.get_mut("source") {
                Some(s) if search || text_source(s) => json_mut(s, f),
                _ => {}
            }
            if let Some(c) = &mut b.content {
                content_mut(c, f);
            }
        }
        _ => {}
    }
}

/// A search result's `content`: text blocks.
fn content<'a>(c: &'a anthropic::Content, f: &mut dyn FnMut(&'a str)) {
    match c {
        anthropic::Content::Text(t) => f(t),
        anthropic::Content::Blocks(blocks) => blocks.iter().filter_map(|b| b.text.as_deref()).for_each(f),
    }
}

fn content_mut(c: &mut anthropic::Content, f: &mut dyn FnMut(&mut String)) {
    match c {
        anthropic::Content::Text(t) => f(t),
        anthropic::Content::Blocks(blocks) => blocks.iter_mut().filter_map(|b| b.text.as_mut()).for_each(f),
    }
}

fn json<'a>(v: &'a Value, f: &mut dyn FnMut(&'a str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|i| json(i, f)),
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !NOT_TEXT.contains(&k.as_str()))
            .for_each(|(_, v)| json(v, f)),
        _ => {}
    }
}

fn json_mut(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter_mut().for_each(|i| json_mut(i, f)),
        Value::Object(m) => m
            .iter_mut()
            .filter(|(k, _)| !NOT_TEXT.contains(&k.as_str()))
            .for_each(|(_, v)| json_mut(v, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Provider;

    const S: &str = "SECRET-7f3a";

    fn texts(req: &Request) -> Vec<String> {
        let mut out = Vec::new();
        for_each(req, &mut |t| out.push(t.to_owned()));
        out
    }

    fn texts_mut(req: &mut Request) -> Vec<String> {
        let mut out = Vec::new();
        for_each_mut(req, &mut |t| out.push(t.clone()));
        out
    }

    /// Each field the API references say the model reads, one body per field, with `S` in it
    /// and nowhere else: the walk must visit it, and the mutable walk must visit the same texts.
    fn cases() -> Vec<(&'static str, Provider, Value)> {
        use serde_json::json;
        let user = json!({"role": "user", "content": "hello"});
        vec![
            (
                "chat: content",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [{"role": "user", "content": S}]}),
            ),
            (
                "chat: message name",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [{"role": "user", "name": S, "content": "hi"}]}),
            ),
            (
                "chat: legacy functions[].description",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [user], "functions": [{"name": "f", "description": S, "parameters": {}}]}),
            ),
            (
                "chat: tools[].function.parameters description",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [user], "tools": [{"type": "function", "function": {"name": "f",
                    "parameters": {"type": "object", "properties": {"a": {"type": "string", "description": S}}}}}]}),
            ),
            (
                "chat: assistant function_call.arguments",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [user, {"role": "assistant", "content": null,
                    "function_call": {"name": "f", "arguments": format!("{{\"a\": \"{S}\"}}")}}]}),
            ),
            (
                "chat: assistant tool_calls arguments",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [user, {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": S}}]}]}),
            ),
            (
                "chat: response_format.json_schema description",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [user], "response_format": {"type": "json_schema", "json_schema":
                    {"name": "out", "description": S, "schema": {"type": "object"}}}}),
            ),
            (
                "chat: prediction.content",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [user], "prediction": {"type": "content", "content": S}}),
            ),
            (
                "chat: prediction.content parts",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [user], "prediction": {"type": "content", "content": [{"type": "text", "text": S}]}}),
            ),
            (
                "chat: assistant refusal part",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [user, {"role": "assistant", "content": [{"type": "refusal", "refusal": S}]}]}),
            ),
            (
                "chat: assistant refusal field",
                Provider::OpenAiChat,
                json!({"model": "m", "messages": [user, {"role": "assistant", "content": null, "refusal": S}]}),
            ),
            (
                "completions: prompt",
                Provider::OpenAiCompletions,
                json!({"model": "m", "prompt": S}),
            ),
            (
                "completions: suffix",
                Provider::OpenAiCompletions,
                json!({"model": "m", "prompt": "a", "suffix": S}),
            ),
            (
                "messages: system",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "system": S, "messages": [user]}),
            ),
            (
                "messages: document with a text source",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": S}}]}]}),
            ),
            (
                "messages: document title",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
                    {"type": "document", "title": S, "source": {"type": "url", "url": "https://x.example/a.pdf"}}]}]}),
            ),
            (
                "messages: document with content blocks",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
                    {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": S}]}}]}]}),
            ),
            (
                "messages: search_result content",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
                    {"type": "search_result", "source": "https://x.example", "title": "t",
                     "content": [{"type": "text", "text": S}]}]}]}),
            ),
            (
                "messages: search_result title",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
                    {"type": "search_result", "source": "https://x.example", "title": S,
                     "content": [{"type": "text", "text": "a"}]}]}]}),
            ),
            (
                "messages: assistant tool_use input",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "messages": [user, {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": S}}]}]}),
            ),
            (
                "messages: assistant thinking",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "messages": [user, {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": S, "signature": "sig"}, {"type": "text", "text": "a"}]}]}),
            ),
            (
                "messages: tool_result content",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": S}]}]}]}),
            ),
            (
                "messages: tools[].description",
                Provider::Anthropic,
                json!({"model": "m", "max_tokens": 1, "messages": [user], "tools": [
                    {"name": "f", "description": S, "input_schema": {"type": "object"}}]}),
            ),
            (
                "responses: input string",
                Provider::OpenAiResponses,
                json!({"model": "m", "input": S}),
            ),
            (
                "responses: instructions",
                Provider::OpenAiResponses,
                json!({"model": "m", "instructions": S, "input": "hi"}),
            ),
            (
                "responses: function_call_output",
                Provider::OpenAiResponses,
                json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": S}]}),
            ),
            (
                "responses: tools",
                Provider::OpenAiResponses,
                json!({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f", "description": S, "parameters": {}}]}),
            ),
            (
                "responses: text.format schema",
                Provider::OpenAiResponses,
                json!({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema", "name": "o", "description": S,
                    "schema": {"type": "object"}}}}),
            ),
            (
                "count_tokens: document",
                Provider::AnthropicCountTokens,
                json!({"model": "m", "messages": [{"role": "user", "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": S}}]}]}),
            ),
        ]
    }

    #[test]
    fn every_field_the_model_reads_is_visited_by_both_walks() {
        for (what, provider, body) in cases() {
            let mut req = Request::parse(provider, body.to_string().as_bytes()).unwrap();
            let seen = texts(&req);
            assert!(seen.iter().any(|t| t.contains(S)), "{what}: {seen:?}");
            assert_eq!(texts_mut(&mut req), seen, "{what}: the mutable walk differs");
        }
    }

    #[test]
    fn masking_through_the_walk_rewrites_each_field_and_nothing_else() {
        for (what, provider, body) in cases() {
            let mut req = Request::parse(provider, body.to_string().as_bytes()).unwrap();
            for_each_mut(&mut req, &mut |t| *t = t.replace(S, "[masked]"));
            let out = String::from_utf8(req.to_vec().unwrap()).unwrap();
            assert!(!out.contains(S), "{what}: {out}");
            assert!(out.contains("[masked]"), "{what}: {out}");
            // Formats stay as they were.
            let before = body.to_string();
            assert_eq!(
                out.matches("\"type\"").count(),
                before.matches("\"type\"").count(),
                "{what}"
            );
        }
    }

    #[test]
    fn format_names_and_binary_sources_are_not_text() {
        let body = serde_json::json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "QUtJQQ=="}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "text", "text": "what is in these?"}]}]});
        let req = Request::parse(Provider::Anthropic, body.to_string().as_bytes()).unwrap();
        assert_eq!(texts(&req), ["what is in these?"]);
    }

    #[test]
    fn token_id_prompts_are_recognised() {
        let parse = |v: Value| Request::parse(Provider::OpenAiCompletions, v.to_string().as_bytes()).unwrap();
        assert!(token_id_prompt(&parse(
            serde_json::json!({"model": "m", "prompt": [1, 2, 3]})
        )));
        assert!(token_id_prompt(&parse(
            serde_json::json!({"model": "m", "prompt": [[1, 2], [3]]})
        )));
        assert!(!token_id_prompt(&parse(
            serde_json::json!({"model": "m", "prompt": ["a", "b"]})
        )));
        assert!(!token_id_prompt(&parse(
            serde_json::json!({"model": "m", "prompt": "a"})
        )));
    }
}
