//! The foundation's contract with Envoy: requests of both APIs, streaming and not, pass through the
//! demo chain byte-for-byte, and bodies over the gateway's limit get 413 in the OpenAI error shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a test failure

use serde_json::{Value, json};
use tollgate_it::client::{self, Client, sse_data};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

fn stack() -> (MockLlm, Envoy) {
    let mock = MockLlm::start().expect("mock starts");
    let envoy = Envoy::start(Options::new("envoy.yaml").upstream(default_ports::LLM_UPSTREAM, mock.port()))
        .expect("envoy starts");
    (mock, envoy)
}

/// Sends `body` to `path` directly and through Envoy; both must answer the same status,
/// content-type and body bytes.
async fn assert_identical(
    mock: &MockLlm,
    envoy: &Envoy,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> client::Response {
    let c = Client::new();
    let direct = c.post_json(&mock.url(path), headers, body).await.unwrap();
    let proxied = c.post_json(&envoy.url(path), headers, body).await.unwrap();
    assert_eq!(proxied.status, direct.status, "{path}: {}", proxied.text());
    assert_eq!(proxied.header("content-type"), direct.header("content-type"));
    assert_eq!(
        proxied.text(),
        direct.text(),
        "{path}: body differs through Envoy"
    );
    proxied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chat_json_and_stream_pass_through_unchanged() {
    let (mock, envoy) = stack();
    let req = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to the gateway"}]});
    let r = assert_identical(&mock, &envoy, "/v1/chat/completions", &req, &[]).await;
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let mut stream_req = req.clone();
    stream_req["stream"] = json!(true);
    stream_req["stream_options"] = json!({"include_usage": true});
    let r = assert_identical(&mock, &envoy, "/v1/chat/completions", &stream_req, &[]).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream; charset=utf-8"));
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], v["usage"]["prompt_tokens"]);
    // The streamed deltas add up to the non-streamed answer.
    let text: String = data[..data.len() - 2]
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, v["choices"][0]["message"]["content"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_json_and_stream_pass_through_unchanged() {
    let (mock, envoy) = stack();
    let req = json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "system": "Be brief.",
                     "messages": [{"role": "user", "content": "Hello there, Claude"}]});
    let headers = [("x-api-key", "test"), ("anthropic-version", "2023-06-01")];
    let r = assert_identical(&mock, &envoy, "/v1/messages", &req, &headers).await;
    assert_eq!(r.json()["type"], "message");

    let mut stream_req = req.clone();
    stream_req["stream"] = json!(true);
    let r = assert_identical(&mock, &envoy, "/v1/messages", &stream_req, &headers).await;
    let mut events = Vec::new();
    filter_core::sse::SseParser::default()
        .feed(&r.body, &mut events)
        .unwrap();
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_delta") && names.contains(&"message_delta"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_embeddings_pass_through_unchanged() {
    let (mock, envoy) = stack();
    let req = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 5,
                     "stream": true, "stream_options": {"include_usage": true}});
    assert_identical(&mock, &envoy, "/v1/completions", &req, &[]).await;
    let req = json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 8});
    let r = assert_identical(&mock, &envoy, "/v1/embeddings", &req, &[]).await;
    assert_eq!(r.json()["data"][1]["embedding"].as_array().unwrap().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_gets_413_in_openai_shape() {
    let (mock, envoy) = stack();
    let big = "x".repeat(1_100_000);
    let req = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": big}]});
    let r = Client::new()
        .post_json(&envoy.url("/v1/chat/completions"), &[], &req)
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"]["code"], "request_too_large");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        mock.journal.count(),
        0,
        "the upstream never saw the oversized request"
    );

    // Just under the limit passes.
    let ok = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "y".repeat(1_000_000)}]});
    let r = Client::new()
        .post_json(&envoy.url("/v1/chat/completions"), &[], &ok)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_pass_through_and_no_upstream_is_a_json_503() {
    let (mock, envoy) = stack();
    let req = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let r = Client::new()
        .post_json(
            &envoy.url("/v1/chat/completions"),
            &[("x-mock-status", "429")],
            &req,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    drop(mock);
    // With the upstream gone, Envoy's own reply keeps the OpenAI error shape.
    let r = Client::new()
        .post_json(&envoy.url("/v1/chat/completions"), &[], &req)
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "upstream_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_arrive_incrementally_and_a_reset_mid_stream_reaches_the_client() {
    let (_mock, envoy) = stack();
    let req = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let c = Client::new();
    let headers = [
        ("content-type", "application/json"),
        ("x-mock-chunks", "5"),
        ("x-mock-chunk-bytes", "10"),
        ("x-mock-chunk-delay-ms", "150"),
    ];
    let start = std::time::Instant::now();
    let resp = c
        .send(
            "POST",
            &envoy.url("/v1/chat/completions"),
            &headers,
            serde_json::to_vec(&req).unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = client::next_chunk(&mut body).await.unwrap().unwrap();
    // The first event arrives long before the whole stream (5 × 150 ms) could have been produced.
    assert!(
        start.elapsed() < std::time::Duration::from_millis(600),
        "first chunk after {:?}",
        start.elapsed()
    );
    assert!(first.starts_with(b"data: "));
    while client::next_chunk(&mut body).await.unwrap().is_some() {}

    let headers = [("content-type", "application/json"), ("x-mock-reset-after", "2")];
    let resp = c
        .send(
            "POST",
            &envoy.url("/v1/chat/completions"),
            &headers,
            serde_json::to_vec(&req).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got_error = false;
    loop {
        match client::next_chunk(&mut body).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                got_error = true;
                break;
            }
        }
    }
    assert!(
        got_error,
        "a reset upstream must not look like a complete stream to the client"
    );
}
