//! The token counter's configuration: parsed with the failing field named, then compiled once in
//! `on_configure` (model lookup table, budget rules) and shared by every request of the VM.

pub use filter_core::config::FailureMode;
use filter_core::config::{ConfigError, SidecarConfig};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Largest request body the filter reads; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Encoding for models neither the table nor the built-in OpenAI families name.
    #[serde(default)]
    pub default_encoding: Encoding,
    /// Completion tokens reserved for a request that sets no `max_tokens`.
    #[serde(default = "default_completion_estimate")]
    pub completion_estimate: u64,
    /// Per model (exact name, or a prefix ending in `*`; the longest prefix wins).
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub budgets: Option<RawBudgets>,
    /// Add `x-tollgate-prompt-tokens` (and `x-tollgate-budget-remaining` with budgets) to responses.
    #[serde(default)]
    pub response_headers: bool,
    /// Per-VM cache of per-message counts, keyed by a hash of the text (0 turns it off).
    #[serde(default = "default_cache_entries")]
    pub count_cache_entries: usize,
    /// Tokens and cost per tenant as metrics, for a bounded tenant set.
    #[serde(default)]
    pub tenant_metrics: Option<TenantMetrics>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantMetrics {
    /// Request header naming the tenant (set by jwt-auth from a verified claim).
    #[serde(default = "default_tenant_header")]
    pub header: String,
    /// Distinct tenants with their own label; later ones count under `other`.
    #[serde(default = "default_max_tenants")]
    pub max_tenants: usize,
}

fn default_tenant_header() -> String {
    filter_core::headers::TENANT.to_owned()
}

fn default_max_tenants() -> usize {
    32
}

fn default_max_body() -> usize {
    1 << 20
}

fn default_completion_estimate() -> u64 {
    1024
}

fn default_cache_entries() -> usize {
    4096
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    pub const fn name(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    #[serde(default)]
    pub encoding: Option<Encoding>,
    #[serde(default)]
    pub max_context_tokens: Option<u64>,
    /// Budget rules with a `group` apply to the models of that group.
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub price: Option<Price>,
}

/// USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens read from the provider's cache; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's cache (Anthropic); defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl Price {
    /// USD for `u`; cached reads and cache writes at their own rates, each token once.
    pub fn cost(&self, u: &filter_core::usage::TokenUsage) -> f64 {
        let per = |tokens: u64, rate: f64| tokens as f64 * rate / 1e6;
        per(u.input_tokens, self.input)
            + per(u.cache_read_tokens, self.cached_input.unwrap_or(self.input))
            + per(u.cache_write_tokens, self.cache_write.unwrap_or(self.input))
            + per(u.output_tokens, self.output)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudgets {
    /// Request header that names who is charged (set by jwt-auth from a verified claim).
    #[serde(default = "default_identity_header")]
    pub identity_header: String,
    #[serde(default)]
    pub missing_identity: MissingIdentity,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub sidecar: SidecarConfig,
    /// When the budget store cannot answer: `closed` answers 503, `open` lets the request through.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Shared-data keys per rule; identities are hashed into them (each key holds the identities
    /// that landed in it, so collisions never merge two identities' budgets).
    #[serde(default = "default_slots")]
    pub slots: u32,
    pub rules: Vec<RawRule>,
}

fn default_identity_header() -> String {
    filter_core::headers::SUBJECT.to_owned()
}

fn default_slots() -> u32 {
    1024
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingIdentity {
    /// 401: a budgeted route needs an identity.
    #[default]
    Reject,
    /// Charge every anonymous request to one shared identity, `anonymous`.
    Anonymous,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Envoy shared data with compare-and-swap: exact within one Envoy.
    #[default]
    SharedData,
    /// The sidecar's `Budget` service (on Redis with `--redis-url`): shared by every replica.
    Sidecar,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    /// Only models of this group; absent: every model.
    #[serde(default)]
    pub group: Option<String>,
    pub window: Window,
    /// Tokens (prompt + completion, cached included) per identity per window.
    pub tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    Minute,
    Hour,
    Day,
}

impl Window {
    pub const fn seconds(self) -> u64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }
}

/// A model's compiled settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    pub encoding: Option<Encoding>,
    pub max_context_tokens: Option<u64>,
    pub group: Option<String>,
    pub price: Option<Price>,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub group: Option<String>,
    pub window: Window,
    pub tokens: u64,
    /// `tollgate.token_counter.budget.<name>.`, the prefix of its shared-data keys.
    pub key_prefix: String,
}

#[derive(Debug)]
pub struct Budgets {
    pub identity_header: String,
    pub missing_identity: MissingIdentity,
    pub backend: Backend,
    pub sidecar: SidecarConfig,
    pub failure_mode: FailureMode,
    pub slots: u32,
    pub rules: Vec<Rule>,
}

#[derive(Debug)]
pub struct Config {
    pub max_body_bytes: usize,
    pub default_encoding: Encoding,
    pub completion_estimate: u64,
    pub response_headers: bool,
    pub count_cache_entries: usize,
    pub tenant_metrics: Option<TenantMetrics>,
    exact: HashMap<String, Model>,
    /// Longest prefix first.
    prefixes: Vec<(String, Model)>,
    pub budgets: Option<Budgets>,
}

impl Config {
    /// The table entry for `model`: exact name first, then the longest matching prefix.
    pub fn model(&self, model: &str) -> Option<&Model> {
        self.exact.get(model).or_else(|| {
            self.prefixes
                .iter()
                .find(|(p, _)| model.starts_with(p.as_str()))
                .map(|(_, m)| m)
        })
    }

    /// The encoding for `model`: the table's, else OpenAI's family rule, else the default.
    pub fn encoding_for(&self, model: &str, entry: Option<&Model>) -> Encoding {
        entry
            .and_then(|m| m.encoding)
            .or_else(|| builtin_encoding(model))
            .unwrap_or(self.default_encoding)
    }
}

/// The encoding OpenAI uses for its model families (tiktoken's `model.py`), or `None` for models
/// it does not know.
pub fn builtin_encoding(model: &str) -> Option<Encoding> {
    // Fine-tuned models are named `ft:<base>:…`.
    let model = model.strip_prefix("ft:").unwrap_or(model);
    const O200K: [&str; 7] = ["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3"];
    const CL100K: [&str; 5] = [
        "gpt-4",
        "gpt-3.5",
        "text-embedding-",
        "davinci-002",
        "babbage-002",
    ];
    if O200K.iter().any(|p| model.starts_with(p)) || model.starts_with("o4") || model.starts_with("gpt-oss") {
        Some(Encoding::O200kBase)
    } else if CL100K.iter().any(|p| model.starts_with(p)) || model.starts_with("gpt-35-turbo") {
        Some(Encoding::Cl100kBase)
    } else {
        None
    }
}

pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.max_body_bytes == 0 {
        return Err(ConfigError::field("max_body_bytes", "must be at least 1"));
    }
    if let Some(t) = &raw.tenant_metrics {
        if !filter_core::headers::is_valid_name(&t.header) {
            return Err(ConfigError::field(
                "tenant_metrics.header",
                "must be a lower-case HTTP header name",
            ));
        }
        if !(1..=1000).contains(&t.max_tenants) {
            return Err(ConfigError::field(
                "tenant_metrics.max_tenants",
                format!("{} is outside 1..=1000", t.max_tenants),
            ));
        }
    }
    let mut exact = HashMap::new();
    let mut prefixes = Vec::new();
    let mut groups = Vec::new();
    for (name, m) in raw.models {
        let path = format!("models.{name}");
        let pattern = name.strip_suffix('*');
        if name.is_empty() || pattern.is_some_and(str::is_empty) || name.trim_end_matches('*').contains('*') {
            return Err(ConfigError::field(
                path,
                "a model is an exact name or a non-empty prefix ending in a single `*`",
            ));
        }
        if m.max_context_tokens == Some(0) {
            return Err(ConfigError::field(
                format!("{path}.max_context_tokens"),
                "must be at least 1",
            ));
        }
        if let Some(p) = &m.price {
            let fields = [
                ("input", Some(p.input)),
                ("output", Some(p.output)),
                ("cached_input", p.cached_input),
                ("cache_write", p.cache_write),
            ];
            for (field, v) in fields {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return Err(ConfigError::field(
                        format!("{path}.price.{field}"),
                        "must be a finite, non-negative USD amount per 1M tokens",
                    ));
                }
            }
        }
        if let Some(g) = &m.group {
            if g.is_empty() {
                return Err(ConfigError::field(format!("{path}.group"), "must not be empty"));
            }
            groups.push(g.clone());
        }
        let model = Model {
            encoding: m.encoding,
            max_context_tokens: m.max_context_tokens,
            group: m.group,
            price: m.price,
        };
        match pattern {
            Some(p) => prefixes.push((p.to_owned(), model)),
            None => {
                exact.insert(name, model);
            }
        }
    }
    prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    let budgets = raw.budgets.map(|b| compile_budgets(b, &groups)).transpose()?;
    Ok(Config {
        max_body_bytes: raw.max_body_bytes,
        default_encoding: raw.default_encoding,
        completion_estimate: raw.completion_estimate,
        response_headers: raw.response_headers,
        count_cache_entries: raw.count_cache_entries,
        tenant_metrics: raw.tenant_metrics,
        exact,
        prefixes,
        budgets,
    })
}

fn compile_budgets(b: RawBudgets, groups: &[String]) -> Result<Budgets, ConfigError> {
    if !filter_core::headers::is_valid_name(&b.identity_header) {
        return Err(ConfigError::field(
            "budgets.identity_header",
            "must be a lower-case HTTP header name",
        ));
    }
    if b.backend == Backend::Sidecar {
        b.sidecar.validate("budgets.sidecar")?;
    }
    if !(1..=65_536).contains(&b.slots) {
        return Err(ConfigError::field(
            "budgets.slots",
            format!("{} is outside 1..=65536", b.slots),
        ));
    }
    if b.rules.is_empty() {
        return Err(ConfigError::field("budgets.rules", "needs at least one rule"));
    }
    let mut rules: Vec<Rule> = Vec::with_capacity(b.rules.len());
    for (i, r) in b.rules.into_iter().enumerate() {
        let path = format!("budgets.rules[{i}]");
        let name_ok = !r.name.is_empty()
            && r.name.len() <= 64
            && r.name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        if !name_ok {
            return Err(ConfigError::field(
                format!("{path}.name"),
                "must be 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
        if rules.iter().any(|x| x.name == r.name) {
            return Err(ConfigError::field(
                format!("{path}.name"),
                format!("duplicate rule name `{}`", r.name),
            ));
        }
        if r.tokens == 0 {
            return Err(ConfigError::field(format!("{path}.tokens"), "must be at least 1"));
        }
        if let Some(g) = &r.group
            && !groups.contains(g)
        {
            return Err(ConfigError::field(
                format!("{path}.group"),
                format!("no model in `models` has group `{g}`"),
            ));
        }
        rules.push(Rule {
            key_prefix: format!("tollgate.token_counter.budget.{}.", r.name),
            name: r.name,
            group: r.group,
            window: r.window,
            tokens: r.tokens,
        });
    }
    Ok(Budgets {
        identity_header: b.identity_header,
        missing_identity: b.missing_identity,
        backend: b.backend,
        sidecar: b.sidecar,
        failure_mode: b.failure_mode,
        slots: b.slots,
        rules,
    })
}

#[cfg(test)]
mod tests;
