//! OpenAI's Responses API (`POST /v1/responses`; platform.openai.com/docs/api-reference/responses).
//!
//! `input` is a string (one user message) or a list of items: messages (`role` user, system,
//! developer or assistant; `content` a string or `input_text`/`output_text`/`input_image`/…
//! parts), earlier `function_call`s (their `arguments`), `function_call_output`s (their `output`)
//! and `reasoning` items (their `summary` texts). The gateway sees only what is sent: with
//! `previous_response_id` the provider adds the earlier turns it stored, which no filter reads,
//! counts or keys on.

use super::Extra;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    /// A string or a list of input items, kept as sent.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// A system (developer) message inserted before `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ResponsesRequest {
    /// `previous_response_id`: the provider prepends turns the gateway never saw.
    pub fn continues_stored_response(&self) -> bool {
        self.extra
            .get("previous_response_id")
            .is_some_and(|v| !v.is_null())
    }
}

/// What kind of text an input item holds, for the role its text is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// A message; its role is the item's `role`.
    Message,
    /// An earlier call's `arguments` (the model wrote them).
    FunctionCall,
    /// A tool's answer (`output`).
    FunctionCallOutput,
    /// An earlier turn's reasoning summary.
    Reasoning,
    Other,
}

impl ItemKind {
    /// Messages may omit `type` (the "easy input message" form `{role, content}`).
    pub fn of(item: &Value) -> Self {
        match item.get("type").and_then(Value::as_str) {
            None | Some("message") if item.get("role").is_some() => Self::Message,
            Some("function_call" | "custom_tool_call") => Self::FunctionCall,
            Some("function_call_output" | "custom_tool_call_output") => Self::FunctionCallOutput,
            Some("reasoning") => Self::Reasoning,
            _ => Self::Other,
        }
    }
}

/// `usage` of a Responses answer: `input_tokens` includes `input_tokens_details.cached_tokens`;
/// `output_tokens` includes `output_tokens_details.reasoning_tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub input_tokens_details: Option<InputDetails>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputDetails {
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(flatten)]
    pub extra: Extra,
}
