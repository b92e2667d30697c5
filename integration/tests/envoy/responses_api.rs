//! OpenAI's Responses API (`POST /v1/responses`, JSON and SSE) through the shipped filters, as far
//! as it is handled today: the token counter counts it, enforces the context window with
//! `max_output_tokens`, reserves and settles with the provider's usage (cached tokens apart), and
//! leaves the typed event stream as the provider sent it; the cache never stores it; the moderator
//! reads every input text and moderates the output, streamed or not; a compaction
//! (`POST /v1/responses/compact`) is moderated, charged and never cached; the other
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
    // The identities jwt-auth would set: the cache's scope is the tenant.
    let mut h = vec![("x-tollgate-subject", "alice"), ("x-tollgate-tenant", "acme")];
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

    // Counting input tokens generates nothing: passed, never charged or held to the context window.
    let huge = json!({"model": "gpt-4o-mini", "input": "word ".repeat(150_000)});
    let r = Client::new()
        .post_json(
            &envoy.url("/v1/responses/input_tokens"),
            &[("x-tollgate-subject", "alice")],
            &huge,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 100_000);
    assert_eq!(stat(&envoy, "prompt_tokens.model.gpt-4o-mini"), counted_before);

    // A compaction (`POST /v1/responses/compact`) is billed: charged what its usage reports.
    let completion_before = stat(&envoy, "completion_tokens.model.gpt-4o-mini");
    let compact = json!({"model": "gpt-4o-mini", "input": [
        {"role": "user", "content": "What does a gateway do?"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "It routes requests."}]}]});
    let r = Client::new()
        .post_json(
            &envoy.url("/v1/responses/compact"),
            &[("x-tollgate-subject", "alice")],
            &compact,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "response.compaction");
    assert_eq!(
        v["output"].as_array().unwrap().last().unwrap()["type"],
        "compaction"
    );
    assert_eq!(
        stat(&envoy, "prompt_tokens.model.gpt-4o-mini"),
        counted_before + v["usage"]["input_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        stat(&envoy, "completion_tokens.model.gpt-4o-mini"),
        completion_before + v["usage"]["output_tokens"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stores_text_answers_and_replays_them_as_json_or_events() {
    let mock = MockLlm::start().unwrap();
    let cache = envoy(&mock, "response-cache.yaml");
    let cached = |r: &Response| r.header("x-tollgate-cache").unwrap_or("(none)").to_owned();

    // A JSON answer is stored and served again, as JSON and as a stream.
    let before = mock.journal.count();
    let first = send(&cache, &request(false), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let again = send(&cache, &request(false), &[]).await;
    assert_eq!(cached(&again), "hit");
    assert_eq!(again.json(), first.json(), "the stored response, as received");
    let streamed = send(&cache, &request(true), &[]).await;
    assert_eq!(cached(&streamed), "hit");
    assert_eq!(mock.journal.count(), before + 1, "the provider answered once");
    let evs = events(&streamed);
    let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let text: String = evs
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(
        text,
        first.json()["output"][0]["content"][0]["text"].as_str().unwrap()
    );
    assert_eq!(evs.last().unwrap()["response"], first.json());

    // A streamed answer is recorded from its completed event and served as JSON.
    let mut other = request(true);
    other["input"][0]["content"][0]["text"] = json!("What does a proxy do?");
    let live = send(&cache, &other, &[]).await;
    let live_done = events(&live).last().unwrap().clone();
    other["stream"] = json!(false);
    let hit = send(&cache, &other, &[]).await;
    assert_eq!(cached(&hit), "hit", "{}", hit.text());
    assert_eq!(hit.json(), live_done["response"]);

    // Not stored: a continued conversation (its earlier turns are the provider's), a function
    // call, an answer cut at max_output_tokens.
    let mut continued = request(false);
    continued["previous_response_id"] = json!("resp_earlier");
    let mut tools = request(false);
    tools["tools"] = json!([{"type": "function", "name": "send_mail", "parameters": {"type": "object"}}]);
    let mut cut = request(false);
    cut["max_output_tokens"] = json!(2);
    for (what, body, extra) in [
        ("continued", continued, vec![]),
        ("function call", tools, vec![("x-mock-tool-call", "1")]),
        ("incomplete", cut, vec![]),
    ] {
        let before = mock.journal.count();
        for _ in 0..2 {
            let r = send(&cache, &body, &extra).await;
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            assert_ne!(cached(&r), "hit", "{what}");
        }
        assert_eq!(
            mock.journal.count(),
            before + 2,
            "{what} was served from the cache"
        );
    }
    assert_eq!(
        cache
            .stat("wasmcustom.tollgate_response_cache_bypass.reason.continued")
            .unwrap_or(0),
        2
    );
    // A compaction is never cached: it reaches the provider each time.
    let before = mock.journal.count();
    let compact = json!({"model": "gpt-4o-mini", "temperature": 0, "input": "What does a gateway do?"});
    for _ in 0..2 {
        let r = Client::new()
            .post_json(
                &cache.url("/v1/responses/compact"),
                &[("x-tollgate-tenant", "acme")],
                &compact,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(cached(&r), "bypass");
    }
    assert_eq!(mock.journal.count(), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moderator_reads_every_input_and_moderates_the_output_as_it_streams() {
    let mock = MockLlm::start().unwrap();
    // Social security numbers may not be sent; what the model writes has e-mail addresses masked
    // and cloud keys blocked. The mock's echo makes the model write what the request carries.
    let config = json!({"request": {"detectors": {"us_ssn": {"action": "block"}}},
                        "response": {"detectors": {"email": {"action": "mask"}, "aws_access_key": {"action": "block"}}}});
    let envoy = Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .wasm_filter_reading_body("content-moderator", "content_moderator.wasm", &config),
    )
    .unwrap();
    let echo = [("x-mock-echo", "1")];
    let mut mail = request(false);
    mail["input"][0]["content"][0]["text"] = json!("Write to ops@corp.example today.");

    // JSON: the output text is masked.
    let r = send(&envoy, &mail, &echo).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.json()["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("[EMAIL]") && !text.contains("ops@corp.example"),
        "{text}"
    );
    // Read again by its id (the provider stored it), it is moderated as the answer was.
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let again = Client::new()
        .get(&envoy.url(&format!("/v1/responses/{id}")))
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["output"][0]["content"][0]["text"], text.as_str());
    assert_eq!(mock.journal.last().unwrap().method, "GET");

    // Streamed in many small deltas: masked as it streams, every copy of the text agrees, and the
    // sequence numbers stay consecutive around the deltas the filter adds (checked by `events`).
    mail["stream"] = json!(true);
    let r = send(&envoy, &mail, &[("x-mock-echo", "1"), ("x-mock-chunks", "60")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("ops@corp.example"), "{}", r.text());
    let evs = events(&r);
    let deltas: String = evs
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert!(deltas.contains("[EMAIL]"), "{deltas}");
    let done = evs
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done["text"], deltas.as_str());
    let last = evs.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        deltas.as_str()
    );

    // Function-call arguments are masked as they stream.
    let mut tools = request(true);
    tools["tools"] = json!([{"type": "function", "name": "send_mail", "parameters": {"type": "object"}}]);
    let r = send(
        &envoy,
        &tools,
        &[("x-mock-tool-call", r#"{"to":"ops@corp.example"}"#)],
    )
    .await;
    let evs = events(&r);
    let args: String = evs
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, r#"{"to":"[EMAIL]"}"#);
    assert_eq!(
        evs.last().unwrap()["response"]["output"][0]["arguments"],
        args.as_str()
    );

    // A blocked secret ends the stream with an error event and a failed response; it never
    // reaches the client.
    let mut key = request(true);
    key["input"][0]["content"][0]["text"] = json!("The key is AKIAIOSFODNN7EXAMPLE, keep it.");
    let r = send(&envoy, &key, &[("x-mock-echo", "1"), ("x-mock-chunks", "30")]).await;
    assert!(!r.text().contains("AKIAIOSFODNN7EXAMPLE"), "{}", r.text());
    let evs = events(&r);
    let n = evs.len();
    assert_eq!(evs[n - 2]["type"], "error", "{}", r.text());
    assert_eq!(evs[n - 2]["code"], "content_blocked");
    assert_eq!(evs[n - 1]["type"], "response.failed");
    assert_eq!(evs[n - 1]["response"]["status"], "failed");
    let key_json = send(&envoy, &request(false), &[]).await;
    assert_eq!(
        key_json.status, 200,
        "a later request on the same worker is served"
    );

    // The input is read as the model reads it: a blocked number in an input item or the
    // instructions never reaches the provider, and the refusal is in OpenAI's shape.
    let before = mock.journal.count();
    let mut ssn = request(false);
    ssn["input"] = json!([{"type": "function_call_output", "call_id": "c1", "output": "SSN 123-45-6789"}]);
    let mut instr = request(true);
    instr["instructions"] = json!("The customer's SSN is 123-45-6789.");
    for body in [ssn, instr] {
        let r = send(&envoy, &body, &[]).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "content_blocked");
    }
    assert_eq!(
        mock.journal.count(),
        before,
        "a blocked request reached the provider"
    );

    // Counting input tokens (`POST /v1/responses/input_tokens`) is moderated as the request it
    // counts, and answered by the provider.
    let count_url = envoy.url("/v1/responses/input_tokens");
    let r = Client::new()
        .post_json(&count_url, &[], &json!({"input": "My SSN is 123-45-6789."}))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "content_blocked");
    assert_eq!(mock.journal.count(), before);
    let body = json!({"model": "gpt-4o-mini", "input": "How many tokens?"});
    let r = Client::new().post_json(&count_url, &[], &body).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "response.input_tokens");
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 3);

    // A compaction is moderated as the request it compacts, and its output as a response's.
    let compact_url = envoy.url("/v1/responses/compact");
    let secret = json!({"model": "gpt-4o-mini", "input": "My SSN is 123-45-6789."});
    let r = Client::new().post_json(&compact_url, &[], &secret).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "content_blocked");
    let clean = json!({"model": "gpt-4o-mini", "input": "Summarise our chat."});
    let r = Client::new().post_json(&compact_url, &[], &clean).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "response.compaction");

    // An unknown response id: the provider's 404 passes.
    let moderated = envoy;
    let r = Client::new()
        .get(&moderated.url("/v1/responses/resp_1"))
        .await
        .unwrap();
    assert_eq!(r.status, 404, "the mock's answer, passed on: {}", r.text());
    assert_eq!(mock.journal.last().unwrap().path, "/v1/responses/resp_1");
}
