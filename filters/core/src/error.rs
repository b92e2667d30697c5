//! Errors a filter answers itself, in the OpenAI error shape
//! `{"error":{"message":..., "type":..., "code":...}}`, with the status that goes with each kind.

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

    /// The JSON body. Serialising three strings cannot fail; the fallback keeps that promise
    /// without a panic path.
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
        }
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
