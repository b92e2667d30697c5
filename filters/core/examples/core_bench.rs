//! Times filter-core's per-request work: parse + extract + re-serialise a chat request, and parse a
//! streamed response with usage extraction. Built for wasm32-wasip1 and run under Node's WASI (V8,
//! the engine Envoy embeds) by `scripts/measure-opt-level.sh` to choose the release opt-level.
//! Prints one JSON line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use filter_core::api::{Provider, Request};
use filter_core::prompt;
use filter_core::sse::SseParser;
use filter_core::usage::StreamUsage;
use std::hint::black_box;
use std::time::Instant;

fn chat_body() -> Vec<u8> {
    let mut messages =
        vec![serde_json::json!({"role": "system", "content": "You are a careful assistant. ".repeat(8)})];
    for i in 0..20 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": format!("message {i}: {}", "lorem ipsum dolor sit amet ".repeat(12))}));
    }
    serde_json::to_vec(
        &serde_json::json!({"model": "gpt-4o", "messages": messages, "temperature": 0.2,
                                           "stream": true, "stream_options": {"include_usage": true}}),
    )
    .unwrap()
}

fn openai_stream() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..200 {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":900,\"completion_tokens\":200,\"total_tokens\":1100}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

fn time<F: FnMut()>(iters: u32, mut f: F) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters) / 1000.0
}

fn main() {
    let body = chat_body();
    let request_us = time(2000, || {
        let mut req = Request::parse(Provider::OpenAiChat, black_box(&body)).unwrap();
        let n: usize = prompt::segments(&req).iter().map(|s| s.text.len()).sum();
        req.set_model("gpt-4o-mini");
        black_box((n, req.to_vec().unwrap()));
    });
    let stream = openai_stream();
    let stream_us = time(500, || {
        let mut parser = SseParser::default();
        let mut usage = StreamUsage::default();
        let mut events = Vec::new();
        for chunk in black_box(&stream).chunks(1024) {
            parser.feed(chunk, &mut events).unwrap();
            for e in events.drain(..) {
                usage.observe(Provider::OpenAiChat, &e);
            }
        }
        black_box(usage.usage().unwrap());
    });
    println!(
        "{{\"request_bytes\":{},\"request_parse_rewrite_us\":{request_us:.1},\"stream_bytes\":{},\"stream_parse_usage_us\":{stream_us:.1}}}",
        body.len(),
        stream.len()
    );
}
