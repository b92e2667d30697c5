//! The response-cache filter in the real Envoy with the real sidecar and model, in front of the
//! mock provider, whose request count proves that a hit never reaches it: exact hits for JSON and
//! SSE of both APIs (and one format served as the other), semantic hits on a labelled set of
//! paraphrases and near-misses (the held-out pairs of integration/tests/data/cache-pairs.heldout.json), tenant isolation, TTL,
//! what is never cached, the sidecar down, and two Envoy + sidecar pairs sharing one Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{sidecar_args, sidecar_metric, start_sidecar};

use filter_core::verify;
use serde_json::{Value, json};
use sidecar_testkit::{Background, RedisServer};
use std::time::{Duration, Instant};
use tollgate_it::client::{Client, Response, reply_text, sse_data};
use tollgate_it::envoy::{Envoy, Options, default_ports, snippet_config};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const SNIPPET: &str = "response-cache.yaml";
const STORES: &str = "tollgate_sidecar_cache_stores_total";

fn envoy_with(mock: &MockLlm, sidecar_port: u16, config: Option<&Value>) -> Envoy {
    let opts = Options::new("envoy.yaml")
        .upstream(default_ports::LLM_UPSTREAM, mock.port())
        .upstream(default_ports::SIDECAR, sidecar_port);
    let opts = match config {
        Some(c) => opts.wasm_filter_reading_body("response-cache", "response_cache.wasm", c),
        None => opts.snippet(SNIPPET),
    };
    Envoy::start(opts).unwrap()
}

/// The shipped configuration with a deadline for a loaded test machine: a sidecar timeout would
/// measure the machine, not the cache.
fn shipped_patient() -> Value {
    let mut cfg = snippet_config(SNIPPET).unwrap();
    cfg["sidecar"]["timeout_ms"] = json!(5000);
    cfg
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "stream": stream,
           "stream_options": {"include_usage": stream},
           "messages": [{"role": "user", "content": text}]})
}

fn anthropic(text: &str, stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "temperature": 0, "max_tokens": 200, "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

/// Sends as one user of `tenant` (subject `<tenant>-user`), as jwt-auth would set them.
async fn send(envoy: &Envoy, path: &str, tenant: Option<&str>, body: &Value) -> Response {
    let subject = tenant.map(|t| format!("{t}-user"));
    let mut h = vec![("anthropic-version", "2023-06-01")];
    if let (Some(t), Some(s)) = (tenant, &subject) {
        h.push(("x-tollgate-tenant", t));
        h.push(("x-tollgate-subject", s));
    }
    Client::new().post_json(&envoy.url(path), &h, body).await.unwrap()
}

fn cache(r: &Response) -> &str {
    r.header("x-tollgate-cache").unwrap_or("(none)")
}

/// Waits until the sidecar has taken `n` stores in all (they are sent after the response).
async fn wait_stores(sc: &Background, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sidecar_metric(sc, STORES).await < n {
        assert!(Instant::now() < deadline, "the sidecar never got store {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_hits_for_json_and_sse_never_reach_the_provider() {
    let sc = start_sidecar();
    let mock = MockLlm::start().unwrap();
    let envoy = envoy_with(&mock, sc.addr.port(), None);
    let t = Some("acme");

    let first = send(&envoy, CHAT, t, &chat("Name three primary colours.", false)).await;
    assert_eq!((first.status, cache(&first)), (200, "miss"), "{}", first.text());
    assert_eq!(mock.journal.count(), 1);
    let again = send(&envoy, CHAT, t, &chat("Name three primary colours.", false)).await;
    assert_eq!((again.status, cache(&again)), (200, "hit"));
    assert!(again.header("age").unwrap().parse::<u64>().unwrap() <= 2);
    assert_eq!(again.body, first.body, "the stored response, byte for byte");
    assert_eq!(mock.journal.count(), 1, "a hit never reaches the provider");

    // The same question streamed: served from the JSON entry as OpenAI chunks, usage included.
    let streamed = send(&envoy, CHAT, t, &chat("Name three primary colours.", true)).await;
    assert_eq!(cache(&streamed), "hit");
    assert!(
        streamed
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let data = sse_data(&streamed.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert_eq!(reply_text(&streamed), reply_text(&first));
    let usage: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|c| c["usage"].is_object())
        .collect();
    assert_eq!(usage[0]["usage"], first.json()["usage"], "usage as the original");
    assert_eq!(mock.journal.count(), 1);

    // Streamed first: recorded as it passes, then served as JSON and as a stream.
    let s1 = send(&envoy, CHAT, t, &chat("Spell the word cache backwards.", true)).await;
    assert_eq!(cache(&s1), "miss");
    let j = send(&envoy, CHAT, t, &chat("Spell the word cache backwards.", false)).await;
    assert_eq!(cache(&j), "hit");
    assert_eq!(reply_text(&j), reply_text(&s1));
    assert_eq!(j.json()["object"], "chat.completion");
    let s2 = send(&envoy, CHAT, t, &chat("Spell the word cache backwards.", true)).await;
    assert_eq!(cache(&s2), "hit");
    assert_eq!(reply_text(&s2), reply_text(&s1));
    assert_eq!(mock.journal.count(), 2);

    // Anthropic, both ways.
    let a1 = send(
        &envoy,
        MESSAGES,
        t,
        &anthropic("Describe a sunset in five words.", true),
    )
    .await;
    assert_eq!((a1.status, cache(&a1)), (200, "miss"));
    let a2 = send(
        &envoy,
        MESSAGES,
        t,
        &anthropic("Describe a sunset in five words.", false),
    )
    .await;
    assert_eq!(cache(&a2), "hit");
    assert_eq!(a2.json()["type"], "message");
    assert_eq!(reply_text(&a2), reply_text(&a1));
    let a3 = send(
        &envoy,
        MESSAGES,
        t,
        &anthropic("Describe a sunset in five words.", true),
    )
    .await;
    assert_eq!(cache(&a3), "hit");
    let events: Vec<Value> = sse_data(&a3.body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(kinds.last(), Some(&"message_stop"));
    assert_eq!(reply_text(&a3), reply_text(&a1));
    assert_eq!(mock.journal.count(), 3);

    assert_eq!(envoy.stat("wasmcustom.tollgate_response_cache_hits"), Some(6));
    assert_eq!(envoy.stat("wasmcustom.tollgate_response_cache_misses"), Some(3));
    assert!(
        envoy
            .stat("wasmcustom.tollgate_response_cache_tokens_saved")
            .unwrap()
            > 0
    );
    let log = envoy.wait_access_log(9);
    assert_eq!(log[1]["cache"], "hit");
}

/// Precision and recall of semantic hits on the held-out half of the labelled pairs
/// (integration/tests/data/cache-pairs.heldout.json, written before any tuning; the settings were
/// chosen on its tuning half, see `scripts/bench.sh response-cache`), through Envoy and the real
/// sidecar at the shipped settings. Floors: precision 0.98 (the target) and recall 0.58
/// (measured 0.594; the target of 0.60 is not reached by the lexical verifier, see the README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_hits_for_paraphrases_and_not_for_near_misses() {
    use tollgate_it::labelled::{self, Confusion};
    let sc = start_sidecar();
    let mock = MockLlm::start().unwrap();
    let envoy = envoy_with(&mock, sc.addr.port(), Some(&shipped_patient()));
    let pairs: Vec<_> = labelled::cache_pairs()
        .unwrap()
        .into_iter()
        .filter(|p| !p.tune())
        .collect();
    assert!(pairs.len() >= 250, "{} held-out pairs", pairs.len());

    let mut stores = sidecar_metric(&sc, STORES).await;
    let mut score = Confusion::default();
    let mut wrong = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        // A tenant per pair: each second prompt is compared with its own first one only.
        let tenant = format!("pair-{i}");
        let t = Some(tenant.as_str());
        let first = send(&envoy, CHAT, t, &chat(&p.a, false)).await;
        assert_eq!(cache(&first), "miss");
        stores += 1.0;
        wait_stores(&sc, stores).await;
        let before = mock.journal.count();
        let r = send(&envoy, CHAT, t, &chat(&p.b, false)).await;
        assert_eq!(r.status, 200);
        let hit = cache(&r) == "semantic-hit";
        if hit {
            assert_eq!(mock.journal.count(), before);
            assert!(r.header("x-tollgate-cache-similarity").is_some());
            // The answer to the first prompt (the mock's reply quotes its prompt).
            assert_eq!(reply_text(&r), reply_text(&first));
        } else {
            assert_eq!(cache(&r), "miss", "{} / {}", p.a, p.b);
            stores += 1.0;
            wait_stores(&sc, stores).await;
        }
        score.add(p.same(), hit);
        match (p.same(), hit) {
            (true, false) => wrong.push(format!("  missed paraphrase ({}): {} / {}", p.category, p.a, p.b)),
            (false, true) => wrong.push(format!(
                "  WRONG ANSWER served ({}): {} / {}",
                p.category, p.a, p.b
            )),
            _ => {}
        }
    }
    println!("semantic cache on {} held-out pairs: {score}", pairs.len());
    println!("{}", wrong.join("\n"));
    let refused: u64 = verify::Contrast::ALL
        .iter()
        .map(|c| {
            envoy
                .stat(&format!(
                    "wasmcustom.tollgate_response_cache_semantic_refused.contrast.{}",
                    c.name()
                ))
                .unwrap_or(0)
        })
        .sum();
    println!("candidates refused by the verifier: {refused}");
    assert!(refused > 0, "the verifier refused no candidate");
    assert!(score.precision() >= 0.98, "{score}");
    assert!(score.recall() >= 0.58, "{score}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_share_entries() {
    let sc = start_sidecar();
    let mock = MockLlm::start().unwrap();
    let envoy = envoy_with(&mock, sc.addr.port(), Some(&shipped_patient()));
    let q = "What is the capital of Australia?";
    let r = send(&envoy, CHAT, Some("tenant-a"), &chat(q, false)).await;
    assert_eq!(cache(&r), "miss");
    wait_stores(&sc, 1.0).await;
    assert_eq!(
        cache(&send(&envoy, CHAT, Some("tenant-a"), &chat(q, false)).await),
        "hit"
    );
    // A paraphrase from tenant B and the same prompt from tenant C: misses (each tenant's first
    // request), and they reach the provider.
    let before = mock.journal.count();
    let paraphrase = chat("Tell me please, what is the capital of Australia?", false);
    assert_eq!(
        cache(&send(&envoy, CHAT, Some("tenant-b"), &paraphrase).await),
        "miss"
    );
    assert_eq!(
        cache(&send(&envoy, CHAT, Some("tenant-c"), &chat(q, false)).await),
        "miss"
    );
    assert_eq!(mock.journal.count(), before + 2);
    // The paraphrase is a semantic hit for tenant A only.
    wait_stores(&sc, 3.0).await;
    let r = send(
        &envoy,
        CHAT,
        Some("tenant-a"),
        &chat("Tell me please, what is the capital of Australia?", false),
    )
    .await;
    assert_eq!(cache(&r), "semantic-hit");
    // Tenant A's own answer (the mock quotes the prompt it answered), not tenant B's.
    assert!(
        reply_text(&r).contains("What is the capital of Australia?"),
        "{}",
        reply_text(&r)
    );
    // No tenant: not cached at all.
    let r = send(&envoy, CHAT, None, &chat(q, false)).await;
    assert_eq!(cache(&r), "bypass");
    assert_eq!(
        envoy.stat("wasmcustom.tollgate_response_cache_bypass.reason.no_scope"),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_their_ttl() {
    let mock = MockLlm::start().unwrap();
    // Entries carry whole seconds: a TTL of 2 s is served for more than 1 s and less than 2 s.
    let cfg = json!({"ttl_s": 2, "semantic": {"enabled": false}});
    let envoy = envoy_with(&mock, 1, Some(&cfg));
    let q = chat("Count to three.", false);
    assert_eq!(cache(&send(&envoy, CHAT, Some("t"), &q).await), "miss");
    assert_eq!(cache(&send(&envoy, CHAT, Some("t"), &q).await), "hit");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(cache(&send(&envoy, CHAT, Some("t"), &q).await), "miss");
    assert_eq!(mock.journal.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_never_cached() {
    let mock = MockLlm::start().unwrap();
    let cfg = json!({"semantic": {"enabled": false}, "max_entry_bytes": 2048});
    let envoy = envoy_with(&mock, 1, Some(&cfg));
    let twice = |body: Value, headers: Vec<(&'static str, &'static str)>| {
        let envoy = &envoy;
        async move {
            let mut out = Vec::new();
            for _ in 0..2 {
                let mut h = vec![("x-tollgate-tenant", "t")];
                h.extend(headers.iter().copied());
                out.push(
                    Client::new()
                        .post_json(&envoy.url(CHAT), &h, &body)
                        .await
                        .unwrap(),
                );
            }
            out
        }
    };
    // Sampled output (temperature > 0, or absent: the providers default to 1).
    let mut sampled = chat("Tell me a joke.", false);
    sampled["temperature"] = json!(0.8);
    let r = twice(sampled, vec![]).await;
    assert_eq!((cache(&r[0]), cache(&r[1])), ("bypass", "bypass"));
    let mut default_t = chat("Tell me a joke.", false);
    default_t.as_object_mut().unwrap().remove("temperature");
    assert_eq!(cache(&twice(default_t, vec![]).await[1]), "bypass");
    // no-store: not stored; no-cache: not looked up (but stored).
    let r = twice(chat("Alpha?", false), vec![("cache-control", "no-store")]).await;
    assert_eq!(cache(&r[1]), "miss");
    let r = twice(chat("Beta?", false), vec![("cache-control", "no-cache")]).await;
    assert_eq!((cache(&r[0]), cache(&r[1])), ("bypass", "bypass"));
    assert_eq!(cache(&twice(chat("Beta?", false), vec![]).await[0]), "hit");
    // Provider errors are not stored.
    let r = twice(chat("Gamma?", false), vec![("x-mock-status", "500")]).await;
    assert_eq!((r[0].status, cache(&r[1])), (500, "miss"));
    // Responses over max_entry_bytes are not stored (the echo makes a 3 KB answer).
    let mut long = chat(&"delta ".repeat(500), false);
    long["max_tokens"] = json!(4000);
    let r = twice(long, vec![("x-mock-echo", "1")]).await;
    assert!(r[0].body.len() > 2048);
    assert_eq!((cache(&r[0]), cache(&r[1])), ("miss", "miss"));
    // A malformed body passes through uncached; the provider answers it.
    let r = Client::new()
        .request(
            "POST",
            &envoy.url(CHAT),
            &[("content-type", "application/json"), ("x-tollgate-tenant", "t")],
            b"{oops".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!((r.status, cache(&r)), (400, "bypass"));
    // A stream cut short is not stored; nor is one without usage (nothing to report on a hit).
    let mut cut = chat("Zeta?", true);
    cut["stream_options"] = json!({"include_usage": true});
    let r = Client::new()
        .send(
            "POST",
            &envoy.url(CHAT),
            &[
                ("content-type", "application/json"),
                ("x-tollgate-tenant", "t"),
                ("x-mock-chunks", "6"),
                ("x-mock-reset-after", "3"),
            ],
            serde_json::to_vec(&cut).unwrap(),
        )
        .await
        .unwrap();
    let _ = tollgate_it::client::read(r).await;
    let again = Client::new()
        .post_json(&envoy.url(CHAT), &[("x-tollgate-tenant", "t")], &cut)
        .await
        .unwrap();
    assert_eq!(cache(&again), "miss", "the cut stream was not stored");
    let mut no_usage = chat("Eta?", true);
    no_usage["stream_options"] = json!({"include_usage": false});
    let r = twice(no_usage, vec![]).await;
    assert_eq!((cache(&r[0]), cache(&r[1])), ("miss", "miss"));
    // Requests with several choices are not stored.
    let mut n2 = chat("Epsilon?", false);
    n2["n"] = json!(2);
    assert_eq!(cache(&twice(n2, vec![]).await[1]), "bypass");
    // Only the two "Beta?" lookups after its refresh hit.
    assert_eq!(envoy.stat("wasmcustom.tollgate_response_cache_hits"), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sidecar_down_a_miss_never_an_error() {
    let mock = MockLlm::start().unwrap();
    let down = tollgate_it::ports::free_port().unwrap();
    let envoy = envoy_with(&mock, down, None);
    let q = chat("What colour is the sky?", false);
    let r = send(&envoy, CHAT, Some("t"), &q).await;
    assert_eq!((r.status, cache(&r)), (200, "miss"));
    // Exact entries live in shared data: they still hit.
    let r = send(&envoy, CHAT, Some("t"), &q).await;
    assert_eq!((r.status, cache(&r)), (200, "hit"));
    let r = send(&envoy, CHAT, Some("t"), &chat("Which colour is the sky?", false)).await;
    assert_eq!((r.status, cache(&r)), (200, "miss"));
    assert!(
        envoy
            .stat("wasmcustom.tollgate_response_cache_sidecar_errors")
            .unwrap()
            >= 1
    );
}

/// Two Envoy + sidecar pairs (one per replica) on one Redis: what one stores, the other serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_entries_through_redis() {
    let redis = RedisServer::start().unwrap();
    let mut args = sidecar_args();
    args.extend(["--redis-url".to_owned(), redis.url()]);
    let (sc1, sc2) = (
        Background::start(&args).unwrap(),
        Background::start(&args).unwrap(),
    );
    let mock = MockLlm::start().unwrap();
    let mut cfg = shipped_patient();
    cfg["backend"] = json!("sidecar");
    let e1 = envoy_with(&mock, sc1.addr.port(), Some(&cfg));
    let e2 = envoy_with(&mock, sc2.addr.port(), Some(&cfg));
    let q = "How many legs does a spider have?";
    assert_eq!(cache(&send(&e1, CHAT, Some("t"), &chat(q, false)).await), "miss");
    wait_stores(&sc1, 1.0).await;
    let r = send(&e2, CHAT, Some("t"), &chat(q, false)).await;
    assert_eq!(cache(&r), "hit");
    let r = send(
        &e2,
        CHAT,
        Some("t"),
        &chat("How many legs do spiders have?", true),
    )
    .await;
    assert_eq!(cache(&r), "semantic-hit");
    assert_eq!(sse_data(&r.body).last().unwrap(), "[DONE]");
    assert_eq!(mock.journal.count(), 1);
    assert_eq!(
        cache(&send(&e2, CHAT, Some("other"), &chat(q, false)).await),
        "miss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_rejected_at_load_naming_the_field() {
    let mock = MockLlm::start().unwrap();
    for (cfg, field) in [
        (json!({"scope": "team"}), "scope"),
        (json!({"semantic": {"threshold": 2}}), "semantic.threshold"),
        (json!({"slots": 0}), "slots"),
    ] {
        let opts = Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .wasm_filter_reading_body("response-cache", "response_cache.wasm", &cfg);
        let err = match Envoy::start(opts) {
            Ok(_) => panic!("Envoy accepted {cfg}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("invalid configuration at `{field}")),
            "{field}: {err}"
        );
    }
}

/// Shared data cannot be deleted, so entries live in a fixed number of slots: a new entry in a
/// taken slot evicts the old one (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_slot_space_evicts_the_older_entry() {
    let mock = MockLlm::start().unwrap();
    let cfg = json!({"slots": 1, "semantic": {"enabled": false}});
    let envoy = envoy_with(&mock, 1, Some(&cfg));
    let (a, b) = (chat("First question?", false), chat("Second question?", false));
    assert_eq!(cache(&send(&envoy, CHAT, Some("t"), &a).await), "miss");
    assert_eq!(cache(&send(&envoy, CHAT, Some("t"), &a).await), "hit");
    assert_eq!(cache(&send(&envoy, CHAT, Some("t"), &b).await), "miss");
    assert_eq!(cache(&send(&envoy, CHAT, Some("t"), &b).await), "hit");
    assert_eq!(cache(&send(&envoy, CHAT, Some("t"), &a).await), "miss");
    assert_eq!(
        envoy.stat("wasmcustom.tollgate_response_cache_evictions"),
        Some(2)
    );
    assert_eq!(envoy.stat("wasmcustom.tollgate_response_cache_stores"), Some(3));
}

/// `scope: subject`: one cache per user; requests without a subject are not cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_scope_keeps_users_apart() {
    let mock = MockLlm::start().unwrap();
    let cfg = json!({"scope": "subject", "semantic": {"enabled": false}});
    let envoy = envoy_with(&mock, 1, Some(&cfg));
    let q = chat("What is my plan?", false);
    let as_user = |s: &'static str| {
        let envoy = &envoy;
        let q = q.clone();
        async move {
            let r = Client::new()
                .post_json(
                    &envoy.url(CHAT),
                    &[("x-tollgate-subject", s), ("x-tollgate-tenant", "same")],
                    &q,
                )
                .await
                .unwrap();
            cache(&r).to_owned()
        }
    };
    assert_eq!(as_user("alice").await, "miss");
    assert_eq!(as_user("alice").await, "hit");
    assert_eq!(as_user("bob").await, "miss");
    let r = Client::new()
        .post_json(&envoy.url(CHAT), &[("x-tollgate-tenant", "same")], &q)
        .await
        .unwrap();
    assert_eq!(cache(&r), "bypass");
    assert_eq!(mock.journal.count(), 3);
}

/// Without the buffer filter in front, the body arrives in several callbacks: it is keyed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_several_chunks_is_keyed_whole() {
    let mock = MockLlm::start().unwrap();
    let cfg = json!({"semantic": {"enabled": false}});
    let envoy = Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .without_buffer_filter()
            .wasm_filter_reading_body("response-cache", "response_cache.wasm", &cfg),
    )
    .unwrap();
    let body = serde_json::to_vec(&chat("Chunked question?", false)).unwrap();
    let (a, b) = body.split_at(body.len() / 2);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (status, reply) = tollgate_it::client::post_chunked(
            envoy.port,
            CHAT,
            &[("content-type", "application/json"), ("x-tollgate-tenant", "t")],
            &[a, b],
            Duration::from_millis(100),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
        seen.push(reply);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(mock.journal.count(), 1, "the second was a hit");
}
