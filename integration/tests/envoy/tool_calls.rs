//! Tool calls and thinking through the shipped filters, in JSON and streamed, in both APIs: the
//! mock answers a request that defines tools with a call when asked (`x-mock-tool-call`), as the
//! providers do — OpenAI `delta.tool_calls` argument fragments, Anthropic `tool_use` blocks with
//! `input_json_delta` — and Anthropic `thinking` blocks (`x-mock-thinking`). The token counter
//! counts them, the moderator reads the arguments as they stream, the cache passes them whole and
//! never stores them (a replayed call would run a tool twice).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_it::client::{Client, Response, sse_data};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";

fn envoy(mock: &MockLlm, snippet: &str) -> Envoy {
    Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .snippet(snippet),
    )
    .unwrap()
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "stream": stream,
           "messages": [{"role": "user", "content": "Mail the report"}],
           "tools": [{"type": "function", "function": {"name": "send_mail", "description": "Send an e-mail",
                      "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}}]})
}

fn messages(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 200, "temperature": 0, "stream": stream,
           "messages": [{"role": "user", "content": "Mail the report"}],
           "tools": [{"name": "send_mail", "description": "Send an e-mail",
                      "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}}}]})
}

async fn send(envoy: &Envoy, path: &str, body: &Value, args: &str, thinking: bool) -> Response {
    let mut h = vec![("x-tollgate-subject", "alice"), ("x-mock-tool-call", args)];
    if thinking {
        h.push(("x-mock-thinking", "1"));
    }
    Client::new().post_json(&envoy.url(path), &h, body).await.unwrap()
}

/// What a client assembles from an OpenAI stream: the call's id, name and arguments, the finish
/// reason, and whether an error event ended it.
fn openai_call(r: &Response) -> (String, String, String, String, Option<Value>) {
    let (mut id, mut name, mut args, mut finish, mut error) =
        (String::new(), String::new(), String::new(), String::new(), None);
    for d in sse_data(r.body.as_ref()) {
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&d).unwrap();
        if v.get("error").is_some() {
            error = Some(v);
            continue;
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            for t in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                id.push_str(t["id"].as_str().unwrap_or(""));
                name.push_str(t["function"]["name"].as_str().unwrap_or(""));
                args.push_str(t["function"]["arguments"].as_str().unwrap_or(""));
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_owned();
            }
        }
    }
    (id, name, args, finish, error)
}

/// The same for an Anthropic stream: the tool_use block's name and input JSON, the thinking text
/// and signature, the stop reason, an error event.
struct AnthropicStream {
    name: String,
    input: String,
    thinking: String,
    signature: String,
    stop: String,
    error: Option<Value>,
    output_tokens: u64,
}

fn anthropic_stream(r: &Response) -> AnthropicStream {
    let mut s = AnthropicStream {
        name: String::new(),
        input: String::new(),
        thinking: String::new(),
        signature: String::new(),
        stop: String::new(),
        error: None,
        output_tokens: 0,
    };
    for d in sse_data(r.body.as_ref()) {
        let v: Value = serde_json::from_str(&d).unwrap();
        match v["type"].as_str() {
            Some("content_block_start") if v["content_block"]["type"] == "tool_use" => {
                s.name = v["content_block"]["name"].as_str().unwrap_or("").to_owned();
            }
            Some("content_block_delta") => {
                let dl = &v["delta"];
                s.input.push_str(dl["partial_json"].as_str().unwrap_or(""));
                s.thinking.push_str(dl["thinking"].as_str().unwrap_or(""));
                s.signature.push_str(dl["signature"].as_str().unwrap_or(""));
            }
            Some("message_delta") => {
                s.stop = v["delta"]["stop_reason"].as_str().unwrap_or("").to_owned();
                s.output_tokens = v["usage"]["output_tokens"].as_u64().unwrap_or(0);
            }
            Some("error") => s.error = Some(v),
            _ => {}
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_streamed_whole_and_counted_in_both_apis() {
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(&mock, "token-counter.yaml");
    let args = r#"{"to":"finance team","subject":"Q3 report, final"}"#;
    let stat = |m: &str| {
        envoy
            .stat(&format!(
                "wasmcustom.tollgate_token_counter_completion_tokens.model.{m}"
            ))
            .unwrap_or(0)
    };

    // JSON: the call as the provider sent it, its usage counted.
    let r = send(&envoy, CHAT, &chat(false), args, false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        args
    );
    let used = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(stat("gpt-4o-mini"), used);

    // Streamed: the fragments reassemble to the same call; the usage chunk the counter asked for
    // is taken out again, and its numbers counted.
    let r = send(&envoy, CHAT, &chat(true), args, false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (id, name, got, finish, error) = openai_call(&r);
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!(
        (name.as_str(), got.as_str(), finish.as_str()),
        ("send_mail", args, "tool_calls")
    );
    assert!(error.is_none());
    // The usage chunk the counter asked for is taken out again (`"usage": null` stays on the
    // others, the provider's shape once usage was requested).
    for d in sse_data(r.body.as_ref()).iter().filter(|d| *d != "[DONE]") {
        let v: Value = serde_json::from_str(d).unwrap();
        assert!(v.get("usage").is_none_or(Value::is_null), "{d}");
        assert!(
            v["choices"].as_array().is_some_and(|c| !c.is_empty()),
            "a usage-only chunk: {d}"
        );
    }
    assert_eq!(stat("gpt-4o-mini"), 2 * used);

    // Anthropic, with thinking first: the tool_use input and the thinking signature arrive whole.
    let r = send(&envoy, MESSAGES, &messages(true), args, true).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = anthropic_stream(&r);
    assert_eq!((s.name.as_str(), s.stop.as_str()), ("send_mail", "tool_use"));
    assert_eq!(
        serde_json::from_str::<Value>(&s.input).unwrap(),
        serde_json::from_str::<Value>(args).unwrap()
    );
    assert!(s.thinking.starts_with("The user asks") && s.signature.starts_with("sig_"));
    assert_eq!(stat("claude-sonnet-4-5"), s.output_tokens);
    let r = send(&envoy, MESSAGES, &messages(false), args, true).await;
    let v = r.json();
    assert_eq!(v["content"][0]["type"], "thinking");
    assert_eq!(v["content"][1]["input"]["to"], "finance team");
    assert_eq!(
        stat("claude-sonnet-4-5"),
        s.output_tokens + v["usage"]["output_tokens"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_arguments_are_moderated_as_they_stream() {
    let mock = MockLlm::start().unwrap();
    // What the model writes: e-mail addresses masked, cloud keys blocked.
    let config = json!({"response": {"detectors": {"email": {"action": "mask"}, "aws_access_key": {"action": "block"}}}});
    let envoy = Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .wasm_filter_reading_body("content-moderator", "content_moderator.wasm", &config),
    )
    .unwrap();
    // An e-mail address is masked in the arguments, however the fragments split it.
    let pii = r#"{"to":"ops@corp.example","body":"see attached"}"#;
    let r = send(&envoy, CHAT, &chat(true), pii, false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, name, args, finish, error) = openai_call(&r);
    assert!(error.is_none(), "{}", r.text());
    assert_eq!((name.as_str(), finish.as_str()), ("send_mail", "tool_calls"));
    assert_eq!(args, r#"{"to":"[EMAIL]","body":"see attached"}"#);
    let r = send(&envoy, MESSAGES, &messages(true), pii, false).await;
    let s = anthropic_stream(&r);
    assert!(s.error.is_none(), "{}", r.text());
    assert_eq!(s.input, r#"{"to":"[EMAIL]","body":"see attached"}"#);
    let r = send(&envoy, CHAT, &chat(false), pii, false).await;
    assert_eq!(
        r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"to":"[EMAIL]","body":"see attached"}"#
    );

    // A blocked secret in the arguments ends the stream with each API's error event, and the
    // secret's text never reaches the client.
    let secret = r#"{"key":"AKIAIOSFODNN7EXAMPLE"}"#;
    let r = send(&envoy, CHAT, &chat(true), secret, false).await;
    let (_, _, args, _, error) = openai_call(&r);
    assert_eq!(error.unwrap()["error"]["code"], "content_blocked", "{}", r.text());
    assert!(!args.contains("AKIAIOSFODNN7EXAMPLE") && !r.text().contains("AKIAIOSFODNN7EXAMPLE"));
    let r = send(&envoy, MESSAGES, &messages(true), secret, false).await;
    let s = anthropic_stream(&r);
    let e = s.error.unwrap_or_else(|| panic!("no error event: {}", r.text()));
    assert_eq!(
        (e["type"].as_str(), e["error"]["code"].as_str()),
        (Some("error"), Some("content_blocked"))
    );
    assert!(!r.text().contains("AKIAIOSFODNN7EXAMPLE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_and_thinking_pass_the_cache_whole_and_are_never_stored() {
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(&mock, "response-cache.yaml");
    let args = r#"{"to":"finance team"}"#;
    for (path, body, thinking) in [
        (CHAT, chat(false), false),
        (CHAT, chat(true), false),
        (MESSAGES, messages(false), true),
        (MESSAGES, messages(true), true),
    ] {
        let before = mock.journal.count();
        let first = send(&envoy, path, &body, args, thinking).await;
        let second = send(&envoy, path, &body, args, thinking).await;
        assert_eq!(
            (first.status, second.status),
            (200, 200),
            "{path}: {}",
            first.text()
        );
        assert_eq!(
            mock.journal.count(),
            before + 2,
            "{path}: a tool call was served from the cache"
        );
        assert_eq!(
            second.header("x-tollgate-cache"),
            first.header("x-tollgate-cache")
        );
        assert_ne!(second.header("x-tollgate-cache"), Some("hit"), "{path}");
        if path == CHAT && body["stream"] == true {
            assert_eq!(openai_call(&second).2, args);
        } else if path == CHAT {
            assert_eq!(
                second.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
                args
            );
        } else if body["stream"] == true {
            let s = anthropic_stream(&second);
            assert_eq!(s.input, args);
            assert!(
                s.signature.starts_with("sig_"),
                "the thinking signature passes unchanged"
            );
        } else {
            let v = second.json();
            assert_eq!(v["content"][1]["input"]["to"], "finance team");
            assert!(v["content"][0]["signature"].as_str().unwrap().starts_with("sig_"));
        }
    }
    assert_eq!(
        envoy
            .stat("wasmcustom.tollgate_response_cache_stores")
            .unwrap_or(0),
        0
    );
}
