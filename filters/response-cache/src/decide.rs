//! The cache's per-request decisions from headers, free of the host: what the client's
//! `cache-control` asks, which scope a request is cached in, and whether (and how) a response is
//! recorded. `filter.rs` reads the headers and applies these.

use crate::config::{Config, Scope, Semantic, SemanticScope};
use crate::key::Bypass;
use filter_core::verify::{self, Contrast, Verdict};

/// The client's `cache-control` request directives the cache honours.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientControl {
    /// Do not answer from the cache (the response may still be stored: a refresh).
    pub no_cache: bool,
    /// Do not store the response.
    pub no_store: bool,
}

impl ClientControl {
    pub fn parse(header: Option<&str>) -> Self {
        let mut c = Self::default();
        for d in header.unwrap_or_default().split(',').map(str::trim) {
            if d.eq_ignore_ascii_case("no-cache") {
                c.no_cache = true;
            } else if d.eq_ignore_ascii_case("no-store") {
                c.no_store = true;
            }
        }
        c
    }

    /// Neither looked up nor stored: the cache has nothing to do.
    pub const fn bypass(self) -> bool {
        self.no_cache && self.no_store
    }
}

/// The request's cache scope and its semantic scope (`None`: matched exactly only), from the
/// identity headers (empty values count as absent).
pub fn scopes(
    cfg: &Config,
    tenant: Option<&str>,
    subject: Option<&str>,
) -> Result<(String, Option<String>), Bypass> {
    let tenant = tenant.filter(|v| !v.is_empty());
    let subject = subject.filter(|v| !v.is_empty());
    let scope = match cfg.scope {
        Scope::Shared => "shared".to_owned(),
        Scope::Tenant => format!("tenant:{}", tenant.ok_or(Bypass::NoScope)?),
        Scope::Subject => format!("subject:{}", subject.ok_or(Bypass::NoScope)?),
    };
    let semantic = match cfg.semantic.scope {
        SemanticScope::Subject => subject.map(|s| format!("subject:{s}")),
        SemanticScope::Cache => Some(scope.clone()),
    };
    Ok((scope, semantic))
}

/// Why a semantic candidate is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The verifier found the prompts ask different things.
    Contrast(Contrast),
    /// Different words and a similarity under `semantic.threshold`.
    BelowThreshold,
}

impl Refused {
    pub const fn contrast(self) -> Option<Contrast> {
        match self {
            Self::Contrast(c) => Some(c),
            Self::BelowThreshold => None,
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            Self::Contrast(c) => c.as_str(),
            Self::BelowThreshold => "below the threshold",
        }
    }
}

/// Whether the sidecar's candidate (the cached `prompt`, at `similarity`, which the sidecar held
/// to `same_words_threshold`) answers `asked`: no contrast ([`verify::compare`]), and the
/// similarity reaches `threshold` unless both have the same content words.
pub fn semantic_candidate(cfg: &Semantic, prompt: &str, asked: &str, similarity: f32) -> Result<(), Refused> {
    match verify::compare(prompt, asked) {
        Verdict::SameWords => Ok(()),
        Verdict::Close if similarity >= cfg.threshold => Ok(()),
        Verdict::Close => Err(Refused::BelowThreshold),
        Verdict::Different(c) => Err(Refused::Contrast(c)),
    }
}

/// The response headers that decide whether it is stored.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResponseHead<'a> {
    pub status: Option<&'a str>,
    pub set_cookie: bool,
    pub content_encoding: Option<&'a str>,
    pub cache_control: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

/// How a response is recorded for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// The JSON body as it arrives.
    Json,
    /// The SSE stream, rebuilt into the JSON it amounts to.
    Stream,
    /// Not stored.
    No(NotStored),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Anything but 200.
    Status,
    /// A response that sets a cookie is someone's own.
    SetCookie,
    /// Compressed although the filter asked for identity: it cannot be replayed as recorded.
    Encoded,
    /// `no-store`, or `private` in a cache every user reads.
    UpstreamNoStore,
    /// The client sent `no-store`.
    ClientNoStore,
    /// The headers ended the response.
    NoBody,
    /// Not the content type the request asked for (JSON, or SSE for a stream).
    ContentType,
}

/// Whether and how the response to a request (`stream`: it asked for SSE) is recorded.
pub fn recording(
    head: &ResponseHead<'_>,
    scope: Scope,
    client: ClientControl,
    stream: bool,
    end_of_stream: bool,
) -> Recording {
    let lower = |v: Option<&str>| v.unwrap_or_default().to_ascii_lowercase();
    let cc = lower(head.cache_control);
    let why = if head.status != Some("200") {
        Some(NotStored::Status)
    } else if head.set_cookie {
        Some(NotStored::SetCookie)
    } else if head
        .content_encoding
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"))
    {
        Some(NotStored::Encoded)
    } else if cc.contains("no-store") || (cc.contains("private") && scope == Scope::Shared) {
        Some(NotStored::UpstreamNoStore)
    } else if client.no_store {
        Some(NotStored::ClientNoStore)
    } else if end_of_stream {
        Some(NotStored::NoBody)
    } else {
        None
    };
    if let Some(why) = why {
        return Recording::No(why);
    }
    let content_type = lower(head.content_type);
    if stream && content_type.starts_with("text/event-stream") {
        Recording::Stream
    } else if !stream && content_type.starts_with("application/json") {
        Recording::Json
    } else {
        Recording::No(NotStored::ContentType)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cfg(json: &str) -> Config {
        filter_core::config::parse::<crate::config::RawConfig>(json.as_bytes())
            .and_then(crate::config::compile)
            .unwrap()
    }

    #[test]
    fn a_semantic_candidate_is_served_only_without_a_contrast() {
        let cfg = Semantic::default();
        let ok = |a: &str, b: &str, sim: f32| semantic_candidate(&cfg, a, b, sim);
        assert_eq!(
            ok("What is 17 times 24?", "What is 17 times 23?", 0.99),
            Err(Refused::Contrast(Contrast::Numbers))
        );
        // Different words: the threshold decides.
        let (a, b) = (
            "How do I renew my passport?",
            "My passport expires soon and I travel next month, what must I do to renew it?",
        );
        assert_eq!(ok(a, b, cfg.threshold), Ok(()));
        assert_eq!(ok(a, b, cfg.threshold - 0.01), Err(Refused::BelowThreshold));
        // The same content words: whatever the sidecar returned (it applied the lower bar).
        assert_eq!(
            ok(
                "how do i get a refund for my order",
                "how do i get a refnd for my ordr",
                0.39
            ),
            Ok(())
        );
    }

    #[test]
    fn client_directives_are_read_case_insensitively() {
        assert_eq!(ClientControl::parse(None), ClientControl::default());
        let c = ClientControl::parse(Some("max-age=0, No-Cache"));
        assert!(c.no_cache && !c.no_store && !c.bypass());
        assert!(ClientControl::parse(Some("no-store,no-cache")).bypass());
        assert!(!ClientControl::parse(Some("no-cacheX")).no_cache);
    }

    #[test]
    fn scopes_need_their_identity() {
        let tenant = cfg("{}");
        assert_eq!(
            scopes(&tenant, Some("acme"), Some("alice")),
            Ok(("tenant:acme".to_owned(), Some("subject:alice".to_owned())))
        );
        assert_eq!(scopes(&tenant, None, Some("alice")), Err(Bypass::NoScope));
        assert_eq!(scopes(&tenant, Some(""), Some("alice")), Err(Bypass::NoScope));
        assert_eq!(
            scopes(&tenant, Some("acme"), None),
            Ok(("tenant:acme".to_owned(), None)),
            "without a subject only exact matches"
        );
        let shared = cfg(r#"{"scope":"shared","semantic":{"scope":"cache"}}"#);
        assert_eq!(
            scopes(&shared, None, None),
            Ok(("shared".to_owned(), Some("shared".to_owned())))
        );
        let subject = cfg(r#"{"scope":"subject"}"#);
        assert_eq!(scopes(&subject, Some("acme"), None), Err(Bypass::NoScope));
    }

    #[test]
    fn only_whole_public_answers_of_the_asked_type_are_recorded() {
        let ok = ResponseHead {
            status: Some("200"),
            content_type: Some("application/json; charset=utf-8"),
            ..Default::default()
        };
        let none = ClientControl::default();
        let rec = |h: &ResponseHead<'_>, scope, client, stream| recording(h, scope, client, stream, false);
        assert_eq!(rec(&ok, Scope::Tenant, none, false), Recording::Json);
        assert_eq!(
            rec(&ok, Scope::Tenant, none, true),
            Recording::No(NotStored::ContentType),
            "a stream was asked for"
        );
        let sse = ResponseHead {
            content_type: Some("text/event-stream"),
            ..ok
        };
        assert_eq!(rec(&sse, Scope::Tenant, none, true), Recording::Stream);
        let cases = [
            (
                ResponseHead {
                    status: Some("500"),
                    ..ok
                },
                NotStored::Status,
            ),
            (
                ResponseHead {
                    set_cookie: true,
                    ..ok
                },
                NotStored::SetCookie,
            ),
            (
                ResponseHead {
                    content_encoding: Some("gzip"),
                    ..ok
                },
                NotStored::Encoded,
            ),
            (
                ResponseHead {
                    cache_control: Some("No-Store"),
                    ..ok
                },
                NotStored::UpstreamNoStore,
            ),
        ];
        for (h, why) in cases {
            assert_eq!(rec(&h, Scope::Tenant, none, false), Recording::No(why), "{h:?}");
        }
        assert_eq!(
            rec(
                &ResponseHead {
                    content_encoding: Some(" identity "),
                    ..ok
                },
                Scope::Tenant,
                none,
                false
            ),
            Recording::Json
        );
        let private = ResponseHead {
            cache_control: Some("private, max-age=60"),
            ..ok
        };
        assert_eq!(rec(&private, Scope::Subject, none, false), Recording::Json);
        assert_eq!(
            rec(&private, Scope::Shared, none, false),
            Recording::No(NotStored::UpstreamNoStore)
        );
        let no_store = ClientControl {
            no_store: true,
            ..none
        };
        assert_eq!(
            rec(&ok, Scope::Tenant, no_store, false),
            Recording::No(NotStored::ClientNoStore)
        );
        assert_eq!(
            recording(&ok, Scope::Tenant, none, false, true),
            Recording::No(NotStored::NoBody)
        );
    }
}
