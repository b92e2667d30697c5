//! The router's configuration, parsed with the failing field named and compiled once: keyword and
//! pattern fast paths folded into one `RegexSet`, precomputed example vectors normalised and
//! checked, and the example texts still to embed listed for the sidecar.

pub use filter_core::config::{ConfigError, FailureMode};

use crate::index::Index;
use filter_core::config::{REGEX_SIZE_LIMIT, SidecarConfig};
use filter_core::headers;
use regex::{RegexSet, RegexSetBuilder};
use serde::Deserialize;

/// Bounds that keep a VM's memory and a configure-time sidecar call small.
pub const MAX_ROUTES: usize = 64;
pub const MAX_EXAMPLES: usize = 1024;
pub use crate::index::MAX_DIMENSION;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Names the route in metrics, filter state and logs (letters, digits, `-`, `_`).
    pub name: String,
    /// The header value Envoy's route table matches; defaults to `name`.
    #[serde(default)]
    pub value: Option<String>,
    /// Utterances that mean this route; embedded by the sidecar when the filter starts.
    #[serde(default)]
    pub examples: Vec<String>,
    /// Precomputed example vectors (same model as the sidecar's), used without asking the sidecar.
    #[serde(default)]
    pub embeddings: Vec<Vec<f32>>,
    /// Whole words or phrases (case-insensitive) that pick this route without an embedding.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Regexes that pick this route without an embedding.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Minimum cosine similarity to the nearest example; defaults to the top-level `threshold`.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Written into the body's `model` when the request takes this route.
    #[serde(default)]
    pub model: Option<String>,
    /// Models a client may ask for by name: such requests take this route as they are.
    #[serde(default)]
    pub models: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The last user message (its text parts joined).
    #[default]
    LastUserMessage,
    /// Every user and tool text since the last assistant message.
    UserTurn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default)]
    pub source: Source,
    /// The text sent to the sidecar is cut to about this many tokens (4 bytes each, at a word
    /// boundary); the start of a prompt usually says what it is about.
    #[serde(default = "Input::default_max_tokens")]
    pub max_tokens: usize,
}

impl Input {
    fn default_max_tokens() -> usize {
        128
    }

    /// Bytes of text the sidecar gets.
    pub fn max_bytes(&self) -> usize {
        self.max_tokens.saturating_mul(4)
    }
}

impl Default for Input {
    fn default() -> Self {
        Self {
            source: Source::default(),
            max_tokens: Self::default_max_tokens(),
        }
    }
}

/// What to do with a route header the client sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientRoute {
    /// Remove it and decide (the default: the route is the gateway's decision).
    #[default]
    Strip,
    /// Keep it when it names a configured route's value, and skip the decision.
    Honor,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub routes: Vec<RawRoute>,
    /// The route taken when nothing is similar enough, the prompt has no text, or the sidecar is
    /// unavailable in `failure_mode: open`. Names one of `routes`.
    pub default_route: String,
    #[serde(default = "default_header")]
    pub header: String,
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// A route's score is the mean similarity of its `top_k` nearest examples (1: the nearest).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// When the best route's score leads the runner-up's by less than this, the prompt is between
    /// two routes and takes the default route instead of a guess (0: always the best).
    #[serde(default = "default_margin")]
    pub margin: f32,
    #[serde(default)]
    pub input: Input,
    #[serde(default)]
    pub client_route: ClientRoute,
    #[serde(default)]
    pub sidecar: SidecarConfig,
    /// Routing is not a security control: by default a request the sidecar cannot embed takes the
    /// default route (`open`); `closed` answers 503 instead.
    #[serde(default = "default_failure_mode")]
    pub failure_mode: FailureMode,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_header() -> String {
    headers::ROUTE.to_owned()
}

/// Chosen on the tuning half of integration/tests/data/routes.heldout.json (see the README).
fn default_threshold() -> f32 {
    0.1
}

/// Chosen with `default_margin`.
fn default_top_k() -> usize {
    2
}

/// Chosen on the tuning half of integration/tests/data/routes.heldout.json (see the README).
fn default_margin() -> f32 {
    0.04
}

fn default_failure_mode() -> FailureMode {
    FailureMode::Open
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub value: String,
    pub threshold: f32,
    pub model: Option<String>,
    pub models: Vec<String>,
}

#[derive(Debug)]
pub struct Config {
    pub routes: Vec<Route>,
    pub default: usize,
    pub header: String,
    pub top_k: usize,
    pub margin: f32,
    pub input: Input,
    pub client_route: ClientRoute,
    pub sidecar: SidecarConfig,
    pub failure_mode: FailureMode,
    pub max_body_bytes: usize,
    /// Keywords and patterns of every route; `fast_route[i]` is the route of pattern `i`.
    pub fast: Option<RegexSet>,
    pub fast_route: Vec<usize>,
    /// Precomputed vectors from the config (normalised).
    pub index: Index,
    /// Example texts the sidecar must embed before semantic decisions can be made, with their route.
    pub pending: Vec<(usize, String)>,
    /// Whether a decision may rewrite the body (then `content-length` must go).
    pub rewrites_model: bool,
}

impl Config {
    /// Whether any route can be chosen by meaning.
    pub fn is_semantic(&self) -> bool {
        !self.index.is_empty() || !self.pending.is_empty()
    }

    pub fn route_by_value(&self, value: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.value == value)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// A header value Envoy can match exactly: visible ASCII, no leading or trailing space.
fn valid_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|c| c.is_ascii_graphic())
}

fn valid_threshold(t: f32) -> bool {
    t.is_finite() && t > -1.0 && t <= 1.0
}

/// `(?i)\bword\b` for a keyword, with `\b` only where the keyword starts or ends in a word
/// character (so `c++` still matches).
fn keyword_pattern(kw: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let start = if word(kw.chars().next()) { r"\b" } else { "" };
    let end = if word(kw.chars().last()) { r"\b" } else { "" };
    format!("(?i:{start}{}{end})", regex::escape(kw))
}

pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.routes.is_empty() {
        return Err(ConfigError::field("routes", "at least one route is needed"));
    }
    if raw.routes.len() > MAX_ROUTES {
        return Err(ConfigError::field(
            "routes",
            format!("{} routes; at most {MAX_ROUTES}", raw.routes.len()),
        ));
    }
    let contract = [
        headers::SUBJECT,
        headers::TENANT,
        headers::CACHE,
        headers::TEMPLATE,
        headers::PROMPT_TOKENS,
        headers::BUDGET_REMAINING,
    ];
    if !headers::is_valid_name(&raw.header)
        || !raw.header.starts_with("x-")
        || contract.contains(&raw.header.as_str())
    {
        return Err(ConfigError::field(
            "header",
            "must be a lower-case `x-` header name (letters, digits, `-`, `_`) that no other Tollgate filter sets",
        ));
    }
    if !valid_threshold(raw.threshold) {
        return Err(ConfigError::field(
            "threshold",
            format!("{} is outside (-1, 1]", raw.threshold),
        ));
    }
    if !(1..=16).contains(&raw.top_k) {
        return Err(ConfigError::field(
            "top_k",
            format!("{} is outside 1..=16", raw.top_k),
        ));
    }
    if !(0.0..=1.0).contains(&raw.margin) {
        return Err(ConfigError::field(
            "margin",
            format!("{} is outside [0, 1]", raw.margin),
        ));
    }
    if !(1..=4096).contains(&raw.input.max_tokens) {
        return Err(ConfigError::field(
            "input.max_tokens",
            format!("{} is outside 1..=4096", raw.input.max_tokens),
        ));
    }
    if raw.max_body_bytes == 0 {
        return Err(ConfigError::field("max_body_bytes", "must be at least 1"));
    }
    raw.sidecar.validate("sidecar")?;

    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut fast_patterns = Vec::new();
    let mut fast_route = Vec::new();
    let mut index = Index::default();
    let mut pending = Vec::new();
    let mut examples = 0usize;
    for (i, r) in raw.routes.into_iter().enumerate() {
        let at = format!("routes[{i}]");
        if !valid_name(&r.name) {
            return Err(ConfigError::field(
                format!("{at}.name"),
                "must be 1-64 letters, digits, `-` or `_` (it names metrics)",
            ));
        }
        if routes.iter().any(|x: &Route| x.name == r.name) {
            return Err(ConfigError::field(
                format!("{at}.name"),
                format!("`{}` is used twice", r.name),
            ));
        }
        let value = r.value.unwrap_or_else(|| r.name.clone());
        if !valid_value(&value) {
            return Err(ConfigError::field(
                format!("{at}.value"),
                "must be 1-256 visible ASCII characters",
            ));
        }
        if routes.iter().any(|x: &Route| x.value == value) {
            return Err(ConfigError::field(
                format!("{at}.value"),
                format!("`{value}` is used by another route"),
            ));
        }
        let threshold = r.threshold.unwrap_or(raw.threshold);
        if !valid_threshold(threshold) {
            return Err(ConfigError::field(
                format!("{at}.threshold"),
                format!("{threshold} is outside (-1, 1]"),
            ));
        }
        if r.model
            .as_deref()
            .is_some_and(|m| m.trim().is_empty() || m.trim() != m)
        {
            return Err(ConfigError::field(
                format!("{at}.model"),
                "must be a model name without surrounding spaces",
            ));
        }
        for (j, m) in r.models.iter().enumerate() {
            let taken = routes.iter().any(|x: &Route| x.models.contains(m))
                || r.models.get(..j).is_some_and(|earlier| earlier.contains(m));
            if m.is_empty() || taken {
                return Err(ConfigError::field(
                    format!("{at}.models[{j}]"),
                    "must be a non-empty model name no other route lists",
                ));
            }
        }
        for (j, kw) in r.keywords.iter().enumerate() {
            if kw.trim().is_empty() {
                return Err(ConfigError::field(
                    format!("{at}.keywords[{j}]"),
                    "must not be empty",
                ));
            }
            fast_patterns.push(keyword_pattern(kw.trim()));
            fast_route.push(i);
        }
        for (j, p) in r.patterns.iter().enumerate() {
            // Compiled alone first, so the error names the pattern.
            regex::RegexBuilder::new(p)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ConfigError::field(format!("{at}.patterns[{j}]"), e.to_string()))?;
            fast_patterns.push(p.clone());
            fast_route.push(i);
        }
        if !r.embeddings.is_empty() && !r.examples.is_empty() && r.embeddings.len() != r.examples.len() {
            return Err(ConfigError::field(
                format!("{at}.embeddings"),
                format!(
                    "{} vectors for {} examples: give one per example, or leave either out",
                    r.embeddings.len(),
                    r.examples.len()
                ),
            ));
        }
        for (j, v) in r.embeddings.iter().enumerate() {
            index
                .push(i, v)
                .map_err(|e| ConfigError::field(format!("{at}.embeddings[{j}]"), e))?;
        }
        if r.embeddings.is_empty() {
            for (j, e) in r.examples.iter().enumerate() {
                if e.trim().is_empty() {
                    return Err(ConfigError::field(
                        format!("{at}.examples[{j}]"),
                        "must not be empty",
                    ));
                }
                pending.push((i, e.clone()));
            }
        }
        let count = r.examples.len().max(r.embeddings.len());
        if count > 0 && count < raw.top_k {
            return Err(ConfigError::field(
                format!("{at}.examples"),
                format!(
                    "{count} examples but top_k is {}: a route's score is the mean of its top_k nearest examples; add examples or lower top_k",
                    raw.top_k
                ),
            ));
        }
        examples += count;
        if examples > MAX_EXAMPLES {
            return Err(ConfigError::field(
                format!("{at}.examples"),
                format!("more than {MAX_EXAMPLES} examples in all"),
            ));
        }
        routes.push(Route {
            name: r.name,
            value,
            threshold,
            model: r.model,
            models: r.models,
        });
    }
    let default = routes
        .iter()
        .position(|r| r.name == raw.default_route)
        .ok_or_else(|| {
            ConfigError::field(
                "default_route",
                format!("`{}` is not the name of a route", raw.default_route),
            )
        })?;
    let fast = if fast_patterns.is_empty() {
        None
    } else {
        Some(
            RegexSetBuilder::new(&fast_patterns)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ConfigError::field("routes", format!("keywords and patterns: {e}")))?,
        )
    };
    let rewrites_model = routes.iter().any(|r| r.model.is_some());
    Ok(Config {
        rewrites_model,
        routes,
        default,
        header: raw.header,
        top_k: raw.top_k,
        margin: raw.margin,
        input: raw.input,
        client_route: raw.client_route,
        sidecar: raw.sidecar,
        failure_mode: raw.failure_mode,
        max_body_bytes: raw.max_body_bytes,
        fast,
        fast_route,
        index,
        pending,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use filter_core::config::parse;
    use serde_json::json;

    fn load(v: serde_json::Value) -> Result<Config, ConfigError> {
        parse::<RawConfig>(v.to_string().as_bytes()).and_then(compile)
    }

    fn err(v: serde_json::Value) -> ConfigError {
        match load(v) {
            Ok(_) => panic!("config accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_and_compiled_parts() {
        let c = load(json!({
            "routes": [
                {"name": "code", "examples": ["fix my rust"], "keywords": ["stack trace", "c++"], "model": "coder"},
                {"name": "math", "embeddings": [[3.0, 4.0]], "patterns": ["\\d+\\s*[+*/-]\\s*\\d+"]},
                {"name": "general"}
            ],
            "default_route": "general",
            "top_k": 1
        }))
        .unwrap();
        assert_eq!(c.header, "x-tollgate-route");
        assert_eq!(c.default, 2);
        assert_eq!(c.failure_mode, FailureMode::Open);
        assert_eq!(c.input, Input::default());
        assert_eq!(c.client_route, ClientRoute::Strip);
        assert_eq!(c.routes[0].value, "code");
        assert!((c.routes[1].threshold - 0.1).abs() < 1e-6);
        assert_eq!(c.top_k, 1);
        assert_eq!(c.pending, vec![(0, "fix my rust".to_owned())]);
        assert_eq!(c.index.len(), 1);
        assert_eq!(c.fast_route, vec![0, 0, 1]);
        let set = c.fast.as_ref().unwrap();
        assert!(set.is_match("I got a Stack Trace"));
        assert!(set.is_match("why does C++ do this"));
        assert!(!set.is_match("stack traces")); // whole words only
        assert!(set.is_match("what is 12 * 7"));
        assert!(c.rewrites_model);
        assert!(c.is_semantic());
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (json!({"routes": [], "default_route": "a"}), "routes"),
            (
                json!({"routes": [{"name": "a"}], "default_route": "b"}),
                "default_route",
            ),
            (
                json!({"routes": [{"name": "a b"}], "default_route": "a"}),
                "routes[0].name",
            ),
            (
                json!({"routes": [{"name": "a"}, {"name": "a"}], "default_route": "a"}),
                "routes[1].name",
            ),
            (
                json!({"routes": [{"name": "a", "value": "x"}, {"name": "b", "value": "x"}], "default_route": "a"}),
                "routes[1].value",
            ),
            (
                json!({"routes": [{"name": "a", "value": "has space"}], "default_route": "a"}),
                "routes[0].value",
            ),
            (
                json!({"routes": [{"name": "a", "threshold": 1.5}], "default_route": "a"}),
                "routes[0].threshold",
            ),
            (
                json!({"routes": [{"name": "a"}], "default_route": "a", "threshold": -2}),
                "threshold",
            ),
            (
                json!({"routes": [{"name": "a", "patterns": ["("]}], "default_route": "a"}),
                "routes[0].patterns[0]",
            ),
            (
                json!({"routes": [{"name": "a", "keywords": [" "]}], "default_route": "a"}),
                "routes[0].keywords[0]",
            ),
            (
                json!({"routes": [{"name": "a", "examples": [""]}], "default_route": "a"}),
                "routes[0].examples[0]",
            ),
            (
                json!({"routes": [{"name": "a", "embeddings": [[0.0, 0.0]]}], "default_route": "a"}),
                "routes[0].embeddings[0]",
            ),
            (
                json!({"routes": [{"name": "a", "embeddings": [[1.0], [1.0, 0.0]]}], "default_route": "a"}),
                "routes[0].embeddings[1]",
            ),
            (
                json!({"routes": [{"name": "a", "examples": ["x", "y"], "embeddings": [[1.0]]}], "default_route": "a"}),
                "routes[0].embeddings",
            ),
            (
                json!({"routes": [{"name": "a", "models": ["m"]}, {"name": "b", "models": ["m"]}], "default_route": "a"}),
                "routes[1].models[0]",
            ),
            (
                json!({"routes": [{"name": "a", "model": " "}], "default_route": "a"}),
                "routes[0].model",
            ),
            (
                json!({"routes": [{"name": "a"}], "default_route": "a", "header": "X-Route"}),
                "header",
            ),
            (
                json!({"routes": [{"name": "a"}], "default_route": "a", "header": "authorization"}),
                "header",
            ),
            (
                json!({"routes": [{"name": "a"}], "default_route": "a", "header": "x-tollgate-tenant"}),
                "header",
            ),
            (
                json!({"routes": [{"name": "a", "examples": ["x"]}], "default_route": "a"}),
                "routes[0].examples",
            ),
            (
                json!({"routes": [{"name": "a"}], "default_route": "a", "margin": 1.5}),
                "margin",
            ),
            (
                json!({"routes": [{"name": "a"}], "default_route": "a", "margin": -0.1}),
                "margin",
            ),
            (
                json!({"routes": [{"name": "a", "models": ["m", "m"]}], "default_route": "a"}),
                "routes[0].models[1]",
            ),
            (
                json!({"routes": [{"name": "a"}], "default_route": "a", "input": {"max_tokens": 0}}),
                "input.max_tokens",
            ),
            (
                json!({"routes": [{"name": "a"}], "default_route": "a", "sidecar": {"timeout_ms": 0}}),
                "sidecar.timeout_ms",
            ),
            (
                json!({"routes": [{"name": "a"}], "default_route": "a", "failure_mode": "maybe"}),
                "failure_mode",
            ),
            (
                json!({"routes": [{"name": "a", "exmples": []}], "default_route": "a"}),
                "routes[0].exmples",
            ),
        ];
        for (cfg, field) in cases {
            let e = err(cfg.clone());
            assert_eq!(e.path, field, "{cfg}: {e}");
        }
    }
}
