#![allow(clippy::unwrap_used, clippy::panic)]

use super::super::tests::{long_jwt, rules};
use crate::config::MAX_WINDOW;
use crate::stream::Stream;
use filter_core::Provider;
use filter_core::sse::{Event, SseParser};
use serde_json::{Value, json};

/// A Responses stream as the API sends it: one message (or one function call when `call`) whose
/// text arrives in `pieces`, numbered from 0.
fn stream(pieces: &[&str], call: bool) -> Vec<u8> {
    let text: String = pieces.concat();
    let mut seq = 0;
    let mut s = Vec::new();
    let mut ev = |mut v: Value| {
        v["sequence_number"] = json!(seq);
        seq += 1;
        s.extend(Event::encode(Some(v["type"].as_str().unwrap()), &v.to_string()));
    };
    let response = |status: &str, output: Value| {
        json!({"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4o", "status": status,
               "output": output, "error": null})
    };
    let item = if call {
        json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "send", "arguments": text,
               "status": "completed"})
    } else {
        json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": text, "annotations": []}]})
    };
    ev(json!({"type": "response.created", "response": response("in_progress", json!([]))}));
    ev(json!({"type": "response.in_progress", "response": response("in_progress", json!([]))}));
    ev(
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "id": "msg_1"}}),
    );
    if call {
        for p in pieces {
            ev(
                json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": p}),
            );
        }
        ev(
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 0,
                  "name": "send", "arguments": text}),
        );
    } else {
        ev(
            json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0,
                  "part": {"type": "output_text", "text": ""}}),
        );
        for p in pieces {
            ev(
                json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                      "content_index": 0, "delta": p, "logprobs": []}),
            );
        }
        ev(
            json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0,
                  "text": text}),
        );
        ev(
            json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0, "content_index": 0,
                  "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
    }
    ev(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    ev(json!({"type": "response.completed", "response": response("completed", json!([item]))}));
    s
}

fn run(body: &[u8], cuts: &[usize], holdback: usize) -> (Vec<Value>, Stream) {
    let r = rules();
    let mut s = Stream::new(Provider::OpenAiResponses, holdback);
    let mut out = Vec::new();
    let mut prev = 0;
    for &c in cuts.iter().chain(std::iter::once(&body.len())) {
        out.extend(s.feed(&r, &body[prev..c], c == body.len()));
        prev = c;
    }
    let mut events = Vec::new();
    SseParser::default().feed(&out, &mut events).unwrap();
    let parsed = events
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
            assert_eq!(
                e.event.as_deref(),
                v["type"].as_str(),
                "each event is named by its type"
            );
            v
        })
        .collect();
    (parsed, s)
}

/// The text the deltas carry, and every whole copy of it the stream repeats.
fn texts(events: &[Value]) -> (String, Vec<String>) {
    let mut deltas = String::new();
    let mut whole = Vec::new();
    for v in events {
        let t = v["type"].as_str().unwrap();
        if t.ends_with(".delta") {
            deltas.push_str(v["delta"].as_str().unwrap());
        }
        if !t.ends_with(".done") && t != "response.completed" {
            continue;
        }
        for p in [
            "/text",
            "/arguments",
            "/part/text",
            "/item/content/0/text",
            "/item/arguments",
            "/response/output/0/content/0/text",
            "/response/output/0/arguments",
        ] {
            if let Some(s) = v.pointer(p).and_then(Value::as_str) {
                whole.push(s.to_owned());
            }
        }
    }
    (deltas, whole)
}

fn assert_numbered(events: &[Value]) {
    for (i, v) in events.iter().enumerate() {
        assert_eq!(
            v["sequence_number"],
            json!(i),
            "event {i} ({}) is numbered in sequence",
            v["type"]
        );
    }
}

#[test]
fn a_match_split_at_every_byte_is_masked_in_the_deltas_and_every_copy() {
    let text = "Your card 4111 1111 1111 1111 and mail bob@example.com are on file.";
    let want = "Your card **** **** **** 1111 and mail [EMAIL] are on file.";
    for call in [false, true] {
        for split in 1..text.len() {
            let (a, b) = text.split_at(split);
            let (events, s) = run(&stream(&[a, b], call), &[], MAX_WINDOW);
            let (deltas, whole) = texts(&events);
            assert_eq!(deltas, want, "call={call} split at {split}");
            assert_eq!(whole.len(), if call { 3 } else { 4 });
            assert!(
                whole.iter().all(|w| w == want),
                "call={call} split at {split}: {whole:?}"
            );
            assert_numbered(&events);
            assert_eq!(s.findings.len(), 2, "each finding counted once");
        }
        let pieces: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let body = stream(&refs, call);
        let cuts: Vec<usize> = (1..body.len()).collect();
        let (events, _) = run(&body, &cuts, MAX_WINDOW);
        let (deltas, whole) = texts(&events);
        assert_eq!(deltas, want, "call={call} byte by byte");
        assert!(whole.iter().all(|w| w == want));
        assert_numbered(&events);
    }
}

#[test]
fn held_text_goes_out_in_a_delta_before_the_done_event() {
    // "text" could still become an e-mail address (the rules mask them): it is held.
    let (events, _) = run(&stream(&["short text"], false), &[], MAX_WINDOW);
    let kinds: Vec<&str> = events.iter().map(|v| v["type"].as_str().unwrap()).collect();
    let done = kinds
        .iter()
        .position(|k| *k == "response.output_text.done")
        .unwrap();
    assert_eq!(kinds[done - 1], "response.output_text.delta");
    assert_eq!(events[done - 1]["delta"], "text");
    assert_eq!(events[done - 1]["item_id"], "msg_1");
    assert_eq!(
        events[done - 2]["delta"],
        "short ",
        "the provider's delta went out with what cannot be part of a match"
    );
    assert_numbered(&events);
}

#[test]
fn a_block_ends_with_an_error_event_and_a_failed_response() {
    let pieces = ["Here is the key: -----BEGIN PRIV", "ATE KEY-----\nMIIE", "more"];
    for call in [false, true] {
        let (events, s) = run(&stream(&pieces, call), &[], MAX_WINDOW);
        assert!(s.blocked.is_some());
        let (deltas, whole) = texts(&events);
        assert!(!deltas.contains("BEGIN PRIVATE") && whole.is_empty(), "{deltas}");
        let n = events.len();
        assert_eq!(events[n - 2]["type"], "error");
        assert_eq!(events[n - 2]["code"], "content_blocked");
        assert!(events[n - 2]["message"].as_str().unwrap().contains("private_key"));
        assert_eq!(events[n - 1]["type"], "response.failed");
        assert_eq!(events[n - 1]["response"]["status"], "failed");
        assert_eq!(events[n - 1]["response"]["id"], "resp_1");
        assert_eq!(events[n - 1]["response"]["error"]["code"], "content_blocked");
        assert_numbered(&events);
    }
}

#[test]
fn a_text_never_streamed_as_deltas_is_moderated_where_it_first_appears() {
    let item = json!({"type": "message", "id": "m", "content": [{"type": "output_text", "text": "mail eve@example.com"}]});
    let mut body = Vec::new();
    for (i, v) in [
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        json!({"type": "response.completed", "response": {"id": "r", "output": [item]}}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut v = v;
        v["sequence_number"] = json!(i);
        body.extend(Event::encode(Some(v["type"].as_str().unwrap()), &v.to_string()));
    }
    let (events, s) = run(&body, &[], MAX_WINDOW);
    assert_eq!(events[0]["item"]["content"][0]["text"], "mail [EMAIL]");
    assert_eq!(
        events[1]["response"]["output"][0]["content"][0]["text"],
        "mail [EMAIL]"
    );
    assert_eq!(s.findings.len(), 1, "the repeated copy is not a second finding");
}

#[test]
fn events_without_generated_text_pass_byte_for_byte() {
    let body = stream(&[], false);
    let head: Vec<u8> = {
        let mut events = Vec::new();
        SseParser::default().feed(&body, &mut events).unwrap();
        events[..4].iter().flat_map(|e| e.raw.clone()).collect()
    };
    let r = rules();
    let mut s = Stream::new(Provider::OpenAiResponses, MAX_WINDOW);
    assert_eq!(s.feed(&r, &head, false), head);
}

#[test]
fn a_long_secret_split_anywhere_never_gets_out() {
    let jwt = long_jwt(700);
    let text = format!("the key: {jwt} is yours");
    for split in 1..text.len() {
        let (a, b) = text.split_at(split);
        let (events, s) = run(&stream(&[a, b], false), &[], MAX_WINDOW);
        assert!(s.blocked.is_some(), "split at {split}");
        let all: String = events.iter().map(Value::to_string).collect();
        assert!(!all.contains("eyJ"), "split at {split}: {all}");
        assert_eq!(events.last().unwrap()["type"], "response.failed");
        assert_numbered(&events);
    }
}
