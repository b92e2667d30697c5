//! Tool calls and thinking, as the providers send them (`x-mock-tool-call`, `x-mock-thinking`).
//!
//! On a request that defines tools, `x-mock-tool-call` makes the model call the first one: with
//! the header's value as the arguments (a JSON object), or with `1` with `{"query": <the first line
//! of the last user message>}`. OpenAI chat answers `message.tool_calls` and `finish_reason:
//! "tool_calls"`, streamed as `delta.tool_calls` argument fragments; Anthropic answers a `tool_use`
//! block and `stop_reason: "tool_use"`, streamed with `input_json_delta` fragments
//! (platform.openai.com/docs/api-reference/chat, docs.claude.com/en/docs/build-with-claude/streaming).
//! `x-mock-thinking: 1` puts an Anthropic `thinking` block (streamed as `thinking_delta` and
//! `signature_delta`) before the answer.

use super::reply::{fnv, split_pieces};
use super::{Controls, Recorded};
use crate::tokens;
use serde_json::{Value, json};

pub(super) struct ToolCall {
    pub(super) id: String,
    pub(super) name: String,
    /// The arguments as JSON text (OpenAI's `arguments`, Anthropic's `input` serialised).
    pub(super) arguments: String,
    /// Fragments for streaming; concatenated they equal `arguments`.
    pub(super) pieces: Vec<String>,
    pub(super) completion_tokens: u64,
}

/// The call the model makes, when asked for one and the request defines a tool.
pub(super) fn tool_call(
    model: &str,
    req: &Value,
    rec: &Recorded,
    ctl: &Controls,
    prompt: &str,
    anthropic: bool,
) -> Option<ToolCall> {
    let ask = ctl.tool_call.as_deref()?;
    let tool = req.get("tools")?.as_array()?.first()?;
    let name = if anthropic {
        tool.get("name")
    } else {
        tool.pointer("/function/name")
    }?
    .as_str()?
    .to_owned();
    let arguments = match serde_json::from_str::<Value>(ask) {
        Ok(v @ Value::Object(_)) => v.to_string(),
        _ => {
            let first_line: String = prompt.lines().next().unwrap_or("").chars().take(200).collect();
            json!({"query": first_line}).to_string()
        }
    };
    // Providers stream arguments in small fragments that split JSON anywhere.
    let pieces = match ctl.chunks {
        Some(_) => split_pieces(&arguments, ctl.chunks),
        None => arguments
            .chars()
            .collect::<Vec<_>>()
            .chunks(7)
            .map(|c| c.iter().collect())
            .collect(),
    };
    let h = fnv(&rec.body);
    let id = if anthropic {
        format!("toolu_mock{h:016x}")
    } else {
        format!("call_mock{h:016x}")
    };
    let completion_tokens = tokens::count(model, &name) + tokens::count(model, &arguments) + 3;
    Some(ToolCall {
        id,
        name,
        arguments,
        pieces,
        completion_tokens,
    })
}

/// The thinking an Anthropic model shows before its answer (`x-mock-thinking`).
pub(super) fn thinking(prompt: &str) -> (String, String) {
    let first_line: String = prompt.lines().next().unwrap_or("").chars().take(80).collect();
    let text = format!("The user asks: {first_line}. A short answer will do.");
    let signature = format!("sig_mock{:016x}", fnv(text.as_bytes()));
    (text, signature)
}
