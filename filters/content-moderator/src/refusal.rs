//! Every way the moderator answers a request itself, as data: one variant per cause, mapped to the
//! client's error in one place. The messages name a category or a cause, never the text.

use filter_core::{ApiError, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

impl Side {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A category whose action is `block` matched (status: the configured `block_status`).
    Blocked { side: Side, category: String },
    /// The request body is not a request of its API.
    UnreadableRequest { why: String },
    /// The provider's answer is not the API's JSON.
    UnreadableResponse,
    /// The provider answered compressed although the filter asked for identity.
    CompressedResponse,
    /// The provider's answer has trailers, which would release the buffered body unchecked.
    ResponseTrailers,
    /// The request body is over `max_body_bytes`.
    RequestTooLarge { limit: usize },
    /// The provider's answer is over `max_body_bytes`.
    ResponseTooLarge,
    /// A masked body could not be written back.
    RewriteFailed,
    /// `unknown_apis: reject`, and a body to a path the moderator cannot read.
    UnsupportedApi,
    /// The request body ended with trailers, so it was not read.
    Trailers,
    /// The classifier did not answer and classification fails closed.
    ClassifierUnavailable,
}

impl Refusal {
    pub fn to_error(&self) -> ApiError {
        match self {
            Self::Blocked { side, category } => ApiError::new(
                ErrorKind::InvalidRequest,
                "content_blocked",
                format!(
                    "the {} was blocked by the content policy (category: {category})",
                    side.name()
                ),
            ),
            Self::UnreadableRequest { why } => ApiError::invalid_request(
                "invalid_request_body",
                format!("the request body could not be read for moderation: {why}"),
            ),
            Self::UnreadableResponse => ApiError::new(
                ErrorKind::Unavailable,
                "unreadable_response",
                "the provider's response could not be read for moderation",
            ),
            Self::CompressedResponse => ApiError::new(
                ErrorKind::Unavailable,
                "unreadable_response",
                "the provider's response is compressed and could not be read for moderation",
            ),
            Self::ResponseTrailers => ApiError::new(
                ErrorKind::Unavailable,
                "unreadable_response",
                "responses with trailers cannot be moderated",
            ),
            Self::RequestTooLarge { limit } => ApiError::too_large(*limit),
            Self::ResponseTooLarge => ApiError::new(
                ErrorKind::Unavailable,
                "response_too_large",
                "the provider's response is larger than the moderator reads",
            ),
            Self::RewriteFailed => ApiError::new(
                ErrorKind::Internal,
                "internal",
                "the gateway could not rewrite the body",
            ),
            Self::UnsupportedApi => ApiError::invalid_request(
                "unsupported_api",
                "the content moderator cannot read requests to this API, so they are not sent",
            ),
            Self::Trailers => ApiError::invalid_request(
                "trailers_not_supported",
                "request trailers are not supported on LLM API requests",
            ),
            Self::ClassifierUnavailable => ApiError::new(
                ErrorKind::Unavailable,
                "moderation_unavailable",
                "content moderation is unavailable; the request was not sent",
            ),
        }
    }

    /// The reply's status: a block answers the configured `block_status`, the rest their kind's.
    pub fn status(&self, block_status: u32) -> u32 {
        match self {
            Self::Blocked { .. } => block_status,
            other => other.to_error().status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_code_and_never_quotes_text() {
        let blocked = Refusal::Blocked {
            side: Side::Response,
            category: "pii.email".into(),
        };
        let cases = [
            (blocked.clone(), 451, "content_blocked"),
            (
                Refusal::UnreadableRequest {
                    why: "not JSON".into(),
                },
                400,
                "invalid_request_body",
            ),
            (Refusal::UnreadableResponse, 503, "unreadable_response"),
            (Refusal::CompressedResponse, 503, "unreadable_response"),
            (Refusal::ResponseTrailers, 503, "unreadable_response"),
            (Refusal::RequestTooLarge { limit: 10 }, 413, "request_too_large"),
            (Refusal::ResponseTooLarge, 503, "response_too_large"),
            (Refusal::RewriteFailed, 500, "internal"),
            (Refusal::UnsupportedApi, 400, "unsupported_api"),
            (Refusal::Trailers, 400, "trailers_not_supported"),
            (Refusal::ClassifierUnavailable, 503, "moderation_unavailable"),
        ];
        for (r, status, code) in cases {
            assert_eq!((r.status(451), r.to_error().code), (status, code), "{r:?}");
        }
        assert_eq!(
            blocked.to_error().message,
            "the response was blocked by the content policy (category: pii.email)"
        );
        assert_eq!(
            Refusal::Blocked {
                side: Side::Request,
                category: "x".into()
            }
            .status(400),
            400
        );
    }
}
