//! The filter's configuration: parsed with the failing field named, then compiled once in
//! `on_configure` (inline key sets to verifying keys, rules to matchers, header lists lower-cased
//! and merged, `WWW-Authenticate` values rendered).

pub use filter_core::config::ConfigError;

use crate::claims::TimePolicy;
use crate::jwks::Jwks;
use filter_core::headers;
use serde::Deserialize;
use serde_json::Value;
use std::rc::Rc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// What happens to a request no rule matches.
    #[serde(default)]
    pub unmatched: Unmatched,
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Verified tokens remembered per VM (0 turns the cache off).
    #[serde(default = "default_cache_entries")]
    pub verified_cache_entries: usize,
    /// Further request headers removed from every request before the filter sets its own
    /// (`x-tollgate-subject`, `x-tollgate-tenant` and every `claim_to_headers` header always are).
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// Verify RS* and ES* signatures with Envoy's BoringSSL (`verify_signature`) when the host
    /// offers it; RustCrypto otherwise and for every other algorithm.
    #[serde(default = "default_true")]
    pub native_verify: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// 403 `no_rule`: a path nobody thought about is not open (fail closed).
    #[default]
    Deny,
    /// Pass without authentication (what Envoy's `jwt_authn` does).
    Allow,
}

fn default_realm() -> String {
    "tollgate".to_owned()
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_cache_entries() -> usize {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    /// When set, `iss` must equal it.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When non-empty, one of the token's `aud` must be listed (else 403).
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks: RawJwks,
    /// Where the token is read; with none of the three given, `authorization: Bearer <token>`.
    #[serde(default)]
    pub from_headers: Vec<RawFromHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// Keep the token in the request to the upstream (default: removed from the header or query
    /// parameter it came in; cookies are left alone).
    #[serde(default)]
    pub forward: bool,
    #[serde(default = "default_skew")]
    pub clock_skew_s: u64,
    #[serde(default = "default_true")]
    pub require_exp: bool,
    #[serde(default)]
    pub max_lifetime_s: Option<u64>,
    /// Claims copied into request headers; default `sub` → `x-tollgate-subject`.
    #[serde(default)]
    pub claim_to_headers: Option<Vec<RawClaimToHeader>>,
    /// Claims put in filter state as `tollgate.jwt.<claim>` for other filters and access logs.
    #[serde(default)]
    pub claims_to_state: Vec<String>,
}

fn default_skew() -> u64 {
    60
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFromHeader {
    pub name: String,
    /// Text before the token, matched case-insensitively (`Bearer `); empty: the whole value.
    #[serde(default)]
    pub value_prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaimToHeader {
    /// Claim name, or a dot path into nested objects (`org.id`).
    pub claim: String,
    pub header: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawJwks {
    /// A JWKS document (or one JWK) as JSON.
    Inline(Value),
    /// The same, as a JSON string (what `jwt_authn`'s `local_jwks.inline_string` holds).
    InlineString(String),
    /// Fetched through an Envoy cluster, cached and refreshed.
    Remote(RawRemote),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    /// The Envoy cluster that reaches the issuer's JWKS endpoint.
    pub cluster: String,
    pub path: String,
    /// `:authority` of the fetch; default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_fetch_timeout")]
    pub timeout_ms: u64,
    /// Keys are refreshed in the background this long after a successful fetch.
    #[serde(default = "default_ttl")]
    pub cache_ttl_s: u64,
    /// Least time between two fetches: after a failure, and for a `kid` not in the cached set (a
    /// flood of unknown `kid`s costs at most one fetch per interval).
    #[serde(default = "default_refetch")]
    pub refetch_interval_s: u64,
}

fn default_fetch_timeout() -> u64 {
    2000
}
fn default_ttl() -> u64 {
    600
}
fn default_refetch() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// Whole-path regex (Rust `regex` syntax).
    #[serde(default)]
    pub regex: Option<String>,
    /// Provider names; a token from any of them will do.
    #[serde(default)]
    pub requires: Vec<String>,
    /// No authentication on these paths (identity headers are still stripped).
    #[serde(default)]
    pub skip: bool,
    /// No token: pass without identity. A bad token is still rejected.
    #[serde(default)]
    pub allow_missing: bool,
    /// No token or a bad one: pass without identity.
    #[serde(default)]
    pub allow_missing_or_failed: bool,
    /// Scopes (`scope` / `scp` claim) the token must grant, else 403.
    #[serde(default)]
    pub required_scopes: Vec<String>,
}

#[derive(Debug)]
pub enum KeySource {
    Fixed(Rc<Jwks>),
    Remote(Remote),
}

#[derive(Debug, Clone)]
pub struct Remote {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u64,
    pub ttl_s: u64,
    pub refetch_s: u64,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    /// (lower-case header name, value prefix).
    pub from_headers: Vec<(String, String)>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub forward: bool,
    pub time: TimePolicy,
    /// (claim path, header).
    pub claim_to_headers: Vec<(String, String)>,
    /// (claim path, filter-state key).
    pub claims_to_state: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum Match {
    Prefix(String),
    Path(String),
    Regex(regex::Regex),
}

impl Match {
    /// `path` is the request path without the query string.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Prefix(p) => path.starts_with(p.as_str()),
            Self::Path(p) => path == p,
            Self::Regex(r) => r.is_match(path),
        }
    }
}

#[derive(Debug)]
pub struct Rule {
    pub matcher: Match,
    /// Provider indices; empty: skip authentication.
    pub requires: Vec<usize>,
    pub allow_missing: bool,
    pub allow_failed: bool,
    pub required_scopes: Vec<String>,
}

#[derive(Debug)]
pub struct Config {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub unmatched: Unmatched,
    pub max_token_bytes: usize,
    pub cache_entries: usize,
    pub native_verify: bool,
    /// Removed from every request first: the suite's identity headers, every `claim_to_headers`
    /// header, and `strip_headers`.
    pub strip: Vec<String>,
    /// `WWW-Authenticate` values: no token, bad token, missing scope.
    pub challenge_missing: String,
    pub challenge_invalid: String,
    pub challenge_scope: String,
}

impl Config {
    /// The first rule whose matcher takes `path` (without the query).
    pub fn rule_for(&self, path: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matcher.matches(path))
    }

    pub fn challenge(&self, bearer_error: Option<&str>) -> &str {
        match bearer_error {
            None => &self.challenge_missing,
            Some("insufficient_scope") => &self.challenge_scope,
            Some(_) => &self.challenge_invalid,
        }
    }
}

/// Envoy's request header limit is 60 KiB; a token can't be longer than a header.
const MAX_TOKEN_LIMIT: usize = 64 * 1024;
const MAX_CACHE_ENTRIES: usize = 1_000_000;

pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.providers.is_empty() {
        return Err(ConfigError::field(
            "providers",
            "at least one provider is required",
        ));
    }
    if !(16..=MAX_TOKEN_LIMIT).contains(&raw.max_token_bytes) {
        return Err(ConfigError::field(
            "max_token_bytes",
            format!("{} is outside 16..={MAX_TOKEN_LIMIT}", raw.max_token_bytes),
        ));
    }
    if raw.verified_cache_entries > MAX_CACHE_ENTRIES {
        return Err(ConfigError::field(
            "verified_cache_entries",
            format!(
                "{} is over the maximum of {MAX_CACHE_ENTRIES}",
                raw.verified_cache_entries
            ),
        ));
    }
    if raw.realm.is_empty() || raw.realm.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(ConfigError::field(
            "realm",
            "must be non-empty, without quotes, backslashes or control characters",
        ));
    }
    let mut strip: Vec<String> = vec![headers::SUBJECT.to_owned(), headers::TENANT.to_owned()];
    for (i, h) in raw.strip_headers.iter().enumerate() {
        let h = header_name(h, &format!("strip_headers[{i}]"))?;
        push_unique(&mut strip, h);
    }
    let mut providers: Vec<Provider> = Vec::with_capacity(raw.providers.len());
    for (i, p) in raw.providers.into_iter().enumerate() {
        let at = format!("providers[{i}]");
        let p = compile_provider(p, &at)?;
        if providers.iter().any(|q| q.name == p.name) {
            return Err(ConfigError::field(
                format!("{at}.name"),
                format!("`{}` is used twice", p.name),
            ));
        }
        for (_, h) in &p.claim_to_headers {
            push_unique(&mut strip, h.clone());
        }
        providers.push(p);
    }
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.into_iter().enumerate() {
        rules.push(compile_rule(r, &format!("rules[{i}]"), &providers)?);
    }
    let realm = raw.realm;
    Ok(Config {
        providers,
        rules,
        unmatched: raw.unmatched,
        max_token_bytes: raw.max_token_bytes,
        cache_entries: raw.verified_cache_entries,
        native_verify: raw.native_verify,
        strip,
        challenge_missing: format!("Bearer realm=\"{realm}\""),
        challenge_invalid: format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
        challenge_scope: format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\""),
    })
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn header_name(h: &str, at: &str) -> Result<String, ConfigError> {
    let lower = h.to_ascii_lowercase();
    if !headers::is_valid_name(&lower) {
        return Err(ConfigError::field(
            at,
            format!("`{h}` is not an HTTP header name"),
        ));
    }
    if matches!(
        lower.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "te"
    ) {
        return Err(ConfigError::field(at, format!("`{h}` is managed by Envoy")));
    }
    Ok(lower)
}

fn compile_provider(p: RawProvider, at: &str) -> Result<Provider, ConfigError> {
    if p.name.is_empty()
        || !p
            .name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(ConfigError::field(
            format!("{at}.name"),
            "must be non-empty letters, digits, `-` or `_` (it names metrics)",
        ));
    }
    if p.issuer.as_deref().is_some_and(str::is_empty) {
        return Err(ConfigError::field(
            format!("{at}.issuer"),
            "must not be empty (omit it instead)",
        ));
    }
    if p.clock_skew_s > 3600 {
        return Err(ConfigError::field(
            format!("{at}.clock_skew_s"),
            "must be at most 3600",
        ));
    }
    if p.max_lifetime_s == Some(0) {
        return Err(ConfigError::field(
            format!("{at}.max_lifetime_s"),
            "must be at least 1",
        ));
    }
    let keys = match p.jwks {
        RawJwks::Inline(v) => KeySource::Fixed(Rc::new(inline_jwks(&v, &format!("{at}.jwks.inline"))?)),
        RawJwks::InlineString(s) => {
            let v: Value = serde_json::from_str(&s).map_err(|e| {
                ConfigError::field(format!("{at}.jwks.inline_string"), format!("not JSON: {e}"))
            })?;
            KeySource::Fixed(Rc::new(inline_jwks(&v, &format!("{at}.jwks.inline_string"))?))
        }
        RawJwks::Remote(r) => KeySource::Remote(compile_remote(r, &format!("{at}.jwks.remote"))?),
    };
    let mut from_headers = Vec::with_capacity(p.from_headers.len());
    for (j, h) in p.from_headers.iter().enumerate() {
        from_headers.push((
            header_name(&h.name, &format!("{at}.from_headers[{j}].name"))?,
            h.value_prefix.clone(),
        ));
    }
    if from_headers.is_empty() && p.from_params.is_empty() && p.from_cookies.is_empty() {
        from_headers.push(("authorization".to_owned(), "Bearer ".to_owned()));
    }
    for (field, list) in [("from_params", &p.from_params), ("from_cookies", &p.from_cookies)] {
        for (j, n) in list.iter().enumerate() {
            if n.is_empty()
                || n.bytes()
                    .any(|c| matches!(c, b'=' | b'&' | b';' | b' ') || c.is_ascii_control())
            {
                return Err(ConfigError::field(
                    format!("{at}.{field}[{j}]"),
                    "is not a valid name",
                ));
            }
        }
    }
    let raw_headers = p.claim_to_headers.unwrap_or_else(|| {
        vec![RawClaimToHeader {
            claim: "sub".to_owned(),
            header: headers::SUBJECT.to_owned(),
        }]
    });
    let mut claim_to_headers = Vec::with_capacity(raw_headers.len());
    for (j, c) in raw_headers.iter().enumerate() {
        if c.claim.is_empty() {
            return Err(ConfigError::field(
                format!("{at}.claim_to_headers[{j}].claim"),
                "must not be empty",
            ));
        }
        let h = header_name(&c.header, &format!("{at}.claim_to_headers[{j}].header"))?;
        if from_headers.iter().any(|(f, _)| *f == h) {
            return Err(ConfigError::field(
                format!("{at}.claim_to_headers[{j}].header"),
                format!("`{h}` carries the token (from_headers)"),
            ));
        }
        claim_to_headers.push((c.claim.clone(), h));
    }
    let mut claims_to_state = Vec::with_capacity(p.claims_to_state.len());
    for (j, c) in p.claims_to_state.iter().enumerate() {
        if c.is_empty()
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(ConfigError::field(
                format!("{at}.claims_to_state[{j}]"),
                "must be letters, digits, `.`, `_` or `-`",
            ));
        }
        claims_to_state.push((c.clone(), format!("{}{c}", headers::state::JWT_CLAIM_PREFIX)));
    }
    Ok(Provider {
        name: p.name,
        issuer: p.issuer,
        audiences: p.audiences,
        keys,
        from_headers,
        from_params: p.from_params,
        from_cookies: p.from_cookies,
        forward: p.forward,
        time: TimePolicy {
            skew_s: p.clock_skew_s,
            require_exp: p.require_exp,
            max_lifetime_s: p.max_lifetime_s,
        },
        claim_to_headers,
        claims_to_state,
    })
}

fn inline_jwks(v: &Value, at: &str) -> Result<Jwks, ConfigError> {
    Jwks::from_value(v, true).map(|(jwks, _)| jwks).map_err(|e| {
        let path = if e.path == "." {
            at.to_owned()
        } else {
            format!("{at}.{}", e.path)
        };
        ConfigError::field(path, e.message)
    })
}

fn compile_remote(r: RawRemote, at: &str) -> Result<Remote, ConfigError> {
    if r.cluster.trim().is_empty() {
        return Err(ConfigError::field(
            format!("{at}.cluster"),
            "must name an Envoy cluster",
        ));
    }
    if !r.path.starts_with('/') {
        return Err(ConfigError::field(format!("{at}.path"), "must start with `/`"));
    }
    if !(1..=60_000).contains(&r.timeout_ms) {
        return Err(ConfigError::field(
            format!("{at}.timeout_ms"),
            format!("{} is outside 1..=60000", r.timeout_ms),
        ));
    }
    if r.cache_ttl_s == 0 {
        return Err(ConfigError::field(
            format!("{at}.cache_ttl_s"),
            "must be at least 1",
        ));
    }
    if r.refetch_interval_s == 0 {
        return Err(ConfigError::field(
            format!("{at}.refetch_interval_s"),
            "must be at least 1",
        ));
    }
    let authority = r.authority.unwrap_or_else(|| r.cluster.clone());
    Ok(Remote {
        cluster: r.cluster,
        path: r.path,
        authority,
        timeout_ms: r.timeout_ms,
        ttl_s: r.cache_ttl_s,
        refetch_s: r.refetch_interval_s,
    })
}

fn compile_rule(r: RawRule, at: &str, providers: &[Provider]) -> Result<Rule, ConfigError> {
    let matcher = match (r.prefix, r.path, r.regex) {
        (Some(p), None, None) => Match::Prefix(p),
        (None, Some(p), None) => Match::Path(p),
        (None, None, Some(re)) => Match::Regex(
            regex::RegexBuilder::new(&format!("^(?:{re})$"))
                .size_limit(filter_core::config::REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ConfigError::field(format!("{at}.regex"), e.to_string()))?,
        ),
        _ => {
            return Err(ConfigError::field(
                at,
                "needs exactly one of `prefix`, `path`, `regex`",
            ));
        }
    };
    if r.skip {
        if !r.requires.is_empty()
            || r.allow_missing
            || r.allow_missing_or_failed
            || !r.required_scopes.is_empty()
        {
            return Err(ConfigError::field(
                format!("{at}.skip"),
                "a skipped rule takes no `requires`, `allow_*` or `required_scopes`",
            ));
        }
    } else if r.requires.is_empty() {
        return Err(ConfigError::field(
            format!("{at}.requires"),
            "name at least one provider (or set `skip: true`)",
        ));
    }
    let mut requires = Vec::with_capacity(r.requires.len());
    for (j, name) in r.requires.iter().enumerate() {
        let idx = providers.iter().position(|p| p.name == *name).ok_or_else(|| {
            ConfigError::field(
                format!("{at}.requires[{j}]"),
                format!("no provider is named `{name}`"),
            )
        })?;
        requires.push(idx);
    }
    Ok(Rule {
        matcher,
        requires,
        allow_missing: r.allow_missing || r.allow_missing_or_failed,
        allow_failed: r.allow_missing_or_failed,
        required_scopes: r.required_scopes,
    })
}
