//! The semantic-router filter in the real Envoy with the real sidecar and model: the shipped snippet
//! routes the held-out labelled prompts (integration/tests/data/routes.heldout.json) through the route table of
//! `envoy/envoy.yaml` to one mock provider per cluster, and each test checks which provider got
//! the request. Also: the keyword fast path, precomputed vectors, model rewrites, client headers,
//! failover between clusters, and the sidecar down, late or killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{sidecar_metric, start_sidecar, start_sidecar_at};

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tollgate_it::client::{Client, Response};
use tollgate_it::envoy::{Envoy, Options, default_ports, snippet_config};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";
const SNIPPET: &str = "semantic-router.yaml";
const EMBED_OK: &str = "tollgate_sidecar_requests_total{method=\"Embed\",outcome=\"ok\"}";

/// One mock provider per routed endpoint, as the clusters of envoy/envoy.yaml expect.
struct Providers {
    general: MockLlm,
    code: MockLlm,
    math: MockLlm,
    support: [MockLlm; 2],
}

impl Providers {
    fn start() -> Self {
        Self {
            general: MockLlm::start().unwrap(),
            code: MockLlm::start().unwrap(),
            math: MockLlm::start().unwrap(),
            support: [MockLlm::start().unwrap(), MockLlm::start().unwrap()],
        }
    }

    fn all(&self) -> [(&'static str, &MockLlm); 5] {
        [
            ("general", &self.general),
            ("code", &self.code),
            ("math", &self.math),
            ("support", &self.support[0]),
            ("support", &self.support[1]),
        ]
    }

    /// envoy.yaml with every provider port and the sidecar's.
    fn options(&self, sidecar_port: u16) -> Options<'static> {
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, self.general.port())
            .upstream(default_ports::CODE, self.code.port())
            .upstream(default_ports::MATH, self.math.port())
            .upstream(default_ports::SUPPORT[0], self.support[0].port())
            .upstream(default_ports::SUPPORT[1], self.support[1].port())
            .upstream(default_ports::SIDECAR, sidecar_port)
    }

    fn counts(&self) -> Vec<usize> {
        self.all().iter().map(|(_, m)| m.journal.count()).collect()
    }

    /// The route whose provider received the one request sent since `before`.
    fn reached(&self, before: &[usize]) -> &'static str {
        let hit: Vec<&str> = self
            .all()
            .iter()
            .zip(before)
            .filter(|((_, m), b)| m.journal.count() > **b)
            .map(|((name, _), _)| *name)
            .collect();
        assert_eq!(hit.len(), 1, "one provider should have the request: {hit:?}");
        hit[0]
    }
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

async fn send(envoy: &Envoy, body: &Value, headers: &[(&str, &str)]) -> Response {
    Client::new()
        .post_json(&envoy.url(CHAT), headers, body)
        .await
        .unwrap()
}

/// Sends `text` and returns the route whose provider answered.
async fn route_of(envoy: &Envoy, p: &Providers, text: &str) -> &'static str {
    let before = p.counts();
    let r = send(envoy, &chat(text), &[]).await;
    assert_eq!(r.status, 200, "{text}: {}", r.text());
    p.reached(&before)
}

/// Waits until both VMs of the filter (the worker's and the main thread's) have their `n` example
/// vectors.
async fn wait_examples(envoy: &Envoy, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while envoy.stat("wasmcustom.tollgate_semantic_router_ready_vms") != Some(2)
        || envoy.stat("wasmcustom.tollgate_semantic_router_examples") != Some(n)
    {
        assert!(
            Instant::now() < deadline,
            "route examples not loaded within {within:?}:\n{}",
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The held-out half of the labelled routing prompts (label, text).
fn labelled() -> Vec<(String, String)> {
    tollgate_it::labelled::routing_prompts()
        .unwrap()
        .into_iter()
        .filter(|p| !p.tune())
        .map(|p| (p.route, p.text))
        .collect()
}

fn examples_in_snippet() -> u64 {
    snippet_config(SNIPPET).unwrap()["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["examples"].as_array().map_or(0, Vec::len) as u64)
        .sum()
}

async fn embed(sc: &sidecar_testkit::Background, texts: Vec<String>) -> Vec<Vec<f32>> {
    let mut c =
        inference_proto::v1::inference_client::InferenceClient::connect(format!("http://{}", sc.addr))
            .await
            .unwrap();
    let mut out = Vec::new();
    for chunk in texts.chunks(32) {
        let r = c
            .embed(inference_proto::v1::EmbedRequest {
                texts: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(r.embeddings.into_iter().map(|e| e.values));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_prompts_reach_their_clusters() {
    let sc = start_sidecar();
    let p = Providers::start();
    // The shipped configuration with a deadline for a loaded test machine (other test binaries'
    // sidecars may share the cores): a timeout here would measure the machine, not the routing.
    let mut cfg = snippet_config(SNIPPET).unwrap();
    cfg["sidecar"]["timeout_ms"] = json!(5000);
    let envoy = Envoy::start(p.options(sc.addr.port()).wasm_filter_reading_body(
        "semantic-router",
        "semantic_router.wasm",
        &cfg,
    ))
    .unwrap();
    wait_examples(&envoy, examples_in_snippet(), Duration::from_secs(60)).await;

    let set = labelled();
    assert!(set.len() >= 150, "{} held-out prompts", set.len());
    let mut per_label: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut confusions = Vec::new();
    for (label, text) in &set {
        let got = route_of(&envoy, &p, text).await;
        let e = per_label.entry(label.clone()).or_default();
        e.1 += 1;
        if got == label {
            e.0 += 1;
        } else {
            confusions.push(format!("  {label} -> {got}: {text}"));
        }
    }
    let correct: usize = per_label.values().map(|(c, _)| c).sum();
    let accuracy = correct as f64 / set.len() as f64;
    println!(
        "semantic-router accuracy on {} held-out prompts: {accuracy:.3}",
        set.len()
    );
    for (label, (c, n)) in &per_label {
        println!("  {label}: {c}/{n}");
    }
    println!("misrouted:\n{}", confusions.join("\n"));

    // The access log has the decision, and the cluster Envoy picked from the route header.
    let log = envoy.wait_access_log(set.len());
    for entry in &log {
        let route = entry["route"].as_str().unwrap();
        let cluster = if route == "general" {
            "llm_upstream".to_owned()
        } else {
            format!("llm_{route}")
        };
        assert_eq!(entry["upstream"], cluster.as_str(), "{entry}");
        assert!(
            ["semantic", "keyword", "below_threshold", "ambiguous"]
                .contains(&entry["route_method"].as_str().unwrap()),
            "{entry}"
        );
    }
    let semantic = log.iter().filter(|e| e["route_method"] == "semantic").count();
    let ambiguous = log.iter().filter(|e| e["route_method"] == "ambiguous").count();
    println!(
        "sent to the default route as ambiguous: {ambiguous} ({:.3})",
        ambiguous as f64 / set.len() as f64
    );
    assert!(
        semantic >= set.len() / 2,
        "most decisions are by meaning: {semantic}"
    );
    // Envoy balanced the support route over both endpoints.
    assert!(p.support.iter().all(|m| m.journal.count() > 0));
    let decided: u64 = ["code", "math", "support", "general"]
        .iter()
        .map(|r| {
            envoy
                .stat(&format!(
                    "wasmcustom.tollgate_semantic_router_decisions.route.{r}"
                ))
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(decided, set.len() as u64);
    // Floors under the measured 0.890 (the target, 0.95, is not reached; see the README).
    assert!(accuracy >= 0.87, "held-out accuracy {accuracy:.3} is below 0.87");
    for (label, (c, n)) in &per_label {
        assert!(*c as f64 / *n as f64 >= 0.75, "{label}: {c}/{n}");
    }
}

/// The decision rule of the filter (`semantic_router::decide`) on the sidecar's vectors, over
/// `top_k`, `threshold` and `margin`, on the tuning half of integration/tests/data/
/// routes.heldout.json: how the shipped settings were chosen (the best tuning accuracy; within
/// 0.01 of it, one prompt, the largest margin, so a prompt between two routes takes the default
/// instead of a guess; then the larger top_k and the lower threshold). Prints the grid and the
/// held-out accuracy at the shipped settings; checks the shipped settings are within 0.01 of the
/// best on the tuning half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_sweep_over_the_tuning_prompts() {
    use semantic_router::config::{RawConfig, compile};
    use semantic_router::decide;
    let sc = start_sidecar();
    let mut cfg = snippet_config(SNIPPET).unwrap();
    let shipped = (
        cfg["top_k"].as_u64().unwrap_or(3),
        cfg["threshold"].as_f64().unwrap(),
        cfg["margin"].as_f64().unwrap_or(0.0),
    );
    for r in cfg["routes"].as_array_mut().unwrap() {
        let texts: Vec<String> = serde_json::from_value(r["examples"].clone()).unwrap_or_default();
        if !texts.is_empty() {
            r["embeddings"] = json!(embed(&sc, texts).await);
        }
    }
    let set = tollgate_it::labelled::routing_prompts().unwrap();
    let vectors = embed(&sc, set.iter().map(|p| p.text.clone()).collect()).await;
    let mut scratch = decide::Scratch::default();
    let mut score = |k: u64, t: f64, m: f64, tune: bool| -> (f64, f64) {
        cfg["threshold"] = json!(t);
        cfg["top_k"] = json!(k);
        cfg["margin"] = json!(m);
        let c = filter_core::config::parse::<RawConfig>(cfg.to_string().as_bytes())
            .and_then(compile)
            .unwrap();
        let (mut n, mut ok, mut defaulted) = (0usize, 0usize, 0usize);
        for (p, v) in set.iter().zip(&vectors).filter(|(p, _)| p.tune() == tune) {
            let d = match decide::fast_path(&c, &p.text) {
                Some(r) => decide::Decision::new(r, decide::Method::Keyword),
                None => decide::nearest(&c, &c.index, v, &mut scratch).unwrap(),
            };
            n += 1;
            ok += usize::from(c.routes[d.route].name == p.route);
            defaulted += usize::from(matches!(
                d.method,
                decide::Method::BelowThreshold | decide::Method::Ambiguous
            ));
        }
        (ok as f64 / n as f64, defaulted as f64 / n as f64)
    };
    let mut best = 0.0f64;
    let mut at_shipped = None;
    println!(
        "tuning half: top_k  threshold  margin  accuracy  sent to the default (below threshold or ambiguous)"
    );
    for k in [1u64, 2, 3, 5] {
        for t in [0.1, 0.2, 0.3] {
            for m in [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1] {
                let (acc, def) = score(k, t, m, true);
                println!("{k:5}  {t:9.2}  {m:6.2}  {acc:8.3}  {def:.3}");
                best = best.max(acc);
                if (k, t, m) == shipped {
                    at_shipped = Some(acc);
                }
            }
        }
    }
    let (held, held_default) = score(shipped.0, shipped.1, shipped.2, false);
    println!(
        "shipped (top_k {}, threshold {}, margin {}): held-out accuracy {held:.3}, {held_default:.3} sent to the default",
        shipped.0, shipped.1, shipped.2
    );
    let at_shipped = at_shipped.expect("the shipped settings are on the sweep's grid");
    assert!(
        at_shipped >= best - 0.01,
        "shipped {at_shipped:.3}, best on the tuning half {best:.3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_fast_path_skips_the_sidecar() {
    let sc = start_sidecar();
    let p = Providers::start();
    let envoy = Envoy::start(p.options(sc.addr.port()).snippet(SNIPPET)).unwrap();
    wait_examples(&envoy, examples_in_snippet(), Duration::from_secs(60)).await;
    let before = sidecar_metric(&sc, EMBED_OK).await;
    assert_eq!(
        route_of(&envoy, &p, "I get a Traceback when I import numpy").await,
        "code"
    );
    assert_eq!(
        route_of(&envoy, &p, "When will my refund arrive?").await,
        "support"
    );
    assert_eq!(
        sidecar_metric(&sc, EMBED_OK).await,
        before,
        "keyword decisions call no sidecar"
    );
    assert_eq!(
        route_of(&envoy, &p, "Write a Go function that reverses a slice").await,
        "code"
    );
    assert_eq!(sidecar_metric(&sc, EMBED_OK).await, before + 1.0);
    assert_eq!(
        envoy.stat("wasmcustom.tollgate_semantic_router_methods.method.keyword"),
        Some(2)
    );
    let log = envoy.wait_access_log(3);
    let threshold = snippet_config(SNIPPET).unwrap()["threshold"].as_f64().unwrap();
    assert!(log[2]["route_score"].as_str().unwrap().parse::<f64>().unwrap() >= threshold);

    // The Responses API is routed by the turn's user input, not by its instructions.
    for input in [
        json!("When will my refund arrive?"),
        json!([{"role": "user", "content": [{"type": "input_text", "text": "When will my refund arrive?"}]}]),
    ] {
        let before = p.counts();
        let body =
            json!({"model": "gpt-4o-mini", "instructions": "Write a Go function if asked.", "input": input});
        let r = Client::new()
            .post_json(&envoy.url("/v1/responses"), &[], &body)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(p.reached(&before), "support", "{input}");
    }
}

/// Precomputed vectors (no sidecar call at start), a model rewrite, the Anthropic API, explicit
/// model choices and the client's own route header, stripped or honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_is_the_gateways_decision() {
    let sc = start_sidecar();
    let p = Providers::start();
    let code_examples = vec![
        "Fix the bug in my Python function".to_owned(),
        "Write a SQL query".to_owned(),
    ];
    let math_examples = vec![
        "Solve this equation for x".to_owned(),
        "Compute the integral".to_owned(),
    ];
    let general_examples = vec!["Write a poem about the sea".to_owned()];
    let config = |client_route: &str, code: &[Vec<f32>], math: &[Vec<f32>], general: &[Vec<f32>]| {
        json!({
            "default_route": "general",
            "client_route": client_route,
            "top_k": 1,
            "sidecar": {"timeout_ms": 2000},
            "routes": [
                {"name": "code", "embeddings": code, "model": "coder-model", "models": ["my-own-coder"]},
                {"name": "math", "embeddings": math},
                {"name": "general", "embeddings": general}
            ]
        })
    };
    let (code, math, general) = (
        embed(&sc, code_examples).await,
        embed(&sc, math_examples).await,
        embed(&sc, general_examples).await,
    );
    let before = sidecar_metric(&sc, EMBED_OK).await;
    let envoy = Envoy::start(p.options(sc.addr.port()).wasm_filter_reading_body(
        "semantic-router",
        "semantic_router.wasm",
        &config("strip", &code, &math, &general),
    ))
    .unwrap();
    assert_eq!(
        envoy.stat("wasmcustom.tollgate_semantic_router_examples"),
        Some(5)
    );
    assert_eq!(
        sidecar_metric(&sc, EMBED_OK).await,
        before,
        "precomputed: nothing embedded at start"
    );

    // The client's header is dropped; the gateway decides, and the route's model is written.
    let echo = ("x-mock-echo", "1");
    let b = p.counts();
    let r = send(
        &envoy,
        &chat("My Python function returns None instead of a list, fix it"),
        &[echo, ("x-tollgate-route", "math")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.reached(&b), "code");
    let got = p.code.journal.last().unwrap();
    // Envoy removes the internal label before the provider.
    assert_eq!(got.header("x-tollgate-route"), None);
    assert_eq!(got.json().unwrap()["model"], "coder-model");
    assert_eq!(
        got.json().unwrap()["messages"][0]["content"],
        "My Python function returns None instead of a list, fix it"
    );

    // Anthropic's Messages API is routed the same way.
    let b = p.counts();
    let r = Client::new()
        .post_json(
            &envoy.url("/v1/messages"),
            &[("anthropic-version", "2023-06-01")],
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Solve 4x - 3 = 9 for x"}]}]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.reached(&b), "math");
    assert_eq!(
        p.math.journal.last().unwrap().json().unwrap()["model"],
        "claude-sonnet-4-5"
    );

    // A model a route lists: that route, as asked (no rewrite, no embedding).
    let before = sidecar_metric(&sc, EMBED_OK).await;
    let b = p.counts();
    let r = send(&envoy, &json!({"model": "my-own-coder", "messages": [{"role": "user", "content": "Write a poem about the sea"}]}), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(p.reached(&b), "code");
    assert_eq!(
        p.code.journal.last().unwrap().json().unwrap()["model"],
        "my-own-coder"
    );
    assert_eq!(sidecar_metric(&sc, EMBED_OK).await, before);

    // Not a prompt (no body, another API): no route header, Envoy's catch-all route; a client's
    // own route header does not pick a cluster either.
    let b = p.counts();
    let r = Client::new()
        .request(
            "GET",
            &envoy.url("/v1/models"),
            &[("x-tollgate-route", "code")],
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(r.status < 500, "{}", r.text());
    assert_eq!(p.reached(&b), "general");
    assert_eq!(p.general.journal.last().unwrap().header("x-tollgate-route"), None);

    // Malformed JSON is not the router's to reject: the default route, the provider answers.
    let b = p.counts();
    let r = Client::new()
        .request(
            "POST",
            &envoy.url(CHAT),
            &[("content-type", "application/json")],
            b"{not json".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(p.reached(&b), "general");

    // With client_route: honor (and envoy.yaml's early removal of the header taken out), a header
    // naming a configured route is kept.
    let honoring = Envoy::start(
        p.options(sc.addr.port())
            .replace("- remove: x-tollgate-route", "- remove: x-not-removed")
            .wasm_filter_reading_body(
                "semantic-router",
                "semantic_router.wasm",
                &config("honor", &code, &math, &general),
            ),
    )
    .unwrap();
    let b = p.counts();
    let r = send(
        &honoring,
        &chat("Write a poem about the sea"),
        &[("x-tollgate-route", "math")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(p.reached(&b), "math");
    let b = p.counts();
    let r = send(
        &honoring,
        &chat("Write a poem about the sea"),
        &[("x-tollgate-route", "nonsense")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(p.reached(&b), "general");
    let log = honoring.wait_access_log(2);
    assert_eq!(log[0]["route_method"], "explicit");
    assert_eq!(log[1]["route_method"], "semantic");
}

/// Started before the sidecar: the default route at once (`not_ready`), the examples loaded once
/// it is up; killed mid-test: the default route within the timeout, no 5xx, also under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sidecar_the_default_route_within_the_timeout() {
    let p = Providers::start();
    let port = tollgate_it::ports::free_port().unwrap();
    let envoy = Envoy::start(p.options(port).snippet(SNIPPET)).unwrap();
    let n = examples_in_snippet();
    assert_eq!(
        route_of(&envoy, &p, "Integrate x * cos(x) with respect to x").await,
        "general"
    );
    let sc = start_sidecar_at(([127, 0, 0, 1], port).into());
    // The filter retries with backoff (1 s, 2 s, 4 s …).
    wait_examples(&envoy, n, Duration::from_secs(30)).await;
    assert_eq!(
        route_of(&envoy, &p, "Integrate x * cos(x) with respect to x").await,
        "math"
    );
    sc.stop();

    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = envoy.url(CHAT);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = Client::new()
                .post_json(
                    &url,
                    &[],
                    &chat(&format!("Integrate x^{i} * cos(x) with respect to x")),
                )
                .await
                .unwrap();
            (r.status, t.elapsed())
        }));
    }
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(took < timeout + Duration::from_millis(800), "{took:?}");
    }
    println!(
        "20 concurrent requests with the sidecar down: {:?}",
        started.elapsed()
    );
    assert_eq!(p.general.journal.count(), 21);
    let log = envoy.wait_access_log(22);
    assert_eq!(log[0]["route_method"], "not_ready");
    assert!(
        log[2..]
            .iter()
            .all(|e| e["route_method"] == "sidecar_failed" && e["route"] == "general")
    );
    assert!(
        envoy
            .stat("wasmcustom.tollgate_semantic_router_sidecar_errors")
            .unwrap_or(0)
            >= 20
    );

    // failure_mode: closed answers 503 instead.
    let mut cfg = snippet_config(SNIPPET).unwrap();
    cfg["failure_mode"] = json!("closed");
    let closed = Envoy::start(p.options(port).wasm_filter_reading_body(
        "semantic-router",
        "semantic_router.wasm",
        &cfg,
    ))
    .unwrap();
    let before = p.counts();
    let r = send(&closed, &chat("Integrate x * cos(x) with respect to x"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "routing_unavailable");
    assert_eq!(p.counts(), before);
    // A keyword decision needs no sidecar, so it still goes.
    assert_eq!(
        route_of(&closed, &p, "My build fails with a syntax error").await,
        "code"
    );
}

/// Envoy's retry policy and priorities fail a route over to the general provider when its own is
/// down; the router only decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_whose_provider_is_down_fails_over() {
    let general = MockLlm::start().unwrap();
    let math = MockLlm::start().unwrap();
    let support = [MockLlm::start().unwrap(), MockLlm::start().unwrap()];
    let closed = tollgate_it::ports::free_port().unwrap();
    let no_sidecar = tollgate_it::ports::free_port().unwrap();
    let envoy = Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, general.port())
            .upstream(default_ports::CODE, closed)
            .upstream(default_ports::MATH, math.port())
            .upstream(default_ports::SUPPORT[0], support[0].port())
            .upstream(default_ports::SUPPORT[1], support[1].port())
            .upstream(default_ports::SIDECAR, no_sidecar)
            .snippet(SNIPPET),
    )
    .unwrap();
    for i in 0..4 {
        let r = send(&envoy, &chat(&format!("Here is my stack trace number {i}")), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(general.journal.count(), 4);
    let log = envoy.wait_access_log(4);
    assert!(
        log.iter()
            .all(|e| e["upstream"] == "llm_code" && e["route"] == "code"),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_rejected_at_load_naming_the_field() {
    let p = Providers::start();
    for (cfg, field) in [
        (
            json!({"routes": [{"name": "a"}], "default_route": "b"}),
            "default_route",
        ),
        (
            json!({"routes": [{"name": "a", "patterns": ["(unclosed"]}], "default_route": "a"}),
            "routes[0].patterns[0]",
        ),
        (
            json!({"routes": [{"name": "a", "threshold": 2}], "default_route": "a"}),
            "routes[0].threshold",
        ),
    ] {
        let err = match Envoy::start(p.options(1).wasm_filter_reading_body(
            "semantic-router",
            "semantic_router.wasm",
            &cfg,
        )) {
            Ok(_) => panic!("Envoy accepted {cfg}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("invalid configuration at `{field}")),
            "{field}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused() {
    let p = Providers::start();
    let mut cfg = snippet_config(SNIPPET).unwrap();
    cfg["max_body_bytes"] = json!(1000);
    let envoy = Envoy::start(p.options(1).wasm_filter_reading_body(
        "semantic-router",
        "semantic_router.wasm",
        &cfg,
    ))
    .unwrap();
    let r = send(&envoy, &chat(&"long ".repeat(400)), &[]).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    // The filter's own reply (Envoy's buffer limit is 1 MiB; local_reply_config rewrites every
    // 413's message, so the filter's log line tells who answered).
    let said = |l: &str| l.contains("[tollgate.semantic-router]") && l.contains("local reply 413");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !said(&envoy.log()) {
        assert!(
            Instant::now() < deadline,
            "no local reply logged:\n{}",
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(p.counts().iter().sum::<usize>(), 0);
}

/// A sidecar that accepts connections and never answers: each request waits the configured
/// deadline, no more, then takes the default route (open) or gets 503 (closed). The examples are
/// precomputed, so the filter is ready without the sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_hangs_costs_the_deadline_and_no_more() {
    let sc = start_sidecar();
    let code = embed(&sc, vec!["Fix the bug in my Python function".to_owned()]).await;
    let general = embed(&sc, vec!["Write a poem about the sea".to_owned()]).await;
    sc.stop();
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept() {
            held.push(s);
        }
    });
    let p = Providers::start();
    let config = |mode: &str| {
        json!({"default_route": "general", "top_k": 1, "failure_mode": mode,
               "sidecar": {"timeout_ms": 200},
               "routes": [{"name": "code", "embeddings": code}, {"name": "general", "embeddings": general}]})
    };
    let open = Envoy::start(p.options(port).wasm_filter_reading_body(
        "semantic-router",
        "semantic_router.wasm",
        &config("open"),
    ))
    .unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(
            route_of(&open, &p, "My Python function crashes with a KeyError").await,
            "general"
        );
        let took = t.elapsed();
        // The 200 ms deadline, not Envoy's route timeout (300 s) or a hang: the upper bound leaves
        // room for a slow machine (a CI run took 641 ms here).
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(2000),
            "{took:?}"
        );
    }
    let log = open.wait_access_log(3);
    assert!(
        log.iter().all(|e| e["route_method"] == "sidecar_failed"),
        "{log:?}"
    );

    let closed = Envoy::start(p.options(port).wasm_filter_reading_body(
        "semantic-router",
        "semantic_router.wasm",
        &config("closed"),
    ))
    .unwrap();
    let before = p.counts();
    let t = Instant::now();
    let r = send(&closed, &chat("My Python function crashes with a KeyError"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "routing_unavailable");
    assert!(t.elapsed() < Duration::from_millis(2000), "{:?}", t.elapsed());
    assert_eq!(p.counts(), before);
    assert_eq!(
        closed.stat("wasmcustom.tollgate_semantic_router_methods.method.sidecar_failed"),
        Some(1)
    );
}

/// Without the buffer filter in front, the body arrives in several callbacks: the filter decides
/// on the whole of it (the keyword here spans two chunks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_several_chunks_is_read_whole() {
    let p = Providers::start();
    let envoy = Envoy::start(p.options(1).without_buffer_filter().snippet(SNIPPET)).unwrap();
    let body = serde_json::to_vec(&chat("I got a stack trace from my build")).unwrap();
    let cut = body.windows(5).position(|w| w == b"trace").unwrap() + 2;
    let (a, b) = body.split_at(cut);
    let before = p.counts();
    let (status, reply) = tollgate_it::client::post_chunked(
        envoy.port,
        CHAT,
        &[("content-type", "application/json")],
        &[a, b],
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    assert_eq!(p.reached(&before), "code");
}
