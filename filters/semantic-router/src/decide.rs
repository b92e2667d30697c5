//! Per-request decisions, free of the host: which text decides, the client's explicit choices, the
//! keyword fast path, and the nearest example by cosine similarity.

use crate::config::{Config, Source};
pub use crate::index::Index;
use filter_core::api::Request;
use filter_core::{ApiError, ErrorKind, prompt};

/// Why the router answers a request itself (every other outcome routes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The decision needed the sidecar, it did not answer, and `failure_mode` is `closed`.
    RoutingUnavailable,
    /// The body is over `max_body_bytes`.
    TooLarge { limit: usize },
}

impl Refusal {
    pub fn to_error(self) -> ApiError {
        match self {
            Self::RoutingUnavailable => ApiError::new(
                ErrorKind::Unavailable,
                "routing_unavailable",
                "the semantic router could not reach the inference sidecar; the request was not sent",
            ),
            Self::TooLarge { limit } => ApiError::too_large(limit),
        }
    }
}

/// How a decision was made (the `method` in metrics and filter state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The client named a model a route lists, or a route value (`client_route: honor`).
    Explicit,
    /// A keyword or pattern matched.
    Keyword,
    /// The nearest example was similar enough.
    Semantic,
    /// Nothing was similar enough: the default route.
    BelowThreshold,
    /// The best two routes scored within `margin` of each other: the default route.
    Ambiguous,
    /// The request has no text to route by: the default route.
    NoText,
    /// The body is not the API's JSON: the default route (the provider answers the error).
    InvalidBody,
    /// The example vectors are not loaded yet (sidecar not reached since start).
    NotReady,
    /// The sidecar did not answer in time or failed.
    SidecarFailed,
}

impl Method {
    pub const ALL: [Self; 9] = [
        Self::Explicit,
        Self::Keyword,
        Self::Semantic,
        Self::BelowThreshold,
        Self::Ambiguous,
        Self::NoText,
        Self::InvalidBody,
        Self::NotReady,
        Self::SidecarFailed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Keyword => "keyword",
            Self::Semantic => "semantic",
            Self::BelowThreshold => "below_threshold",
            Self::Ambiguous => "ambiguous",
            Self::NoText => "no_text",
            Self::InvalidBody => "invalid_body",
            Self::NotReady => "not_ready",
            Self::SidecarFailed => "sidecar_failed",
        }
    }

    /// The decision came from a failure to decide (these honour `failure_mode`).
    pub const fn is_failure(self) -> bool {
        matches!(self, Self::NotReady | Self::SidecarFailed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub route: usize,
    pub method: Method,
    /// Similarity to the nearest example of the chosen route (semantic and below-threshold).
    pub score: Option<f32>,
}

impl Decision {
    pub const fn new(route: usize, method: Method) -> Self {
        Self {
            route,
            method,
            score: None,
        }
    }
}

/// The route of a model the client named, when a route lists it.
pub fn explicit_model(cfg: &Config, model: &str) -> Option<usize> {
    cfg.routes
        .iter()
        .position(|r| r.models.iter().any(|m| m == model))
}

/// The first route (in config order) whose keyword or pattern matches.
pub fn fast_path(cfg: &Config, text: &str) -> Option<usize> {
    let set = cfg.fast.as_ref()?;
    set.matches(text)
        .iter()
        .filter_map(|i| cfg.fast_route.get(i).copied())
        .min()
}

/// The text that decides the route, per `input.source`; `None` when there is none.
pub fn routing_text(req: &Request, source: Source) -> Option<String> {
    let text = match source {
        Source::LastUserMessage => prompt::last_user_text(req)?,
        Source::UserTurn => prompt::turn_input(req),
    };
    if text.trim().is_empty() { None } else { Some(text) }
}

/// The start of `text`, at most `max_bytes` long, cut at a whitespace when one is near the end
/// (so the last word is whole) and always at a character boundary.
pub fn truncate(text: &str, max_bytes: usize) -> &str {
    let text = text.trim();
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = text.get(..end).unwrap_or_default();
    match head.rfind(char::is_whitespace) {
        Some(ws) if ws >= end / 2 => head.get(..ws).unwrap_or(head).trim_end(),
        _ => head,
    }
}

/// Buffers [`nearest`] reuses between requests.
#[derive(Debug, Default)]
pub struct Scratch {
    top: Vec<f32>,
    scores: Vec<f32>,
}

/// The nearest route whose score (see [`Index::scores`]) reaches its threshold, best first; else the default
/// route with the best score seen. When the runner-up route (any route, above its threshold or
/// not) scores within `margin` of the best, the prompt lies between them: the default route, as
/// [`Method::Ambiguous`]. `scratch` is reused between requests.
pub fn nearest(cfg: &Config, index: &Index, q: &[f32], scratch: &mut Scratch) -> Option<Decision> {
    index.scores(
        q,
        cfg.routes.len(),
        cfg.top_k,
        &mut scratch.top,
        &mut scratch.scores,
    )?;
    let mut best: Option<(usize, f32)> = None;
    let mut top = f32::NEG_INFINITY;
    for (i, (&s, r)) in scratch.scores.iter().zip(&cfg.routes).enumerate() {
        top = top.max(s);
        if s >= r.threshold && best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    let runner_up = |route: usize| {
        scratch
            .scores
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != route)
            .map(|(_, &s)| s)
            .fold(f32::NEG_INFINITY, f32::max)
    };
    Some(match best {
        Some((route, s)) if route != cfg.default && s - runner_up(route) < cfg.margin => Decision {
            route: cfg.default,
            method: Method::Ambiguous,
            score: Some(s),
        },
        Some((route, s)) => Decision {
            route,
            method: Method::Semantic,
            score: Some(s),
        },
        None => Decision {
            route: cfg.default,
            method: Method::BelowThreshold,
            score: top.is_finite().then_some(top),
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn refusals_have_their_status_and_code() {
        let e = Refusal::RoutingUnavailable.to_error();
        assert_eq!((e.status(), e.code), (503, "routing_unavailable"));
        let e = Refusal::TooLarge { limit: 9 }.to_error();
        assert_eq!((e.status(), e.code), (413, "request_too_large"));
    }
    use crate::config::{RawConfig, compile};
    use filter_core::Provider;
    use filter_core::config::parse;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> Config {
        parse::<RawConfig>(v.to_string().as_bytes())
            .and_then(compile)
            .unwrap()
    }

    fn routes() -> Config {
        cfg(json!({
            "routes": [
                {"name": "code", "embeddings": [[1.0, 0.0, 0.0], [0.8, 0.6, 0.0]], "keywords": ["python"], "models": ["coder-latest"]},
                {"name": "math", "embeddings": [[0.0, 1.0, 0.0]], "threshold": 0.9, "keywords": ["integral"]},
                {"name": "general", "embeddings": [[0.0, 0.0, 1.0]]}
            ],
            "default_route": "general",
            "threshold": 0.5,
            "top_k": 1
        }))
    }

    #[test]
    fn nearest_example_above_its_route_threshold_wins() {
        let c = routes();
        let mut scratch = Scratch::default();
        let d = nearest(&c, &c.index, &[0.6, 0.8, 0.0], &mut scratch).unwrap();
        // code's second example scores 0.96; math scores 0.8 < its 0.9 threshold.
        assert_eq!(d.route, 0);
        assert_eq!(d.method, Method::Semantic);
        assert!((d.score.unwrap() - 0.96).abs() < 1e-5);
        let d = nearest(&c, &c.index, &[0.0, 0.95, 0.312_25], &mut scratch).unwrap();
        assert_eq!((d.route, d.method), (1, Method::Semantic));
        // Nothing reaches its threshold: default, reporting the best score.
        let d = nearest(&c, &c.index, &[0.4, -0.916_5, 0.0], &mut scratch).unwrap();
        assert_eq!((d.route, d.method), (2, Method::BelowThreshold));
        assert!((d.score.unwrap() - 0.4).abs() < 1e-5);
        // Another dimension is not a decision.
        assert!(nearest(&c, &c.index, &[1.0, 0.0], &mut scratch).is_none());
    }

    #[test]
    fn a_prompt_between_two_routes_takes_the_default() {
        let mut c = routes();
        let mut scratch = Scratch::default();
        // code 0.894 (its second example), math 0.894 (its threshold 0.9 not reached: it still
        // counts as the runner-up), general 0: code's lead is 0 < margin.
        let q = [0.447_214, 0.894_427, 0.0];
        let d = nearest(&c, &c.index, &q, &mut scratch).unwrap();
        assert_eq!((d.route, d.method), (2, Method::Ambiguous));
        // A clear lead is routed.
        let d = nearest(&c, &c.index, &[0.8, 0.6, 0.0], &mut scratch).unwrap();
        assert_eq!((d.route, d.method), (0, Method::Semantic));
        // Margin 0: always the best.
        c.margin = 0.0;
        let d = nearest(&c, &c.index, &q, &mut scratch).unwrap();
        assert_eq!((d.route, d.method), (0, Method::Semantic));
    }

    #[test]
    fn explicit_and_fast_paths() {
        let c = routes();
        assert_eq!(explicit_model(&c, "coder-latest"), Some(0));
        assert_eq!(explicit_model(&c, "gpt-4o"), None);
        assert_eq!(fast_path(&c, "solve this INTEGRAL in python"), Some(0)); // config order
        assert_eq!(fast_path(&c, "an integral please"), Some(1));
        assert_eq!(fast_path(&c, "pythonic"), None);
    }

    #[test]
    fn routing_text_by_source() {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}]},
            {"role": "tool", "tool_call_id": "1", "content": "tool output"}
        ]});
        let req = Request::parse(Provider::OpenAiChat, body.to_string().as_bytes()).unwrap();
        assert_eq!(
            routing_text(&req, Source::LastUserMessage).unwrap(),
            "second\npart"
        );
        assert_eq!(
            routing_text(&req, Source::UserTurn).unwrap(),
            "second\npart\ntool output"
        );
        let empty = json!({"model": "m", "messages": [{"role": "user", "content": "  "}]});
        let req = Request::parse(Provider::OpenAiChat, empty.to_string().as_bytes()).unwrap();
        assert!(routing_text(&req, Source::LastUserMessage).is_none());
        let an = json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hola"}]});
        let req = Request::parse(Provider::Anthropic, an.to_string().as_bytes()).unwrap();
        assert_eq!(routing_text(&req, Source::LastUserMessage).unwrap(), "hola");
    }

    #[test]
    fn truncation_keeps_whole_words_and_characters() {
        assert_eq!(truncate("  short  ", 100), "short");
        assert_eq!(truncate("alpha beta gamma", 12), "alpha beta");
        assert_eq!(truncate("abcdefghij", 4), "abcd");
        // 'é' is two bytes: never cut inside it.
        assert_eq!(truncate("ééé", 3), "é");
        assert!(truncate(&"word ".repeat(1000), 512).len() <= 512);
    }

    #[test]
    fn index_rejects_bad_vectors() {
        let mut i = Index::default();
        assert!(i.push(0, &[]).is_err());
        assert!(i.push(0, &[f32::NAN, 1.0]).is_err());
        assert!(i.push(0, &[0.0, 0.0]).is_err());
        i.push(0, &[3.0, 4.0]).unwrap();
        assert!(i.push(0, &[1.0]).is_err());
        i.push(0, &[0.0, 1.0]).unwrap();
        i.push(0, &[1.0, 0.0]).unwrap();
        let (mut top, mut out) = (Vec::new(), Vec::new());
        i.scores(&[0.6, 0.8], 2, 1, &mut top, &mut out).unwrap();
        assert!((out[0] - 1.0).abs() < 1e-6);
        assert_eq!(out[1], f32::NEG_INFINITY);
        // The mean of the two nearest (1.0 and 0.8), not of all three.
        i.scores(&[0.6, 0.8], 2, 2, &mut top, &mut out).unwrap();
        assert!((out[0] - 0.9).abs() < 1e-6);
        // More k than examples: the mean of what there is.
        i.scores(&[0.6, 0.8], 2, 5, &mut top, &mut out).unwrap();
        assert!((out[0] - 0.8).abs() < 1e-6);
    }
}
