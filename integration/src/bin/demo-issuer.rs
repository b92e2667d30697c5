//! `demo-issuer --listen ADDR --tokens FILE` — the demo's identity provider. Generates a P-256 key
//! with OpenSSL, signs one JWT per demo user (issuer, audience and claims as
//! `envoy/filters/jwt-auth.yaml` expects; valid for 12 hours), writes them to FILE as
//! `NAME=TOKEN` lines, deletes the private key, and serves the public key as a JWKS on ADDR until
//! killed. Nothing it signs is committed anywhere: each demo run has a key of its own.

use serde_json::json;
use tollgate_it::issuer::{JwksServer, KeyDir, KeyKind, Mode, jwks, now};

/// (name, subject, tenant) of the demo's users.
const USERS: &[(&str, &str, &str)] = &[("ALICE", "alice", "acme"), ("BOB", "bob", "globex")];

fn run(listen: &str, tokens: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = KeyDir::new()?;
    let key = dir.key(KeyKind::P256, "demo-1")?;
    let mut out = String::new();
    for (name, sub, tenant) in USERS {
        let claims = json!({
            "iss": "https://issuer.tollgate.local",
            "aud": "tollgate-gateway",
            "sub": sub,
            "tenant": tenant,
            "iat": now(),
            "exp": now() + 12 * 3600,
        });
        out.push_str(&format!("{name}={}\n", key.sign("ES256", &claims)?));
    }
    let set = jwks(&[&key]);
    drop(key);
    drop(dir); // the private key is gone; only the public JWK is served
    // Listen before handing out tokens: a demo that finds them knows this issuer serves their key.
    let _server =
        JwksServer::start_on(listen, Mode::Serve(set)).map_err(|e| format!("listening on {listen}: {e}"))?;
    std::fs::write(tokens, out).map_err(|e| format!("writing {tokens}: {e}"))?;
    eprintln!("demo-issuer: JWKS on http://{listen}/.well-known/jwks.json, tokens in {tokens}");
    loop {
        std::thread::park();
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(tokens)) = (
        args.windows(2).find(|w| w[0] == "--listen").map(|w| w[1].clone()),
        args.windows(2).find(|w| w[0] == "--tokens").map(|w| w[1].clone()),
    ) else {
        eprintln!("usage: demo-issuer --listen ADDR:PORT --tokens FILE");
        return std::process::ExitCode::from(2);
    };
    match run(&listen, &tokens) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-issuer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
