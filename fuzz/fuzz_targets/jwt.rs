//! JWT handling in jwt-auth before and around signature checks: splitting and decoding a compact
//! token (`token::parse`), the claim checks and claim-to-header rendering (`claims`), JWKS
//! documents (`jwks::Jwks::parse`), the request-level decision (`auth::extract` + `auth::decide`
//! against a fixed config with an HMAC and an EC P-256 key), and the bytes read back from Envoy's
//! `verify_signature` (`native::result`). No valid signature is needed: the parsing is the target.
//!
//! Input: a token, then (after the first `\n`) a JWKS document the token is also verified against.

#![no_main]

use filter_core::config as core_config;
use jwt_auth::auth::{self, KeySet};
use jwt_auth::cache::TokenCache;
use jwt_auth::claims::{self, TimePolicy};
use jwt_auth::config::{self, Config};
use jwt_auth::jwks::Jwks;
use jwt_auth::{native, token};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

/// Keys of the fixed config. The HMAC key (`HMAC_KEY`) is made when the target starts, so no
/// secret is committed (tokens in the corpus cannot carry a valid HMAC; the signed paths are
/// reached through `native::result`); the EC key is a public key only.
const CONFIG: &str = r#"{
  "providers": [
    {"name": "corp", "issuer": "https://idp.example.com", "audiences": ["gateway"],
     "jwks": {"inline": {"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256",
                                   "k": "HMAC_KEY"}]}},
     "from_params": ["access_token"], "from_cookies": ["jwt"],
     "claim_to_headers": [{"claim": "sub", "header": "x-tollgate-subject"},
                          {"claim": "org.id", "header": "x-tollgate-tenant"}]},
    {"name": "svc", "require_exp": false, "max_lifetime_s": 3600,
     "jwks": {"inline_string": "{\"kty\":\"EC\",\"kid\":\"ec1\",\"crv\":\"P-256\",\"x\":\"XQh-JfZbdtg8qWVSKqKNRSoP66jJBUfOFdntQYlmXC4\",\"y\":\"xxPAeUkTtv3DjPpMgob7npk_vHRa_0If5m3-tgAemC4\"}"}}
  ],
  "rules": [{"prefix": "/", "requires": ["corp", "svc"], "required_scopes": ["chat"]}]
}"#;

thread_local! {
    static CFG: Config = config::compile(core_config::parse(CONFIG.replace("HMAC_KEY", &fresh_key()).as_bytes()).expect("config parses"))
        .expect("config compiles");
}

const POLICIES: [TimePolicy; 3] = [
    TimePolicy {
        skew_s: 60,
        require_exp: true,
        max_lifetime_s: None,
    },
    TimePolicy {
        skew_s: 0,
        require_exp: false,
        max_lifetime_s: Some(3600),
    },
    TimePolicy {
        skew_s: u64::MAX,
        require_exp: false,
        max_lifetime_s: Some(0),
    },
];

fn check_header_value(v: &serde_json::Value) {
    if let Some(h) = claims::header_value(v) {
        assert!(!h.is_empty() && h.len() <= claims::MAX_VALUE_BYTES);
        assert!(
            !h.chars().any(char::is_control),
            "control character in a header value"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = native::result(data);

    let (tok, doc) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let tok = String::from_utf8_lossy(tok);

    let parsed = token::parse(&tok, 8192);
    if let Ok(t) = &parsed {
        let dot = tok.rfind('.').expect("a parsed token has dots");
        assert_eq!(t.signing_input, &tok.as_bytes()[..dot]);
        for now in [0, NOW, u64::MAX] {
            for policy in POLICIES {
                if let Ok(w) = claims::check_time(&t.claims, now, policy) {
                    let _ = w.check(now, policy.skew_s);
                }
            }
        }
        let _ = claims::check_issuer(&t.claims, Some("https://idp.example.com"));
        let _ = claims::check_issuer(&t.claims, None);
        let _ = claims::check_audience(&t.claims, &["gateway".to_owned()]);
        let _ = claims::check_audience(&t.claims, &[]);
        let _ = claims::check_scopes(&t.claims, &["chat".to_owned(), "embed".to_owned()]);
        for v in t.claims.values() {
            check_header_value(v);
        }
        for path in ["sub", "org.id", "a.b.c", "", ".", "org."] {
            if let Some(v) = claims::lookup(&t.claims, path) {
                check_header_value(v);
            }
        }
        let _ = native::ecdsa_der(&t.signature, 32);
        let _ = native::ecdsa_der(&t.signature, 48);
    }

    let mut host = |hash: &str, spki: &[u8], sig: &[u8], text: &[u8]| {
        let _ = native::arguments(hash, spki, sig, text);
        None
    };

    for strict in [true, false] {
        if let (Ok((jwks, _skipped)), Ok(t)) = (Jwks::parse(doc, strict), &parsed) {
            let _ = jwks.has_kid(t.kid.as_deref().unwrap_or(""));
            let _ = jwks.verify(t.alg, t.kid.as_deref(), t.signing_input, &t.signature, &mut host);
        }
    }

    CFG.with(|cfg| {
        let path = format!("/v1/chat/completions?access_token={tok}&x=1");
        let headers = vec![
            ("authorization".to_owned(), format!("Bearer {tok}")),
            ("cookie".to_owned(), format!("a=b; jwt=\"{tok}\"")),
        ];
        let _ = auth::without_params(&path, &["access_token".to_owned()]);
        let Some(rule) = cfg.rule_for(&path) else {
            return;
        };
        let found = auth::extract(cfg, rule, &headers, &path);
        let mut keys: Vec<KeySet> = cfg.providers.iter().map(KeySet::for_provider).collect();
        let mut cache = TokenCache::new(4);
        for now in [NOW, 0] {
            let _ = auth::decide(cfg, rule, &found, &mut keys, &mut cache, now, &mut host);
        }
    });
});

/// 32 random bytes as hex (hex digits are base64url too), from the process's random hash keys.
fn fresh_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    (0..4u64)
        .map(|i| {
            let mut h = state.build_hasher();
            h.write_u64(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}
