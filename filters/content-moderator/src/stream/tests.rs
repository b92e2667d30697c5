#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::config::{MAX_WINDOW, RawRules, compile_rules};

pub(super) fn rules() -> Rules {
    let v = json!({"detectors": {"payment_card": {"action": "mask", "mask": "last4"},
                                 "email": {"action": "mask"},
                                 "jwt": {"action": "block"},
                                 "private_key": {"action": "block"}}});
    compile_rules(
        filter_core::config::parse::<RawRules>(v.to_string().as_bytes()).unwrap(),
        "response",
        true,
    )
    .unwrap()
}

fn openai_stream(pieces: &[&str]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&Event::encode(
        None,
        &json!({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]})
            .to_string(),
    ));
    for p in pieces {
        s.extend_from_slice(&Event::encode(
            None,
            &json!({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]}).to_string(),
        ));
    }
    s.extend_from_slice(&Event::encode(
        None,
        &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).to_string(),
    ));
    s.extend_from_slice(&Event::encode(None, "[DONE]"));
    s
}

fn anthropic_stream(pieces: &[&str]) -> Vec<u8> {
    let mut s = Vec::new();
    let ev = |name: &str, v: Value| Event::encode(Some(name), &v.to_string());
    s.extend(ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "m", "content": []}}),
    ));
    s.extend(ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    for p in pieces {
        s.extend(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    s.extend(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    s.extend(ev("message_stop", json!({"type": "message_stop"})));
    s
}

/// The text a client reads from `out` (every delta joined) and whether the stream is well formed.
fn client_text(anthropic: bool, out: &[u8]) -> (String, Vec<Value>) {
    let mut events = Vec::new();
    SseParser::default().feed(out, &mut events).unwrap();
    let mut text = String::new();
    let mut parsed = Vec::new();
    for e in &events {
        let d = e.data.as_deref().unwrap();
        if d == "[DONE]" {
            parsed.push(json!("[DONE]"));
            continue;
        }
        let v: Value = serde_json::from_str(d).unwrap();
        let piece = if anthropic {
            v.pointer("/delta/text")
        } else {
            v.pointer("/choices/0/delta/content")
        };
        if let Some(t) = piece.and_then(Value::as_str) {
            text.push_str(t);
        }
        parsed.push(v);
    }
    (text, parsed)
}

/// Feeds `body` cut at `cuts` (byte offsets) through a fresh stream.
fn run(anthropic: bool, body: &[u8], cuts: &[usize], holdback: usize) -> (Vec<u8>, Stream) {
    let r = rules();
    let provider = if anthropic {
        Provider::Anthropic
    } else {
        Provider::OpenAiChat
    };
    let mut s = Stream::new(provider, holdback);
    let mut out = Vec::new();
    let mut prev = 0;
    for &c in cuts.iter().chain(std::iter::once(&body.len())) {
        out.extend(s.feed(&r, &body[prev..c], c == body.len()));
        prev = c;
    }
    (out, s)
}

/// A JWT-shaped token of about `len` bytes (base64url segments; made up, not a real token).
pub(super) fn long_jwt(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut segment = |n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ALPHABET[(x % 64) as usize] as char
            })
            .collect()
    };
    let third = len / 3;
    format!(
        "eyJ{}.eyJ{}.{}",
        segment(third - 4),
        segment(third - 4),
        segment(third)
    )
}

#[test]
fn a_long_secret_split_anywhere_never_gets_out() {
    let jwt = long_jwt(700);
    let text = format!("the key: {jwt} is yours");
    for anthropic in [false, true] {
        let check = |body: Vec<u8>, cuts: &[usize], how: &str| {
            let (out, s) = run(anthropic, &body, cuts, MAX_WINDOW);
            assert!(s.blocked.is_some(), "anthropic={anthropic} {how}");
            let (got, _) = client_text(anthropic, &out);
            assert!(!got.contains("eyJ"), "anthropic={anthropic} {how}: {got}");
            assert!(
                "the key: ".starts_with(&got) || got == "the key: ",
                "{how}: {got}"
            );
        };
        let stream = |pieces: &[&str]| {
            if anthropic {
                anthropic_stream(pieces)
            } else {
                openai_stream(pieces)
            }
        };
        for split in 1..text.len() {
            let (a, b) = text.split_at(split);
            check(stream(&[a, b]), &[], &format!("split at {split}"));
        }
        let pieces: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let body = stream(&refs);
        let cuts: Vec<usize> = (1..body.len()).step_by(7).collect();
        check(body, &cuts, "a character per delta, the body cut every 7 bytes");
    }
}

#[test]
fn a_match_split_at_every_event_and_byte_boundary_is_masked() {
    let text = "Your card 4111 1111 1111 1111 and mail bob@example.com are on file.";
    let want = "Your card **** **** **** 1111 and mail [EMAIL] are on file.";
    for anthropic in [false, true] {
        // Split the text into two deltas at every character position.
        for split in 1..text.len() {
            let (a, b) = text.split_at(split);
            let body = if anthropic {
                anthropic_stream(&[a, b])
            } else {
                openai_stream(&[a, b])
            };
            let (out, s) = run(anthropic, &body, &[], MAX_WINDOW);
            let (got, _) = client_text(anthropic, &out);
            assert_eq!(got, want, "anthropic={anthropic} split at {split}");
            assert_eq!(s.findings.len(), 2);
        }
        // One character per delta, and the body cut at every byte.
        let pieces: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let body = if anthropic {
            anthropic_stream(&refs)
        } else {
            openai_stream(&refs)
        };
        let cuts: Vec<usize> = (1..body.len()).collect();
        let (out, _) = run(anthropic, &body, &cuts, MAX_WINDOW);
        assert_eq!(
            client_text(anthropic, &out).0,
            want,
            "anthropic={anthropic} byte by byte"
        );
    }
}

#[test]
fn prose_goes_out_at_once_and_a_forming_match_waits_up_to_the_bound() {
    let r = rules();
    let first_delta = |pieces: &[&str], bound: usize| {
        let body = openai_stream(pieces);
        let mut s = Stream::new(Provider::OpenAiChat, bound);
        // Only the role event and the first delta.
        let first_two: usize = {
            let mut events = Vec::new();
            SseParser::default().feed(&body, &mut events).unwrap();
            events[0].raw.len() + events[1].raw.len()
        };
        let out = s.feed(&r, &body[..first_two], false);
        client_text(false, &out).0
    };
    // Nothing in it can start a card number, a key or an address.
    let prose = "Hello there, my friend! How are you today? ";
    assert_eq!(first_delta(&[prose, "b"], MAX_WINDOW), prose);
    // A card number still arriving waits, the text before it does not.
    assert_eq!(
        first_delta(&["Your card 4111 1111", " 1111 1111."], MAX_WINDOW),
        "Your card "
    );
    // A word at the end could still become an e-mail address (the rules mask them).
    assert_eq!(
        first_delta(&["write to jane", "@example.com"], MAX_WINDOW),
        "write to "
    );
    // The bound: a forming match longer than it goes out (100 letters of a possible address).
    let long = "a".repeat(100);
    assert_eq!(first_delta(&[&long, "b"], 16), "a".repeat(84));
}

#[test]
fn a_block_ends_the_stream_with_a_well_formed_error() {
    for anthropic in [false, true] {
        let pieces = [
            "Here is the key: -----BEGIN PRIV",
            "ATE KEY-----\nMIIE",
            "more",
            "and more",
        ];
        let body = if anthropic {
            anthropic_stream(&pieces)
        } else {
            openai_stream(&pieces)
        };
        let (out, s) = run(anthropic, &body, &[], MAX_WINDOW);
        assert!(s.blocked.is_some());
        let (text, events) = client_text(anthropic, &out);
        assert!(!text.contains("BEGIN PRIVATE"), "{text}");
        let last_two = &events[events.len().saturating_sub(2)..];
        if anthropic {
            assert_eq!(events.last().unwrap()["type"], "error");
            assert_eq!(events.last().unwrap()["error"]["code"], "content_blocked");
        } else {
            assert_eq!(last_two[0]["error"]["code"], "content_blocked");
            assert_eq!(last_two[1], json!("[DONE]"));
        }
        let msg = out.windows(11).any(|w| w == b"private_key");
        assert!(msg, "the error names the category");
    }
}

#[test]
fn tool_call_arguments_refusals_json_deltas_and_several_choices_are_moderated() {
    let ev = |v: Value| Event::encode(None, &v.to_string());
    let mut body = Vec::new();
    for piece in ["{\"to\": \"bob@exa", "mple.com\"}"] {
        body.extend(ev(json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0,
            "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, "finish_reason": null}]})));
    }
    body.extend(ev(json!({"choices": [
        {"index": 0, "delta": {"refusal": "mail ann@"}, "finish_reason": null},
        {"index": 1, "delta": {"content": "card 4111 1111 "}, "finish_reason": null}]})));
    body.extend(ev(json!({"choices": [
        {"index": 0, "delta": {"refusal": "example.com"}, "finish_reason": null},
        {"index": 1, "delta": {"content": "1111 1111"}, "finish_reason": null}]})));
    body.extend(ev(
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"},
                                      {"index": 1, "delta": {}, "finish_reason": "stop"}]}),
    ));
    body.extend(Event::encode(None, "[DONE]"));
    let (out, s) = run(false, &body, &[], MAX_WINDOW);
    let mut events = Vec::new();
    SseParser::default().feed(&out, &mut events).unwrap();
    let mut args = String::new();
    let mut refusal = String::new();
    let mut content = String::new();
    for e in &events {
        let Ok(v) = serde_json::from_str::<Value>(e.data.as_deref().unwrap()) else {
            continue;
        };
        for c in v["choices"].as_array().into_iter().flatten() {
            let d = &c["delta"];
            args.push_str(
                d.pointer("/tool_calls/0/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            refusal.push_str(d["refusal"].as_str().unwrap_or_default());
            if c["index"] == 1 {
                content.push_str(d["content"].as_str().unwrap_or_default());
            }
        }
    }
    assert_eq!(args, "{\"to\": \"[EMAIL]\"}");
    assert_eq!(refusal, "mail [EMAIL]");
    assert_eq!(content, "card **** **** **** 1111");
    assert_eq!(s.findings.len(), 3);
    assert!(
        out.ends_with(b"data: [DONE]\n\n"),
        "the held text goes out before [DONE]"
    );

    let an = |v: Value| Event::encode(Some(v["type"].as_str().unwrap()), &v.to_string());
    let mut body = Vec::new();
    for piece in ["{\"email\": \"eve@", "evil.example\"}"] {
        body.extend(an(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": piece}})));
    }
    body.extend(an(json!({"type": "content_block_stop", "index": 1})));
    let (out, _) = run(true, &body, &[], MAX_WINDOW);
    let mut events = Vec::new();
    SseParser::default().feed(&out, &mut events).unwrap();
    let json: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
        .filter_map(|v| {
            v.pointer("/delta/partial_json")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(json, "{\"email\": \"[EMAIL]\"}");
}

#[test]
fn other_events_pass_byte_for_byte() {
    let usage = Event::encode(
        None,
        &json!({"choices": [], "usage": {"prompt_tokens": 3}}).to_string(),
    );
    let ping = b": keep-alive\n\n".to_vec();
    let mut body = ping.clone();
    body.extend_from_slice(&usage);
    let (out, _) = run(false, &body, &[5], MAX_WINDOW);
    assert_eq!(out, body);
}
