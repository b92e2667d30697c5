//! Every way the templater answers a request itself, as data, mapped to the client's error in one
//! place. Template and decorator errors come from [`crate::render`] already shaped; the rest are
//! the filter's own.

use crate::render::RenderError;
use filter_core::error::redact_quoted;
use filter_core::{ApiError, ErrorKind};

#[derive(Debug)]
pub enum Refusal {
    /// The body is not JSON; `detail` is the parser's message with quoted values redacted.
    InvalidBody { detail: String },
    /// The template selection or its variables are malformed, or a decorator cannot apply.
    Request(ApiError),
    /// The template could not be rendered (unknown, bad variables, …).
    Render(RenderError),
    /// A template was selected by header on a request without a body.
    NeedsBody,
    /// The request body is over `max_body_bytes`.
    TooLarge { limit: usize },
    /// The rendered body could not be written back.
    RewriteFailed,
    /// The body ended with trailers, so it would go on unrendered.
    Trailers,
}

impl Refusal {
    /// From the JSON parser's error: quoted values are redacted (they may be prompt text).
    pub fn invalid_body(err: &impl std::fmt::Display) -> Self {
        Self::InvalidBody {
            detail: redact_quoted(&err.to_string()),
        }
    }

    pub fn to_error(&self) -> ApiError {
        match self {
            Self::InvalidBody { detail } => ApiError::invalid_body(detail),
            Self::Request(e) => e.clone(),
            Self::Render(e) => e.to_api(),
            Self::NeedsBody => {
                ApiError::invalid_request("invalid_request_body", "a templated request needs a JSON body")
            }
            Self::TooLarge { limit } => ApiError::too_large(*limit),
            Self::RewriteFailed => ApiError::new(
                ErrorKind::Internal,
                "internal",
                "the gateway could not rewrite the request",
            ),
            Self::Trailers => ApiError::invalid_request(
                "trailers_not_supported",
                "request trailers are not supported on LLM API requests",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_code() {
        let parse_err = serde_json::from_slice::<serde_json::Value>(br#"{"a": "secret prompt""#).unwrap_err();
        let cases = [
            (Refusal::invalid_body(&parse_err), 400, "invalid_request_body"),
            (
                Refusal::Request(ApiError::invalid_request("invalid_template_request", "x")),
                400,
                "invalid_template_request",
            ),
            (
                Refusal::Render(RenderError::UnknownTemplate("nope".into())),
                RenderError::UnknownTemplate("nope".into()).to_api().status(),
                RenderError::UnknownTemplate("nope".into()).to_api().code,
            ),
            (Refusal::NeedsBody, 400, "invalid_request_body"),
            (Refusal::TooLarge { limit: 5 }, 413, "request_too_large"),
            (Refusal::RewriteFailed, 500, "internal"),
            (Refusal::Trailers, 400, "trailers_not_supported"),
        ];
        for (r, status, code) in cases {
            let e = r.to_error();
            assert_eq!((e.status(), e.code), (status, code), "{r:?}");
        }
        let Refusal::InvalidBody { detail } = Refusal::invalid_body(&"expected `\"secret prompt\"`") else {
            unreachable!()
        };
        assert!(!detail.contains("secret prompt"), "{detail}");
    }
}
