//! Envoy's own limits in `envoy/envoy.yaml` (no wasm filter): the header and request timeouts, the
//! idle-connection timeout and the global connection limit, and Envoy's own error replies (431, 400,
//! 426, 408, 413, 503) in the error shape of the client's API: Anthropic's on `/v1/messages`, else
//! OpenAI's, and OpenAI's also when Envoy failed before it had parsed the path. The timeouts and the
//! limit are shortened through `Options::replace`; every replaced string must be in the config.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a test failure

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_it::client::{Client, sse_data};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";

fn options(mock: &MockLlm) -> Options<'static> {
    Options::new("envoy.yaml").upstream(default_ports::LLM_UPSTREAM, mock.port())
}

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
}

/// `{"error":{"message":…,"type":"invalid_request_error","code":<code>}}`, nothing else.
fn assert_openai(v: &Value, code: &str, what: &str) {
    assert_eq!(v["error"]["type"], "invalid_request_error", "{what}: {v}");
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    assert!(v.get("type").is_none(), "{what}: not the Anthropic shape: {v}");
}

/// `{"type":"error","error":{"type":<kind>,"message":…}}`, nothing else.
fn assert_anthropic(v: &Value, kind: &str, what: &str) {
    assert_eq!(v["type"], "error", "{what}: {v}");
    assert_eq!(v["error"]["type"], kind, "{what}: {v}");
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    assert!(
        v["error"].get("code").is_none(),
        "{what}: not the OpenAI shape: {v}"
    );
}

/// A response as read off the socket.
struct Raw {
    status: u16,
    content_type: Option<String>,
    body: Value,
    /// From the first byte written to the last byte of the response read.
    elapsed: Duration,
}

/// Writes `bytes` to Envoy's listener exactly as given (Envoy's codec sees what no HTTP client would
/// send) and reads the one response Envoy sends; the connection stays open as the bytes left it.
async fn raw(envoy: &Envoy, bytes: &[u8]) -> Raw {
    let mut s = TcpStream::connect(("127.0.0.1", envoy.port)).await.unwrap();
    let start = Instant::now();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(r) = parse(&buf, start) {
            return r;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .expect("reading the response");
        assert!(
            n > 0,
            "closed before a complete response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The response in `buf` once its head and `content-length` bytes of body are there (Envoy's local
/// replies always carry a content-length).
fn parse(buf: &[u8], start: Instant) -> Option<Raw> {
    let text = std::str::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let len: usize = header("content-length")?.parse().ok()?;
    let body = body.get(..len)?;
    Some(Raw {
        status,
        content_type: header("content-type"),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
        elapsed: start.elapsed(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_block_gets_431_in_the_openai_shape_on_both_apis() {
    let mock = MockLlm::start().unwrap();
    let envoy = Envoy::start(options(&mock)).unwrap();
    let c = Client::new();
    let big = "x".repeat(70 * 1024);
    let many: Vec<(String, String)> = (0..120).map(|i| (format!("x-h{i}"), "v".to_owned())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let one_big = [("x-big", big.as_str())];
    for path in [CHAT, MESSAGES] {
        for (what, headers) in [("70 KiB", &one_big[..]), ("120 headers", &many[..])] {
            let r = c.post_json(&envoy.url(path), headers, &chat()).await.unwrap();
            assert_eq!(r.status, 431, "{path} {what}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"));
            // On /v1/messages too: Envoy's HTTP/1 codec refuses the header block before it hands
            // on the path, so the Anthropic mapper cannot match (Envoy allows no better).
            assert_openai(&r.json(), "request_headers_too_large", &format!("{path} {what}"));
        }
    }
    assert_eq!(mock.journal.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_in_the_shape_of_their_api_where_envoy_has_the_path() {
    let mock = MockLlm::start().unwrap();
    let envoy = Envoy::start(options(&mock)).unwrap();
    // (what, bytes, status, Some(OpenAI code) or None for the Anthropic shape, Envoy's detail).
    let chunked = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
        )
    };
    let cases = [
        (
            "garbage request line",
            b"GARBAGE\r\n\r\n".to_vec(),
            400,
            Some("malformed_request"),
            "http1.codec_error",
        ),
        // Refused while parsing the headers: no path yet, so OpenAI's shape on /v1/messages too.
        (
            "control character in a header name",
            b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nx-bad\x01: v\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
            400,
            Some("malformed_request"),
            "http1.invalid_characters",
        ),
        (
            "bad chunk size, OpenAI path",
            chunked(CHAT).into_bytes(),
            400,
            Some("malformed_request"),
            "http1.codec_error",
        ),
        // After the headers: the path is known.
        (
            "bad chunk size, Anthropic path",
            chunked(MESSAGES).into_bytes(),
            400,
            None,
            "http1.codec_error",
        ),
        (
            "no Host, Anthropic path",
            b"POST /v1/messages HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
            400,
            None,
            "missing_host_header",
        ),
        // HTTP/1.0 is refused on the request line, before the headers.
        (
            "HTTP/1.0",
            b"POST /v1/messages HTTP/1.0\r\nHost: gw\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
            426,
            Some("unsupported_http_version"),
            "",
        ),
    ];
    for (what, bytes, status, openai_code, detail) in cases {
        let r = raw(&envoy, &bytes).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.content_type.as_deref(), Some("application/json"), "{what}");
        match openai_code {
            Some(code) => assert_openai(&r.body, code, what),
            None => assert_anthropic(&r.body, "invalid_request_error", what),
        }
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(detail), "{what}: {message}");
    }
    assert_eq!(mock.journal.count(), 0, "nothing malformed reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_gets_408_within_the_request_timeout() {
    let mock = MockLlm::start().unwrap();
    let envoy = Envoy::start(options(&mock).replace("request_timeout: 60s", "request_timeout: 2s")).unwrap();
    // Declares 1000 bytes, sends 10: before request_timeout this held the stream for the 300 s
    // stream idle timeout.
    for path in [CHAT, MESSAGES] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n0123456789"
        );
        let r = raw(&envoy, head.as_bytes()).await;
        assert_eq!(r.status, 408, "{path}: {}", r.body);
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert!(
            r.elapsed >= Duration::from_millis(1800) && r.elapsed < Duration::from_secs(5),
            "{path}: answered after {:?}",
            r.elapsed
        );
        if path == MESSAGES {
            assert_anthropic(&r.body, "invalid_request_error", path);
        } else {
            assert_openai(&r.body, "request_timeout", path);
        }
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("request_overall_timeout"), "{message}");
    }
    assert_eq!(
        mock.journal.count(),
        0,
        "the buffer filter never passed the partial body on"
    );

    // The timer stops once the request has gone upstream: an answer that starts after the timeout,
    // and a stream that lasts longer than it, arrive whole.
    let c = Client::new();
    let start = Instant::now();
    let r = c
        .post_json(&envoy.url(CHAT), &[("x-mock-latency-ms", "3000")], &chat())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(start.elapsed() >= Duration::from_secs(3));
    let mut stream = chat();
    stream["stream"] = json!(true);
    let start = Instant::now();
    let r = c
        .post_json(
            &envoy.url(CHAT),
            &[("x-mock-chunks", "6"), ("x-mock-chunk-delay-ms", "500")],
            &stream,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        start.elapsed() >= Duration::from_millis(2500),
        "the stream took {:?}",
        start.elapsed()
    );
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_complete_get_408_within_the_headers_timeout() {
    let mock = MockLlm::start().unwrap();
    let envoy =
        Envoy::start(options(&mock).replace("request_headers_timeout: 10s", "request_headers_timeout: 1s"))
            .unwrap();
    let r = raw(
        &envoy,
        b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\n",
    )
    .await;
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert!(
        r.elapsed < Duration::from_secs(4),
        "answered after {:?}",
        r.elapsed
    );
    // The headers never ended, so Envoy has no path: OpenAI's shape.
    assert_openai(&r.body, "request_timeout", "unfinished headers");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("request_header_timeout"), "{message}");
}

/// What a fresh connection that sends one request gets: `"closed"` when Envoy closes it unanswered.
async fn fresh_connection(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return "refused".to_owned();
    };
    // Envoy may have closed it already: a failed write shows in the read.
    let _ = s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    let mut buf = [0u8; 512];
    match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => "closed".to_owned(),
        Ok(Ok(n)) => format!("answered: {}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => "open, no answer".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_global_limit_are_closed_as_they_are_accepted() {
    let mock = MockLlm::start().unwrap();
    let envoy = Envoy::start(options(&mock).replace(
        "max_active_downstream_connections: 4096",
        "max_active_downstream_connections: 2",
    ))
    .unwrap();
    let listener = format!("listener.127.0.0.1_{}", envoy.port);
    let mut held = vec![
        TcpStream::connect(("127.0.0.1", envoy.port)).await.unwrap(),
        TcpStream::connect(("127.0.0.1", envoy.port)).await.unwrap(),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    while envoy.stat(&format!("{listener}.downstream_cx_active")) != Some(2) {
        assert!(
            Instant::now() < deadline,
            "Envoy did not accept the two connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fresh_connection(envoy.port).await, "closed");
    assert!(envoy.stat(&format!("{listener}.downstream_global_cx_overflow")) >= Some(1));
    // The admin port is not counted: the harness's stats calls above went through.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::new().post_json(&envoy.url(CHAT), &[], &chat()).await {
            Ok(r) if r.status == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "no request served after a connection closed: {:?}",
                other.map(|r| r.status)
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let mock = MockLlm::start().unwrap();
    let envoy = Envoy::start(options(&mock).replace("idle_timeout: 60s", "idle_timeout: 1s")).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", envoy.port)).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "closed after {:?}",
        start.elapsed()
    );
    assert_eq!(envoy.stat("http.tollgate.downstream_cx_idle_timeout"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_with_underscores_are_dropped_before_the_upstream() {
    let mock = MockLlm::start().unwrap();
    let envoy = Envoy::start(options(&mock)).unwrap();
    let r = Client::new()
        .post_json(
            &envoy.url(CHAT),
            &[("x_tollgate_tenant", "root"), ("x-kept", "1")],
            &chat(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock.journal.last().unwrap();
    assert_eq!(seen.header("x_tollgate_tenant"), None);
    assert_eq!(seen.header("x-kept"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_413_and_503_take_the_anthropic_shape_on_v1_messages() {
    let mock = MockLlm::start().unwrap();
    let envoy = Envoy::start(options(&mock)).unwrap();
    let c = Client::new();
    let big = json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                     "messages": [{"role": "user", "content": "x".repeat(1_100_000)}]});
    let r = c.post_json(&envoy.url(MESSAGES), &[], &big).await.unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_anthropic(&r.json(), "request_too_large", "413");
    // The OpenAI twin on the other API (passthrough.rs checks it in full).
    let r = c.post_json(&envoy.url(CHAT), &[], &big).await.unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");

    drop(mock);
    let small = json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hi"}]});
    let r = c.post_json(&envoy.url(MESSAGES), &[], &small).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_anthropic(&r.json(), "api_error", "503");
    let r = c.post_json(&envoy.url(CHAT), &[], &chat()).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "upstream_error");
}
