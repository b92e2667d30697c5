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
    /// Required by `POST /v1/responses` (checked by `Request::parse`); optional when counting
    /// input tokens.
    #[serde(default, skip_serializing_if = "String::is_empty")]
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

/// `GET /v1/responses/{id}` reads a stored response: the same generated text as the answer that
/// created it (the path only; `input_items`, `cancel`, `input_tokens`, `compact` are not it).
pub fn reads_stored_response(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.rsplit_once("/v1/responses/").is_some_and(|(_, id)| {
        !id.is_empty() && !id.contains('/') && !matches!(id, "input_tokens" | "compact")
    })
}

/// Which generated text of an output item a string is (the part's index where an item holds
/// several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputText {
    /// `message.content[i].text` (an `output_text` part).
    Text(u64),
    /// `message.content[i].refusal` (a `refusal` part).
    Refusal(u64),
    /// `function_call.arguments` or `custom_tool_call.input`.
    Arguments,
    /// `reasoning.summary[i].text`.
    Summary(u64),
    /// `reasoning.content[i].text`.
    Reasoning(u64),
}

/// Visits every generated text of one output item, mutably.
pub fn for_each_item_text_mut(item: &mut Value, mut f: impl FnMut(OutputText, &mut String)) {
    let Some(obj) = item.as_object_mut() else {
        return;
    };
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "message" => {
            for (i, part) in parts(obj.get_mut("content")) {
                match part.get_mut("text") {
                    Some(Value::String(t)) => f(OutputText::Text(i), t),
                    _ => {
                        if let Some(Value::String(t)) = part.get_mut("refusal") {
                            f(OutputText::Refusal(i), t);
                        }
                    }
                }
            }
        }
        "function_call" | "custom_tool_call" => {
            let field = if kind == "function_call" {
                "arguments"
            } else {
                "input"
            };
            if let Some(Value::String(t)) = obj.get_mut(field) {
                f(OutputText::Arguments, t);
            }
        }
        "reasoning" => {
            for (i, part) in parts(obj.get_mut("summary")) {
                if let Some(Value::String(t)) = part.get_mut("text") {
                    f(OutputText::Summary(i), t);
                }
            }
            for (i, part) in parts(obj.get_mut("content")) {
                if let Some(Value::String(t)) = part.get_mut("text") {
                    f(OutputText::Reasoning(i), t);
                }
            }
        }
        _ => {}
    }
}

/// Visits every generated text of a `response` object's `output` items, with each item's index.
pub fn for_each_output_text_mut(response: &mut Value, mut f: impl FnMut(u64, OutputText, &mut String)) {
    let Some(Value::Array(items)) = response.get_mut("output") else {
        return;
    };
    for (i, item) in items.iter_mut().enumerate() {
        for_each_item_text_mut(item, |k, t| f(i as u64, k, t));
    }
}

fn parts(v: Option<&mut Value>) -> impl Iterator<Item = (u64, &mut Value)> {
    let list = match v {
        Some(Value::Array(a)) => a.as_mut_slice(),
        _ => &mut [],
    };
    list.iter_mut().enumerate().map(|(i, p)| (i as u64, p))
}

/// A streamed event that carries generated text: which text, the field holding it, and whether
/// it is the text's `.done` event (the whole text) rather than a `.delta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamText {
    pub text: OutputText,
    pub field: &'static str,
    pub done: bool,
}

impl StreamText {
    /// Reads an event's `type` and indices (`content_index`, `summary_index`).
    pub fn of(event: &Value) -> Option<Self> {
        let kind = event.get("type")?.as_str()?;
        let index = |k: &str| event.get(k).and_then(Value::as_u64).unwrap_or(0);
        let (stem, done) = match kind.strip_suffix(".delta") {
            Some(stem) => (stem, false),
            None => (kind.strip_suffix(".done")?, true),
        };
        let (text, done_field) = match stem {
            "response.output_text" => (OutputText::Text(index("content_index")), "text"),
            "response.refusal" => (OutputText::Refusal(index("content_index")), "refusal"),
            "response.function_call_arguments" => (OutputText::Arguments, "arguments"),
            "response.custom_tool_call_input" => (OutputText::Arguments, "input"),
            "response.reasoning_summary_text" => (OutputText::Summary(index("summary_index")), "text"),
            "response.reasoning_text" => (OutputText::Reasoning(index("content_index")), "text"),
            _ => return None,
        };
        Some(Self {
            text,
            field: if done { done_field } else { "delta" },
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn every_generated_text_of_an_output_is_visited_in_its_part() {
        let mut r = json!({"output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "s0"}],
             "content": [{"type": "reasoning_text", "text": "r0"}]},
            {"type": "message", "content": [{"type": "output_text", "text": "t0"},
                                            {"type": "refusal", "refusal": "no1"}]},
            {"type": "function_call", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "custom_tool_call", "name": "g", "input": "raw"},
            {"type": "web_search_call", "status": "completed"}]});
        let mut seen = Vec::new();
        for_each_output_text_mut(&mut r, |i, k, t| {
            seen.push((i, k, t.clone()));
            t.make_ascii_uppercase();
        });
        assert_eq!(
            seen,
            vec![
                (0, OutputText::Summary(0), "s0".to_owned()),
                (0, OutputText::Reasoning(0), "r0".to_owned()),
                (1, OutputText::Text(0), "t0".to_owned()),
                (1, OutputText::Refusal(1), "no1".to_owned()),
                (2, OutputText::Arguments, "{\"a\":1}".to_owned()),
                (3, OutputText::Arguments, "raw".to_owned()),
            ]
        );
        assert_eq!(r["output"][1]["content"][1]["refusal"], "NO1");
        assert_eq!(r["output"][3]["input"], "RAW");
    }

    #[test]
    fn a_stored_response_is_read_at_its_id_only() {
        assert!(reads_stored_response("/v1/responses/resp_1"));
        assert!(reads_stored_response("/openai/v1/responses/resp_1?stream=true"));
        for p in [
            "/v1/responses",
            "/v1/responses/",
            "/v1/responses/resp_1/input_items",
            "/v1/responses/resp_1/cancel",
            "/v1/responses/input_tokens",
        ] {
            assert!(!reads_stored_response(p), "{p}");
        }
    }

    #[test]
    fn stream_events_name_their_text_and_field() {
        let of = |v: Value| StreamText::of(&v);
        assert_eq!(
            of(json!({"type": "response.output_text.delta", "content_index": 2, "delta": "x"})),
            Some(StreamText {
                text: OutputText::Text(2),
                field: "delta",
                done: false
            })
        );
        assert_eq!(
            of(json!({"type": "response.function_call_arguments.done", "arguments": "{}"})),
            Some(StreamText {
                text: OutputText::Arguments,
                field: "arguments",
                done: true
            })
        );
        assert_eq!(
            of(json!({"type": "response.reasoning_summary_text.delta", "summary_index": 1})),
            Some(StreamText {
                text: OutputText::Summary(1),
                field: "delta",
                done: false
            })
        );
        assert_eq!(of(json!({"type": "response.output_item.done"})), None);
        assert_eq!(of(json!({"type": "response.content_part.done"})), None);
        assert_eq!(of(json!({"type": "response.audio.delta"})), None);
    }
}
