//! The whole chain as `scripts/demo.sh` runs it (the six shipped snippets in the documented order,
//! the real sidecar and model, a JWKS from keys made at test time) under faults: the sidecar killed,
//! hung or refusing connections under load, the identity provider's keys unavailable, provider
//! errors and resets, a client that leaves mid-stream, malformed SSE from the provider, bodies over
//! each stage's limit, a broken filter config. Each filter's failure mode must hold, and no request
//! may hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::start_sidecar_at;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tollgate_it::client::{self, Client, Response};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::issuer::{JwksServer, Key, KeyDir, KeyKind, Mode, jwks, now};
use tollgate_it::mock::MockLlm;
use xtask::filters::CHAIN;

const CHAT: &str = "/v1/chat/completions";

struct Chain {
    envoy: Envoy,
    general: MockLlm,
    math: MockLlm,
    routed: [MockLlm; 3],
    jwks: JwksServer,
    key: Key,
    _keys: KeyDir,
}

impl Chain {
    fn start(sidecar_port: u16, jwks_mode: Option<Mode>) -> Self {
        let keys = KeyDir::new().unwrap();
        let key = keys.key(KeyKind::P256, "k1").unwrap();
        let jwks = JwksServer::start(jwks_mode.unwrap_or_else(|| Mode::Serve(jwks(&[&key])))).unwrap();
        let (general, math) = (MockLlm::start().unwrap(), MockLlm::start().unwrap());
        let routed = [
            MockLlm::start().unwrap(),
            MockLlm::start().unwrap(),
            MockLlm::start().unwrap(),
        ];
        let opts = chain_options(&[
            (default_ports::LLM_UPSTREAM, general.port()),
            (default_ports::MATH, math.port()),
            (default_ports::CODE, routed[0].port()),
            (default_ports::SUPPORT[0], routed[1].port()),
            (default_ports::SUPPORT[1], routed[2].port()),
            (default_ports::SIDECAR, sidecar_port),
            (default_ports::JWKS, jwks.port),
        ]);
        Self {
            envoy: Envoy::start(opts).unwrap(),
            general,
            math,
            routed,
            jwks,
            key,
            _keys: keys,
        }
    }

    /// A token as `envoy/filters/jwt-auth.yaml` expects it.
    fn token(&self, sub: &str, tenant: &str) -> String {
        let claims = json!({"iss": "https://issuer.tollgate.local", "aud": "tollgate-gateway",
                            "sub": sub, "tenant": tenant, "iat": now(), "exp": now() + 600});
        format!("Bearer {}", self.key.sign("ES256", &claims).unwrap())
    }

    async fn send(&self, token: &str, body: &Value, extra: &[(&str, &str)]) -> Response {
        let mut h = vec![("authorization", token)];
        h.extend_from_slice(extra);
        Client::new()
            .post_json(&self.envoy.url(CHAT), &h, body)
            .await
            .unwrap()
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.{name}")).unwrap_or(0)
    }

    /// Waits until the router's VMs (the worker's and the main thread's) have their examples.
    async fn wait_router(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.stat("tollgate_semantic_router_ready_vms") != 2 {
            assert!(
                Instant::now() < deadline,
                "router examples not loaded:\n{}",
                self.envoy.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `envoy/envoy.yaml` with the six snippets in order, upstreams moved to `ports`.
fn chain_options(ports: &[(u16, u16)]) -> Options<'static> {
    let mut opts = Options::new("envoy.yaml");
    for (from, to) in ports {
        opts = opts.upstream(*from, *to);
    }
    for f in &CHAIN {
        opts = opts.filter(f);
    }
    opts
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

fn deterministic(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

/// The per-minute budget left, from `x-tollgate-budget-remaining`.
fn budget_left(r: &Response) -> u64 {
    let h = r
        .header("x-tollgate-budget-remaining")
        .unwrap_or_else(|| panic!("no budget header: {:?}", r.headers));
    let digits: String = h
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("budget header {h:?}"))
}

/// The sidecar killed while requests flow: the router takes the default route (failure_mode open)
/// and the cache answers misses, within the sidecar timeout; nothing hangs or fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_killed_under_load_each_filter_keeps_its_failure_mode() {
    let port = tollgate_it::ports::free_port().unwrap();
    let mut sidecar = Some(start_sidecar_at(([127, 0, 0, 1], port).into()));
    let chain = Chain::start(port, None);
    chain.wait_router().await;
    let alice = chain.token("alice", "acme");
    let r = chain
        .send(
            &alice,
            &chat("What is the integral of x squared from 0 to 3?"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        chain.math.journal.count(),
        1,
        "routed to math while the sidecar is up"
    );

    // 60 requests over ~3 s, deterministic ones (semantic cache lookups) and sampled ones; the
    // sidecar is stopped after the first second.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..60u32 {
        let (url, token) = (chain.envoy.url(CHAT), alice.clone());
        let body = if i % 2 == 0 {
            deterministic(&format!("Integrate x^{i} * cos(x) with respect to x"))
        } else {
            chat(&format!("Solve {i}x + 7 = 0 for x"))
        };
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = Client::new()
                .post_json(&url, &[("authorization", token.as_str())], &body)
                .await
                .unwrap();
            (r.status, t.elapsed(), r.text())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        if i == 20
            && let Some(s) = sidecar.take()
        {
            s.stop();
        }
    }
    for t in tasks {
        let (status, took, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        // 200 ms sidecar timeouts for the router and the cache's lookup, plus the mock.
        assert!(took < Duration::from_secs(2), "a request took {took:?}");
    }
    println!(
        "60 requests with the sidecar killed after 20: {:?}",
        started.elapsed()
    );
    assert!(
        chain.stat("tollgate_semantic_router_sidecar_errors") >= 1,
        "{}",
        chain.envoy.log()
    );
    let log = chain.envoy.wait_access_log(61);
    let after: Vec<&Value> = log[40..].iter().collect();
    assert!(
        after.iter().all(|e| e["route"] == "general"),
        "with the sidecar gone the default route: {after:?}"
    );
    // And the chain still serves once the load is over.
    let r = chain.send(&alice, &chat("Hello again"), &[]).await;
    assert_eq!(r.status, 200);
}

/// The identity provider's keys unavailable: jwt-auth fails closed with 503, nothing reaches the
/// provider and no budget moves; a request without a token is 401 all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_fails_closed_before_any_other_filter() {
    let port = tollgate_it::ports::free_port().unwrap();
    let chain = Chain::start(port, Some(Mode::Status(500)));
    let alice = chain.token("alice", "acme");
    for _ in 0..3 {
        let r = chain.send(&alice, &chat("Hello"), &[]).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "jwks_unavailable");
    }
    let r = Client::new()
        .post_json(&chain.envoy.url(CHAT), &[], &chat("Hello"))
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(chain.general.journal.count(), 0, "nothing reached the provider");
    assert_eq!(chain.math.journal.count(), 0);
    assert!(chain.routed.iter().all(|m| m.journal.count() == 0));
    assert!(chain.jwks.hits() >= 1);
}

/// Provider errors, a stream the provider resets and a client that leaves mid-stream, through
/// every filter: errors pass through and charge nothing, cut streams are neither cached nor
/// charged as complete, and the chain keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_resets_and_client_aborts_through_the_chain() {
    // No sidecar: the router takes its default route at once and the cache is exact-only.
    let port = tollgate_it::ports::free_port().unwrap();
    let chain = Chain::start(port, None);
    let bob = chain.token("bob", "globex");
    let q = deterministic("How many moons does Mars have?");
    // The budget rule's window is the calendar minute: keep the three requests inside one.
    if now() % 60 > 54 {
        tokio::time::sleep(Duration::from_secs(61 - now() % 60)).await;
    }

    let first = chain.send(&bob, &chat("Count to three"), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let used = first.json()["usage"]["total_tokens"].as_u64().unwrap();
    let left1 = budget_left(&first);

    // A provider 500 passes through in the provider's shape; its reservation is released.
    let r = chain
        .send(&bob, &chat("Count to three"), &[("x-mock-status", "500")])
        .await;
    assert_eq!(r.status, 500, "{}", r.text());
    // Settlements are sent when a request ends; give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = chain.send(&bob, &chat("Count to three"), &[]).await;
    assert_eq!(again.status, 200);
    assert_eq!(budget_left(&again), left1 - used, "the 500 charged nothing");

    // A stream the provider resets mid-way: the client gets what was sent, without [DONE]; the
    // cache does not keep it (the same request afterwards is still a miss).
    let mut stream = q.clone();
    stream["stream"] = json!(true);
    let resp = Client::new()
        .send(
            "POST",
            &chain.envoy.url(CHAT),
            &[
                ("content-type", "application/json"),
                ("authorization", bob.as_str()),
                ("x-mock-chunks", "8"),
                ("x-mock-reset-after", "3"),
            ],
            serde_json::to_vec(&stream).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    let cut = loop {
        match client::next_chunk(&mut body).await {
            Ok(Some(c)) => received.extend_from_slice(&c),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    let received = String::from_utf8_lossy(&received);
    // What the client got may be short of the three events: the moderator holds back the tail it
    // is still matching across events. What matters is that the stream ends in an error, not in
    // a completion the provider never sent.
    assert!(cut && !received.contains("[DONE]"), "{received}");
    let r = chain.send(&bob, &q, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-tollgate-cache"),
        Some("miss"),
        "a cut stream was cached"
    );
    // The complete answer is (the control: this request is cacheable).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = chain.send(&bob, &q, &[]).await;
    assert_eq!(r.header("x-tollgate-cache"), Some("hit"));

    // The client leaves mid-stream: token-counter settles it as aborted, the cache stores nothing.
    let q2 = deterministic("How many moons does Jupiter have?");
    let mut stream = q2.clone();
    stream["stream"] = json!(true);
    let resp = Client::new()
        .send(
            "POST",
            &chain.envoy.url(CHAT),
            &[
                ("content-type", "application/json"),
                ("authorization", bob.as_str()),
                ("x-mock-chunks", "40"),
                ("x-mock-chunk-delay-ms", "50"),
            ],
            serde_json::to_vec(&stream).unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    assert!(client::next_chunk(&mut body).await.unwrap().is_some());
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while chain.stat("tollgate_token_counter_aborted") < 1 {
        assert!(
            Instant::now() < deadline,
            "abort not settled:\n{}",
            chain.envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = chain.send(&bob, &q2, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-tollgate-cache"),
        Some("miss"),
        "an aborted stream was cached"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = chain.send(&bob, &q2, &[]).await;
    assert_eq!(r.header("x-tollgate-cache"), Some("hit"));

    // Malformed JSON is a 400 from the first filter that reads the body, never a provider call.
    let before = chain.general.journal.count();
    let r = Client::new()
        .request(
            "POST",
            &chain.envoy.url(CHAT),
            &[
                ("content-type", "application/json"),
                ("authorization", bob.as_str()),
            ],
            "{\"model\": \"gpt-4o-mini\", \"messages\": [",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(chain.general.journal.count(), before);
}

/// A sidecar that accepts connections and never answers, then one that closes each connection at
/// once, under load: every request is answered within the filters' sidecar timeouts (routed to the
/// default route, looked up in the exact cache only), and the exact cache still answers repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_or_refusing_sidecar_under_load_no_request_hangs() {
    for hang in [true, false] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten() {
                if hang {
                    held.push(s);
                }
            }
        });
        let chain = Chain::start(port, None);
        let alice = chain.token("alice", "acme");
        let mut tasks = Vec::new();
        for i in 0..40u32 {
            let (url, token) = (chain.envoy.url(CHAT), alice.clone());
            let body = if i % 2 == 0 {
                deterministic(&format!("Integrate x^{i} * sin(x) with respect to x"))
            } else {
                chat(&format!("Solve {i}x - 3 = 0 for x"))
            };
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = Client::new()
                    .post_json(&url, &[("authorization", token.as_str())], &body)
                    .await
                    .unwrap();
                (r.status, t.elapsed(), r.text())
            }));
        }
        for t in tasks {
            let (status, took, body) = t.await.unwrap();
            assert_eq!(status, 200, "hang={hang}: {body}");
            // The router's and the cache's 200 ms sidecar timeouts, 40 requests at once on one worker.
            assert!(
                took < Duration::from_secs(3),
                "hang={hang}: a request took {took:?}"
            );
        }
        let log = chain.envoy.wait_access_log(40);
        assert!(
            log.iter().all(|e| e["route"] == "general"),
            "hang={hang}: without a sidecar the default route: {log:?}"
        );
        assert!(
            chain.stat("tollgate_semantic_router_sidecar_errors") >= 1,
            "hang={hang}:\n{}",
            chain.envoy.log()
        );
        assert_eq!(chain.general.journal.count(), 40);
        let q = deterministic("What is the capital of Australia?");
        let r = chain.send(&alice, &q, &[]).await;
        assert_eq!(r.header("x-tollgate-cache"), Some("miss"), "hang={hang}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = chain.send(&alice, &q, &[]).await;
        assert_eq!(
            r.header("x-tollgate-cache"),
            Some("hit"),
            "hang={hang}: the exact cache needs no sidecar"
        );
    }
}

/// One filter's configuration broken in the middle of the full chain: Envoy refuses to start, and
/// its log names the filter's field.
#[test]
fn an_invalid_filter_config_in_the_chain_stops_envoy_naming_the_field() {
    let cases = [
        (
            r#""cache_ttl_s": 600"#,
            r#""cache_ttl_s": "ten minutes""#,
            "providers[0].jwks.remote.cache_ttl_s",
        ),
        (
            r#""split": {"v1": 90, "v2": 10}"#,
            r#""split": {"v1": 90, "v3": 10}"#,
            "templates[0].split.v3",
        ),
        (
            r#""email": {"action": "mask"}"#,
            r#""email": {"action": "shout"}"#,
            "request.detectors.email.action",
        ),
        (
            r#""failure_mode": "open""#,
            r#""failure_mode": "ajar""#,
            "failure_mode",
        ),
        (r#""slots": 1024"#, r#""slots": "many""#, "slots"),
        (
            r#""window": "minute", "tokens": 200000"#,
            r#""window": "fortnight", "tokens": 200000"#,
            "budgets.rules[0].window",
        ),
    ];
    let mock = MockLlm::start().unwrap();
    for (from, to, field) in cases {
        let opts = chain_options(&[
            (default_ports::LLM_UPSTREAM, mock.port()),
            (default_ports::MATH, mock.port()),
            (default_ports::CODE, mock.port()),
            (default_ports::SUPPORT[0], mock.port()),
            (default_ports::SUPPORT[1], mock.port()),
            (default_ports::SIDECAR, tollgate_it::ports::free_port().unwrap()),
            (default_ports::JWKS, mock.port()),
        ])
        .replace(from, to);
        let err = match Envoy::start(opts) {
            Ok(_) => panic!("Envoy started with {to}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("invalid configuration at `{field}`")),
            "{to}: {err}"
        );
    }
}

/// Bodies over each stage's limit: a request over Envoy's buffer limit is a 413 before any filter
/// runs, a token over jwt-auth's limit a 401, a provider reply over the moderator's limit a 503 `response_too_large`;
/// none reaches the provider twice, and the chain keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limits_are_refused_at_their_stage() {
    let chain = Chain::start(tollgate_it::ports::free_port().unwrap(), None);
    let alice = chain.token("alice", "acme");

    let big = chat(&"lorem ipsum dolor ".repeat(64 << 10));
    let r = chain.send(&alice, &big, &[]).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    assert_eq!(chain.general.journal.count(), 0);

    let long_token = format!("Bearer {}", "a".repeat(9000));
    let r = chain.send(&long_token, &chat("Hello"), &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.json()["error"]["message"].is_string(), "{}", r.text());
    assert_eq!(chain.general.journal.count(), 0);

    // ~1.1 MB of reply text: over the 1 MiB the moderator reads (and Envoy buffers), so it is
    // not passed unchecked; whichever notices first, the client gets the same JSON error.
    let carol = chain.token("carol", "acme");
    let r = chain
        .send(
            &carol,
            &chat("Write a very long essay"),
            &[("x-mock-chunks", "1100"), ("x-mock-chunk-bytes", "1000")],
        )
        .await;
    assert_eq!(r.status, 503, "{}", &r.text()[..r.text().len().min(300)]);
    assert_eq!(r.json()["error"]["code"], "response_too_large", "{}", r.text());
    assert_eq!(chain.general.journal.count(), 1);

    let r = chain.send(&alice, &chat("Hello"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A provider stream that breaks the SSE and JSON grammars (broken JSON, wrong-typed usage, a line
/// without a field, invalid UTF-8, a 64 KiB event split across writes, CR line endings) through
/// all six filters: the stream reaches its end, no VM fails, nothing is cached, and the chain
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sse_from_the_provider_passes_every_stage_without_harm() {
    let chain = Chain::start(tollgate_it::ports::free_port().unwrap(), None);
    let bob = chain.token("bob", "globex");
    let q = deterministic("Name three rivers in Europe.");
    let mut stream = q.clone();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    for round in 0..2 {
        let resp = Client::new()
            .send(
                "POST",
                &chain.envoy.url(CHAT),
                &[
                    ("content-type", "application/json"),
                    ("authorization", bob.as_str()),
                    ("x-mock-malformed-sse", "1"),
                ],
                serde_json::to_vec(&stream).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(10), client::read(resp))
            .await
            .expect("the stream never ended")
            .unwrap();
        let text = body.text();
        assert!(
            text.contains("[DONE]"),
            "round {round}: {}",
            &text[text.len().saturating_sub(300)..]
        );
        // The 64 KiB event, split across the provider's writes, arrives whole.
        assert!(
            text.contains(&"x".repeat(64 << 10)),
            "round {round}: the long event was cut"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(chain.general.journal.count(), 2, "the broken stream was cached");
    let r = chain
        .send(&bob, &chat("Hello after the broken stream"), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let log = chain.envoy.log();
    assert!(
        !log.contains("panicked") && !log.contains("Plugin crashed") && !log.contains("wasm log: failed"),
        "{log}"
    );
}
