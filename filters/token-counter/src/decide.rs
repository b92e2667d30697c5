//! What the filter does with a request, as data: how many tokens it reserves, which budget rules
//! apply, whose budget it is, and every way it can be refused ([`Refusal`], one variant per cause,
//! mapped to the client's error reply in one place). `filter.rs` applies these.

use crate::config::{Budgets, Config, MissingIdentity, Window};
use filter_core::api::{Request, openai};
use filter_core::error::redact_quoted;
use filter_core::{ApiError, ErrorKind};

/// Why the filter answers a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is not a request of its API; `detail` is the parser's message with quoted values
    /// redacted (they may be prompt text).
    InvalidBody { detail: String },
    /// `n` or `best_of` is not an integer in 1..=128.
    BadChoices { field: &'static str },
    /// Prompt (plus `max_tokens`, when set) over the model's context window.
    ContextLength {
        limit: u64,
        counted: u64,
        max_out: Option<u64>,
    },
    /// Budgets apply and the identity header is missing (and anonymous use is off).
    IdentityRequired { header: String },
    /// A budget rule has no room for the reservation.
    BudgetExceeded {
        rule: String,
        window: Window,
        used: u64,
        limit: u64,
        needed: u64,
        retry_after: u64,
    },
    /// The budget store failed and the budgets fail closed.
    BudgetUnavailable,
    /// The body ended without `end_of_stream` (trailers follow), so it could not be counted.
    Trailers,
    /// The body is over `max_body_bytes`.
    BodyTooLarge { limit: usize },
}

impl Refusal {
    /// From the parser's error: quoted values are redacted.
    pub fn invalid_body(err: &impl std::fmt::Display) -> Self {
        Self::InvalidBody {
            detail: redact_quoted(&err.to_string()),
        }
    }

    /// The reply's status, code and message (OpenAI's wording for the context window).
    pub fn to_error(&self) -> ApiError {
        match self {
            Self::InvalidBody { detail } => ApiError::invalid_body(detail),
            Self::BadChoices { field } => ApiError::invalid_request(
                "invalid_request_body",
                format!("`{field}` must be an integer from 1 to 128"),
            ),
            Self::ContextLength {
                limit,
                counted,
                max_out: Some(out),
            } => ApiError::invalid_request(
                "context_length_exceeded",
                format!(
                    "This model's maximum context length is {limit} tokens. However, you requested {} tokens ({counted} in the messages, {out} in the completion). Please reduce the length of the messages or completion.",
                    counted.saturating_add(*out)
                ),
            ),
            Self::ContextLength {
                limit,
                counted,
                max_out: None,
            } => ApiError::invalid_request(
                "context_length_exceeded",
                format!(
                    "This model's maximum context length is {limit} tokens. However, your messages resulted in {counted} tokens. Please reduce the length of the messages."
                ),
            ),
            Self::IdentityRequired { header } => ApiError::new(
                ErrorKind::Authentication,
                "identity_required",
                format!("token budgets need an identity in `{header}`"),
            ),
            Self::BudgetExceeded {
                rule,
                window,
                used,
                limit,
                needed,
                retry_after,
            } => ApiError::new(
                ErrorKind::RateLimited,
                "budget_exceeded",
                format!(
                    "token budget `{rule}` exhausted: {used} of {limit} tokens used this {}, this request needs {needed}; retry after {retry_after} s",
                    window_name(*window)
                ),
            ),
            Self::BudgetUnavailable => ApiError::new(
                ErrorKind::Unavailable,
                "budget_unavailable",
                "the token budget store did not answer",
            ),
            Self::Trailers => ApiError::invalid_request(
                "trailers_not_supported",
                "request trailers are not supported on LLM API requests",
            ),
            Self::BodyTooLarge { limit } => ApiError::too_large(*limit),
        }
    }

    /// Seconds for `retry-after`, when the client should wait.
    pub const fn retry_after(&self) -> Option<u64> {
        match self {
            Self::BudgetExceeded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

const fn window_name(w: Window) -> &'static str {
    match w {
        Window::Minute => "minute",
        Window::Hour => "hour",
        Window::Day => "day",
    }
}

/// Refuses a prompt that, with `max_out` completion tokens when set, exceeds `limit`.
pub fn check_context(limit: Option<u64>, counted: u64, max_out: Option<u64>) -> Result<(), Refusal> {
    match limit {
        Some(limit) if counted.saturating_add(max_out.unwrap_or(0)) > limit => Err(Refusal::ContextLength {
            limit,
            counted,
            max_out,
        }),
        _ => Ok(()),
    }
}

/// Completions the provider generates for `req`: `n` choices, or `best_of` candidates. Anything but
/// an integer in 1..=128 is refused: some OpenAI-compatible servers read `8.0` or `"8"` as 8.
pub fn choices(req: &Request) -> Result<u64, Refusal> {
    let extra = match req {
        Request::Chat(r) => &r.extra,
        Request::Completions(r) => &r.extra,
        _ => return Ok(1),
    };
    let mut n = 1;
    for field in ["n", "best_of"] {
        match extra.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => match v.as_u64().filter(|x| (1..=128).contains(x)) {
                Some(x) => n = n.max(x),
                None => return Err(Refusal::BadChoices { field }),
            },
        }
    }
    Ok(n)
}

/// Tokens to reserve: the prompt plus, for each choice, the completion limit (`max_tokens`, else
/// the configured estimate). Embeddings generate nothing.
pub fn reservation(cfg: &Config, req: &Request, counted: u64) -> Result<u64, Refusal> {
    let completion = match req {
        Request::Embeddings(_) => 0,
        _ => req
            .max_output_tokens()
            .unwrap_or(cfg.completion_estimate)
            .saturating_mul(choices(req)?),
    };
    Ok(counted.saturating_add(completion))
}

/// The budget rules that apply to a model of `group`: those without a group, and those of its.
pub fn rules_for(budgets: &Budgets, group: Option<&str>) -> Vec<usize> {
    budgets
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.group.is_none() || r.group.as_deref() == group)
        .map(|(i, _)| i)
        .collect()
}

/// Whose budget is charged: the identity header's value, `anonymous` when allowed, else a refusal.
pub fn identity(budgets: &Budgets, sent: Option<&str>) -> Result<String, Refusal> {
    match sent {
        Some(i) => Ok(i.to_owned()),
        None if budgets.missing_identity == MissingIdentity::Anonymous => Ok("anonymous".to_owned()),
        None => Err(Refusal::IdentityRequired {
            header: budgets.identity_header.clone(),
        }),
    }
}

/// OpenAI streams report usage only when asked: asks for it in `req`. `true` when this changed the
/// request (the client did not ask, so the extra usage chunk must be hidden from it).
pub fn inject_usage(req: &mut Request) -> bool {
    let opts = match req {
        Request::Chat(r) if r.stream == Some(true) => &mut r.stream_options,
        Request::Completions(r) if r.stream == Some(true) => &mut r.stream_options,
        _ => return false,
    };
    if opts.as_ref().and_then(|o| o.include_usage) == Some(true) {
        return false;
    }
    opts.get_or_insert_with(|| openai::StreamOptions {
        include_usage: None,
        extra: Default::default(),
    })
    .include_usage = Some(true);
    true
}

/// What a response charges its reservations when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The provider billed nothing (an error status): the reservations are released.
    Release,
    /// The provider reported its usage: that is the charge.
    Actual(u64),
    /// The provider may have billed an amount nobody reported: the reservations stand as the charge.
    Keep,
}

/// The charge of a response: `status` once known, `usage` (total tokens) if the provider reported
/// it, `complete` unless the stream was cut short (client gone, upstream reset), `final_usage` when
/// a usage report is final even on a cut stream (OpenAI's usage chunk comes last).
pub fn settlement(status: Option<u32>, usage: Option<u64>, complete: bool, final_usage: bool) -> Settlement {
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    match usage {
        _ if status.is_some() && !ok => Settlement::Release,
        Some(n) if complete || final_usage => Settlement::Actual(n),
        Some(_) => Settlement::Keep,
        None if complete && !ok => Settlement::Release,
        None => Settlement::Keep,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use filter_core::api::Provider;

    fn chat(body: &str) -> Request {
        Request::parse(Provider::OpenAiChat, body.as_bytes()).unwrap()
    }

    fn load(json: &str) -> Config {
        filter_core::config::parse::<crate::config::RawConfig>(json.as_bytes())
            .and_then(crate::config::compile)
            .unwrap()
    }

    fn budgets(json: &str) -> Budgets {
        load(json).budgets.unwrap()
    }

    #[test]
    fn every_refusal_has_its_status_code_and_message() {
        let cases = [
            (
                Refusal::invalid_body(&"expected `\"secret prompt\"`"),
                400,
                "invalid_request_body",
            ),
            (Refusal::BadChoices { field: "n" }, 400, "invalid_request_body"),
            (
                Refusal::ContextLength {
                    limit: 10,
                    counted: 8,
                    max_out: Some(5),
                },
                400,
                "context_length_exceeded",
            ),
            (
                Refusal::IdentityRequired {
                    header: "x-tollgate-subject".into(),
                },
                401,
                "identity_required",
            ),
            (
                Refusal::BudgetExceeded {
                    rule: "per-minute".into(),
                    window: Window::Minute,
                    used: 90,
                    limit: 100,
                    needed: 20,
                    retry_after: 42,
                },
                429,
                "budget_exceeded",
            ),
            (Refusal::BudgetUnavailable, 503, "budget_unavailable"),
            (Refusal::Trailers, 400, "trailers_not_supported"),
            (Refusal::BodyTooLarge { limit: 1024 }, 413, "request_too_large"),
        ];
        for (r, status, code) in cases {
            let e = r.to_error();
            assert_eq!((e.status(), e.code), (status, code), "{r:?}");
            assert_eq!(r.retry_after(), (status == 429).then_some(42), "{r:?}");
        }
        let body = String::from_utf8(
            Refusal::invalid_body(&"bad `\"secret prompt\"`")
                .to_error()
                .to_json(),
        )
        .unwrap();
        assert!(!body.contains("secret prompt"), "{body}");
        let m = Refusal::ContextLength {
            limit: 10,
            counted: 8,
            max_out: Some(5),
        }
        .to_error();
        assert!(
            m.message
                .contains("requested 13 tokens (8 in the messages, 5 in the completion)"),
            "{}",
            m.message
        );
        let m = Refusal::BudgetExceeded {
            rule: "daily".into(),
            window: Window::Day,
            used: 1,
            limit: 2,
            needed: 3,
            retry_after: 4,
        }
        .to_error();
        assert!(
            m.message
                .contains("1 of 2 tokens used this day, this request needs 3; retry after 4 s")
        );
    }

    #[test]
    fn the_context_window_counts_max_tokens_when_set() {
        assert_eq!(check_context(None, 1_000_000, Some(1)), Ok(()));
        assert_eq!(check_context(Some(10), 10, None), Ok(()));
        assert_eq!(check_context(Some(10), 5, Some(5)), Ok(()));
        assert!(matches!(
            check_context(Some(10), 5, Some(6)),
            Err(Refusal::ContextLength { .. })
        ));
        assert!(check_context(Some(10), u64::MAX, Some(u64::MAX)).is_err());
    }

    #[test]
    fn reservations_cover_every_choice_and_embeddings_generate_nothing() {
        let cfg = load(r#"{"completion_estimate": 100}"#);
        let msgs = r#""model":"gpt-4o","messages":[{"role":"user","content":"hi"}]"#;
        assert_eq!(reservation(&cfg, &chat(&format!("{{{msgs}}}")), 7), Ok(107));
        assert_eq!(
            reservation(&cfg, &chat(&format!("{{{msgs},\"max_tokens\":10}}")), 7),
            Ok(17)
        );
        assert_eq!(
            reservation(&cfg, &chat(&format!("{{{msgs},\"max_tokens\":10,\"n\":3}}")), 7),
            Ok(37)
        );
        for bad in ["0", "129", "2.0", "\"2\"", "-1"] {
            assert_eq!(
                reservation(&cfg, &chat(&format!("{{{msgs},\"n\":{bad}}}")), 7),
                Err(Refusal::BadChoices { field: "n" }),
                "{bad}"
            );
        }
        let emb = Request::parse(
            Provider::OpenAiEmbeddings,
            br#"{"model":"text-embedding-3-small","input":"hi"}"#,
        )
        .unwrap();
        assert!(matches!(emb, Request::Embeddings(_)));
        assert_eq!(reservation(&cfg, &emb, 7), Ok(7));
    }

    #[test]
    fn rules_without_a_group_apply_to_every_model() {
        let b = budgets(
            r#"{"models":{"gpt-4o":{"group":"gpt"},"claude-sonnet-4":{"group":"claude"}},
                "budgets":{"rules":[{"name":"all","window":"day","tokens":9},
                {"name":"gpt","group":"gpt","window":"day","tokens":9},
                {"name":"claude","group":"claude","window":"day","tokens":9}]}}"#,
        );
        assert_eq!(rules_for(&b, None), vec![0]);
        assert_eq!(rules_for(&b, Some("gpt")), vec![0, 1]);
        assert_eq!(rules_for(&b, Some("claude")), vec![0, 2]);
    }

    #[test]
    fn an_identity_is_required_unless_anonymous_use_is_on() {
        let b = budgets(r#"{"budgets":{"rules":[{"name":"a","window":"day","tokens":9}]}}"#);
        assert_eq!(identity(&b, Some("alice")), Ok("alice".to_owned()));
        assert_eq!(
            identity(&b, None),
            Err(Refusal::IdentityRequired {
                header: "x-tollgate-subject".to_owned()
            })
        );
        let b = budgets(
            r#"{"budgets":{"missing_identity":"anonymous","rules":[{"name":"a","window":"day","tokens":9}]}}"#,
        );
        assert_eq!(identity(&b, None), Ok("anonymous".to_owned()));
    }

    #[test]
    fn usage_is_asked_for_only_on_openai_streams_that_did_not_ask() {
        let msgs = r#""model":"gpt-4o","messages":[{"role":"user","content":"hi"}]"#;
        let mut r = chat(&format!("{{{msgs},\"stream\":true}}"));
        assert!(inject_usage(&mut r));
        assert!(
            String::from_utf8(r.to_vec().unwrap())
                .unwrap()
                .contains(r#""include_usage":true"#)
        );
        let mut r = chat(&format!(
            "{{{msgs},\"stream\":true,\"stream_options\":{{\"include_usage\":true}}}}"
        ));
        assert!(!inject_usage(&mut r));
        let mut r = chat(&format!("{{{msgs}}}"));
        assert!(!inject_usage(&mut r));
    }

    #[test]
    fn a_settlement_charges_what_the_provider_billed() {
        use Settlement::{Actual, Keep, Release};
        // Complete responses.
        assert_eq!(settlement(Some(200), Some(42), true, false), Actual(42));
        assert_eq!(
            settlement(Some(200), None, true, false),
            Keep,
            "a success without usage"
        );
        assert_eq!(settlement(Some(500), None, true, false), Release);
        assert_eq!(
            settlement(Some(429), Some(3), true, false),
            Release,
            "errors are not billed"
        );
        assert_eq!(settlement(None, None, true, false), Release, "no response at all");
        // Cut short.
        assert_eq!(
            settlement(Some(200), Some(42), false, true),
            Actual(42),
            "OpenAI's final usage chunk"
        );
        assert_eq!(
            settlement(Some(200), Some(42), false, false),
            Keep,
            "Anthropic's usage may grow"
        );
        assert_eq!(settlement(Some(200), None, false, false), Keep);
        assert_eq!(
            settlement(None, None, false, false),
            Keep,
            "the provider may have started"
        );
        assert_eq!(settlement(Some(503), None, false, false), Release);
    }
}
