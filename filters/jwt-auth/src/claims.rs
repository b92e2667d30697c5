//! Checks on a token's claims (RFC 7519 §4.1) and reading claims for headers and filter state.
//! Registered claims of the wrong JSON type are errors, never ignored: a string `exp` must not
//! make a token immortal.

use crate::reason::Reason;
use serde_json::{Map, Value};
use std::fmt::Write;

/// How a provider treats time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimePolicy {
    pub skew_s: u64,
    pub require_exp: bool,
    /// `exp` minus `nbf` (else `iat`, else now) may not exceed this.
    pub max_lifetime_s: Option<u64>,
}

/// The validity window a token claims, kept with a cached verification to recheck it per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
}

impl Window {
    /// Expired when `now > exp + skew`, not yet valid when `now + skew < nbf` (jwt_verify_lib's
    /// edges).
    pub fn check(self, now: u64, skew_s: u64) -> Result<(), Reason> {
        if self.exp.is_some_and(|exp| now > exp.saturating_add(skew_s)) {
            return Err(Reason::Expired);
        }
        if self.nbf.is_some_and(|nbf| now.saturating_add(skew_s) < nbf) {
            return Err(Reason::NotYetValid);
        }
        Ok(())
    }
}

/// A NumericDate: a non-negative JSON number. Fractions are rounded towards stricter: `nbf` up,
/// `exp` and `iat` down.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, Reason> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                return Ok(Some(u));
            }
            match n.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => {
                    Ok(Some(if name == "nbf" { f.ceil() as u64 } else { f as u64 }))
                }
                _ => Err(Reason::ClaimType(name)),
            }
        }
        Some(_) => Err(Reason::ClaimType(name)),
    }
}

/// Reads and checks `exp`, `nbf`, `iat` against `now`.
pub fn check_time(claims: &Map<String, Value>, now: u64, policy: TimePolicy) -> Result<Window, Reason> {
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    if exp.is_none() && (policy.require_exp || policy.max_lifetime_s.is_some()) {
        return Err(Reason::ExpMissing);
    }
    if let (Some(max), Some(exp)) = (policy.max_lifetime_s, exp) {
        let start = nbf.or(iat).unwrap_or(now);
        if exp.saturating_sub(start) > max {
            return Err(Reason::LifetimeTooLong);
        }
    }
    let window = Window { exp, nbf };
    window.check(now, policy.skew_s)?;
    Ok(window)
}

/// `iss` must equal `issuer` when one is configured.
pub fn check_issuer(claims: &Map<String, Value>, issuer: Option<&str>) -> Result<(), Reason> {
    match (claims.get("iss"), issuer) {
        (Some(v), _) if !v.is_string() => Err(Reason::ClaimType("iss")),
        (_, None) => Ok(()),
        (Some(Value::String(iss)), Some(want)) if iss == want => Ok(()),
        _ => Err(Reason::WrongIssuer),
    }
}

/// One of the token's audiences (`aud`: string or array of strings) must be allowed, when the
/// provider lists audiences.
pub fn check_audience(claims: &Map<String, Value>, allowed: &[String]) -> Result<(), Reason> {
    let aud = claims.get("aud");
    let ok = match aud {
        None => false,
        Some(Value::String(a)) => allowed.iter().any(|x| x == a),
        Some(Value::Array(list)) => {
            if list.iter().any(|v| !v.is_string()) {
                return Err(Reason::ClaimType("aud"));
            }
            list.iter()
                .any(|v| v.as_str().is_some_and(|a| allowed.iter().any(|x| x == a)))
        }
        Some(_) => return Err(Reason::ClaimType("aud")),
    };
    if ok || allowed.is_empty() {
        Ok(())
    } else {
        Err(Reason::AudienceNotAllowed)
    }
}

/// Every scope in `required` must be granted by `scope` (space-separated, RFC 8693) or `scp`
/// (array of strings, as some issuers send).
pub fn check_scopes(claims: &Map<String, Value>, required: &[String]) -> Result<(), Reason> {
    if required.is_empty() {
        return Ok(());
    }
    let has = |want: &str| {
        let in_scope = claims
            .get("scope")
            .and_then(Value::as_str)
            .is_some_and(|s| s.split(' ').any(|g| g == want));
        let in_scp = match claims.get("scp") {
            Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(want)),
            Some(Value::String(s)) => s.split(' ').any(|g| g == want),
            _ => false,
        };
        in_scope || in_scp
    };
    if required.iter().all(|r| has(r)) {
        Ok(())
    } else {
        Err(Reason::InsufficientScope)
    }
}

/// The claim at `path`: the top-level member of that exact name (claim names can be URLs with
/// dots), else the nested member along the dot-separated segments (`org.id`).
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut segments = path.split('.');
    let mut v = claims.get(segments.next()?)?;
    for s in segments {
        v = v.as_object()?.get(s)?;
    }
    Some(v)
}

/// Longest value written into a header or filter state.
pub const MAX_VALUE_BYTES: usize = 4096;

/// A claim rendered for a header: strings as they are, numbers and booleans as JSON, arrays of
/// those joined by `,`. Objects, nulls, values with control characters (header injection), array
/// elements containing `,` (`["a,admin"]` must not read as two values) or values longer than
/// [`MAX_VALUE_BYTES`] give `None`, and the header is not set.
pub fn header_value(v: &Value) -> Option<String> {
    let mut out = String::new();
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if item.as_str().is_some_and(|s| s.contains(',')) {
                    return None;
                }
                scalar(item, &mut out)?;
            }
        }
        other => scalar(other, &mut out)?,
    }
    let clean = !out.is_empty() && out.len() <= MAX_VALUE_BYTES && !out.chars().any(|c| c.is_control());
    clean.then_some(out)
}

fn scalar(v: &Value, out: &mut String) -> Option<()> {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Number(n) => write!(out, "{n}").ok()?,
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => return None,
    }
    Some(())
}
