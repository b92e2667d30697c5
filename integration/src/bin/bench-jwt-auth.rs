//! `bench-jwt-auth [--seconds 5] [--json PATH]` — run by `scripts/bench.sh jwt-auth`.
//! Bare Envoy, Envoy's native `jwt_authn`, and Envoy with the jwt-auth filter, side by side in one
//! run, with the same key and token (RS256 and ES256, minted by OpenSSL), in front of the
//! in-process mock provider, loaded with `wrk` (1 worker). Each filter runs with its verified-token
//! cache off (every request checks the signature: the first-request path) and on (repeats are a
//! lookup); jwt-auth without the cache both in RustCrypto and through Envoy's `verify_signature`. Prints Markdown; measurements of this machine, not assertions.

use serde_json::{Value, json};
use tollgate_it::bench::{Error, Flags, wrk_with_headers};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::issuer::{KeyDir, KeyKind, jwks, now};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";
const ISS: &str = "https://issuer.bench";

fn native_filter(jwks_doc: &Value, cache: bool) -> String {
    let jwks_str = Value::String(jwks_doc.to_string()).to_string();
    let cache_cfg = if cache {
        "                          jwt_cache_config: {jwt_cache_size: 1024}\n"
    } else {
        ""
    };
    format!(
        r#"                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        bench:
                          issuer: {ISS}
                          audiences: [gateway]
                          local_jwks:
                            inline_string: {jwks_str}
                          from_headers: [{{name: authorization, value_prefix: "Bearer "}}]
                          claim_to_headers: [{{header_name: x-tollgate-subject, claim_name: sub}}]
{cache_cfg}                      rules:
                        - match: {{prefix: "/"}}
                          requires: {{provider_name: bench}}
"#
    )
}

fn wasm_config(jwks_doc: &Value, cache: bool, native: bool) -> Value {
    json!({"providers": [{"name": "bench", "issuer": ISS, "audiences": ["gateway"],
                          "jwks": {"inline": jwks_doc}, "require_exp": false}],
           "rules": [{"prefix": "/", "requires": ["bench"]}],
           "verified_cache_entries": if cache { 1024 } else { 0 },
           "native_verify": native})
}

fn main() -> Result<(), Error> {
    let flags = Flags::parse(&[])?;
    let (seconds, json_out) = (flags.seconds, flags.json.clone());
    let keys = KeyDir::new()?;
    let rsa = keys.key(KeyKind::Rsa, "rsa")?;
    let ec = keys.key(KeyKind::P256, "ec")?;
    let doc = jwks(&[&rsa, &ec]);
    let claims =
        json!({"iss": ISS, "aud": "gateway", "sub": "bench-user", "iat": now(), "exp": now() + 3600});
    let tokens = [
        ("RS256", rsa.sign("RS256", &claims)?),
        ("ES256", ec.sign("ES256", &claims)?),
    ];

    let mock = MockLlm::start()?;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let base = || Options::new("envoy.yaml").upstream(default_ports::LLM_UPSTREAM, mock.port());
    let wasm = |cfg: &Value| Envoy::start(base().wasm_filter("jwt-auth", "jwt_auth.wasm", cfg));
    let mut native_off = base();
    native_off.filters.push(native_filter(&doc, false));
    let mut native_on = base();
    native_on.filters.push(native_filter(&doc, true));
    let envoys = [
        ("bare Envoy (no auth)", Envoy::start(base())?),
        ("jwt_authn, no cache", Envoy::start(native_off)?),
        ("jwt_authn, cache", Envoy::start(native_on)?),
        (
            "jwt-auth, no cache, RustCrypto",
            wasm(&wasm_config(&doc, false, false))?,
        ),
        (
            "jwt-auth, no cache, native verify_signature",
            wasm(&wasm_config(&doc, false, true))?,
        ),
        ("jwt-auth, cache", wasm(&wasm_config(&doc, true, true))?),
    ];
    let body =
        json!({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]});

    println!(
        "\n### jwt-auth vs jwt_authn vs bare Envoy (1 worker, wrk -t1, {seconds} s per run, same token)\n"
    );
    println!("| alg | Envoy | rps (c8) | 1 connection p50 ms | added p50 ms vs bare |");
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (alg, token) in &tokens {
        let bearer = format!("Bearer {token}");
        let headers = [("authorization", bearer.as_str())];
        let mut bare_p50 = f64::NAN;
        for (label, envoy) in &envoys {
            let many = wrk_with_headers(&envoy.url(CHAT), &body, &headers, seconds, 8, &dir)?;
            let one = wrk_with_headers(&envoy.url(CHAT), &body, &headers, seconds.div_ceil(2), 1, &dir)?;
            if many.errors + one.errors > 0 {
                return Err(format!("{alg} {label}: non-2xx responses (token refused?)").into());
            }
            if bare_p50.is_nan() {
                bare_p50 = one.p50_ms;
            }
            println!(
                "| {alg} | {label} | {:.0} | {:.3} | {:+.3} |",
                many.rps,
                one.p50_ms,
                one.p50_ms - bare_p50
            );
            rows.push(
                json!({"alg": alg, "envoy": label, "rps_c8": many.rps, "p50_ms_c1": one.p50_ms,
                             "p99_ms_c1": one.p99_ms}),
            );
        }
    }
    if let Some(path) = json_out {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&json!({"seconds": seconds, "rows": rows}))?,
        )?;
        println!("\n(written to {})", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
