//! Anthropic messages, as the API sends them.

use super::reply::{fnv, last_user_text, reply, split_pieces};
use super::{Controls, MockBody, Recorded, anthropic_error, json_response, sse_response, tools};
use crate::tokens;
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

/// The prompt's tokens. Anthropic's tokenizer is not public; the mock counts with o200k_base, which
/// keeps the numbers real (same text, same count) without pretending to be Anthropic's figures.
fn input_tokens(model: &str, req: &Value, msgs: &[Value]) -> u64 {
    let mut prompt_text = String::new();
    if let Some(system) = req.get("system") {
        collect_text(system, &mut prompt_text);
    }
    for m in msgs {
        if let Some(c) = m.get("content") {
            collect_text(c, &mut prompt_text);
        }
    }
    tokens::count(model, &prompt_text) + 4 * msgs.len() as u64
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, the count a message with the same
/// prompt is billed (docs.claude.com/en/api/messages-count-tokens). No `max_tokens`: the API
/// refuses fields that are not part of a prompt.
pub(super) fn count_tokens(req: &Value) -> Response<MockBody> {
    let bad = |msg: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &anthropic_error(msg, "invalid_request_error"),
        )
    };
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return bad("model: Field required");
    };
    let Some(msgs) = req.get("messages").and_then(Value::as_array) else {
        return bad("messages: Field required");
    };
    for field in ["max_tokens", "stream", "temperature", "stop_sequences"] {
        if req.get(field).is_some() {
            return bad(&format!("{field}: Extra inputs are not permitted"));
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"input_tokens": input_tokens(model, req, msgs)}),
    )
}

pub(super) fn messages(rec: &Recorded, req: &Value, ctl: &Controls) -> Response<MockBody> {
    let bad = |msg: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &anthropic_error(msg, "invalid_request_error"),
        )
    };
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return bad("model: Field required");
    };
    let Some(max_tokens) = req.get("max_tokens").and_then(Value::as_u64) else {
        return bad("max_tokens: Field required");
    };
    let Some(msgs) = req.get("messages").and_then(Value::as_array) else {
        return bad("messages: Field required");
    };
    let prompt = last_user_text(msgs);
    let r = reply(model, &prompt, rec, ctl, Some(max_tokens));
    let call = tools::tool_call(model, req, rec, ctl, &prompt, true);
    let think = ctl.thinking.then(|| tools::thinking(&prompt));
    let all_input = input_tokens(model, req, msgs);
    let cached = ctl.cached_tokens.min(all_input);
    let input_tokens = all_input - cached;
    let h = fnv(&rec.body);
    let id = format!("msg_mock{h:016x}");
    let stop = match (&call, r.finish_length) {
        (Some(_), _) => "tool_use",
        (None, true) => "max_tokens",
        (None, false) => "end_turn",
    };
    let output_tokens = call.as_ref().map_or(r.completion_tokens, |c| c.completion_tokens)
        + think.as_ref().map_or(0, |(t, _)| tokens::count(model, t));
    let mut content = Vec::new();
    if let Some((t, sig)) = &think {
        content.push(json!({"type": "thinking", "thinking": t, "signature": sig}));
    }
    content.push(match &call {
        Some(c) => json!({"type": "tool_use", "id": c.id, "name": c.name,
                          "input": serde_json::from_str::<Value>(&c.arguments).unwrap_or_default()}),
        None => json!({"type": "text", "text": r.text}),
    });
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        return json_response(
            StatusCode::OK,
            &json!({"id": id, "type": "message", "role": "assistant", "model": model,
                    "content": content, "stop_reason": stop, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": cached, "output_tokens": output_tokens,
                              "service_tier": "standard"}}),
        );
    }
    let ev = |name: &str, data: &Value| {
        Bytes::from(format!(
            "event: {name}\ndata: {}\n\n",
            serde_json::to_string(data).unwrap_or_default()
        ))
    };
    let mut events = vec![ev(
        "message_start",
        &json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": cached, "output_tokens": 1, "service_tier": "standard"}}}),
    )];
    let delta = |index: usize, delta: Value| {
        ev(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    };
    for (index, block) in content.iter().enumerate() {
        let start = match block["type"].as_str() {
            Some("thinking") => json!({"type": "thinking", "thinking": ""}),
            Some("tool_use") => {
                json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}})
            }
            _ => json!({"type": "text", "text": ""}),
        };
        events.push(ev(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        if index == 0 {
            events.push(ev("ping", &json!({"type": "ping"})));
        }
        match (block["type"].as_str(), &think, &call) {
            (Some("thinking"), Some((t, sig)), _) => {
                for p in split_pieces(t, None) {
                    events.push(delta(index, json!({"type": "thinking_delta", "thinking": p})));
                }
                events.push(delta(index, json!({"type": "signature_delta", "signature": sig})));
            }
            (Some("tool_use"), _, Some(c)) => {
                for p in &c.pieces {
                    events.push(delta(
                        index,
                        json!({"type": "input_json_delta", "partial_json": p}),
                    ));
                }
            }
            _ => {
                for p in &r.pieces {
                    events.push(delta(index, json!({"type": "text_delta", "text": p})));
                }
            }
        }
        events.push(ev(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(ev(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(ev("message_stop", &json!({"type": "message_stop"})));
    sse_response(events, ctl)
}

pub(super) fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(blocks) => {
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    out.push_str(t);
                    out.push('\n');
                } else if let Some(c) = b.get("content") {
                    collect_text(c, out);
                }
            }
        }
        _ => {}
    }
}
