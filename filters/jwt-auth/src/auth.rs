//! The decision for one request, free of host calls: find the tokens the rule's providers look for,
//! verify each (from the verified-token cache when possible), and say allow, deny (with the reason)
//! or wait for a provider's keys to be fetched.

use crate::cache::{TokenCache, Verified};
use crate::claims;
use crate::config::{Config, KeySource, Provider, Rule};
use crate::jwks::Jwks;
use crate::native;
use crate::reason::Reason;
use crate::token;
use std::rc::Rc;

/// A provider's keys at run time: fixed from config, or fetched, cached and refreshed.
#[derive(Debug)]
pub struct KeySet {
    pub jwks: Option<Rc<Jwks>>,
    /// Bumped on every change of `jwks`; cached verifications of an older generation are void.
    pub generation: u64,
    /// `(ttl_s, refetch_s)` for a fetched set; `None` for keys from config.
    pub refresh: Option<(u64, u64)>,
    pub fetched_at: Option<u64>,
    /// When the last fetch started.
    pub last_attempt: Option<u64>,
    /// Hash of the last fetched document: an unchanged set keeps its generation (and the cached
    /// verifications made with it).
    pub fingerprint: Option<u64>,
    pub in_flight: bool,
    /// A request is waiting for a fetch that has not started yet.
    pub wanted: bool,
}

impl KeySet {
    pub fn for_provider(p: &Provider) -> Self {
        let (jwks, refresh) = match &p.keys {
            KeySource::Fixed(j) => (Some(j.clone()), None),
            KeySource::Remote(r) => (None, Some((r.ttl_s, r.refetch_s))),
        };
        Self {
            jwks,
            generation: 1,
            refresh,
            fetched_at: None,
            last_attempt: None,
            fingerprint: None,
            in_flight: false,
            wanted: false,
        }
    }

    /// A fetch may start now: remote keys, none in flight, and the last one long enough ago.
    pub fn may_fetch(&self, now: u64) -> bool {
        match self.refresh {
            Some((_, refetch)) => {
                !self.in_flight && self.last_attempt.is_none_or(|t| now >= t.saturating_add(refetch))
            }
            None => false,
        }
    }

    /// Whether the background timer should start a fetch now: a waiting request, no keys yet, or
    /// keys older than their TTL.
    pub fn due(&self, now: u64) -> bool {
        let Some((ttl, _)) = self.refresh else {
            return false;
        };
        if self.in_flight {
            return false;
        }
        if self.wanted {
            return true;
        }
        let stale = match self.fetched_at {
            None => true,
            Some(t) => now >= t.saturating_add(ttl),
        };
        stale && self.may_fetch(now)
    }

    pub fn started(&mut self, now: u64) {
        self.in_flight = true;
        self.wanted = false;
        self.last_attempt = Some(now);
    }

    /// A fetch ended; `Some((keys, fingerprint of the document))` replaces the keys. A failed
    /// refresh keeps the cached keys. Only a changed document starts a new generation.
    pub fn finished(&mut self, now: u64, fetched: Option<(Jwks, u64)>) {
        self.in_flight = false;
        if let Some((j, fingerprint)) = fetched {
            self.fetched_at = Some(now);
            if self.fingerprint != Some(fingerprint) || self.jwks.is_none() {
                self.jwks = Some(Rc::new(j));
                self.generation += 1;
                self.fingerprint = Some(fingerprint);
            }
        }
    }
}

/// A token found in the request and the providers (of the rule) that look where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    pub providers: Vec<usize>,
}

/// Most tokens one request may carry; more is refused (`too_many_tokens`) before any is decoded.
pub const MAX_TOKENS: usize = 4;

/// Collects the distinct tokens the rule's providers find in `headers` (lower-case names, every
/// copy of a repeated header), the query of `path`, and cookies.
pub fn extract(cfg: &Config, rule: &Rule, headers: &[(String, String)], path: &str) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    let mut add = |token: &str, p: usize| {
        let token = token.trim();
        // Past the cap the request is refused anyway; stop collecting.
        if token.is_empty() || found.len() > MAX_TOKENS {
            return;
        }
        match found.iter_mut().find(|f| f.token == token) {
            Some(f) if !f.providers.contains(&p) => f.providers.push(p),
            Some(_) => {}
            None => found.push(Found {
                token: token.to_owned(),
                providers: vec![p],
            }),
        }
    };
    let query = path.split_once('?').map(|(_, q)| q);
    for &p in &rule.requires {
        let Some(provider) = cfg.providers.get(p) else {
            continue;
        };
        for (name, prefix) in &provider.from_headers {
            for (_, value) in headers.iter().filter(|(n, _)| n == name) {
                if let Some(t) = strip_prefix_ignore_case(value, prefix) {
                    add(t, p);
                }
            }
        }
        if let Some(q) = query {
            for pair in q.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if provider.from_params.iter().any(|n| n == k) {
                    add(v, p);
                }
            }
        }
        if !provider.from_cookies.is_empty() {
            for (_, value) in headers.iter().filter(|(n, _)| n == "cookie") {
                for c in value.split(';') {
                    let (k, v) = c.trim().split_once('=').unwrap_or((c.trim(), ""));
                    if provider.from_cookies.iter().any(|n| n == k) {
                        add(v.trim_matches('"'), p);
                    }
                }
            }
        }
    }
    found
}

/// `path` without the query parameters named in `names`; `None` when none is there.
pub fn without_params(path: &str, names: &[String]) -> Option<String> {
    let (base, query) = path.split_once('?')?;
    let named = |pair: &&str| names.iter().any(|n| pair.split('=').next() == Some(n.as_str()));
    if !query.split('&').any(|p| named(&p)) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !named(p)).collect();
    Some(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| value.get(prefix.len()..))
        .flatten()
}

#[derive(Debug)]
pub enum Decision {
    /// Let the request through; `identity` is the verified token (none when the rule allowed a
    /// missing or failed token, or skips authentication).
    Allow {
        identity: Option<Rc<Verified>>,
    },
    Deny(Reason),
    /// The keys of this provider are being fetched; ask again when they arrive.
    Wait(usize),
}

/// Decides a request the rule covers. Verifications are cached in `cache`; a provider whose keys
/// must be fetched first is marked `wanted` and `Wait` returned. `host` is Envoy's native
/// signature check (see [`native`]).
pub fn decide(
    cfg: &Config,
    rule: &Rule,
    found: &[Found],
    keys: &mut [KeySet],
    cache: &mut TokenCache,
    now: u64,
    host: &mut native::Host<'_>,
) -> Decision {
    if rule.requires.is_empty() {
        return Decision::Allow { identity: None };
    }
    if found.len() > MAX_TOKENS {
        return Decision::Deny(Reason::TooManyTokens);
    }
    if found.is_empty() {
        return if rule.allow_missing {
            Decision::Allow { identity: None }
        } else {
            Decision::Deny(Reason::Missing)
        };
    }
    let mut identity = None;
    for f in found {
        match check(cfg, rule, f, keys, cache, now, host) {
            Ok(v) => {
                identity.get_or_insert(v);
            }
            Err(Step::Wait(p)) => return Decision::Wait(p),
            // Every token must hold: one good token does not excuse a bad one next to it.
            Err(Step::Deny(_)) if rule.allow_failed => return Decision::Allow { identity: None },
            Err(Step::Deny(r)) => return Decision::Deny(r),
        }
    }
    Decision::Allow { identity }
}

enum Step {
    Deny(Reason),
    Wait(usize),
}

impl From<Reason> for Step {
    fn from(r: Reason) -> Self {
        Self::Deny(r)
    }
}

fn check(
    cfg: &Config,
    rule: &Rule,
    f: &Found,
    keys: &mut [KeySet],
    cache: &mut TokenCache,
    now: u64,
    host: &mut native::Host<'_>,
) -> Result<Rc<Verified>, Step> {
    if let Some(v) = cache.get(&f.token) {
        let current = keys.get(v.provider).map(|k| k.generation) == Some(v.generation);
        if current && f.providers.contains(&v.provider) {
            let skew = cfg.providers.get(v.provider).map_or(0, |p| p.time.skew_s);
            if let Err(r) = v.window.check(now, skew) {
                cache.remove(&f.token);
                return Err(r.into());
            }
            claims::check_scopes(&v.claims, &rule.required_scopes)?;
            return Ok(v);
        }
    }
    let t = token::parse(&f.token, cfg.max_token_bytes)?;
    // The provider is the one whose issuer the token names (or one without an issuer).
    let iss = match t.claims.get("iss") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(Reason::ClaimType("iss").into()),
    };
    // The providers whose issuer the token names (or that have none), tried in turn: the first
    // that verifies it wins; otherwise the first one's reason stands.
    let mut first_err: Option<Step> = None;
    for &p in &f.providers {
        let fits = cfg
            .providers
            .get(p)
            .is_some_and(|pr| pr.issuer.is_none() || pr.issuer.as_deref() == iss);
        if !fits {
            continue;
        }
        match verify_with(cfg, p, &t, keys, now, host) {
            Ok(v) => {
                let verified = Rc::new(v);
                cache.insert(&f.token, verified.clone());
                claims::check_scopes(&verified.claims, &rule.required_scopes)?;
                return Ok(verified);
            }
            Err(Step::Wait(p)) => return Err(Step::Wait(p)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(Step::Deny(Reason::WrongIssuer)))
}

/// Checks a parsed token against provider `p`: issuer, time, keys, signature, audience.
fn verify_with(
    cfg: &Config,
    p: usize,
    t: &token::Token<'_>,
    keys: &mut [KeySet],
    now: u64,
    host: &mut native::Host<'_>,
) -> Result<Verified, Step> {
    let (Some(provider), Some(ks)) = (cfg.providers.get(p), keys.get_mut(p)) else {
        return Err(Reason::WrongIssuer.into());
    };
    // Cheap checks first: an expired or foreign token costs no signature check.
    claims::check_issuer(&t.claims, provider.issuer.as_deref())?;
    let window = claims::check_time(&t.claims, now, provider.time)?;
    let jwks = match &ks.jwks {
        None if ks.in_flight => return Err(Step::Wait(p)),
        None if ks.may_fetch(now) => {
            ks.wanted = true;
            return Err(Step::Wait(p));
        }
        None => return Err(Reason::JwksUnavailable.into()),
        Some(j) => j.clone(),
    };
    if let Some(kid) = t.kid.as_deref()
        && ks.refresh.is_some()
        && !jwks.has_kid(kid)
    {
        // A key the issuer may have rotated in: one fetch, rate-limited; else it is unknown.
        if ks.in_flight {
            return Err(Step::Wait(p));
        }
        if ks.may_fetch(now) {
            ks.wanted = true;
            return Err(Step::Wait(p));
        }
    }
    jwks.verify(t.alg, t.kid.as_deref(), t.signing_input, &t.signature, host)?;
    claims::check_audience(&t.claims, &provider.audiences)?;
    Ok(Verified {
        provider: p,
        generation: ks.generation,
        window,
        claims: t.claims.clone(),
    })
}
