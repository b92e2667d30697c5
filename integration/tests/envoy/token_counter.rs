//! The token-counter filter in the real Envoy, in front of the mock provider: counts against Python
//! tiktoken's reference counts, usage from JSON and SSE of both APIs, the include_usage injection
//! and its removal, context limits, budgets under 50 concurrent requests, settlement on abort and
//! on upstream failure, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use std::time::Duration;
use tollgate_it::client::{self, Client, sse_data};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";

fn envoy(mock: &MockLlm, config: &Value, concurrency: u32) -> Result<Envoy, tollgate_it::envoy::Error> {
    let mut opts = Options::new("envoy.yaml")
        .upstream(default_ports::LLM_UPSTREAM, mock.port())
        .wasm_filter("token-counter", "token_counter.wasm", config);
    opts.concurrency = concurrency;
    Envoy::start(opts)
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stat(&format!("wasmcustom.tollgate_token_counter_{name}"))
        .unwrap_or(0)
}

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/token-counts.reference.json"
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Waits until the access log has `n` lines (Envoy writes it when a request ends).
async fn access_log(envoy: &Envoy, n: usize) -> Vec<Value> {
    let log = envoy.wait_access_log(n);
    assert!(log.len() >= n, "access log has fewer than {n} lines:\n{log:?}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_counts_equal_python_tiktoken_reference_counts() {
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(&mock, &json!({"response_headers": true}), 1).unwrap();
    let c = Client::new();
    let r = reference();
    let conversations = r["conversations"].as_object().unwrap();
    assert!(conversations.len() >= 8);
    for (name, conv) in conversations {
        for model in ["gpt-4o", "gpt-4-0613"] {
            let mut req = json!({"model": model, "messages": conv["messages"], "max_tokens": 5});
            if let Some(tools) = conv.get("tools") {
                req["tools"] = tools.clone();
            }
            let resp = c.post_json(&envoy.url(CHAT), &[], &req).await.unwrap();
            assert_eq!(resp.status, 200, "{name}: {}", resp.text());
            let want = conv["prompt_tokens"][model].as_u64().unwrap();
            let got: u64 = resp.header("x-tollgate-prompt-tokens").unwrap().parse().unwrap();
            assert_eq!(got, want, "{name} / {model}");
        }
    }
}

/// The Responses API has no published formula: the reference applies the framing the counter
/// documents to Python `tiktoken`'s counts of each text (`make-token-counts.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_counts_equal_python_tiktoken_reference_counts() {
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(&mock, &json!({"response_headers": true}), 1).unwrap();
    let c = Client::new();
    let r = reference();
    let requests = r["responses"].as_object().unwrap();
    assert!(requests.len() >= 4);
    for (name, case) in requests {
        for model in ["gpt-4o", "gpt-4-0613"] {
            let mut req = case["request"].clone();
            req["model"] = json!(model);
            req["max_output_tokens"] = json!(5);
            let resp = c.post_json(&envoy.url("/v1/responses"), &[], &req).await.unwrap();
            assert_eq!(resp.status, 200, "{name}: {}", resp.text());
            let want = case["input_tokens"][model].as_u64().unwrap();
            let got: u64 = resp.header("x-tollgate-prompt-tokens").unwrap().parse().unwrap();
            assert_eq!(got, want, "{name} / {model}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_cost_from_json_and_streams_of_both_apis() {
    let mock = MockLlm::start().unwrap();
    let config = json!({"tenant_metrics": {"max_tenants": 1}, "models": {
        "gpt-4o*": {"price": {"input": 2.5, "output": 10.0, "cached_input": 1.25}},
        "claude-*": {"price": {"input": 3.0, "output": 15.0, "cached_input": 0.3}}}});
    let envoy = envoy(&mock, &config, 1).unwrap();
    let c = Client::new();
    let msgs = json!([{"role": "user", "content": "Tell me about token accounting in gateways"}]);

    // OpenAI JSON, with provider-cached prompt tokens.
    let r = c
        .post_json(
            &envoy.url(CHAT),
            &[("x-mock-cached-tokens", "4"), ("x-tollgate-tenant", "acme")],
            &json!({"model": "gpt-4o", "messages": msgs}),
        )
        .await
        .unwrap();
    let u = r.json()["usage"].clone();
    let (p, o) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    let log = access_log(&envoy, 1).await;
    let line = &log[0];
    assert_eq!(line["model"], "gpt-4o");
    assert_eq!(line["prompt_tokens"], p.to_string());
    assert_eq!(line["completion_tokens"], o.to_string());
    assert_eq!(line["cache_read_tokens"], "4");
    assert_eq!(
        line["counted_prompt_tokens"],
        p.to_string(),
        "our count equals the provider's"
    );
    let cost = ((p - 4) as f64 * 2.5 + 4.0 * 1.25 + o as f64 * 10.0) / 1e6;
    assert_eq!(line["cost_usd"], format!("{cost:.6}"));

    // OpenAI stream where the client asked for usage: untouched, counted.
    let req = json!({"model": "gpt-4o", "messages": msgs, "stream": true, "stream_options": {"include_usage": true}});
    let direct = c.post_json(&mock.url(CHAT), &[], &req).await.unwrap();
    let r = c
        .post_json(&envoy.url(CHAT), &[("x-tollgate-tenant", "globex")], &req)
        .await
        .unwrap();
    assert_eq!(r.text(), direct.text());
    let log = access_log(&envoy, 2).await;
    assert_eq!(log[1]["prompt_tokens"], p.to_string());
    assert_eq!(log[1]["completion_tokens"], o.to_string());

    // Anthropic JSON and stream: cache reads reported apart from input, never added twice.
    for stream in [false, true] {
        let req = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
                         "system": "Be brief.", "messages": msgs});
        let direct = c
            .post_json(&mock.url("/v1/messages"), &[("x-mock-cached-tokens", "3")], &req)
            .await
            .unwrap();
        let r = c
            .post_json(&envoy.url("/v1/messages"), &[("x-mock-cached-tokens", "3")], &req)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), direct.text(), "stream={stream}");
        let usage = if stream {
            let start: Value = serde_json::from_str(&sse_data(&r.body)[0]).unwrap();
            let mut u = start["message"]["usage"].clone();
            let delta = sse_data(&r.body)
                .iter()
                .map(|d| serde_json::from_str::<Value>(d).unwrap())
                .find(|v| v["type"] == "message_delta")
                .unwrap();
            u["output_tokens"] = delta["usage"]["output_tokens"].clone();
            u
        } else {
            r.json()["usage"].clone()
        };
        let log = access_log(&envoy, 3 + usize::from(stream)).await;
        let line = log.last().unwrap();
        let input = usage["input_tokens"].as_u64().unwrap();
        assert_eq!(
            line["prompt_tokens"],
            (input + 3).to_string(),
            "input + cache read"
        );
        assert_eq!(line["cache_read_tokens"], "3");
        assert_eq!(
            line["completion_tokens"],
            usage["output_tokens"].as_u64().unwrap().to_string()
        );
        let out = usage["output_tokens"].as_u64().unwrap() as f64;
        let cost = (input as f64 * 3.0 + 3.0 * 0.3 + out * 15.0) / 1e6;
        assert_eq!(line["cost_usd"], format!("{cost:.6}"));
    }
    assert!(stat(&envoy, "prompt_tokens.model.gpt-4o") >= 2 * p);
    assert!(stat(&envoy, "cost_micro_usd.model.claude-sonnet-4-5") > 0);
    // The model is a Prometheus label (stats_tags in envoy.yaml).
    let prom = c.get(&envoy.admin_url("/stats/prometheus")).await.unwrap().text();
    assert!(
        prom.lines()
            .any(|l| l.starts_with("tollgate_token_counter_prompt_tokens{model=\"gpt-4o\"}")),
        "{prom}"
    );
    // Tenants are labels up to max_tenants (1 here); later ones count under `other`.
    let value = |series: &str| -> u64 {
        prom.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not in {prom}"))
    };
    assert_eq!(
        value("tollgate_token_counter_tenant_tokens{tenant=\"acme\"}"),
        p + o
    );
    assert_eq!(
        value("tollgate_token_counter_tenant_tokens{tenant=\"other\"}"),
        p + o
    );
}

/// The snippet users copy (envoy/filters/token-counter.yaml) loads as shipped and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_envoy_snippet_works() {
    let mock = MockLlm::start().unwrap();
    let mut opts = Options::new("envoy.yaml")
        .upstream(default_ports::LLM_UPSTREAM, mock.port())
        .snippet("token-counter.yaml");
    opts.concurrency = 2;
    let envoy = Envoy::start(opts).unwrap();
    let r = Client::new()
        .post_json(&envoy.url(CHAT), &[], &chat_req("hello from the snippet", 20))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt: u64 = r.header("x-tollgate-prompt-tokens").unwrap().parse().unwrap();
    let left: u64 = r.header("x-tollgate-budget-remaining").unwrap().parse().unwrap();
    assert_eq!(
        left,
        200_000 - prompt - 20,
        "anonymous callers share the per-minute budget"
    );
    // Each of `n` choices may use max_tokens: all of them are reserved.
    let mut three = chat_req("three choices please", 20);
    three["n"] = json!(3);
    let r = Client::new()
        .post_json(&envoy.url(CHAT), &[("x-tollgate-subject", "chooser")], &three)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt: u64 = r.header("x-tollgate-prompt-tokens").unwrap().parse().unwrap();
    let left: u64 = r.header("x-tollgate-budget-remaining").unwrap().parse().unwrap();
    assert_eq!(left, 200_000 - prompt - 3 * 20);
    three["n"] = json!("8");
    let r = Client::new()
        .post_json(&envoy.url(CHAT), &[("x-tollgate-subject", "chooser")], &three)
        .await
        .unwrap();
    assert_eq!(r.status, 400, "a string `n` cannot dodge the reservation");
    // Embeddings have no completion: they reserve their input only.
    let r = Client::new()
        .post_json(
            &envoy.url("/v1/embeddings"),
            &[("x-tollgate-subject", "embedder")],
            &json!({"model": "text-embedding-3-small", "input": ["hello embeddings", "and more"]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt: u64 = r.header("x-tollgate-prompt-tokens").unwrap().parse().unwrap();
    assert_eq!(prompt, r.json()["usage"]["prompt_tokens"].as_u64().unwrap());
    let left: u64 = r.header("x-tollgate-budget-remaining").unwrap().parse().unwrap();
    assert_eq!(left, 200_000 - prompt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_streams_get_usage_injected_and_the_extra_chunk_removed() {
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(&mock, &json!({}), 1).unwrap();
    let c = Client::new();
    let req = json!({"model": "gpt-4o-mini", "stream": true,
                     "messages": [{"role": "user", "content": "Stream me a few words please"}]});
    // Small chunks so events straddle body chunks.
    let h = [("x-mock-chunks", "12")];
    let r = c.post_json(&envoy.url(CHAT), &h, &req).await.unwrap();
    assert_eq!(r.status, 200);
    let upstream: Value = mock.journal.last().unwrap().json().unwrap();
    assert_eq!(
        upstream["stream_options"]["include_usage"], true,
        "the filter asked for usage"
    );

    // What the client gets equals what the provider sends a client that did not ask, except that
    // each chunk carries `"usage": null` (the provider's shape once usage was requested).
    let data = sse_data(&r.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "no usage-only chunk"
    );
    let plain = c.post_json(&mock.url(CHAT), &h, &req).await.unwrap();
    let plain_data = sse_data(&plain.body);
    assert_eq!(data.len(), plain_data.len());
    let text = |d: &[String]| -> String {
        d.iter()
            .filter_map(|x| serde_json::from_str::<Value>(x).ok())
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(text(&data), text(&plain_data));

    let with_usage = mock.journal.requests().iter().rev().nth(1).unwrap().body.clone();
    let direct = c
        .request(
            "POST",
            &mock.url(CHAT),
            &[("content-type", "application/json"), h[0]],
            with_usage,
        )
        .await
        .unwrap();
    let usage: Value = serde_json::from_str(&sse_data(&direct.body)[data.len() - 1]).unwrap();
    let log = access_log(&envoy, 1).await;
    assert_eq!(
        log[0]["completion_tokens"],
        usage["usage"]["completion_tokens"].as_u64().unwrap().to_string()
    );
    assert_eq!(stat(&envoy, "usage_chunks_removed"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_overflow_is_refused_before_the_upstream_sees_the_body() {
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(
        &mock,
        &json!({"models": {"gpt-4o-mini": {"max_context_tokens": 50}}}),
        1,
    )
    .unwrap();
    let c = Client::new();
    let small =
        json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        c.post_json(&envoy.url(CHAT), &[], &small).await.unwrap().status,
        200
    );
    let before = mock.journal.count();
    let big = json!({"model": "gpt-4o-mini", "max_tokens": 40,
                     "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}]});
    let r = c.post_json(&envoy.url(CHAT), &[], &big).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let err = r.json();
    assert_eq!(err["error"]["code"], "context_length_exceeded");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("maximum context length is 50 tokens"), "{msg}");
    assert!(msg.contains("40 in the completion"), "{msg}");
    assert_eq!(mock.journal.count(), before, "the provider never got the request");
    assert_eq!(stat(&envoy, "context_rejections.model.gpt-4o-mini"), 1);
}

/// An hour window: the assertions compare the ledger before and after a burst, so a window that
/// rolls over in between would reset it. Tests that read the ledger call `clear_of_window_edge`.
fn budget_config(limit: u64) -> Value {
    json!({"response_headers": true,
           "budgets": {"rules": [{"name": "per-hour", "window": "hour", "tokens": limit}]}})
}

/// Waits, if needed, until the current hour window has at least two minutes left, so a test's
/// ledger reads all fall inside one window (windows are aligned to the Unix epoch, as Envoy's clock).
async fn clear_of_window_edge() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 3600 - now % 3600;
    if left < 120 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

fn chat_req(text: &str, max_tokens: u64) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_never_overshoot_the_budget() {
    clear_of_window_edge().await;
    let mock = MockLlm::start().unwrap();
    // Learn the reservation size (prompt + max_tokens) from one request on an unlimited Envoy.
    let probe = envoy(&mock, &json!({"response_headers": true}), 1).unwrap();
    let req = chat_req("Write a haiku about budgets and gateways", 40);
    let c = Client::new();
    let r = c.post_json(&probe.url(CHAT), &[], &req).await.unwrap();
    let prompt: u64 = r.header("x-tollgate-prompt-tokens").unwrap().parse().unwrap();
    drop(probe);
    let reservation = prompt + 40;
    let limit = 10 * reservation + reservation / 2;

    let envoy = envoy(&mock, &budget_config(limit), 2).unwrap();
    let url = envoy.url(CHAT);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, url, req) = (c.clone(), url.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            // Requests overlap: the provider takes 300 ms, so every reservation is made before any
            // is settled.
            c.post_json(
                &url,
                &[("x-tollgate-subject", "alice"), ("x-mock-latency-ms", "300")],
                &req,
            )
            .await
            .unwrap()
        }));
    }
    let mut used = 0;
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => {
                ok += 1;
                used += r.json()["usage"]["total_tokens"].as_u64().unwrap();
            }
            429 => {
                limited += 1;
                assert_eq!(r.json()["error"]["code"], "budget_exceeded");
                let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=3600).contains(&retry), "{retry}: within the hour window");
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    eprintln!("{ok} admitted, {limited} limited, {used} of {limit} tokens used");
    assert!(ok >= 10, "reservations fill the budget: {ok}");
    assert!(limited >= 1);
    assert!(used <= limit, "{ok} requests used {used} of {limit}");
    assert_eq!(ok + limited, 50);
    assert_eq!(stat(&envoy, "budget_rejections.rule.per-hour"), limited);

    // Another identity has its own budget.
    let r = c
        .post_json(&url, &[("x-tollgate-subject", "bob")], &req)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // No identity: refused (budgets need one by default).
    let r = c.post_json(&url, &[], &req).await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "identity_required");
}

/// Envoy's CAS does not guard a key's first write, so every ledger slot is created at configure
/// time and every reservation is conditional. 40 identities that were never charged (fresh slots)
/// each get a burst of 10 overlapping requests spread over 2 workers; afterwards each identity's
/// ledger must equal the sum of the usage its admitted requests were charged, and no burst may be
/// admitted past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_reservations_on_fresh_slots_from_two_workers_lose_no_charge() {
    clear_of_window_edge().await;
    let mock = MockLlm::start().unwrap();
    let c = Client::new();
    let req = chat_req("Write a haiku about ledgers", 40);
    let probe_req = chat_req("Write a haiku about ledgers", 1);
    let unlimited = envoy(&mock, &budget_config(1_000_000_000), 1).unwrap();
    let r = c
        .post_json(&unlimited.url(CHAT), &[("x-tollgate-subject", "probe")], &req)
        .await
        .unwrap();
    let prompt: u64 = r.header("x-tollgate-prompt-tokens").unwrap().parse().unwrap();
    drop(unlimited);
    let reservation = prompt + 40;
    let limit = 5 * reservation + reservation / 2;

    let chain = envoy(&mock, &budget_config(limit), 2).unwrap();
    let url = chain.url(CHAT);
    let subjects: Vec<String> = (0..40).map(|i| format!("fresh-{i}")).collect();
    let mut tasks = Vec::new();
    for s in &subjects {
        for _ in 0..10 {
            let (c, url, req, s) = (c.clone(), url.clone(), req.clone(), s.clone());
            tasks.push(tokio::spawn(async move {
                let r = c
                    .post_json(
                        &url,
                        &[("x-tollgate-subject", &s), ("x-mock-latency-ms", "200")],
                        &req,
                    )
                    .await
                    .unwrap();
                (s, r)
            }));
        }
    }
    let mut charged: std::collections::HashMap<String, (u64, u64)> = Default::default();
    for t in tasks {
        let (s, r) = t.await.unwrap();
        let e = charged.entry(s).or_default();
        match r.status {
            200 => {
                e.0 += 1;
                e.1 += r.json()["usage"]["total_tokens"].as_u64().unwrap();
            }
            429 => assert_eq!(r.json()["error"]["code"], "budget_exceeded"),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    // Settlement runs when each stream ends, just after the client has its answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &subjects {
        let (admitted, used) = charged.get(s).copied().unwrap_or_default();
        assert!(
            (1..=5).contains(&admitted),
            "{s}: {admitted} admitted past a limit of 5 reservations"
        );
        let r = c
            .post_json(&url, &[("x-tollgate-subject", s)], &probe_req)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{s}: {}", r.text());
        let left: u64 = r.header("x-tollgate-budget-remaining").unwrap().parse().unwrap();
        assert_eq!(
            left,
            limit - used - (prompt + 1),
            "{s}: the ledger lost a charge ({admitted} admitted, {used} tokens used)"
        );
    }
}

async fn remaining(c: &Client, envoy: &Envoy, subject: &str, req: &Value) -> (u64, u64) {
    let r = c
        .post_json(&envoy.url(CHAT), &[("x-tollgate-subject", subject)], req)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let left = r.header("x-tollgate-budget-remaining").unwrap().parse().unwrap();
    (left, r.json()["usage"]["total_tokens"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_settle_with_real_usage_on_success_failure_and_abort() {
    clear_of_window_edge().await;
    let mock = MockLlm::start().unwrap();
    let limit = 100_000;
    let envoy = envoy(&mock, &budget_config(limit), 1).unwrap();
    let c = Client::new();
    let req = chat_req("Count my tokens", 50);
    let reservation = {
        let r = c
            .post_json(&envoy.url(CHAT), &[("x-tollgate-subject", "probe")], &req)
            .await
            .unwrap();
        let p: u64 = r.header("x-tollgate-prompt-tokens").unwrap().parse().unwrap();
        p + 50
    };

    // Success: the reservation is replaced by the real usage.
    let (left1, used1) = remaining(&c, &envoy, "carol", &req).await;
    assert_eq!(left1, limit - reservation);
    let (left2, used2) = remaining(&c, &envoy, "carol", &req).await;
    assert_eq!(
        left2,
        limit - used1 - reservation,
        "first request settled at {used1}"
    );

    // Upstream failure: nothing billed, the reservation is released.
    let r = c
        .post_json(
            &envoy.url(CHAT),
            &[("x-tollgate-subject", "carol"), ("x-mock-status", "500")],
            &req,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 500);
    let (left3, used3) = remaining(&c, &envoy, "carol", &req).await;
    assert_eq!(
        left3,
        limit - used1 - used2 - reservation,
        "the failed request was released"
    );

    // A success without usage: the reservation stands as the charge, and a metric says so.
    let r = c
        .post_json(
            &envoy.url(CHAT),
            &[("x-tollgate-subject", "carol"), ("x-mock-no-usage", "1")],
            &req,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.json().get("usage").is_none());
    let (left4, used4) = remaining(&c, &envoy, "carol", &req).await;
    assert_eq!(left4, limit - used1 - used2 - used3 - reservation - reservation);
    assert_eq!(stat(&envoy, "responses_without_usage"), 1);

    // The client goes away mid-stream: settled when Envoy ends the request, reservation kept.
    let mut stream_req = req.clone();
    stream_req["stream"] = json!(true);
    let resp = c
        .send(
            "POST",
            &envoy.url(CHAT),
            &[
                ("content-type", "application/json"),
                ("x-tollgate-subject", "carol"),
                ("x-mock-chunks", "40"),
                ("x-mock-chunk-delay-ms", "50"),
            ],
            serde_json::to_vec(&stream_req).unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    assert!(client::next_chunk(&mut body).await.unwrap().is_some());
    drop(body);
    for _ in 0..100 {
        if stat(&envoy, "aborted") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stat(&envoy, "aborted"), 1, "{}", envoy.log());
    let (left5, _) = remaining(&c, &envoy, "carol", &req).await;
    assert_eq!(
        left5,
        limit - used1 - used2 - used3 - reservation - used4 - reservation - reservation,
        "the aborted stream keeps its reservation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_answer_and_the_vm_keeps_serving() {
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(&mock, &json!({"max_body_bytes": 4096}), 1).unwrap();
    let c = Client::new();
    let post = |body: Vec<u8>| {
        let c = c.clone();
        let url = envoy.url(CHAT);
        async move {
            c.request("POST", &url, &[("content-type", "application/json")], body)
                .await
                .unwrap()
        }
    };
    for body in [&b"{not json"[..], b"\xff\xfe\x00", b"{\"model\": 7}", b"[]", b""] {
        let r = post(body.to_vec()).await;
        if body.is_empty() {
            // No body: nothing to count, the provider answers.
            assert_eq!(r.status, 400, "{}", r.text());
            continue;
        }
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_request_body", "{body:?}");
    }
    let big = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let r = c.post_json(&envoy.url(CHAT), &[], &big).await.unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    // Unknown model: counted with the default encoding, passed on.
    let r = c
        .post_json(
            &envoy.url(CHAT),
            &[],
            &json!({"model": "my-local-llama", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // Not an LLM API path: untouched.
    let r = c.get(&envoy.url("/v1/models")).await.unwrap();
    assert_eq!(r.status, 404);
    // The stream is cut mid-way by the provider: the client gets every byte sent, the VM lives on.
    let stream = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "cut me off please now"}]});
    let r = c
        .post_json(&envoy.url(CHAT), &[("x-mock-reset-after", "3")], &stream)
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status, 200);
    }
    // A rejected value never reaches the log (nor the reply): it may be prompt text.
    let r = post(br#"{"model":"gpt-4o","messages":[],"max_tokens":"SECRET-PROMPT-TEXT"}"#.to_vec()).await;
    assert_eq!(r.status, 400);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("invalid type: string \"…\", expected u64"), "{msg}");
    assert!(!envoy.log().contains("SECRET-PROMPT-TEXT"), "{}", envoy.log());
    assert_eq!(stat(&envoy, "invalid_requests"), 5);
    for _ in 0..50 {
        if stat(&envoy, "streams_cut") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stat(&envoy, "streams_cut"), 1, "the reset stream is counted");
    let ok = c
        .post_json(
            &envoy.url(CHAT),
            &[],
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "still alive?"}]}),
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    assert!(!envoy.log().contains("panic"), "{}", envoy.log());
}

#[test]
fn bad_configs_are_rejected_at_load_naming_the_field() {
    let mock = MockLlm::start().unwrap();
    let cases = [
        (
            json!({"models": {"gpt-4o": {"max_context_tokens": 0}}}),
            "models.gpt-4o.max_context_tokens",
        ),
        (
            json!({"budgets": {"rules": [{"name": "a", "window": "fortnight", "tokens": 5}]}}),
            "budgets.rules[0].window",
        ),
        (
            json!({"budgets": {"rules": [{"name": "a", "group": "gold", "window": "day", "tokens": 5}]}}),
            "budgets.rules[0].group",
        ),
        (json!({"default_encodng": "cl100k_base"}), "default_encodng"),
    ];
    for (config, field) in cases {
        let err = match envoy(&mock, &config, 1) {
            Ok(_) => panic!("Envoy accepted {config}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("invalid configuration at `{field}`")),
            "{field}: {err}"
        );
    }
}

fn sidecar_budget_config(limit: u64, failure_mode: &str) -> Value {
    json!({"response_headers": true,
           "budgets": {"backend": "sidecar", "failure_mode": failure_mode, "sidecar": {"timeout_ms": 1000},
                       "rules": [{"name": "per-hour", "window": "hour", "tokens": limit}]}})
}

fn envoy_with_sidecar(mock: &MockLlm, sidecar_port: u16, config: &Value) -> Envoy {
    Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .upstream(default_ports::SIDECAR, sidecar_port)
            .wasm_filter("token-counter", "token_counter.wasm", config),
    )
    .unwrap()
}

fn sidecar_on(redis: &sidecar_testkit::RedisServer) -> sidecar_testkit::Background {
    let root = tollgate_it::repo_root();
    let args: Vec<String> = [
        "--model-dir",
        &root.join("models/all-MiniLM-L6-v2").display().to_string(),
        "--redis-url",
        &redis.url(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    sidecar_testkit::Background::start(&args).unwrap()
}

/// Two Envoy replicas, each with its own sidecar, both sidecars on one Redis: one budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_budget_through_the_sidecar_on_redis() {
    clear_of_window_edge().await;
    let redis = sidecar_testkit::RedisServer::start().unwrap();
    let (sc1, sc2) = (sidecar_on(&redis), sidecar_on(&redis));
    let mock = MockLlm::start().unwrap();
    // max_tokens well above what the mock writes, so settling with the real usage frees room.
    let req = chat_req("Share this budget across replicas", 200);
    let c = Client::new();
    let reservation = {
        let probe = envoy(&mock, &json!({"response_headers": true}), 1).unwrap();
        let r = c.post_json(&probe.url(CHAT), &[], &req).await.unwrap();
        r.header("x-tollgate-prompt-tokens")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            + 200
    };
    let limit = 4 * reservation + reservation / 2;
    let config = sidecar_budget_config(limit, "closed");
    let e1 = envoy_with_sidecar(&mock, sc1.addr.port(), &config);
    let e2 = envoy_with_sidecar(&mock, sc2.addr.port(), &config);

    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = if i % 2 == 0 { e1.url(CHAT) } else { e2.url(CHAT) };
        let (c, req) = (c.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            // The provider takes 1.5 s, so every reservation is made before any is settled, even
            // on a loaded machine: exactly four fit.
            c.post_json(
                &url,
                &[("x-tollgate-subject", "dave"), ("x-mock-latency-ms", "1500")],
                &req,
            )
            .await
            .unwrap()
        }));
    }
    let (mut ok, mut used) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => {
                ok += 1;
                used += r.json()["usage"]["total_tokens"].as_u64().unwrap();
            }
            429 => assert!(r.header("retry-after").is_some()),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    eprintln!("{ok} of 20 admitted across two replicas, {used} of {limit} tokens used");
    assert_eq!(ok, 4, "both replicas drew on one budget of four reservations");
    assert!(used <= limit);

    // Settlement reaches Redis through the sidecar: once it has, a reservation on the other replica
    // sees the real usage. (The probe fails upstream, so it releases its own reservation.)
    let want = limit - used - reservation;
    let mut seen = Vec::new();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = c
            .post_json(
                &e2.url(CHAT),
                &[("x-tollgate-subject", "dave"), ("x-mock-status", "500")],
                &req,
            )
            .await
            .unwrap();
        seen.push((
            r.status,
            r.header("x-tollgate-budget-remaining").map(str::to_owned),
        ));
        if r.status == 500 && r.header("x-tollgate-budget-remaining") == Some(want.to_string().as_str()) {
            break;
        }
    }
    assert_eq!(
        seen.last().unwrap(),
        &(500, Some(want.to_string())),
        "remaining after settlement; seen {seen:?}"
    );
    drop((e1, e2));
    sc1.stop();
    sc2.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_store_that_does_not_answer_fails_closed_or_open_as_configured() {
    let mock = MockLlm::start().unwrap();
    let dead = tollgate_it::ports::free_port().unwrap();
    let c = Client::new();
    let req = chat_req("Is anyone keeping count?", 10);
    let h = [("x-tollgate-subject", "frank")];
    let closed = envoy_with_sidecar(&mock, dead, &sidecar_budget_config(10_000, "closed"));
    let r = c.post_json(&closed.url(CHAT), &h, &req).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "budget_unavailable");
    drop(closed);
    let open = envoy_with_sidecar(&mock, dead, &sidecar_budget_config(10_000, "open"));
    let r = c.post_json(&open.url(CHAT), &h, &req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(stat(&open, "budget_errors") >= 1);
}
