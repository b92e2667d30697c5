//! The API surface clients speak, through the whole shipped chain (the six snippets in order, the
//! real sidecar and model, a JWKS from keys made at test time): every local reply of every filter
//! and of Envoy in the error shape of the client's API — Anthropic's
//! `{"type":"error","error":{"type","message"}}` with its type names on `/v1/messages…`, OpenAI's
//! elsewhere — and Anthropic's `POST /v1/messages/count_tokens`, moderated and templated like a
//! message but never charged, cached or routed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::start_sidecar;
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_it::client::{Client, Response};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::issuer::{JwksServer, Key, KeyDir, KeyKind, Mode, jwks, now};
use tollgate_it::mock::MockLlm;
use xtask::filters::CHAIN;

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const COUNT: &str = "/v1/messages/count_tokens";
const PROMPT_TOKENS: &str = "tollgate_token_counter_prompt_tokens.model.claude-sonnet-4-5";

struct Chain {
    envoy: Envoy,
    mock: MockLlm,
    key: Key,
    _jwks: JwksServer,
    _keys: KeyDir,
    _sidecar: sidecar_testkit::Background,
}

impl Chain {
    fn start() -> Self {
        let keys = KeyDir::new().unwrap();
        let key = keys.key(KeyKind::P256, "k1").unwrap();
        let jwks_server = JwksServer::start(Mode::Serve(jwks(&[&key]))).unwrap();
        let mock = MockLlm::start().unwrap();
        let sidecar = start_sidecar();
        let mut opts = Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .upstream(default_ports::MATH, mock.port())
            .upstream(default_ports::CODE, mock.port())
            .upstream(default_ports::SUPPORT[0], mock.port())
            .upstream(default_ports::SUPPORT[1], mock.port())
            .upstream(default_ports::SIDECAR, sidecar.addr.port())
            .upstream(default_ports::JWKS, jwks_server.port);
        for f in &CHAIN {
            opts = opts.filter(f);
        }
        Self {
            envoy: Envoy::start(opts).unwrap(),
            mock,
            key,
            _jwks: jwks_server,
            _keys: keys,
            _sidecar: sidecar,
        }
    }

    /// A token as `envoy/filters/jwt-auth.yaml` expects it.
    fn token(&self, sub: &str) -> String {
        let claims = json!({"iss": "https://issuer.tollgate.local", "aud": "tollgate-gateway",
                            "sub": sub, "tenant": "acme", "iat": now(), "exp": now() + 600});
        format!("Bearer {}", self.key.sign("ES256", &claims).unwrap())
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &[u8], extra: &[(&str, &str)]) -> Response {
        let mut h = vec![
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ];
        if let Some(t) = token {
            h.push(("authorization", t));
        }
        h.extend_from_slice(extra);
        Client::new()
            .request("POST", &self.envoy.url(path), &h, body.to_vec())
            .await
            .unwrap()
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.{name}")).unwrap_or(0)
    }
}

fn messages(text: &str, max_tokens: u64) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": text}]})
}

fn chat(text: &str, max_tokens: u64) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": text}]})
}

/// `r` is an error of `status` in Anthropic's shape with type `kind`, and our `code`.
fn anthropic_error(r: &Response, status: u16, kind: &str, code: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    if let Some(code) = code {
        assert_eq!(v["error"]["code"], code, "{v}");
    }
}

/// `r` is an error of `status` in OpenAI's shape.
fn openai_error(r: &Response, status: u16, kind: &str, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert!(v.get("type").is_none(), "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
}

/// Waits, if needed, until the current minute has `secs` left: the snippet's budget window is a
/// minute, and two reservations meant to meet in one window must not straddle its edge.
async fn clear_of_minute_edge(secs: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 60 - now % 60;
    if left < secs {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_local_reply_on_anthropic_paths_has_anthropics_shape() {
    let chain = Chain::start();
    let alice = chain.token("alice");
    let sent = |v: &Value| serde_json::to_vec(v).unwrap();
    // A secret the shipped moderator blocks, made here.
    let secret = format!("my key is AKIA{}", "QX7Z".repeat(4));

    // jwt-auth: no token.
    let r = chain.post(MESSAGES, None, &sent(&messages("hi", 10)), &[]).await;
    anthropic_error(&r, 401, "authentication_error", None);
    let r = chain.post(CHAT, None, &sent(&chat("hi", 10)), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");

    // prompt-templater (the first body reader): a body that is not JSON; an unknown template.
    let r = chain.post(MESSAGES, Some(&alice), b"{not json", &[]).await;
    anthropic_error(&r, 400, "invalid_request_error", Some("invalid_request_body"));
    let r = chain.post(CHAT, Some(&alice), b"{not json", &[]).await;
    openai_error(&r, 400, "invalid_request_error", "invalid_request_body");
    let mut templated = messages("", 10);
    templated["tollgate_template"] = json!({"id": "no-such-template"});
    let r = chain.post(MESSAGES, Some(&alice), &sent(&templated), &[]).await;
    assert!(r.status == 400 || r.status == 404, "{}", r.text());
    anthropic_error(
        &r,
        r.status,
        if r.status == 404 {
            "not_found_error"
        } else {
            "invalid_request_error"
        },
        None,
    );

    // content-moderator: a blocked secret, on a message and on a token count.
    for path in [MESSAGES, COUNT] {
        let mut body = messages(&secret, 10);
        if path == COUNT {
            body.as_object_mut().unwrap().remove("max_tokens");
        }
        let before = chain.mock.journal.count();
        let r = chain.post(path, Some(&alice), &sent(&body), &[]).await;
        anthropic_error(&r, 400, "invalid_request_error", Some("content_blocked"));
        assert_eq!(
            chain.mock.journal.count(),
            before,
            "{path}: a blocked request never reaches the provider"
        );
    }
    let r = chain
        .post(CHAT, Some(&alice), &sent(&chat(&secret, 10)), &[])
        .await;
    openai_error(&r, 400, "invalid_request_error", "content_blocked");

    // token-counter: over the model's context window (claude-sonnet-4*: 200,000).
    let r = chain
        .post(MESSAGES, Some(&alice), &sent(&messages("hi", 250_000)), &[])
        .await;
    anthropic_error(&r, 400, "invalid_request_error", Some("context_length_exceeded"));

    // token-counter: a budget (the snippet's 200,000 tokens a minute) taken by a reservation in
    // flight: the next request is 429 rate_limit_error with retry-after.
    clear_of_minute_edge(10).await;
    let bob = chain.token("bob");
    let hold = {
        let body = sent(&messages("hold the budget", 150_000));
        let (url, bob) = (chain.envoy.url(MESSAGES), bob.clone());
        tokio::spawn(async move {
            let h = [
                ("content-type", "application/json"),
                ("authorization", bob.as_str()),
                ("x-mock-latency-ms", "1500"),
            ];
            Client::new().request("POST", &url, &h, body).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = chain
        .post(MESSAGES, Some(&bob), &sent(&messages("and more", 150_000)), &[])
        .await;
    anthropic_error(&r, 429, "rate_limit_error", Some("budget_exceeded"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(hold.await.unwrap().status, 200);

    // Envoy's own: a body over the 1 MiB buffer limit.
    let big = messages(&"x".repeat(1_200_000), 10);
    let r = chain.post(MESSAGES, Some(&alice), &sent(&big), &[]).await;
    anthropic_error(&r, 413, "request_too_large", None);

    // The VMs are all still serving; the token also comes where Anthropic's SDK sends its key,
    // and is removed before the provider.
    let jwt = alice.trim_start_matches("Bearer ");
    let r = chain
        .post(
            MESSAGES,
            None,
            &sent(&messages("still there?", 10)),
            &[("x-api-key", jwt)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = chain.mock.journal.last().unwrap();
    assert!(seen.header("x-api-key").is_none() && seen.header("authorization").is_none());
    assert_eq!(seen.header("x-tollgate-subject"), Some("alice"));
    let r = chain
        .post(
            MESSAGES,
            None,
            &sent(&messages("hi", 10)),
            &[("x-api-key", "not-a-jwt")],
        )
        .await;
    anthropic_error(&r, 401, "authentication_error", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_is_passed_on_never_charged_cached_or_routed() {
    let chain = Chain::start();
    let alice = chain.token("alice");
    let text = "How many tokens does this sentence take? Count them for me, please.";
    let mut body = messages(text, 1);
    body.as_object_mut().unwrap().remove("max_tokens");
    let body = serde_json::to_vec(&body).unwrap();

    // The same prompt as a message: what the provider sees of it and what it is billed.
    let msg = serde_json::to_vec(&messages(text, 16)).unwrap();
    let r = chain.post(MESSAGES, Some(&alice), &msg, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let billed = r.json()["usage"]["input_tokens"].as_u64().unwrap();
    assert!(r.header("x-tollgate-prompt-tokens").is_some());
    let mut as_message = chain.mock.journal.last().unwrap().json().unwrap();
    as_message.as_object_mut().unwrap().remove("max_tokens");

    let charged_before = chain.stat(PROMPT_TOKENS);
    assert!(charged_before > 0, "the message is counted");
    let cache_before =
        chain.stat("tollgate_response_cache_misses") + chain.stat("tollgate_response_cache_hits");
    for _ in 0..2 {
        let r = chain.post(COUNT, Some(&alice), &body, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.header("x-tollgate-prompt-tokens").is_none(),
            "never counted as a request"
        );
        assert!(r.header("x-tollgate-budget-remaining").is_none(), "never charged");
        // The count is what the same prompt is billed as a message.
        assert_eq!(r.json()["input_tokens"].as_u64(), Some(billed));
        // Passed on as the message would be (the shipped decorator's system prompt included), with
        // no max_tokens added and no route chosen.
        let seen = chain.mock.journal.last().unwrap();
        assert_eq!(seen.path, COUNT);
        assert!(seen.header("x-tollgate-route").is_none(), "not routed");
        assert_eq!(seen.json().unwrap(), as_message);
    }
    // Both reached the provider: not served from the cache, not charged.
    let seen = chain
        .mock
        .journal
        .requests()
        .iter()
        .filter(|r| r.path == COUNT)
        .count();
    assert_eq!(seen, 2, "never cached");
    assert_eq!(chain.stat(PROMPT_TOKENS), charged_before);
    assert_eq!(
        chain.stat("tollgate_response_cache_misses") + chain.stat("tollgate_response_cache_hits"),
        cache_before
    );

    // Without a token: refused by jwt-auth like any other request, in Anthropic's shape.
    let r = chain.post(COUNT, None, &body, &[]).await;
    anthropic_error(&r, 401, "authentication_error", None);
}
