//! OpenAI chat completions, completions and embeddings.

use super::Extra;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// `None` when absent or `null` (assistant messages that only carry `tool_calls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Some(Content::Text(text.into())),
            name: None,
            extra: Extra::new(),
        }
    }
}

/// Message content: a plain string or an array of typed parts (text, image_url, input_audio, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    /// A string, an array of strings, or token arrays.
    #[serde(default)]
    pub prompt: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    /// A string, an array of strings, or token arrays.
    pub input: Value,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `usage` of chat completions, completions and embeddings (embeddings omit `completion_tokens`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    /// `prompt_tokens_details.cached_tokens`, which OpenAI reports inside `prompt_tokens`.
    pub fn cached_tokens(&self) -> u64 {
        self.extra
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// Response of chat completions (`object: chat.completion`) or a streamed chunk
/// (`object: chat.completion.chunk`); choices stay loosely typed since filters only rewrite
/// their text through [`ChatCompletionResponse::texts_mut`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatCompletionResponse {
    /// Every generated text, mutable so a moderator can mask in place: `message`/`delta`
    /// `content` and `refusal`, the `function.arguments` of their `tool_calls`, and legacy `text`.
    pub fn texts_mut(&mut self) -> Vec<&mut String> {
        let mut out = Vec::new();
        for c in &mut self.choices {
            let Some(obj) = c.as_object_mut() else { continue };
            for (k, v) in obj.iter_mut() {
                match (k.as_str(), v) {
                    ("message" | "delta", Value::Object(m)) => {
                        for (field, value) in m.iter_mut() {
                            match (field.as_str(), value) {
                                ("content" | "refusal", Value::String(s)) => out.push(s),
                                ("tool_calls", Value::Array(calls)) => {
                                    for call in calls {
                                        if let Some(Value::String(args)) =
                                            call.get_mut("function").and_then(|f| f.get_mut("arguments"))
                                        {
                                            out.push(args);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    ("text", Value::String(s)) => out.push(s),
                    _ => {}
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use serde_json::json;

    const CHAT: &str = r#"{
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}
        ],
        "temperature": 0.2,
        "response_format": {"type": "json_object"},
        "stream": true,
        "stream_options": {"include_usage": true, "future_flag": 1},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "x_vendor": {"nested": [1, 2, 3]}
    }"#;

    #[test]
    fn chat_request_round_trip_keeps_every_field() {
        let req: ChatCompletionRequest = serde_json::from_str(CHAT).unwrap();
        let mut original: Value = serde_json::from_str(CHAT).unwrap();
        // Absent and null are the same to the API; we omit a null content on re-serialisation.
        original["messages"][2].as_object_mut().unwrap().remove("content");
        assert_eq!(serde_json::to_value(&req).unwrap(), original);
        assert_eq!(req.messages[1].name.as_deref(), Some("ann"));
        assert_eq!(req.stream_options.as_ref().unwrap().include_usage, Some(true));
    }

    #[test]
    fn rewriting_a_field_keeps_unknown_ones() {
        let mut req: ChatCompletionRequest = serde_json::from_str(CHAT).unwrap();
        req.model = "gpt-4.1".into();
        req.messages.insert(0, ChatMessage::new("system", "policy"));
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["model"], "gpt-4.1");
        assert_eq!(v["messages"][0], json!({"role": "system", "content": "policy"}));
        assert_eq!(v["x_vendor"], json!({"nested": [1, 2, 3]}));
        assert_eq!(v["messages"][2]["content"][1]["image_url"]["detail"], "low");
        assert_eq!(v["stream_options"]["future_flag"], 1);
    }

    #[test]
    fn response_texts_can_be_rewritten_in_place() {
        let mut resp: ChatCompletionResponse = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "model": "m", "created": 1,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "secret 1234"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                      "prompt_tokens_details": {"cached_tokens": 1}}
        }))
        .unwrap();
        for t in resp.texts_mut() {
            *t = t.replace("1234", "****");
        }
        let v = serde_json::to_value(&resp).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "secret ****");
        assert_eq!(v["created"], 1);
        let usage = resp.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens()
            ),
            (3, Some(2), 1)
        );
    }

    #[test]
    fn chunk_delta_and_legacy_text_are_found() {
        let mut chunk: ChatCompletionResponse = serde_json::from_value(json!({
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "a"}}, {"index": 1, "text": "b"}, {"index": 2, "delta": {}}]
        }))
        .unwrap();
        let texts: Vec<String> = chunk.texts_mut().into_iter().map(|s| s.clone()).collect();
        assert_eq!(texts, ["a", "b"]);
        let mut tools: ChatCompletionResponse = serde_json::from_value(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": "no",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]
        }))
        .unwrap();
        let texts: Vec<String> = tools.texts_mut().into_iter().map(|s| s.clone()).collect();
        assert_eq!(texts, ["no", "{\"a\":1}"]);
    }

    #[test]
    fn completion_and_embedding_requests_keep_extras() {
        let c: CompletionRequest =
            serde_json::from_str(r#"{"model":"gpt-3.5-turbo-instruct","prompt":["a","b"],"echo":true}"#)
                .unwrap();
        assert_eq!(c.prompt, json!(["a", "b"]));
        assert_eq!(serde_json::to_value(&c).unwrap()["echo"], true);
        let e: EmbeddingRequest =
            serde_json::from_str(r#"{"model":"text-embedding-3-small","input":"x","dimensions":256}"#)
                .unwrap();
        assert_eq!(serde_json::to_value(&e).unwrap()["dimensions"], 256);
    }
}
