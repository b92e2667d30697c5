//! A small HTTP/1.1 client for tests: whole responses, or a stream of body chunks as they arrive.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// Sends a request and returns the response head with the body still streaming.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let mut b = hyper::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into()))?;
        Ok(self.inner.request(req).await?)
    }

    /// Sends a request and reads the whole response.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, Error> {
        let resp = self.send(method, url, headers, body).await?;
        read(resp).await
    }

    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<Response, Error> {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.request("POST", url, &h, serde_json::to_vec(body)?).await
    }

    pub async fn get(&self, url: &str) -> Result<Response, Error> {
        self.request("GET", url, &[], Bytes::new()).await
    }
}

pub async fn read(resp: hyper::Response<Incoming>) -> Result<Response, Error> {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Reads body frames one by one (for streaming tests); `Ok(None)` at the end.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// The `data` of every SSE event in `body` (events without data are skipped). A body that is not
/// a complete, well-formed stream gives what parsed before the fault.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let mut events = Vec::new();
    let _ = filter_core::sse::SseParser::default().feed(body, &mut events);
    events.into_iter().filter_map(|e| e.data).collect()
}

/// The generated text of a reply of either API, JSON or SSE (stream deltas joined).
pub fn reply_text(resp: &Response) -> String {
    use serde_json::Value;
    let ct = resp.header("content-type").unwrap_or_default();
    if ct.starts_with("text/event-stream") {
        sse_data(&resp.body)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v.pointer("/choices/0/delta/content")
                    .or_else(|| v.pointer("/delta/text"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    } else {
        let v = resp.json();
        v.pointer("/choices/0/message/content")
            .or_else(|| v.pointer("/content/0/text"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

/// The request body the mock provider received, from its reply in echo mode (`x-mock-echo: 1`).
pub fn echoed_request(resp: &Response) -> Result<serde_json::Value, String> {
    let text = reply_text(resp);
    serde_json::from_str(&text).map_err(|e| format!("echo is not JSON ({e}): {text}"))
}

/// POSTs `chunks` with `transfer-encoding: chunked` over a plain socket, pausing `gap` between
/// chunks, so a filter sees the body in several callbacks (a buffered client body arrives in one).
/// Returns the status and the response body (the connection is closed after the response).
pub async fn post_chunked(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
    gap: std::time::Duration,
) -> Result<(u16, Vec<u8>), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    for c in chunks {
        s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await?;
        s.write_all(c).await?;
        s.write_all(b"\r\n").await?;
        s.flush().await?;
        tokio::time::sleep(gap).await;
    }
    s.write_all(b"0\r\n\r\n").await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    let body_at = text.find("\r\n\r\n").map_or(raw.len(), |i| i + 4);
    let head_text = text.get(..body_at).unwrap_or_default().to_ascii_lowercase();
    let mut body = raw.get(body_at..).unwrap_or_default().to_vec();
    if head_text.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = b
            .get(..eol)
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let Some(chunk) = b.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(chunk);
        b = b.get(start + size + 2..).unwrap_or_default();
    }
    out
}
