//! OpenAI's Responses API (`POST /v1/responses`, JSON and SSE) through the shipped filters, as far
//! as it is handled today: the token counter counts it, enforces the context window with
//! `max_output_tokens`, reserves and settles with the provider's usage (cached tokens apart), and
//! leaves the typed event stream as the provider sent it; the cache never stores it; the moderator,
//! which cannot yet moderate its output streams, refuses it rather than pass it unread; the other
//! `/v1/responses/…` paths (read, list input items, cancel, delete) pass through untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_it::client::{Client, Response};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

const RESPONSES: &str = "/v1/responses";

fn envoy(mock: &MockLlm, snippet: &str) -> Envoy {
    Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .snippet(snippet),
    )
    .unwrap()
}

fn request(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "temperature": 0, "max_output_tokens": 64,
           "instructions": "Answer briefly.",
           "input": [{"role": "user", "content": [{"type": "input_text", "text": "What does a gateway do?"}]}]})
}

async fn send(envoy: &Envoy, body: &Value, extra: &[(&str, &str)]) -> Response {
    let mut h = vec![("x-tollgate-subject", "alice")];
    h.extend_from_slice(extra);
    Client::new()
        .post_json(&envoy.url(RESPONSES), &h, body)
        .await
        .unwrap()
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stat(&format!("wasmcustom.tollgate_token_counter_{name}"))
        .unwrap_or(0)
}

/// The events of a Responses stream, `(event name, data)`, after checking the SSE framing: the
/// `event:` name is the data's `type`, and the sequence numbers run 0, 1, 2, ….
fn events(r: &Response) -> Vec<Value> {
    let mut out = Vec::new();
    let mut parsed = Vec::new();
    let _ = filter_core::sse::SseParser::default().feed(r.body.as_ref(), &mut parsed);
    for (i, e) in parsed.iter().enumerate() {
        let v: Value = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
        assert_eq!(e.event.as_deref(), v["type"].as_str(), "{v}");
        assert_eq!(v["sequence_number"].as_u64(), Some(i as u64), "{v}");
        out.push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_counter_counts_limits_and_settles_the_responses_api() {
    // The snippet's budget window is a minute: its reads below must fall in one window.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if 60 - now % 60 < 20 {
        tokio::time::sleep(std::time::Duration::from_secs(60 - now % 60 + 1)).await;
    }
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(&mock, "token-counter.yaml");

    // JSON: counted from the body, charged what the provider reports (cached tokens apart).
    let r = send(&envoy, &request(false), &[("x-mock-cached-tokens", "5")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    let counted: u64 = r.header("x-tollgate-prompt-tokens").unwrap().parse().unwrap();
    let input = v["usage"]["input_tokens"].as_u64().unwrap();
    let output = v["usage"]["output_tokens"].as_u64().unwrap();
    assert!(
        counted.abs_diff(input) <= 8,
        "estimate {counted} vs the provider's {input}"
    );
    assert_eq!(
        stat(&envoy, "prompt_tokens.model.gpt-4o-mini"),
        input,
        "all input, cached included"
    );
    assert_eq!(stat(&envoy, "cache_read_tokens.model.gpt-4o-mini"), 5);
    assert_eq!(stat(&envoy, "completion_tokens.model.gpt-4o-mini"), output);
    let left_after_one: u64 = r.header("x-tollgate-budget-remaining").unwrap().parse().unwrap();

    // Streamed: the typed events pass as sent (no usage injected, numbering intact); the usage of
    // response.completed is what is charged.
    let r = send(&envoy, &request(true), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let evs = events(&r);
    assert_eq!(evs.first().unwrap()["type"], "response.created");
    let done = evs.last().unwrap();
    assert_eq!(done["type"], "response.completed");
    let text: String = evs
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, done["response"]["output"][0]["content"][0]["text"]);
    assert_eq!(
        stat(&envoy, "completion_tokens.model.gpt-4o-mini"),
        output + done["response"]["usage"]["output_tokens"].as_u64().unwrap()
    );
    let recorded = mock.journal.last().unwrap().json().unwrap();
    assert_eq!(recorded, request(true), "the request went on as sent");

    // The settlement freed the reservation: the next request sees the budget less what was used.
    let r = send(&envoy, &request(false), &[]).await;
    let left: u64 = r.header("x-tollgate-budget-remaining").unwrap().parse().unwrap();
    assert!(
        left < left_after_one && left_after_one - left < 1000,
        "{left_after_one} then {left}"
    );

    // The context window counts max_output_tokens.
    let mut big = request(false);
    big["max_output_tokens"] = json!(200_000);
    let before = mock.journal.count();
    let r = send(&envoy, &big, &[]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    assert_eq!(mock.journal.count(), before);

    // A function call streams as argument deltas and is counted like any answer.
    let mut tools = request(true);
    tools["tools"] = json!([{"type": "function", "name": "send_mail", "parameters": {"type": "object"}}]);
    let r = send(&envoy, &tools, &[("x-mock-tool-call", r#"{"to":"finance"}"#)]).await;
    let evs = events(&r);
    let args: String = evs
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, r#"{"to":"finance"}"#);
    assert_eq!(
        evs.last().unwrap()["response"]["output"][0]["type"],
        "function_call"
    );

    // The stored-response paths pass untouched and are not counted.
    let counted_before = stat(&envoy, "prompt_tokens.model.gpt-4o-mini");
    for (method, path) in [
        ("GET", "/v1/responses/resp_1"),
        ("GET", "/v1/responses/resp_1/input_items"),
        ("POST", "/v1/responses/resp_1/cancel"),
        ("DELETE", "/v1/responses/resp_1"),
    ] {
        let _ = Client::new()
            .request(method, &envoy.url(path), &[("x-tollgate-subject", "alice")], "")
            .await
            .unwrap();
        let seen = mock.journal.last().unwrap();
        assert_eq!((seen.method.as_str(), seen.path.as_str()), (method, path));
    }
    assert_eq!(stat(&envoy, "prompt_tokens.model.gpt-4o-mini"), counted_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_never_stores_it_and_the_moderator_refuses_what_it_cannot_read() {
    let mock = MockLlm::start().unwrap();
    let cache = envoy(&mock, "response-cache.yaml");
    for stream in [false, true] {
        let before = mock.journal.count();
        for _ in 0..2 {
            let r = send(&cache, &request(stream), &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_ne!(r.header("x-tollgate-cache"), Some("hit"));
        }
        assert_eq!(
            mock.journal.count(),
            before + 2,
            "stream {stream}: served from the cache"
        );
    }

    let moderated = envoy(&mock, "content-moderator.yaml");
    let before = mock.journal.count();
    let r = send(&moderated, &request(true), &[]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unsupported_api");
    assert_eq!(
        mock.journal.count(),
        before,
        "an unread request reached the provider"
    );
    // Without a body (reading a stored response) there is nothing to moderate.
    let r = Client::new()
        .get(&moderated.url("/v1/responses/resp_1"))
        .await
        .unwrap();
    assert_eq!(r.status, 404, "the mock's answer, passed on: {}", r.text());
    assert_eq!(mock.journal.last().unwrap().path, "/v1/responses/resp_1");
}
