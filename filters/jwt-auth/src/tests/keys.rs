//! Key sets and their documents, remote JWKS fetches, configs and the identity headers.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use super::*;

#[test]
fn remote_keys_wait_for_one_fetch_and_unknown_kids_are_rate_limited() {
    let key = secret();
    let raw = json!({"providers": [{"name": "idp", "jwks": {"remote": {"cluster": "idp", "path": "/jwks", "refetch_interval_s": 30}}}],
                     "rules": [{"prefix": "/", "requires": ["idp"]}]});
    let cfg = config::compile(filter_core::config::parse(raw.to_string().as_bytes()).unwrap()).unwrap();
    let mut f = Fixture::with(key.clone(), cfg);
    let mut claims = claims_ok();
    claims.as_object_mut().unwrap().remove("aud");
    let t = f.token(&claims);
    // No keys yet: wait, and the timer should fetch.
    assert!(matches!(f.decide_at(&t, NOW), Decision::Wait(0)));
    assert!(f.keys[0].due(NOW));
    f.keys[0].started(NOW);
    assert!(
        matches!(f.decide_at(&t, NOW), Decision::Wait(0)),
        "in flight: wait too"
    );
    assert!(!f.keys[0].due(NOW));
    let (jwks, _) = Jwks::from_value(&oct_jwks(&key, "k1"), false).unwrap();
    f.keys[0].finished(NOW, Some((jwks, 1)));
    assert!(matches!(
        f.decide_at(&t, NOW),
        Decision::Allow { identity: Some(_) }
    ));
    // An unknown kid right after a fetch: no new fetch, unknown.
    let other = hs256(&key, &json!({"alg": "HS256", "kid": "k2"}), &claims);
    assert_eq!(f.reason(&other), Reason::UnknownKid);
    for i in 0..100 {
        let random = hs256(&key, &json!({"alg": "HS256", "kid": format!("r{i}")}), &claims);
        assert_eq!(f.reason(&random), Reason::UnknownKid);
    }
    assert!(!f.keys[0].due(NOW));
    // After the interval, one unknown kid asks for one fetch; the rest wait for it.
    let later = NOW + 30;
    assert!(matches!(f.decide_at(&other, later), Decision::Wait(0)));
    assert!(f.keys[0].due(later));
    f.keys[0].started(later);
    assert!(matches!(f.decide_at(&other, later), Decision::Wait(0)));
    // The refresh fails: cached keys keep working, the unknown kid is refused.
    f.keys[0].finished(later, None);
    assert!(f.keys[0].jwks.is_some());
    assert_eq!(
        match f.decide_at(&other, later) {
            Decision::Deny(r) => r,
            d => panic!("{d:?}"),
        },
        Reason::UnknownKid
    );
    assert!(matches!(
        f.decide_at(&t, later),
        Decision::Allow { identity: Some(_) }
    ));
    // TTL (600 s default) passes: the timer refreshes in the background.
    assert!(f.keys[0].due(NOW + 600));
}

#[test]
fn a_new_key_set_voids_cached_verifications() {
    let key = secret();
    let raw = json!({"providers": [{"name": "idp", "jwks": {"remote": {"cluster": "idp", "path": "/jwks"}}}],
                     "rules": [{"prefix": "/", "requires": ["idp"]}]});
    let cfg = config::compile(filter_core::config::parse(raw.to_string().as_bytes()).unwrap()).unwrap();
    let mut f = Fixture::with(key.clone(), cfg);
    let (jwks, _) = Jwks::from_value(&oct_jwks(&key, "k1"), false).unwrap();
    f.keys[0].started(NOW);
    f.keys[0].finished(NOW, Some((jwks, 1)));
    let t = f.token(&claims_ok());
    assert!(matches!(
        f.decide_at(&t, NOW),
        Decision::Allow { identity: Some(_) }
    ));
    // The issuer rotates k1 out.
    let (rotated, _) = Jwks::from_value(&oct_jwks(&secret(), "k2"), false).unwrap();
    f.keys[0].started(NOW + 100);
    f.keys[0].finished(NOW + 100, Some((rotated, 2)));
    assert_eq!(
        match f.decide_at(&t, NOW + 100) {
            Decision::Deny(r) => r,
            d => panic!("{d:?}"),
        },
        Reason::UnknownKid
    );
}

#[test]
fn jwks_documents_are_checked_key_by_key() {
    let k = b64(&secret());
    // Config keys are strict and the error names the member.
    let e = Jwks::from_value(
        &json!({"keys": [{"kty": "oct", "k": k}, {"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}),
        true,
    )
    .unwrap_err();
    assert_eq!(e.path, "keys[1].n");
    let e = Jwks::from_value(
        &json!({"keys": [{"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}]}),
        true,
    )
    .unwrap_err();
    assert_eq!(e.path, "keys[0].crv");
    let e = Jwks::from_value(&json!({"keys": [{"kty": "oct", "k": b64(b"short")}]}), true).unwrap_err();
    assert!(e.message.contains("minimum"), "{e}");
    let e = Jwks::from_value(&json!({"keys": [{"kty": "oct", "k": k, "alg": "RS256"}]}), true).unwrap_err();
    assert_eq!(e.path, "keys[0].alg");
    let e = Jwks::from_value(
        &json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(&[1u8; 31])}]}),
        true,
    )
    .unwrap_err();
    assert_eq!(e.path, "keys[0].x");
    let e = Jwks::from_value(
        &json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64(&[1u8; 32]), "y": b64(&[2u8; 32])}]}),
        true,
    )
    .unwrap_err();
    assert!(e.message.contains("not a point"), "{e}");
    // Fetched sets skip a bad key and keep the good ones; `use: enc` keys are left out.
    let (j, skipped) = Jwks::from_value(
        &json!({"keys": [{"kty": "oct", "k": k, "kid": "a"}, {"kty": "XYZ"}, {"kty": "oct", "k": k, "use": "enc"}]}),
        false,
    )
    .unwrap();
    assert_eq!(j.keys.len(), 1);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].path, "keys[1].kty");
    assert!(
        Jwks::from_value(&json!({"keys": [{"kty": "XYZ"}]}), false).is_err(),
        "no usable key"
    );
    assert!(Jwks::parse(b"<html>", false).is_err());
    assert!(Jwks::from_value(&json!({"keys": []}), false).is_err());
    // A single JWK is a set of one.
    assert_eq!(
        Jwks::from_value(&json!({"kty": "oct", "k": k}), true)
            .unwrap()
            .0
            .keys
            .len(),
        1
    );
    assert_eq!(Alg::from_name("EdDSA"), Some(Alg::EdDSA));
    assert_eq!(Alg::from_name("none"), None);
}

#[test]
fn bad_configs_name_the_field() {
    let k = b64(&secret());
    let cases = [
        (json!({"providers": []}), "providers"),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"keys": [{"kty": "oct", "k": "@@"}]}}}]}),
            "providers[0].jwks.inline.keys[0].k",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline_string": "{"}}]}),
            "providers[0].jwks.inline_string",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"remote": {"cluster": "c", "path": "jwks"}}}]}),
            "providers[0].jwks.remote.path",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"remote": {"cluster": "c", "path": "/j", "timeout_ms": 0}}}]}),
            "providers[0].jwks.remote.timeout_ms",
        ),
        (
            json!({"providers": [{"name": "a b", "jwks": {"inline": {"kty": "oct", "k": k}}}]}),
            "providers[0].name",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}}, {"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}}]}),
            "providers[1].name",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}, "claim_to_headers": [{"claim": "sub", "header": "Bad Header"}]}]}),
            "providers[0].claim_to_headers[0].header",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}, "claim_to_headers": [{"claim": "sub", "header": "authorization"}]}]}),
            "providers[0].claim_to_headers[0].header",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}}], "rules": [{"prefix": "/", "requires": ["b"]}]}),
            "rules[0].requires[0]",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}}], "rules": [{"prefix": "/", "path": "/x", "requires": ["a"]}]}),
            "rules[0]",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}}], "rules": [{"regex": "(", "requires": ["a"]}]}),
            "rules[0].regex",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}}], "rules": [{"prefix": "/"}]}),
            "rules[0].requires",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}}], "rules": [{"prefix": "/", "skip": true, "requires": ["a"]}]}),
            "rules[0].skip",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}}], "realm": "a\"b"}),
            "realm",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"file": "/etc/jwks.json"}}]}),
            "providers[0].jwks",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}, "audience": "x"}]}),
            "providers[0].audience",
        ),
        (
            json!({"providers": [{"name": "a", "jwks": {"inline": {"kty": "oct", "k": k}}}], "rules": [{"regex": format!("a{{1000}}{{1000}}"), "requires": ["a"]}]}),
            "rules[0].regex",
        ),
    ];
    for (raw, path) in cases {
        let err = filter_core::config::parse::<config::RawConfig>(raw.to_string().as_bytes())
            .and_then(config::compile)
            .expect_err(&raw.to_string());
        assert_eq!(err.path, path, "{err}");
    }
}

#[test]
fn the_compiled_config_strips_every_identity_header_and_renders_challenges() {
    let key = secret();
    let cfg = config(oct_jwks(&key, "k1"), json!({}), json!([]));
    assert_eq!(cfg.strip, ["x-tollgate-subject", "x-tollgate-tenant"]);
    assert_eq!(cfg.challenge(None), "Bearer realm=\"tollgate\"");
    assert_eq!(
        cfg.challenge(Some("invalid_token")),
        "Bearer realm=\"tollgate\", error=\"invalid_token\""
    );
    assert!(cfg.rule_for("/x").is_none());
    let t = token::parse("a.b.c", 10);
    assert!(t.is_err());
}

#[test]
fn hmac_never_asks_the_host_and_keys_without_spki_stay_in_rust() {
    let mut f = Fixture::new();
    let t = f.token(&claims_ok());
    let rule = &f.cfg.rules[0];
    let found = vec![Found {
        token: t,
        providers: vec![0],
    }];
    let mut asked = 0;
    let d = auth::decide(
        &f.cfg,
        rule,
        &found,
        &mut f.keys,
        &mut f.cache,
        NOW,
        &mut |_, _, _, _| {
            asked += 1;
            Some(false)
        },
    );
    assert!(matches!(d, Decision::Allow { identity: Some(_) }));
    assert_eq!(asked, 0);
}

#[test]
fn too_many_tokens_are_refused_before_any_is_decoded() {
    let mut f = Fixture::new();
    let rule = &f.cfg.rules[0];
    let found: Vec<Found> = (0..=auth::MAX_TOKENS)
        .map(|i| Found {
            token: format!("t{i}"),
            providers: vec![0],
        })
        .collect();
    let d = auth::decide(
        &f.cfg,
        rule,
        &found,
        &mut f.keys,
        &mut f.cache,
        NOW,
        &mut |_, _, _, _| None,
    );
    assert!(matches!(d, Decision::Deny(Reason::TooManyTokens)), "{d:?}");
    // extract stops collecting past the cap.
    let headers: Vec<(String, String)> = (0..100)
        .map(|i| ("authorization".to_owned(), format!("Bearer t{i}")))
        .collect();
    assert_eq!(
        auth::extract(&f.cfg, rule, &headers, "/").len(),
        auth::MAX_TOKENS + 1
    );
}

#[test]
fn an_unchanged_key_document_keeps_cached_verifications() {
    let key = secret();
    let raw = json!({"providers": [{"name": "idp", "jwks": {"remote": {"cluster": "idp", "path": "/jwks"}}}],
                     "rules": [{"prefix": "/", "requires": ["idp"]}]});
    let cfg = config::compile(filter_core::config::parse(raw.to_string().as_bytes()).unwrap()).unwrap();
    let mut f = Fixture::with(key.clone(), cfg);
    let load = |f: &mut Fixture, at: u64, fp: u64| {
        let (j, _) = Jwks::from_value(&oct_jwks(&key, "k1"), false).unwrap();
        f.keys[0].started(at);
        f.keys[0].finished(at, Some((j, fp)));
    };
    load(&mut f, NOW, 7);
    let generation = f.keys[0].generation;
    let t = f.token(&claims_ok());
    assert!(matches!(
        f.decide_at(&t, NOW),
        Decision::Allow { identity: Some(_) }
    ));
    load(&mut f, NOW + 20, 7);
    assert_eq!(f.keys[0].generation, generation, "same document, same generation");
    assert!(matches!(
        f.decide_at(&t, NOW + 20),
        Decision::Allow { identity: Some(_) }
    ));
    assert_eq!(f.cache.take_counts().0, 1, "served from the cache");
}

#[test]
fn every_provider_with_the_issuer_is_tried_and_kidless_keys_serve_any_kid() {
    let (k1, k2) = (secret(), secret());
    let raw = json!({"providers": [
        {"name": "any", "jwks": {"inline": {"keys": [{"kty": "oct", "kid": "a", "k": b64(&k1)}]}}},
        {"name": "corp", "issuer": "https://idp.example.com",
         "jwks": {"inline": {"keys": [{"kty": "oct", "k": b64(&k2)}]}}}],
        "rules": [{"prefix": "/", "requires": ["any", "corp"]}]});
    let cfg = config::compile(filter_core::config::parse(raw.to_string().as_bytes()).unwrap()).unwrap();
    let mut f = Fixture::with(k2.clone(), cfg);
    let mut c = claims_ok();
    c.as_object_mut().unwrap().remove("aud");
    let t = hs256(&k2, &json!({"alg": "HS256", "kid": "rotated-name"}), &c);
    let rule = &f.cfg.rules[0];
    let found = vec![Found {
        token: t,
        providers: vec![0, 1],
    }];
    let d = auth::decide(
        &f.cfg,
        rule,
        &found,
        &mut f.keys,
        &mut f.cache,
        NOW,
        &mut |_, _, _, _| None,
    );
    let Decision::Allow { identity: Some(v) } = d else {
        panic!("{d:?}")
    };
    assert_eq!(v.provider, 1);
}

#[test]
fn ambiguous_claims_stay_out_of_headers_and_fractional_nbf_rounds_up() {
    assert_eq!(claims::header_value(&json!(["a,admin"])), None);
    assert_eq!(claims::header_value(&json!(["a", "b"])).as_deref(), Some("a,b"));
    let p = TimePolicy {
        skew_s: 0,
        require_exp: false,
        max_lifetime_s: None,
    };
    let c = json!({"nbf": 100.2});
    assert_eq!(
        claims::check_time(c.as_object().unwrap(), 100, p),
        Err(Reason::NotYetValid)
    );
    assert!(claims::check_time(c.as_object().unwrap(), 101, p).is_ok());
}
