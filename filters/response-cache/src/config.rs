//! The cache's configuration, parsed with the failing field named.

pub use filter_core::config::ConfigError;

use filter_core::config::SidecarConfig;
use filter_core::headers;
use serde::Deserialize;

/// Whose entries a request may read and write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One cache per subject (`x-tollgate-subject`); requests without it are not cached.
    Subject,
    /// One cache per tenant (`x-tollgate-tenant`); requests without it are not cached.
    #[default]
    Tenant,
    /// One cache for everybody (only for prompts that hold nothing private).
    Shared,
}

/// Where exact entries live.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Envoy shared data: one cache per Envoy, no network hop.
    #[default]
    SharedData,
    /// The sidecar's cache (in its memory, or Redis with `--redis-url`): shared by every Envoy
    /// that uses the same sidecar or Redis.
    Sidecar,
}

/// Whose entries a paraphrase may match.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemanticScope {
    /// Only the same subject's (`x-tollgate-subject`; requests without it are only cached
    /// exactly). Prompts that differ only in names and numbers embed almost alike, so a wider
    /// scope could give one user an answer written for another's details.
    #[default]
    Subject,
    /// The cache's `scope`.
    Cache,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Semantic {
    #[serde(default = "Semantic::default_enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub scope: SemanticScope,
    /// Minimum cosine similarity between the new and the cached prompt, once the verifier
    /// (`verify`) found no contrast between them.
    #[serde(default = "Semantic::default_threshold")]
    pub threshold: f32,
    /// Minimum similarity when the two prompts have the same content words (they differ only in
    /// function words, case, punctuation, spelling slips or one moved clause): typos move an
    /// embedding far from its original. At most `threshold`.
    #[serde(default = "Semantic::default_same_words_threshold")]
    pub same_words_threshold: f32,
    /// Also match conversations with earlier turns (by their last user message, the rest exact).
    #[serde(default)]
    pub multi_turn: bool,
    /// Prompts longer than this (bytes) are only cached exactly: the model reads 256 tokens, and
    /// two long prompts that share their start would embed alike.
    #[serde(default = "Semantic::default_max_text_bytes")]
    pub max_text_bytes: usize,
}

impl Semantic {
    fn default_enabled() -> bool {
        true
    }

    /// Chosen on the tuning half of integration/tests/data/cache-pairs.heldout.json (see the
    /// README and `scripts/bench.sh response-cache`).
    fn default_threshold() -> f32 {
        0.6
    }

    /// Chosen with `default_threshold`.
    fn default_same_words_threshold() -> f32 {
        0.35
    }

    fn default_max_text_bytes() -> usize {
        800
    }
}

impl Default for Semantic {
    fn default() -> Self {
        Self {
            enabled: Self::default_enabled(),
            scope: SemanticScope::default(),
            threshold: Self::default_threshold(),
            same_words_threshold: Self::default_same_words_threshold(),
            multi_turn: false,
            max_text_bytes: Self::default_max_text_bytes(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub scope: Scope,
    #[serde(default = "default_subject_header")]
    pub subject_header: String,
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
    /// Seconds an entry is served.
    #[serde(default = "default_ttl")]
    pub ttl_s: u32,
    /// Responses larger than this are not stored.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: usize,
    #[serde(default)]
    pub backend: Backend,
    /// Shared-data slots (entries) per Envoy; memory is bounded by `slots × max_entry_bytes`.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Cache requests whose output is sampled (`temperature` > 0, or absent: the providers
    /// default to 1). Off by default: such requests ask for a different answer each time.
    #[serde(default)]
    pub cache_sampled: bool,
    /// Cache Responses API requests that continue a stored response (`previous_response_id`),
    /// keyed by that id and what is sent. Off by default: the provider adds turns the gateway
    /// never sees, so the cache cannot tell what the question is.
    #[serde(default)]
    pub cache_continued_responses: bool,
    #[serde(default)]
    pub semantic: Semantic,
    #[serde(default)]
    pub sidecar: SidecarConfig,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_subject_header() -> String {
    headers::SUBJECT.to_owned()
}

fn default_tenant_header() -> String {
    headers::TENANT.to_owned()
}

fn default_ttl() -> u32 {
    3600
}

fn default_max_entry_bytes() -> usize {
    64 * 1024
}

fn default_slots() -> u32 {
    1024
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

#[derive(Debug, Clone)]
pub struct Config {
    pub scope: Scope,
    pub subject_header: String,
    pub tenant_header: String,
    pub ttl_s: u32,
    pub max_entry_bytes: usize,
    pub backend: Backend,
    pub slots: u32,
    pub cache_sampled: bool,
    pub cache_continued_responses: bool,
    pub semantic: Semantic,
    pub sidecar: SidecarConfig,
    pub max_body_bytes: usize,
}

impl Config {
    /// Whether any request may need the sidecar.
    pub fn uses_sidecar(&self) -> bool {
        self.backend == Backend::Sidecar || self.semantic.enabled
    }
}

pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    for (field, h) in [
        ("subject_header", &raw.subject_header),
        ("tenant_header", &raw.tenant_header),
    ] {
        if !headers::is_valid_name(h) {
            return Err(ConfigError::field(
                field,
                "must be a lower-case header name (letters, digits, `-`, `_`)",
            ));
        }
    }
    if !(1..=30 * 86_400).contains(&raw.ttl_s) {
        return Err(ConfigError::field(
            "ttl_s",
            format!("{} is outside 1..=2592000 (30 days)", raw.ttl_s),
        ));
    }
    if !(256..=16 << 20).contains(&raw.max_entry_bytes) {
        return Err(ConfigError::field(
            "max_entry_bytes",
            format!("{} is outside 256..=16777216", raw.max_entry_bytes),
        ));
    }
    if !(1..=1 << 20).contains(&raw.slots) {
        return Err(ConfigError::field(
            "slots",
            format!("{} is outside 1..=1048576", raw.slots),
        ));
    }
    let t = raw.semantic.threshold;
    if !(t > 0.0 && t <= 1.0) {
        return Err(ConfigError::field(
            "semantic.threshold",
            format!("{t} is outside (0, 1]"),
        ));
    }
    let same = raw.semantic.same_words_threshold;
    if !(same > 0.0 && same <= t) {
        return Err(ConfigError::field(
            "semantic.same_words_threshold",
            format!("{same} is outside (0, semantic.threshold = {t}]"),
        ));
    }
    if !(1..=65_536).contains(&raw.semantic.max_text_bytes) {
        return Err(ConfigError::field(
            "semantic.max_text_bytes",
            format!("{} is outside 1..=65536", raw.semantic.max_text_bytes),
        ));
    }
    if raw.max_body_bytes == 0 {
        return Err(ConfigError::field("max_body_bytes", "must be at least 1"));
    }
    raw.sidecar.validate("sidecar")?;
    Ok(Config {
        scope: raw.scope,
        subject_header: raw.subject_header,
        tenant_header: raw.tenant_header,
        ttl_s: raw.ttl_s,
        max_entry_bytes: raw.max_entry_bytes,
        backend: raw.backend,
        slots: raw.slots,
        cache_sampled: raw.cache_sampled,
        cache_continued_responses: raw.cache_continued_responses,
        semantic: raw.semantic,
        sidecar: raw.sidecar,
        max_body_bytes: raw.max_body_bytes,
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

    #[test]
    fn defaults() {
        let c = load(json!({})).unwrap();
        assert_eq!(c.scope, Scope::Tenant);
        assert_eq!(c.backend, Backend::SharedData);
        assert_eq!(c.tenant_header, "x-tollgate-tenant");
        assert_eq!((c.ttl_s, c.slots, c.max_entry_bytes), (3600, 1024, 65536));
        assert!(!c.cache_sampled);
        assert!(c.semantic.enabled && !c.semantic.multi_turn);
        assert!(c.uses_sidecar());
    }

    #[test]
    fn bad_fields_are_named() {
        for (cfg, field) in [
            (json!({"scope": "team"}), "scope"),
            (json!({"tenant_header": "X-Tenant"}), "tenant_header"),
            (json!({"ttl_s": 0}), "ttl_s"),
            (json!({"max_entry_bytes": 10}), "max_entry_bytes"),
            (json!({"slots": 0}), "slots"),
            (json!({"semantic": {"threshold": 0}}), "semantic.threshold"),
            (json!({"semantic": {"threshold": 1.5}}), "semantic.threshold"),
            (json!({"semantic": {"treshold": 0.9}}), "semantic.treshold"),
            (json!({"sidecar": {"cluster": ""}}), "sidecar.cluster"),
            (json!({"backend": "redis"}), "backend"),
        ] {
            match load(cfg.clone()) {
                Ok(_) => panic!("{cfg} accepted"),
                Err(e) => assert_eq!(e.path, field, "{cfg}: {e}"),
            }
        }
    }
}
