//! Host calls that Envoy refuses in normal operation (a header map used after its headers went on)
//! through the `host-probe` fixture: through filter-host the refusal is logged with the context id
//! and handled, and the one VM of the one worker keeps serving; through proxy-wasm's own unwrapping
//! trait methods (the control) the same call aborts the VM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_it::client::Client;
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";

fn envoy(mock: &MockLlm, config: &Value) -> Envoy {
    // One worker: every request below meets the same VM.
    Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .wasm_filter("host-probe", "host_probe.wasm", config),
    )
    .unwrap()
}

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]})
}

/// `#<context id> host call <call> failed: BadArgument` lines in Envoy's log, once there are `n`
/// (Envoy flushes its log every 50 ms here) or after 3 s.
fn refusals(envoy: &Envoy, call: &str, n: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let found = count_refusals(envoy, call);
        if found >= n || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn count_refusals(envoy: &Envoy, call: &str) -> usize {
    let needle = format!(" host call {call} failed: BadArgument");
    envoy
        .log()
        .lines()
        .filter_map(|l| {
            l.split_once("[tollgate.host-probe] #")
                .map(|(_, rest)| rest.trim_end())
        })
        .filter(|rest| {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            digits > 0 && rest.get(digits..) == Some(needle.as_str())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_host_call_is_logged_and_handled_and_the_vm_keeps_serving() {
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(&mock, &json!({}));
    let c = Client::new();
    let url = envoy.url(CHAT);

    // A response header set after the response headers went on: the header is lost, the answer
    // is whole.
    for _ in 0..3 {
        let r = c
            .post_json(&url, &[("x-probe", "late-response-header")], &chat())
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-probe-late"), None);
        assert_eq!(r.json()["object"], "chat.completion");
    }
    assert_eq!(
        refusals(&envoy, "set_map_value(response headers)", 3),
        3,
        "{}",
        envoy.log()
    );

    // A request header set after the request headers went on: the request is not sent, the client
    // gets a 500 in the OpenAI error shape.
    let r = c
        .post_json(&url, &[("x-probe", "late-request-header")], &chat())
        .await
        .unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "host_error");
    assert_eq!(r.json()["error"]["type"], "server_error");
    assert_eq!(
        refusals(&envoy, "set_map_value(request headers)", 1),
        1,
        "{}",
        envoy.log()
    );

    // The same VM answers what follows.
    for _ in 0..20 {
        let r = c.post_json(&url, &[], &chat()).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(!envoy.log().contains("panic"), "{}", envoy.log());
}

/// The control: proxy-wasm's own `set_http_response_header` unwraps the same refusal, the VM
/// aborts, and the worker's requests through that filter fail from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_call_through_the_sdk_aborts_the_vm() {
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(&mock, &json!({"sdk": true}));
    let c = Client::new();
    let url = envoy.url(CHAT);
    let r = c.post_json(&url, &[], &chat()).await.unwrap();
    assert_eq!(r.status, 200, "before the refused call: {}", r.text());

    let _ = c
        .post_json(&url, &[("x-probe", "late-response-header")], &chat())
        .await;
    let after = c.post_json(&url, &[], &chat()).await;
    assert!(
        after.as_ref().map_or(true, |r| r.status != 200),
        "a VM that aborted cannot answer: {:?}",
        after.map(|r| r.status)
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        envoy.log().contains("[tollgate.host-probe] panic"),
        "{}",
        envoy.log()
    );
}
