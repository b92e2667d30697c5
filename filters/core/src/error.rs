//! Errors a filter answers itself, in the error shape of the client's API ([`Shape`]), with the
//! status that goes with each kind: OpenAI's `{"error":{"message":…,"type":…,"code":…}}`, or
//! Anthropic's `{"type":"error","error":{"type":…,"message":…}}` with Anthropic's type names (plus
//! our `code`, which Anthropic's versioning policy allows inside the error object).

use serde::Serialize;

/// What went wrong, which fixes the HTTP status and the OpenAI `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is malformed or breaks a rule (bad JSON, context too long, bad variable).
    InvalidRequest,
    /// 401: no or bad credentials.
    Authentication,
    /// 403: valid credentials, not allowed (also: content blocked by policy).
    PermissionDenied,
    /// 404: unknown template, route or path.
    NotFound,
    /// 413: body over the configured limit.
    RequestTooLarge,
    /// 429: budget or rate limit exhausted; pair with `retry-after`.
    RateLimited,
    /// 500: a bug on our side; never for client input.
    Internal,
    /// 503: a dependency the filter needs is down and the filter fails closed.
    Unavailable,
}

impl ErrorKind {
    pub const fn status(self) -> u32 {
        match self {
            Self::InvalidRequest => 400,
            Self::Authentication => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::RequestTooLarge => 413,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }

    /// The kind a status stands for (e.g. a configured block status), if it is one of the above.
    pub const fn from_status(status: u32) -> Option<Self> {
        Some(match status {
            400 => Self::InvalidRequest,
            401 => Self::Authentication,
            403 => Self::PermissionDenied,
            404 => Self::NotFound,
            413 => Self::RequestTooLarge,
            429 => Self::RateLimited,
            500 => Self::Internal,
            503 => Self::Unavailable,
            _ => return None,
        })
    }

    /// The OpenAI `error.type` string for this kind.
    pub const fn type_str(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::RequestTooLarge => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::PermissionDenied => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RateLimited => "rate_limit_error",
            Self::Internal => "server_error",
            Self::Unavailable => "service_unavailable",
        }
    }

    /// The Anthropic `error.type` for this kind (docs.claude.com/en/api/errors). A dependency that
    /// is down is Anthropic's `overloaded_error`, which its SDKs retry like a 503.
    pub const fn anthropic_type(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::PermissionDenied => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimited => "rate_limit_error",
            Self::Internal => "api_error",
            Self::Unavailable => "overloaded_error",
        }
    }
}

/// Which API's error body a reply takes, decided by the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    #[default]
    OpenAi,
    Anthropic,
}

impl Shape {
    /// Anthropic's for its Messages API and everything under it (`/v1/messages/count_tokens`,
    /// `/v1/messages/batches…`) and its legacy `/v1/complete`, with any mount prefix; OpenAI's
    /// for everything else (the shape of an unknown path is the gateway's own, OpenAI's).
    pub fn from_path(path: &str) -> Self {
        let path = path
            .split_once('?')
            .map_or(path, |(p, _)| p)
            .trim_end_matches('/');
        if path.ends_with("/v1/messages") || path.contains("/v1/messages/") || path.ends_with("/v1/complete")
        {
            Self::Anthropic
        } else {
            Self::OpenAi
        }
    }
}

/// An error a filter sends as a local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// Machine-readable code, e.g. `context_length_exceeded`, `budget_exceeded`.
    pub code: &'static str,
    /// Human-readable; never contains prompt text, tokens or keys.
    pub message: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct AnthropicEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicBody<'a>,
}

#[derive(Serialize)]
struct AnthropicBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    code: &'a str,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
}

impl ApiError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }

    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, code, message)
    }

    /// 400 `invalid_request_body` for a body that is not a request of its API. `detail` is the
    /// parser's message, already passed through [`redact_quoted`].
    pub fn invalid_body(detail: &str) -> Self {
        Self::invalid_request("invalid_request_body", format!("invalid request body: {detail}"))
    }

    pub fn too_large(limit_bytes: usize) -> Self {
        Self::new(
            ErrorKind::RequestTooLarge,
            "request_too_large",
            format!("request body exceeds the limit of {limit_bytes} bytes"),
        )
    }

    pub const fn status(&self) -> u32 {
        self.kind.status()
    }

    /// The JSON body in `shape`.
    pub fn to_json_in(&self, shape: Shape) -> Vec<u8> {
        match shape {
            Shape::OpenAi => self.to_json(),
            Shape::Anthropic => {
                let envelope = AnthropicEnvelope {
                    kind: "error",
                    error: AnthropicBody {
                        kind: self.kind.anthropic_type(),
                        message: &self.message,
                        code: self.code,
                    },
                };
                serde_json::to_vec(&envelope).unwrap_or_else(|_| {
                    br#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#.to_vec()
                })
            }
        }
    }

    /// The JSON body in OpenAI's shape. Serialising three strings cannot fail; the fallback keeps
    /// that promise without a panic path.
    pub fn to_json(&self) -> Vec<u8> {
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind.type_str(),
                code: self.code,
            },
        };
        serde_json::to_vec(&envelope).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error","code":"internal"}}"#.to_vec()
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({}): {}",
            self.status(),
            self.kind.type_str(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// `msg` with the content of every double-quoted string replaced by `…`: parser errors quote the
/// value they rejected (`invalid type: string "<prompt text>", expected u64`), and error messages
/// are logged, where prompt text must not appear.
pub fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(256));
    let mut inside = false;
    let mut escaped = false;
    for c in msg.chars() {
        if inside {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                inside = false;
                out.push_str("…\"");
            }
            continue;
        }
        out.push(c);
        if c == '"' {
            inside = true;
        }
    }
    if inside {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {

    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn body_has_the_openai_shape_and_escapes_the_message() {
        let err = ApiError::invalid_request("bad_json", "expected value at \"line 1\"\n");
        let v: Value = serde_json::from_slice(&err.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "expected value at \"line 1\"\n", "type": "invalid_request_error", "code": "bad_json"}})
        );
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn anthropic_paths_get_anthropics_shape_and_type_names() {
        for (path, shape) in [
            ("/v1/messages", Shape::Anthropic),
            ("/v1/messages/", Shape::Anthropic),
            ("/v1/messages?beta=true", Shape::Anthropic),
            ("/v1/messages/count_tokens", Shape::Anthropic),
            ("/anthropic/v1/messages/batches/abc", Shape::Anthropic),
            ("/v1/complete", Shape::Anthropic),
            ("/v1/chat/completions", Shape::OpenAi),
            ("/v1/responses", Shape::OpenAi),
            ("/v1/threads/t1/messages", Shape::OpenAi),
            ("/v1/messagesx", Shape::OpenAi),
            ("", Shape::OpenAi),
        ] {
            assert_eq!(Shape::from_path(path), shape, "{path}");
        }
        let err = ApiError::new(ErrorKind::RateLimited, "budget_exceeded", "over \"budget\"");
        let v: Value = serde_json::from_slice(&err.to_json_in(Shape::Anthropic)).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "over \"budget\"", "code": "budget_exceeded"}})
        );
        assert_eq!(err.to_json_in(Shape::OpenAi), err.to_json());
        let names = [
            (ErrorKind::InvalidRequest, "invalid_request_error"),
            (ErrorKind::Authentication, "authentication_error"),
            (ErrorKind::PermissionDenied, "permission_error"),
            (ErrorKind::NotFound, "not_found_error"),
            (ErrorKind::RequestTooLarge, "request_too_large"),
            (ErrorKind::RateLimited, "rate_limit_error"),
            (ErrorKind::Internal, "api_error"),
            (ErrorKind::Unavailable, "overloaded_error"),
        ];
        for (kind, name) in names {
            assert_eq!(kind.anthropic_type(), name);
        }
    }

    #[test]
    fn every_kind_maps_to_its_status() {
        let cases = [
            (ErrorKind::InvalidRequest, 400),
            (ErrorKind::Authentication, 401),
            (ErrorKind::PermissionDenied, 403),
            (ErrorKind::NotFound, 404),
            (ErrorKind::RequestTooLarge, 413),
            (ErrorKind::RateLimited, 429),
            (ErrorKind::Internal, 500),
            (ErrorKind::Unavailable, 503),
        ];
        for (kind, status) in cases {
            assert_eq!(kind.status(), status, "{kind:?}");
            assert_eq!(ErrorKind::from_status(status), Some(kind));
        }
        assert_eq!(ErrorKind::from_status(422), None);
        assert_eq!(ApiError::too_large(1024).status(), 413);
        assert!(ApiError::too_large(1024).message.contains("1024"));
    }

    #[test]
    fn quoted_values_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_quoted(r#"invalid type: string "my secret \"prompt\"", expected u64 at line 1 column 9"#),
            r#"invalid type: string "…", expected u64 at line 1 column 9"#
        );
        assert_eq!(redact_quoted("missing field `model`"), "missing field `model`");
        assert_eq!(redact_quoted(r#"cut "off"#), r#"cut "…"#);
    }
}
