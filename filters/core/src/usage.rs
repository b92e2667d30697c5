//! Token usage reported by providers, normalised so cached tokens are never counted twice.
//!
//! OpenAI reports `prompt_tokens` *including* `prompt_tokens_details.cached_tokens`; Anthropic reports
//! `input_tokens` *excluding* `cache_read_input_tokens` and `cache_creation_input_tokens`. Both map to
//! [`TokenUsage`], whose input fields are disjoint.

use crate::api::{Provider, anthropic, openai, responses};
use crate::sse::Event;
use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Input tokens billed at the full rate (not read from or written to a prompt cache).
    pub input_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache (Anthropic).
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
}

impl TokenUsage {
    /// All input tokens, whatever their rate.
    pub fn total_input(&self) -> u64 {
        // Saturating: the numbers come from the upstream, and a wrapped sum would undercharge.
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    pub fn total(&self) -> u64 {
        self.total_input().saturating_add(self.output_tokens)
    }

    pub fn from_openai(u: &openai::Usage) -> Self {
        let cached = u.cached_tokens().min(u.prompt_tokens);
        Self {
            input_tokens: u.prompt_tokens - cached,
            cache_read_tokens: cached,
            cache_write_tokens: 0,
            output_tokens: u.completion_tokens.unwrap_or(0),
        }
    }

    /// Responses API usage: `input_tokens` includes `input_tokens_details.cached_tokens`, and
    /// `output_tokens` the reasoning tokens (billed as output).
    pub fn from_responses(u: &responses::Usage) -> Self {
        let cached = u
            .input_tokens_details
            .as_ref()
            .map_or(0, |d| d.cached_tokens)
            .min(u.input_tokens);
        Self {
            input_tokens: u.input_tokens - cached,
            cache_read_tokens: cached,
            cache_write_tokens: 0,
            output_tokens: u.output_tokens,
        }
    }

    pub fn from_anthropic(u: &anthropic::Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            cache_read_tokens: u.cache_read_input_tokens.unwrap_or(0),
            cache_write_tokens: u.cache_creation_input_tokens.unwrap_or(0),
            output_tokens: u.output_tokens,
        }
    }
}

#[derive(Deserialize)]
struct OpenAiProbe {
    #[serde(default)]
    choices: Vec<IgnoredAny>,
    #[serde(default)]
    usage: Option<openai::Usage>,
}

/// A Responses body (`usage` at the top) or stream event (`response.usage` in
/// `response.completed`, `response.incomplete` and `response.failed`).
#[derive(Deserialize)]
struct ResponsesProbe {
    #[serde(default)]
    usage: Option<responses::Usage>,
    #[serde(default)]
    response: Option<ResponsesInner>,
}

#[derive(Deserialize)]
struct ResponsesInner {
    #[serde(default)]
    usage: Option<responses::Usage>,
}

#[derive(Deserialize)]
struct AnthropicProbe {
    #[serde(default)]
    usage: Option<anthropic::Usage>,
    #[serde(default)]
    message: Option<AnthropicMessageProbe>,
}

#[derive(Deserialize)]
struct AnthropicMessageProbe {
    #[serde(default)]
    usage: Option<anthropic::Usage>,
}

/// Usage in a complete (non-streaming) response body; `None` when the body has none or is not JSON.
pub fn from_response(provider: Provider, body: &[u8]) -> Option<TokenUsage> {
    if provider.is_responses() {
        let probe: ResponsesProbe = serde_json::from_slice(body).ok()?;
        probe.usage.as_ref().map(TokenUsage::from_responses)
    } else if provider.is_openai() {
        let probe: OpenAiProbe = serde_json::from_slice(body).ok()?;
        probe.usage.as_ref().map(TokenUsage::from_openai)
    } else {
        let probe: AnthropicProbe = serde_json::from_slice(body).ok()?;
        probe.usage.as_ref().map(TokenUsage::from_anthropic)
    }
}

/// Accumulates usage from a streamed response, one SSE event at a time.
#[derive(Debug, Clone, Default)]
pub struct StreamUsage {
    usage: Option<TokenUsage>,
}

/// What [`StreamUsage::observe`] saw in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// No usage in this event.
    Nothing,
    /// Usage inside an event that also carries content (Anthropic `message_start`/`message_delta`).
    Usage,
    /// An OpenAI chunk whose only purpose is usage (`choices: []`), which exists because
    /// `stream_options.include_usage` was set; a filter that set it itself drops this event.
    UsageOnlyChunk,
}

impl StreamUsage {
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    pub fn observe(&mut self, provider: Provider, event: &Event) -> Observed {
        let Some(data) = event.data.as_deref() else {
            return Observed::Nothing;
        };
        // Cheap pre-check: most chunks carry no usage object, skip parsing them.
        if !has_usage_object(data) {
            return Observed::Nothing;
        }
        if provider == Provider::OpenAiResponses {
            // The terminal event's response holds the whole turn's usage.
            let Ok(probe) = serde_json::from_str::<ResponsesProbe>(data) else {
                return Observed::Nothing;
            };
            let Some(u) = probe.response.and_then(|r| r.usage) else {
                return Observed::Nothing;
            };
            self.usage = Some(TokenUsage::from_responses(&u));
            return Observed::Usage;
        }
        if provider.is_openai() {
            let Ok(probe) = serde_json::from_str::<OpenAiProbe>(data) else {
                return Observed::Nothing;
            };
            let Some(u) = probe.usage else {
                return Observed::Nothing;
            };
            self.usage = Some(TokenUsage::from_openai(&u));
            if probe.choices.is_empty() {
                Observed::UsageOnlyChunk
            } else {
                Observed::Usage
            }
        } else {
            let Ok(probe) = serde_json::from_str::<AnthropicProbe>(data) else {
                return Observed::Nothing;
            };
            let current = self.usage.get_or_insert_with(TokenUsage::default);
            if let Some(u) = probe.message.and_then(|m| m.usage) {
                // message_start: the input side, and an initial output count.
                *current = TokenUsage::from_anthropic(&u);
                return Observed::Usage;
            }
            if let Some(u) = probe.usage {
                // message_delta: output_tokens is cumulative; input fields appear only when the
                // provider revises them, so zeros must not overwrite what message_start said.
                current.output_tokens = u.output_tokens;
                if u.input_tokens > 0 {
                    current.input_tokens = u.input_tokens;
                }
                if let Some(r) = u.cache_read_input_tokens.filter(|&r| r > 0) {
                    current.cache_read_tokens = r;
                }
                if let Some(w) = u.cache_creation_input_tokens.filter(|&w| w > 0) {
                    current.cache_write_tokens = w;
                }
                return Observed::Usage;
            }
            Observed::Nothing
        }
    }
}

/// True when `data` contains `"usage":` followed by an object (not `null`).
fn has_usage_object(data: &str) -> bool {
    let mut rest = data;
    while let Some(i) = rest.find("\"usage\"") {
        rest = rest.get(i + 7..).unwrap_or("");
        let after = rest.trim_start();
        if after
            .strip_prefix(':')
            .is_some_and(|v| v.trim_start().starts_with('{'))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::sse::SseParser;

    fn events(stream: &str) -> Vec<Event> {
        let mut out = Vec::new();
        SseParser::default().feed(stream.as_bytes(), &mut out).unwrap();
        out
    }

    #[test]
    fn openai_json_usage_splits_cached_tokens_out() {
        let body = br#"{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":7,"total_tokens":107,"prompt_tokens_details":{"cached_tokens":60}}}"#;
        let u = from_response(Provider::OpenAiChat, body).unwrap();
        assert_eq!(
            u,
            TokenUsage {
                input_tokens: 40,
                cache_read_tokens: 60,
                cache_write_tokens: 0,
                output_tokens: 7
            }
        );
        assert_eq!((u.total_input(), u.total()), (100, 107));
    }

    #[test]
    fn responses_usage_from_the_body_and_the_terminal_event() {
        let usage = r#"{"input_tokens":100,"input_tokens_details":{"cached_tokens":60},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":130}"#;
        let want = TokenUsage {
            input_tokens: 40,
            cache_read_tokens: 60,
            cache_write_tokens: 0,
            output_tokens: 30,
        };
        let body = format!(
            r#"{{"id":"resp_1","object":"response","status":"completed","output":[],"usage":{usage}}}"#
        );
        assert_eq!(
            from_response(Provider::OpenAiResponses, body.as_bytes()),
            Some(want)
        );
        let stream = format!(
            "event: response.created\ndata: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{{\"id\":\"resp_1\",\"usage\":null}}}}\n\n\
             event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"usage: {{\"}}\n\n\
             event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{{\"id\":\"resp_1\",\"usage\":{usage}}}}}\n\n"
        );
        let mut acc = StreamUsage::default();
        let seen: Vec<Observed> = events(&stream)
            .iter()
            .map(|e| acc.observe(Provider::OpenAiResponses, e))
            .collect();
        assert_eq!(seen, [Observed::Nothing, Observed::Nothing, Observed::Usage]);
        assert_eq!(acc.usage(), Some(want));
    }

    #[test]
    fn anthropic_json_usage_keeps_cache_fields_separate() {
        let body = br#"{"type":"message","content":[],"usage":{"input_tokens":12,"output_tokens":30,"cache_read_input_tokens":1000,"cache_creation_input_tokens":200}}"#;
        let u = from_response(Provider::Anthropic, body).unwrap();
        assert_eq!(
            u,
            TokenUsage {
                input_tokens: 12,
                cache_read_tokens: 1000,
                cache_write_tokens: 200,
                output_tokens: 30
            }
        );
        assert_eq!(u.total_input(), 1212);
    }

    #[test]
    fn responses_without_usage_or_json_give_none() {
        assert_eq!(from_response(Provider::OpenAiChat, b"not json"), None);
        assert_eq!(from_response(Provider::OpenAiChat, br#"{"choices":[]}"#), None);
        assert_eq!(from_response(Provider::Anthropic, br#"{"usage":null}"#), None);
    }

    #[test]
    fn openai_stream_usage_chunk_is_recognised() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"usage: {x}\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut acc = StreamUsage::default();
        let seen: Vec<Observed> = events(stream)
            .iter()
            .map(|e| acc.observe(Provider::OpenAiChat, e))
            .collect();
        assert_eq!(
            seen,
            [Observed::Nothing, Observed::UsageOnlyChunk, Observed::Nothing]
        );
        assert_eq!(
            acc.usage(),
            Some(TokenUsage {
                input_tokens: 9,
                output_tokens: 4,
                ..Default::default()
            })
        );
    }

    #[test]
    fn anthropic_stream_usage_from_start_and_delta() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"c\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":300,\"cache_creation_input_tokens\":0}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\\"usage\\\": {\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        let mut acc = StreamUsage::default();
        let seen: Vec<Observed> = events(stream)
            .iter()
            .map(|e| acc.observe(Provider::Anthropic, e))
            .collect();
        assert_eq!(
            seen,
            [
                Observed::Usage,
                Observed::Nothing,
                Observed::Usage,
                Observed::Nothing
            ]
        );
        assert_eq!(
            acc.usage(),
            Some(TokenUsage {
                input_tokens: 25,
                cache_read_tokens: 300,
                cache_write_tokens: 0,
                output_tokens: 15
            })
        );
    }

    #[test]
    fn usage_pre_check() {
        assert!(has_usage_object(r#"{"usage": {"a":1}}"#));
        assert!(!has_usage_object(r#"{"usage":null}"#));
        assert!(!has_usage_object(r#"{"text":"usage"}"#));
        assert!(has_usage_object(r#"{"x":"\"usage\"","usage" : {}}"#));
    }
}
