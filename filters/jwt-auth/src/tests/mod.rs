//! Unit tests of the pure modules, run natively and as wasm under Node. Tokens are signed here with
//! HMAC (a key drawn per test run); RSA, EC and Ed25519 tokens are signed by OpenSSL in the
//! integration tests, so the verifier is never checked against itself.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use crate::auth::{self, Decision, Found, KeySet};
use crate::cache::TokenCache;
use crate::claims::{self, TimePolicy, Window};
use crate::config::{self, Config};
use crate::jwks::{Alg, Jwks};
use crate::reason::Reason;
use crate::token;
use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const NOW: u64 = 1_800_000_000;

/// A 32-byte secret drawn from std's hasher keys (random per process natively; each call differs
/// anyway), so no key is committed.
fn secret() -> Vec<u8> {
    use std::hash::{BuildHasher, RandomState};
    let s = RandomState::new();
    (0..4u64).flat_map(|i| s.hash_one(i).to_le_bytes()).collect()
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

fn hs256(key: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn oct_jwks(key: &[u8], kid: &str) -> Value {
    json!({"keys": [{"kty": "oct", "kid": kid, "alg": "HS256", "k": b64(key)}]})
}

fn config(jwks: Value, extra_provider: Value, rules: Value) -> Config {
    let mut provider = json!({
        "name": "corp",
        "issuer": "https://idp.example.com",
        "audiences": ["gateway"],
        "jwks": {"inline": jwks},
        "claim_to_headers": [
            {"claim": "sub", "header": "x-tollgate-subject"},
            {"claim": "org.id", "header": "x-tollgate-tenant"}
        ]
    });
    if let (Value::Object(p), Value::Object(extra)) = (&mut provider, extra_provider) {
        p.extend(extra);
    }
    let raw = json!({"providers": [provider], "rules": rules});
    config::compile(filter_core::config::parse(raw.to_string().as_bytes()).unwrap()).unwrap()
}

fn claims_ok() -> Value {
    json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "alice",
           "org": {"id": "acme"}, "exp": NOW + 600, "iat": NOW - 10, "scope": "chat embed"})
}

fn header() -> Value {
    json!({"alg": "HS256", "kid": "k1", "typ": "JWT"})
}

struct Fixture {
    key: Vec<u8>,
    cfg: Config,
    keys: Vec<KeySet>,
    cache: TokenCache,
}

impl Fixture {
    fn new() -> Self {
        let key = secret();
        let cfg = config(
            oct_jwks(&key, "k1"),
            json!({}),
            json!([{"prefix": "/", "requires": ["corp"]}]),
        );
        Self::with(key, cfg)
    }

    fn with(key: Vec<u8>, cfg: Config) -> Self {
        let keys = cfg.providers.iter().map(KeySet::for_provider).collect();
        Self {
            key,
            cfg,
            keys,
            cache: TokenCache::new(16),
        }
    }

    fn token(&self, claims: &Value) -> String {
        hs256(&self.key, &header(), claims)
    }

    fn decide_at(&mut self, token: &str, now: u64) -> Decision {
        let rule = &self.cfg.rules[0];
        let found = vec![Found {
            token: token.to_owned(),
            providers: vec![0],
        }];
        auth::decide(
            &self.cfg,
            rule,
            &found,
            &mut self.keys,
            &mut self.cache,
            now,
            &mut |_, _, _, _| None,
        )
    }

    fn reason(&mut self, token: &str) -> Reason {
        match self.decide_at(token, NOW) {
            Decision::Deny(r) => r,
            other => panic!("expected a denial, got {other:?}"),
        }
    }
}

#[test]
fn a_good_token_is_allowed_with_its_claims_and_then_served_from_the_cache() {
    let mut f = Fixture::new();
    let t = f.token(&claims_ok());
    let Decision::Allow { identity: Some(v) } = f.decide_at(&t, NOW) else {
        panic!()
    };
    assert_eq!(v.claims["sub"], "alice");
    assert_eq!(claims::lookup(&v.claims, "org.id"), Some(&json!("acme")));
    assert_eq!(f.cache.len(), 1);
    assert!(matches!(
        f.decide_at(&t, NOW),
        Decision::Allow { identity: Some(_) }
    ));
    assert_eq!(f.cache.take_counts(), (1, 1));
    // The cached entry still expires on time (exp + 60 s skew).
    assert_eq!(
        match f.decide_at(&t, NOW + 661) {
            Decision::Deny(r) => r,
            d => panic!("{d:?}"),
        },
        Reason::Expired
    );
    assert_eq!(f.cache.len(), 0, "an expired entry is dropped");
}

#[test]
fn every_malformed_part_is_named() {
    let mut f = Fixture::new();
    let good = f.token(&claims_ok());
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<(String, Reason)> = vec![
        (String::from("a.b"), Reason::Malformed),
        (format!("{good}.x"), Reason::Malformed),
        (format!(".{}.{}", parts[1], parts[2]), Reason::Malformed),
        (format!("{}.{}.", parts[0], parts[1]), Reason::Malformed),
        (
            format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
            Reason::HeaderBase64,
        ),
        (
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            Reason::HeaderBase64,
        ),
        (
            format!("{}.{}.{}", b64(b"{not json"), parts[1], parts[2]),
            Reason::HeaderJson,
        ),
        (
            format!("{}.{}.{}", b64(b"[1,2]"), parts[1], parts[2]),
            Reason::HeaderJson,
        ),
        (
            format!("{}.{}*.{}", parts[0], parts[1], parts[2]),
            Reason::PayloadBase64,
        ),
        (
            format!("{}.{}.{}", parts[0], b64(b"\"str\""), parts[2]),
            Reason::PayloadJson,
        ),
        (
            format!("{}.{}.{}", parts[0], b64(b"{\"a\":"), parts[2]),
            Reason::PayloadJson,
        ),
        (
            format!("{}.{}.{}+", parts[0], parts[1], parts[2]),
            Reason::SignatureBase64,
        ),
        (
            format!("{}.{}.{}", b64(br#"{"typ":"JWT"}"#), parts[1], parts[2]),
            Reason::AlgMissing,
        ),
        (
            format!("{}.{}.{}", b64(br#"{"alg":5}"#), parts[1], parts[2]),
            Reason::AlgMissing,
        ),
        (
            format!("{}.{}.{}", b64(br#"{"alg":"none"}"#), parts[1], parts[2]),
            Reason::AlgUnsupported,
        ),
        (
            format!("{}.{}.{}", b64(br#"{"alg":"HS1"}"#), parts[1], parts[2]),
            Reason::AlgUnsupported,
        ),
        (
            format!("{}.{}.{}", b64(br#"{"alg":"HS256","kid":7}"#), parts[1], parts[2]),
            Reason::AlgMissing,
        ),
        (
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"HS256","crit":["exp"],"exp":1}"#),
                parts[1],
                parts[2]
            ),
            Reason::CritUnsupported,
        ),
        ("x".repeat(8193), Reason::TooLarge),
    ];
    for (t, want) in cases {
        assert_eq!(f.reason(&t), want, "{t:.80}");
    }
}

#[test]
fn alg_none_and_a_stripped_signature_are_refused() {
    let mut f = Fixture::new();
    let body = b64(claims_ok().to_string().as_bytes());
    let none = format!("{}.{body}.", b64(br#"{"alg":"none"}"#));
    assert_eq!(f.reason(&none), Reason::Malformed);
    let none_sig = format!("{}.{body}.AAAA", b64(br#"{"alg":"none"}"#));
    assert_eq!(f.reason(&none_sig), Reason::AlgUnsupported);
}

#[test]
fn tampering_and_wrong_lengths_fail_the_signature() {
    let mut f = Fixture::new();
    let good = f.token(&claims_ok());
    let parts: Vec<&str> = good.split('.').collect();
    let mut evil = claims_ok();
    evil["sub"] = json!("mallory");
    let tampered = format!("{}.{}.{}", parts[0], b64(evil.to_string().as_bytes()), parts[2]);
    assert_eq!(f.reason(&tampered), Reason::BadSignature);
    let short = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]);
    assert_eq!(f.reason(&short), Reason::BadSignature);
    let long = format!("{}.{}.{}AAAA", parts[0], parts[1], parts[2]);
    assert_eq!(f.reason(&long), Reason::BadSignature);
    let other_key = hs256(&secret(), &header(), &claims_ok());
    assert_eq!(f.reason(&other_key), Reason::BadSignature);
    assert!(f.cache.is_empty(), "failures are never cached");
}

#[test]
fn kid_and_algorithm_must_find_a_fitting_key() {
    let mut f = Fixture::new();
    let unknown = hs256(&f.key, &json!({"alg": "HS256", "kid": "nope"}), &claims_ok());
    assert_eq!(f.reason(&unknown), Reason::UnknownKid);
    // The key says HS256; a token claiming HS384 with the same key is refused before any MAC.
    let other_alg = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"HS384","kid":"k1"}"#),
        b64(claims_ok().to_string().as_bytes()),
        b64(&[0u8; 48])
    );
    assert_eq!(f.reason(&other_alg), Reason::KeyMismatch);
    // RS256 against an oct key: the HS/RS confusion attack has no key to use.
    let confused = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256","kid":"k1"}"#),
        b64(claims_ok().to_string().as_bytes()),
        b64(&[0u8; 256])
    );
    assert_eq!(f.reason(&confused), Reason::KeyMismatch);
    // No kid in the token: every fitting key is tried.
    let no_kid = hs256(&f.key, &json!({"alg": "HS256"}), &claims_ok());
    assert!(matches!(
        f.decide_at(&no_kid, NOW),
        Decision::Allow { identity: Some(_) }
    ));
}

#[test]
fn time_claims_have_exact_edges_with_skew() {
    let mut f = Fixture::new();
    let at = |exp: Option<u64>, nbf: Option<u64>| {
        let mut c = claims_ok();
        match exp {
            Some(e) => c["exp"] = json!(e),
            None => {
                c.as_object_mut().unwrap().remove("exp");
            }
        }
        if let Some(n) = nbf {
            c["nbf"] = json!(n);
        }
        c
    };
    let ok = |f: &mut Fixture, c: &Value| matches!(f.decide_at(&f.token(c), NOW), Decision::Allow { .. });
    // exp: valid through exp + 60 s.
    assert!(ok(&mut f, &at(Some(NOW - 60), None)));
    assert_eq!(f.reason(&f.token(&at(Some(NOW - 61), None))), Reason::Expired);
    // nbf: valid from nbf - 60 s.
    assert!(ok(&mut f, &at(Some(NOW + 600), Some(NOW + 60))));
    assert_eq!(
        f.reason(&f.token(&at(Some(NOW + 600), Some(NOW + 61)))),
        Reason::NotYetValid
    );
    assert_eq!(f.reason(&f.token(&at(None, None))), Reason::ExpMissing);
    let mut c = claims_ok();
    c["exp"] = json!((NOW + 600).to_string());
    assert_eq!(f.reason(&f.token(&c)), Reason::ClaimType("exp"));
    c["exp"] = json!(-5);
    assert_eq!(f.reason(&f.token(&c)), Reason::ClaimType("exp"));
    c["exp"] = json!(NOW as f64 + 0.5);
    assert!(ok(&mut f, &c), "NumericDate may have a fraction");
    let mut c = claims_ok();
    c["nbf"] = json!(null);
    assert_eq!(f.reason(&f.token(&c)), Reason::ClaimType("nbf"));
    let mut c = claims_ok();
    c["iat"] = json!("yesterday");
    assert_eq!(f.reason(&f.token(&c)), Reason::ClaimType("iat"));
}

#[test]
fn window_checks_without_a_token() {
    let w = Window {
        exp: Some(100),
        nbf: Some(50),
    };
    assert_eq!(w.check(100, 0), Ok(()));
    assert_eq!(w.check(101, 0), Err(Reason::Expired));
    assert_eq!(w.check(49, 0), Err(Reason::NotYetValid));
    assert_eq!(w.check(u64::MAX, u64::MAX), Ok(()), "no overflow");
    let p = TimePolicy {
        skew_s: 0,
        require_exp: false,
        max_lifetime_s: Some(3600),
    };
    let c = json!({"exp": 10_000, "iat": 1000});
    assert_eq!(
        claims::check_time(c.as_object().unwrap(), 5000, p),
        Err(Reason::LifetimeTooLong)
    );
    let c = json!({"exp": 4000, "iat": 1000});
    assert!(claims::check_time(c.as_object().unwrap(), 2000, p).is_ok());
    let c = json!({"iat": 1000});
    assert_eq!(
        claims::check_time(c.as_object().unwrap(), 2000, p),
        Err(Reason::ExpMissing)
    );
}

#[test]
fn issuer_audience_and_scope() {
    let mut f = Fixture::new();
    let mut c = claims_ok();
    c["iss"] = json!("https://evil.example.com");
    assert_eq!(f.reason(&f.token(&c)), Reason::WrongIssuer);
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(f.reason(&f.token(&c)), Reason::WrongIssuer);
    c["iss"] = json!(["https://idp.example.com"]);
    assert_eq!(f.reason(&f.token(&c)), Reason::ClaimType("iss"));
    let mut c = claims_ok();
    c["aud"] = json!(["other", "gateway"]);
    assert!(matches!(f.decide_at(&f.token(&c), NOW), Decision::Allow { .. }));
    c["aud"] = json!("other");
    let t = f.token(&c);
    assert_eq!(f.reason(&t), Reason::AudienceNotAllowed);
    assert_eq!(Reason::AudienceNotAllowed.to_api().status(), 403);
    c["aud"] = json!([1]);
    assert_eq!(f.reason(&f.token(&c)), Reason::ClaimType("aud"));

    let cfg = config(
        oct_jwks(&f.key, "k1"),
        json!({}),
        json!([{"prefix": "/", "requires": ["corp"], "required_scopes": ["chat", "admin"]}]),
    );
    let mut f = Fixture::with(f.key.clone(), cfg);
    assert_eq!(f.reason(&f.token(&claims_ok())), Reason::InsufficientScope);
    let mut c = claims_ok();
    c["scp"] = json!(["admin"]);
    assert!(matches!(f.decide_at(&f.token(&c), NOW), Decision::Allow { .. }));
}

#[test]
fn missing_tokens_and_the_allow_flags() {
    let key = secret();
    let cfg = config(
        oct_jwks(&key, "k1"),
        json!({}),
        json!([
            {"prefix": "/public", "skip": true},
            {"prefix": "/maybe", "requires": ["corp"], "allow_missing": true},
            {"prefix": "/any", "requires": ["corp"], "allow_missing_or_failed": true},
            {"prefix": "/", "requires": ["corp"]}
        ]),
    );
    let mut f = Fixture::with(key, cfg);
    let bad = vec![Found {
        token: "a.b.c".to_owned(),
        providers: vec![0],
    }];
    let run = |f: &mut Fixture, path: &str, found: &[Found]| {
        let rule = f.cfg.rule_for(path).unwrap();
        auth::decide(
            &f.cfg,
            rule,
            found,
            &mut f.keys,
            &mut f.cache,
            NOW,
            &mut |_, _, _, _| None,
        )
    };
    assert!(matches!(
        run(&mut f, "/public/x", &[]),
        Decision::Allow { identity: None }
    ));
    assert!(matches!(
        run(&mut f, "/maybe", &[]),
        Decision::Allow { identity: None }
    ));
    assert!(matches!(
        run(&mut f, "/maybe", &bad),
        Decision::Deny(Reason::HeaderJson | Reason::HeaderBase64)
    ));
    assert!(matches!(
        run(&mut f, "/any", &bad),
        Decision::Allow { identity: None }
    ));
    assert!(matches!(
        run(&mut f, "/v1/chat", &[]),
        Decision::Deny(Reason::Missing)
    ));
    // Two tokens, one good and one bad: denied.
    let good = f.token(&claims_ok());
    let two = vec![
        Found {
            token: good,
            providers: vec![0],
        },
        Found {
            token: "a.b.c".to_owned(),
            providers: vec![0],
        },
    ];
    assert!(matches!(run(&mut f, "/v1/chat", &two), Decision::Deny(_)));
}

#[test]
fn tokens_are_found_where_providers_look_and_removed_from_the_query() {
    let key = secret();
    let cfg = config(
        oct_jwks(&key, "k1"),
        json!({"from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}, {"name": "x-api-token"}],
               "from_params": ["access_token"], "from_cookies": ["session"]}),
        json!([{"prefix": "/", "requires": ["corp"]}]),
    );
    let rule = &cfg.rules[0];
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    let found = auth::extract(
        &cfg,
        rule,
        &h(&[
            ("authorization", "bearer t1"),
            ("x-api-token", "t2"),
            ("cookie", "a=1; session=t3"),
            ("authorization", "Basic zzz"),
        ]),
        "/v1/chat?x=1&access_token=t4",
    );
    let tokens: Vec<&str> = found.iter().map(|f| f.token.as_str()).collect();
    assert_eq!(tokens, ["t1", "t2", "t4", "t3"]);
    let same = auth::extract(
        &cfg,
        rule,
        &h(&[("authorization", "Bearer t1"), ("x-api-token", "t1")]),
        "/",
    );
    assert_eq!(same.len(), 1, "one token found twice is one token");
    assert!(auth::extract(&cfg, rule, &h(&[("authorization", "Bearer ")]), "/").is_empty());
    assert_eq!(
        auth::without_params("/v1/chat?x=1&access_token=t4&y=2", &["access_token".to_owned()]).as_deref(),
        Some("/v1/chat?x=1&y=2")
    );
    assert_eq!(
        auth::without_params("/v1?access_token=t", &["access_token".to_owned()]).as_deref(),
        Some("/v1")
    );
    assert_eq!(
        auth::without_params("/v1?x=1", &["access_token".to_owned()]),
        None
    );
}

#[test]
fn claims_render_safely_into_headers() {
    assert_eq!(claims::header_value(&json!("alice")).as_deref(), Some("alice"));
    assert_eq!(claims::header_value(&json!(42)).as_deref(), Some("42"));
    assert_eq!(
        claims::header_value(&json!(["a", "b", true])).as_deref(),
        Some("a,b,true")
    );
    assert_eq!(
        claims::header_value(&json!("evil\r\nx-admin: 1")),
        None,
        "no header injection"
    );
    assert_eq!(claims::header_value(&json!({"a": 1})), None);
    assert_eq!(claims::header_value(&json!("")), None);
    assert_eq!(claims::header_value(&json!("x".repeat(5000))), None);
    let c = json!({"https://example.com/tenant": "t1", "org": {"id": "acme"}});
    let c = c.as_object().unwrap();
    assert_eq!(
        claims::lookup(c, "https://example.com/tenant"),
        Some(&json!("t1"))
    );
    assert_eq!(claims::lookup(c, "org.id"), Some(&json!("acme")));
    assert_eq!(claims::lookup(c, "org.name"), None);
}

// Key sets, remote JWKS, configs and headers.
mod keys;
