//! Request and response shapes of the LLM APIs the suite understands.
//!
//! Every struct keeps the fields it does not model in `extra` (`#[serde(flatten)]`), so a filter that
//! parses, changes and re-serialises a body never drops what the client or provider sent. Typed
//! `Option` fields are omitted when `None`; an explicit `null` on such a field is therefore not
//! echoed back (the APIs treat absent and `null` alike).

pub mod anthropic;
pub mod openai;
pub mod responses;

use serde_json::{Map, Value};

/// Fields a struct does not model, kept in arrival order for faithful rewrites.
pub type Extra = Map<String, Value>;

/// Which API a request speaks, decided by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `POST /v1/chat/completions`
    OpenAiChat,
    /// `POST /v1/completions` (legacy)
    OpenAiCompletions,
    /// `POST /v1/embeddings`
    OpenAiEmbeddings,
    /// `POST /v1/responses` (not `/v1/responses/{id}…`, which read or cancel stored responses)
    OpenAiResponses,
    /// `POST /v1/responses/input_tokens`: a Responses request (`model` and `input` optional),
    /// answered with `{"object": "response.input_tokens", "input_tokens": N}`. Moderated and
    /// templated like a response; never charged, cached or routed (nothing is generated).
    OpenAiResponsesInputTokens,
    /// `POST /v1/responses/compact`: a Responses request (`model` required) whose conversation the
    /// provider compacts, answered with a `response.compaction` object (its `output` items, most
    /// often an encrypted `compaction` item, and `usage`). Moderated, templated and charged like a
    /// response; never cached or routed (the compaction belongs to the model it names).
    OpenAiResponsesCompact,
    /// `POST /v1/messages`
    Anthropic,
    /// `POST /v1/messages/count_tokens`: a Messages request without `max_tokens`, answered with
    /// `{"input_tokens": N}`. Moderated and templated like a message; never charged, cached or
    /// routed (nothing is generated).
    AnthropicCountTokens,
}

impl Provider {
    /// Detects the API from a request path (`:path`, query string allowed). Prefixes such as
    /// `/openai/v1/chat/completions` match too, since gateways often mount providers under a prefix;
    /// Anthropic's must end in `/v1/messages`.
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path
            .split_once('?')
            .map_or(path, |(p, _)| p)
            .trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(Self::OpenAiChat)
        } else if path.ends_with("/completions") {
            Some(Self::OpenAiCompletions)
        } else if path.ends_with("/embeddings") {
            Some(Self::OpenAiEmbeddings)
        } else if path.ends_with("/v1/responses") {
            Some(Self::OpenAiResponses)
        } else if path.ends_with("/v1/responses/input_tokens") {
            Some(Self::OpenAiResponsesInputTokens)
        } else if path.ends_with("/v1/responses/compact") {
            Some(Self::OpenAiResponsesCompact)
        } else if path.ends_with("/v1/messages") {
            // Only Anthropic's endpoint: OpenAI's Assistants API has `/v1/threads/{id}/messages`.
            Some(Self::Anthropic)
        } else if path.ends_with("/v1/messages/count_tokens") {
            Some(Self::AnthropicCountTokens)
        } else {
            None
        }
    }

    pub const fn is_openai(self) -> bool {
        !self.is_anthropic()
    }

    pub const fn is_anthropic(self) -> bool {
        matches!(self, Self::Anthropic | Self::AnthropicCountTokens)
    }

    /// Whether the model generates an answer (which is then charged, and cached and routed where
    /// [`Self::routable`] and the cache allow); false for the token-counting endpoints.
    pub const fn generates(self) -> bool {
        !matches!(
            self,
            Self::AnthropicCountTokens | Self::OpenAiResponsesInputTokens
        )
    }
}

impl Provider {
    /// Whether the semantic router may send the request to another model: not embeddings (their
    /// vectors belong to the model asked) nor a compaction (its output is for the model named).
    pub const fn routable(self) -> bool {
        self.generates() && !matches!(self, Self::OpenAiEmbeddings | Self::OpenAiResponsesCompact)
    }

    /// The Responses API's request shape (`/v1/responses`, `/input_tokens`, `/compact`).
    pub const fn is_responses(self) -> bool {
        matches!(
            self,
            Self::OpenAiResponses | Self::OpenAiResponsesInputTokens | Self::OpenAiResponsesCompact
        )
    }
}

/// A request body of any supported API.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Chat(openai::ChatCompletionRequest),
    Completions(openai::CompletionRequest),
    Embeddings(openai::EmbeddingRequest),
    Messages(anthropic::MessagesRequest),
    Responses(responses::ResponsesRequest),
}

impl Request {
    pub fn parse(provider: Provider, body: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match provider {
            Provider::OpenAiChat => Self::Chat(serde_json::from_slice(body)?),
            Provider::OpenAiCompletions => Self::Completions(serde_json::from_slice(body)?),
            Provider::OpenAiEmbeddings => Self::Embeddings(serde_json::from_slice(body)?),
            Provider::Anthropic => {
                let r: anthropic::MessagesRequest = serde_json::from_slice(body)?;
                if r.max_tokens.is_none() {
                    return Err(<serde_json::Error as serde::de::Error>::missing_field(
                        "max_tokens",
                    ));
                }
                Self::Messages(r)
            }
            Provider::AnthropicCountTokens => Self::Messages(serde_json::from_slice(body)?),
            Provider::OpenAiResponses | Provider::OpenAiResponsesCompact => {
                let r: responses::ResponsesRequest = serde_json::from_slice(body)?;
                if r.model.is_empty() {
                    return Err(<serde_json::Error as serde::de::Error>::missing_field("model"));
                }
                Self::Responses(r)
            }
            Provider::OpenAiResponsesInputTokens => Self::Responses(serde_json::from_slice(body)?),
        })
    }

    pub fn to_vec(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Self::Chat(r) => serde_json::to_vec(r),
            Self::Completions(r) => serde_json::to_vec(r),
            Self::Embeddings(r) => serde_json::to_vec(r),
            Self::Messages(r) => serde_json::to_vec(r),
            Self::Responses(r) => serde_json::to_vec(r),
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Self::Chat(r) => &r.model,
            Self::Completions(r) => &r.model,
            Self::Embeddings(r) => &r.model,
            Self::Messages(r) => &r.model,
            Self::Responses(r) => &r.model,
        }
    }

    pub fn set_model(&mut self, model: impl Into<String>) {
        let model = model.into();
        match self {
            Self::Chat(r) => r.model = model,
            Self::Completions(r) => r.model = model,
            Self::Embeddings(r) => r.model = model,
            Self::Messages(r) => r.model = model,
            Self::Responses(r) => r.model = model,
        }
    }

    pub fn is_stream(&self) -> bool {
        match self {
            Self::Chat(r) => r.stream == Some(true),
            Self::Completions(r) => r.stream == Some(true),
            Self::Embeddings(_) => false,
            Self::Messages(r) => r.stream == Some(true),
            Self::Responses(r) => r.stream == Some(true),
        }
    }

    /// The completion budget the client asked for (`max_completion_tokens` wins over the
    /// deprecated `max_tokens` for chat, as OpenAI does).
    pub fn max_output_tokens(&self) -> Option<u64> {
        match self {
            Self::Chat(r) => r.max_completion_tokens.or(r.max_tokens),
            Self::Completions(r) => r.max_tokens,
            Self::Embeddings(_) => None,
            Self::Messages(r) => r.max_tokens,
            Self::Responses(r) => r.max_output_tokens,
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn detects_provider_from_path() {
        let cases = [
            ("/v1/chat/completions", Some(Provider::OpenAiChat)),
            ("/v1/chat/completions?x=1", Some(Provider::OpenAiChat)),
            ("/openai/v1/chat/completions/", Some(Provider::OpenAiChat)),
            ("/v1/completions", Some(Provider::OpenAiCompletions)),
            ("/v1/embeddings", Some(Provider::OpenAiEmbeddings)),
            ("/v1/messages", Some(Provider::Anthropic)),
            ("/v1/messages/count_tokens", Some(Provider::AnthropicCountTokens)),
            (
                "/anthropic/v1/messages/count_tokens?beta=true",
                Some(Provider::AnthropicCountTokens),
            ),
            ("/v1/messages/batches", None),
            ("/v1/responses", Some(Provider::OpenAiResponses)),
            ("/openai/v1/responses?x=1", Some(Provider::OpenAiResponses)),
            ("/v1/responses/compact", Some(Provider::OpenAiResponsesCompact)),
            ("/v1/responses/resp_123", None),
            ("/v1/responses/resp_123/input_items", None),
            ("/v1/responses/resp_123/cancel", None),
            (
                "/v1/responses/input_tokens",
                Some(Provider::OpenAiResponsesInputTokens),
            ),
            ("/anthropic/v1/messages", Some(Provider::Anthropic)),
            ("/v1/threads/thread_abc/messages", None),
            ("/v1/models", None),
            ("/", None),
        ];
        for (path, want) in cases {
            assert_eq!(Provider::from_path(path), want, "{path}");
        }
    }

    #[test]
    fn request_accessors_cover_every_api() {
        let chat = Request::parse(
            Provider::OpenAiChat,
            br#"{"model":"gpt-4o","messages":[],"stream":true,"max_tokens":5,"max_completion_tokens":9}"#,
        )
        .unwrap();
        assert_eq!(
            (chat.model(), chat.is_stream(), chat.max_output_tokens()),
            ("gpt-4o", true, Some(9))
        );
        let msgs = Request::parse(
            Provider::Anthropic,
            br#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(
            (msgs.model(), msgs.is_stream(), msgs.max_output_tokens()),
            ("claude-sonnet-4-5", false, Some(64))
        );
        let mut emb = Request::parse(Provider::OpenAiEmbeddings, br#"{"model":"e","input":"x"}"#).unwrap();
        emb.set_model("text-embedding-3-small");
        assert_eq!(emb.model(), "text-embedding-3-small");
        assert_eq!(emb.max_output_tokens(), None);
        let comp = Request::parse(
            Provider::OpenAiCompletions,
            br#"{"model":"m","prompt":"p","max_tokens":3}"#,
        )
        .unwrap();
        assert_eq!(comp.max_output_tokens(), Some(3));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"model\":1}",
            b"\xff\xfe",
            b"{\"messages\":[]}",
        ] {
            assert!(Request::parse(Provider::OpenAiChat, body).is_err());
        }
        assert!(
            Request::parse(Provider::Anthropic, br#"{"model":"c","messages":[]}"#).is_err(),
            "max_tokens is required"
        );
        let count = Request::parse(
            Provider::AnthropicCountTokens,
            br#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(count.max_output_tokens(), None);
        assert_eq!(
            count.to_vec().unwrap(),
            br#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#
        );
        assert!(
            Request::parse(Provider::OpenAiResponses, br#"{"input":"hi"}"#).is_err(),
            "a response needs its model"
        );
        let count = Request::parse(Provider::OpenAiResponsesInputTokens, br#"{"input":"hi"}"#).unwrap();
        assert_eq!(count.to_vec().unwrap(), br#"{"input":"hi"}"#, "no model is added");
        assert!(!Provider::OpenAiResponsesInputTokens.generates());
        // A compaction is billed, needs a model, and is never routed to another one.
        let compact = Provider::OpenAiResponsesCompact;
        assert!(compact.generates() && !compact.routable() && compact.is_responses());
        assert!(Request::parse(compact, br#"{"input":"hi"}"#).is_err());
        assert!(Request::parse(compact, br#"{"model":"m","input":"hi"}"#).is_ok());
        assert!(Provider::OpenAiChat.routable() && !Provider::OpenAiEmbeddings.routable());
    }
}
