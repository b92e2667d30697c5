#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

fn events(sse: &[u8]) -> Vec<Event> {
    let mut p = SseParser::new(1 << 20);
    let mut out = Vec::new();
    p.feed(sse, &mut out).unwrap();
    out
}

#[test]
fn entries_round_trip_and_expire() {
    let e = Entry {
        key: "abc".into(),
        created: 100,
        ttl: 10,
        prompt: "What is Rust?".into(),
        body: b"{}".to_vec(),
    };
    let d = Entry::decode(&e.encode()).unwrap();
    assert_eq!(d, e);
    assert!(d.is_fresh(109, u32::MAX) && !d.is_fresh(110, u32::MAX));
    assert!(d.is_fresh(104, 5) && !d.is_fresh(105, 5));
    assert_eq!(d.age(104), 4);
    assert!(Entry::decode(b"").is_none());
    assert!(Entry::decode(b"TGC1\x01").is_none());
    assert!(Entry::decode(b"XXXX0123456789abcdef").is_none());
}

#[test]
fn what_may_be_stored() {
    let ok = json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": null}, "finish_reason": "stop"}]});
    assert!(storable(Provider::OpenAiChat, ok.to_string().as_bytes()).is_ok());
    let tools = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}}]});
    assert!(storable(Provider::OpenAiChat, tools.to_string().as_bytes()).is_err());
    let two = json!({"choices": [{"message": {"content": "a"}}, {"message": {"content": "b"}}]});
    assert!(storable(Provider::OpenAiChat, two.to_string().as_bytes()).is_err());
    let an = json!({"type": "message", "content": [{"type": "text", "text": "hi"}]});
    assert!(storable(Provider::Anthropic, an.to_string().as_bytes()).is_ok());
    let tool_use =
        json!({"type": "message", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]});
    assert!(storable(Provider::Anthropic, tool_use.to_string().as_bytes()).is_err());
    assert!(storable(Provider::Anthropic, b"<html>").is_err());
}

#[test]
fn an_openai_stream_is_rebuilt_and_replayed() {
    let stream = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n"
    );
    let mut r = Recorder::new(Provider::OpenAiChat, 1000);
    // Split at every few bytes, as the network may.
    for part in stream.as_bytes().chunks(7) {
        r.feed(part);
    }
    let json = r.finish().unwrap();
    let v: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 5);
    assert_eq!(v["model"], "gpt-4o");
    assert!(storable(Provider::OpenAiChat, &json).is_ok());

    let replay = to_sse(Provider::OpenAiChat, &json, true).unwrap();
    let ev = events(&replay);
    assert!(ev.last().unwrap().is_done());
    let mut text = String::new();
    let mut usage = None;
    for e in &ev[..ev.len() - 1] {
        let c: Value = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "c1");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if c["usage"].is_object() {
            usage = Some(c["usage"].clone());
        }
    }
    assert_eq!(text, "Hello");
    assert_eq!(usage.unwrap()["completion_tokens"], 2);
    // Without include_usage, no usage chunk.
    let plain = to_sse(Provider::OpenAiChat, &json, false).unwrap();
    assert!(!String::from_utf8(plain).unwrap().contains("\"usage\""));
}

#[test]
fn an_anthropic_stream_is_rebuilt_and_replayed() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bon\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"jour\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
    let mut r = Recorder::new(Provider::Anthropic, 1000);
    r.feed(stream.as_bytes());
    let json = r.finish().unwrap();
    let v: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["content"][0]["text"], "Bonjour");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 9);
    assert_eq!(v["usage"]["output_tokens"], 4);
    assert!(storable(Provider::Anthropic, &json).is_ok());

    let ev = events(&to_sse(Provider::Anthropic, &json, false).unwrap());
    let names: Vec<&str> = ev.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let d: Value = serde_json::from_str(ev[2].data.as_deref().unwrap()).unwrap();
    assert_eq!(d["delta"]["text"], "Bonjour");
    let md: Value = serde_json::from_str(ev[4].data.as_deref().unwrap()).unwrap();
    assert_eq!(md["usage"]["output_tokens"], 4);
}

#[test]
fn streams_that_cannot_be_replayed_are_not_recorded() {
    let tool = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0}]},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
    let mut r = Recorder::new(Provider::OpenAiChat, 1000);
    r.feed(tool.as_bytes());
    assert!(r.finish().is_err());
    // Cut off before the end.
    let mut r = Recorder::new(Provider::OpenAiChat, 1000);
    r.feed(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"},\"finish_reason\":null}]}\n\n");
    assert_eq!(r.finish(), Err("the stream did not complete"));
    let mut r = Recorder::new(Provider::OpenAiChat, 10);
    r.feed(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"this is longer than ten\"},\"finish_reason\":\"stop\"}]}\n\n");
    assert!(r.finish().is_err());
    let mut r = Recorder::new(Provider::Anthropic, 1000);
    r.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n");
    assert!(r.finish().is_err());
}
