//! The moderator's configuration, parsed with the failing field named and compiled once: detectors
//! built, rule regexes compiled with a size limit (a pattern cannot exhaust the VM's memory).

pub use filter_core::config::{ConfigError, FailureMode};

use filter_core::config::SidecarConfig;

use crate::detect::{Detector, Kind};
use crate::partial::Partial;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A stream's hold-back window may not grow past this (a match longer than this is released
/// anyway).
pub const MAX_WINDOW: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Refuse the request (or end the response) naming the category.
    Block,
    /// Replace the match and let the text through.
    Mask,
    /// Count and record the category only.
    Log,
}

impl Action {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Mask => "mask",
            Self::Log => "log",
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskStyle {
    /// `[EMAIL]`, `[PAYMENT_CARD]`, or the rule's name.
    #[default]
    Label,
    /// Letters and digits become `*` except the last four; separators stay (`**** **** **** 1111`).
    Last4,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    pub action: Action,
    #[serde(default)]
    pub mask: MaskStyle,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// The category reported when it matches (letters, digits, `-`, `_`).
    pub name: String,
    pub pattern: String,
    #[serde(default)]
    pub case_insensitive: bool,
    #[serde(default = "default_block")]
    pub action: Action,
    #[serde(default)]
    pub mask: MaskStyle,
}

fn default_block() -> Action {
    Action::Block
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    pub pattern: String,
    #[serde(default)]
    pub case_insensitive: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    /// Built-in detectors by name, each with its action. Keyed by the name as written, so an error
    /// inside one names it (`request.detectors.email.action`); names are checked when compiled.
    #[serde(default)]
    pub detectors: BTreeMap<String, RawDetector>,
    #[serde(default)]
    pub deny: Vec<RawRule>,
    /// A finding inside a match of one of these is let through (e.g. the company's own support
    /// address).
    #[serde(default)]
    pub allow: Vec<RawAllow>,
}

/// A compiled category: a detector or a deny rule.
#[derive(Debug)]
pub enum Matcher {
    Detector(Detector),
    Rule(regex::Regex),
}

#[derive(Debug)]
pub struct Category {
    pub name: String,
    pub matcher: Matcher,
    pub action: Action,
    pub mask: MaskStyle,
}

#[derive(Debug, Default)]
pub struct Rules {
    pub categories: Vec<Category>,
    pub allow: Vec<regex::Regex>,
    /// Every category's pattern in one set, in category order: one pass over a text says which
    /// categories can match at all (clean text costs one scan, not one per category).
    pub set: Option<regex::RegexSet>,
    /// Response rules only: where a masking or blocking match may still be forming at the end of
    /// a streamed text (`None`: no such category, nothing is held).
    pub partial: Option<Partial>,
}

fn regex(pattern: &str, case_insensitive: bool, at: &str) -> Result<regex::Regex, ConfigError> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(filter_core::config::REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ConfigError::field(at, e.to_string()))
}

/// Compiles `raw`; `at` is where it sits in the filter's config (e.g. `request`). `streamed`:
/// the rules moderate streams, so their partial-match automaton is built too.
pub fn compile_rules(raw: RawRules, at: &str, streamed: bool) -> Result<Rules, ConfigError> {
    let mut categories = Vec::new();
    let mut patterns: Vec<String> = Vec::new();
    // The patterns of categories that change the text (mask, block): what a stream must hold.
    let mut holding: Vec<String> = Vec::new();
    let mut detectors = BTreeMap::new();
    for (name, d) in raw.detectors {
        let kind = Kind::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
            ConfigError::field(
                format!("{at}.detectors.{name}"),
                format!(
                    "unknown detector; known: {}",
                    Kind::ALL.map(Kind::name).join(", ")
                ),
            )
        })?;
        detectors.insert(kind, d);
    }
    for (kind, d) in detectors {
        patterns.push(kind.pattern().to_owned());
        if d.action != Action::Log {
            holding.push(kind.pattern().to_owned());
        }
        let detector = Detector::new(kind)
            .map_err(|e| ConfigError::field(format!("{at}.detectors.{}", kind.name()), e.to_string()))?;
        categories.push(Category {
            name: kind.name().to_owned(),
            matcher: Matcher::Detector(detector),
            action: d.action,
            mask: d.mask,
        });
    }
    for (i, r) in raw.deny.into_iter().enumerate() {
        let ok_name = !r.name.is_empty()
            && r.name.len() <= 64
            && r.name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        if !ok_name {
            return Err(ConfigError::field(
                format!("{at}.deny[{i}].name"),
                "must be 1-64 letters, digits, `-` or `_` (it names metrics)",
            ));
        }
        if categories.iter().any(|c| c.name == r.name) {
            return Err(ConfigError::field(
                format!("{at}.deny[{i}].name"),
                format!("`{}` is used twice", r.name),
            ));
        }
        let re = regex(&r.pattern, r.case_insensitive, &format!("{at}.deny[{i}].pattern"))?;
        patterns.push(if r.case_insensitive {
            format!("(?i:{})", r.pattern)
        } else {
            r.pattern.clone()
        });
        if r.action != Action::Log {
            holding.extend(patterns.last().cloned());
        }
        categories.push(Category {
            name: r.name,
            matcher: Matcher::Rule(re),
            action: r.action,
            mask: r.mask,
        });
    }
    let mut allow = Vec::with_capacity(raw.allow.len());
    for (i, a) in raw.allow.iter().enumerate() {
        allow.push(regex(
            &a.pattern,
            a.case_insensitive,
            &format!("{at}.allow[{i}].pattern"),
        )?);
    }
    let set = if patterns.is_empty() {
        None
    } else {
        Some(
            regex::RegexSetBuilder::new(&patterns)
                .size_limit(filter_core::config::REGEX_SIZE_LIMIT * 4)
                .build()
                .map_err(|e| ConfigError::field(at, format!("the rules together are too large: {e}")))?,
        )
    };
    let partial = if streamed && !holding.is_empty() {
        Some(Partial::new(&holding).map_err(|e| {
            ConfigError::field(
                at,
                format!("the rules together are too large to watch a stream: {e}"),
            )
        })?)
    } else {
        None
    };
    Ok(Rules {
        categories,
        allow,
        set,
        partial,
    })
}

/// The filter's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Rules on every text the model will read (messages, system prompt, tool results and calls).
    #[serde(default)]
    pub request: RawRules,
    /// Rules on the model's output (JSON responses).
    #[serde(default)]
    pub response: RawRules,
    /// Status of a blocked request (4xx).
    #[serde(default = "default_block_status")]
    pub block_status: u32,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The longest suffix of generated text a streamed response holds back while a match may
    /// still be forming in it (what is held is found from the rules: see `partial.rs`). A partial
    /// match longer than this is released; matches up to this long are always seen whole.
    #[serde(default = "default_holdback")]
    pub stream_holdback_bytes: usize,
    /// Model-based categories through the sidecar's `Classify`, on the request.
    #[serde(default)]
    pub classify: Option<RawClassify>,
    /// A request with a body on a path whose API the filter cannot read (`/v1/responses`,
    /// `/v1/files`…): `reject` (400, the default: what cannot be read is not sent) or `pass`.
    #[serde(default)]
    pub unknown_apis: UnknownApis,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownApis {
    #[default]
    Reject,
    Pass,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassify {
    /// A label set configured in the sidecar (`--label-sets`).
    #[serde(default = "default_label_set")]
    pub label_set: String,
    #[serde(default)]
    pub sidecar: SidecarConfig,
    /// When the sidecar does not answer: `closed` (503, the default) or `open` (pass unclassified).
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Label → threshold on its score (cosine similarity to the label's exemplars) and action.
    pub categories: BTreeMap<String, RawThreshold>,
    /// The text classified (the last user message) is cut to this many bytes.
    #[serde(default = "default_classify_bytes")]
    pub max_text_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreshold {
    pub threshold: f32,
    #[serde(default = "default_block")]
    pub action: Action,
}

fn default_label_set() -> String {
    "moderation".to_owned()
}

fn default_classify_bytes() -> usize {
    2000
}

#[derive(Debug)]
pub struct Classify {
    pub label_set: String,
    pub sidecar: SidecarConfig,
    pub failure_mode: FailureMode,
    /// (label, threshold, action), in name order.
    pub categories: Vec<(String, f32, Action)>,
    pub max_text_bytes: usize,
}

fn default_holdback() -> usize {
    MAX_WINDOW
}

fn default_block_status() -> u32 {
    400
}

fn default_max_body() -> usize {
    1 << 20
}

#[derive(Debug)]
pub struct Config {
    pub request: Rules,
    pub response: Rules,
    pub block_status: u32,
    pub max_body_bytes: usize,
    pub stream_holdback_bytes: usize,
    pub classify: Option<Classify>,
    pub unknown_apis: UnknownApis,
}

fn compile_classify(c: RawClassify, rules: &Rules) -> Result<Classify, ConfigError> {
    c.sidecar.validate("classify.sidecar")?;
    if c.label_set.trim().is_empty() {
        return Err(ConfigError::field(
            "classify.label_set",
            "must name a label set of the sidecar",
        ));
    }
    if c.categories.is_empty() {
        return Err(ConfigError::field(
            "classify.categories",
            "name at least one label",
        ));
    }
    if !(16..=65_536).contains(&c.max_text_bytes) {
        return Err(ConfigError::field(
            "classify.max_text_bytes",
            format!("{} is outside 16..=65536", c.max_text_bytes),
        ));
    }
    let mut categories = Vec::with_capacity(c.categories.len());
    for (name, t) in c.categories {
        let at = format!("classify.categories.{name}");
        let ok_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_name {
            return Err(ConfigError::field(
                at,
                "a label is 1-64 letters, digits, `-` or `_` (it names metrics)",
            ));
        }
        if rules.categories.iter().any(|r| r.name == name) {
            return Err(ConfigError::field(
                at,
                format!("`{name}` is also a request rule or detector"),
            ));
        }
        if !(t.threshold > 0.0 && t.threshold <= 1.0) {
            return Err(ConfigError::field(
                format!("{at}.threshold"),
                format!("{} is outside (0, 1]", t.threshold),
            ));
        }
        if t.action == Action::Mask {
            return Err(ConfigError::field(
                format!("{at}.action"),
                "a classification can block or log, not mask",
            ));
        }
        categories.push((name, t.threshold, t.action));
    }
    Ok(Classify {
        label_set: c.label_set,
        sidecar: c.sidecar,
        failure_mode: c.failure_mode,
        categories,
        max_text_bytes: c.max_text_bytes,
    })
}

pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if !(400..=499).contains(&raw.block_status) {
        return Err(ConfigError::field(
            "block_status",
            format!("{} is not a 4xx status", raw.block_status),
        ));
    }
    if raw.max_body_bytes == 0 {
        return Err(ConfigError::field("max_body_bytes", "must be at least 1"));
    }
    if !(1..=MAX_WINDOW).contains(&raw.stream_holdback_bytes) {
        return Err(ConfigError::field(
            "stream_holdback_bytes",
            format!("{} is outside 1..={}", raw.stream_holdback_bytes, MAX_WINDOW),
        ));
    }
    let request = compile_rules(raw.request, "request", false)?;
    let classify = raw.classify.map(|c| compile_classify(c, &request)).transpose()?;
    Ok(Config {
        stream_holdback_bytes: raw.stream_holdback_bytes,
        classify,
        unknown_apis: raw.unknown_apis,
        request,
        response: compile_rules(raw.response, "response", true)?,
        block_status: raw.block_status,
        max_body_bytes: raw.max_body_bytes,
    })
}
