//! OpenAI's Responses API (`POST /v1/responses`), as the API sends it
//! (platform.openai.com/docs/api-reference/responses; field names as the official `openai` SDK's
//! types read them): a `response` object whose `output` holds a `message` with `output_text`, or a
//! `function_call` when the request defines tools and `x-mock-tool-call` asks for one; streamed as
//! typed events with consecutive `sequence_number`s, `response.created` … `response.completed` (or
//! `response.incomplete` when `max_output_tokens` cut the answer), with no `[DONE]`.

use super::reply::{fnv, reply};
use super::{Controls, Journal, MockBody, Recorded, json_response, openai_error, sse_response, tools};
use crate::tokens;
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

/// The texts of `input` and `instructions`, and the last user text (what the reply echoes).
fn prompt(req: &Value) -> (String, String) {
    let mut all = String::new();
    let mut last_user = String::new();
    if let Some(i) = req.get("instructions").and_then(Value::as_str) {
        all.push_str(i);
        all.push('\n');
    }
    match req.get("input") {
        Some(Value::String(s)) => {
            all.push_str(s);
            last_user.clone_from(s);
        }
        Some(Value::Array(items)) => {
            for item in items {
                let mut text = String::new();
                match item.get("content").or_else(|| item.get("output")) {
                    Some(Value::String(s)) => text.push_str(s),
                    Some(Value::Array(parts)) => {
                        for t in parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)) {
                            text.push_str(t);
                            text.push('\n');
                        }
                    }
                    _ => {}
                }
                if let Some(a) = item.get("arguments").and_then(Value::as_str) {
                    text.push_str(a);
                }
                if item.get("role").and_then(Value::as_str) == Some("user") {
                    last_user.clone_from(&text);
                }
                all.push_str(&text);
                all.push('\n');
            }
        }
        _ => {}
    }
    (all, last_user)
}

pub(super) fn create(rec: &Recorded, req: &Value, ctl: &Controls) -> Response<MockBody> {
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &openai_error("Missing required parameter: 'model'.", "invalid_request_error"),
        );
    };
    if !matches!(req.get("input"), Some(Value::String(_) | Value::Array(_))) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &openai_error("Missing required parameter: 'input'.", "invalid_request_error"),
        );
    }
    let (_, last_user) = prompt(req);
    let max = req.get("max_output_tokens").and_then(Value::as_u64);
    let r = reply(model, &last_user, rec, ctl, max);
    let call = tools::tool_call(model, &tools_as_chat(req), rec, ctl, &last_user, false);
    let input_tokens = count_input(model, req);
    let cached = ctl.cached_tokens.min(input_tokens);
    let output_tokens = call.as_ref().map_or(r.completion_tokens, |c| c.completion_tokens);
    let h = fnv(&rec.body);
    let id = format!("resp_mock{h:016x}");
    let item_id = format!("msg_mock{h:016x}");
    let created = 1_700_000_000 + h % 100_000_000;
    let incomplete = call.is_none() && r.finish_length;
    let status = if incomplete { "incomplete" } else { "completed" };
    let usage = json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached},
                       "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                       "total_tokens": input_tokens + output_tokens});
    let item = match &call {
        Some(c) => json!({"type": "function_call", "id": format!("fc_mock{h:016x}"), "call_id": c.id,
                          "name": c.name, "arguments": c.arguments, "status": "completed"}),
        None => json!({"type": "message", "id": item_id, "status": status, "role": "assistant",
                       "content": [{"type": "output_text", "text": r.text, "annotations": [], "logprobs": []}]}),
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": created, "status": status, "model": model,
               "output": output, "usage": usage, "error": null,
               "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
               "instructions": req.get("instructions").cloned().unwrap_or(Value::Null),
               "max_output_tokens": max, "parallel_tool_calls": true, "previous_response_id":
                   req.get("previous_response_id").cloned().unwrap_or(Value::Null),
               "temperature": req.get("temperature").cloned().unwrap_or(json!(1.0)),
               "tool_choice": "auto", "tools": req.get("tools").cloned().unwrap_or(json!([])), "top_p": 1.0,
               "store": req.get("store").cloned().unwrap_or(json!(true)), "text": {"format": {"type": "text"}}})
    };
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        return json_response(StatusCode::OK, &response(status, json!([item]), usage));
    }
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut ev = |mut data: Value| {
        data["sequence_number"] = json!(seq);
        seq += 1;
        let name = data["type"].as_str().unwrap_or("").to_owned();
        events.push(Bytes::from(format!(
            "event: {name}\ndata: {}\n\n",
            serde_json::to_string(&data).unwrap_or_default()
        )));
    };
    ev(json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}));
    ev(json!({"type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null)}));
    match &call {
        Some(c) => {
            let fc_id = item["id"].clone();
            let mut added = item.clone();
            added["arguments"] = json!("");
            added["status"] = json!("in_progress");
            ev(json!({"type": "response.output_item.added", "output_index": 0, "item": added}));
            for p in &c.pieces {
                ev(
                    json!({"type": "response.function_call_arguments.delta", "item_id": fc_id,
                          "output_index": 0, "delta": p}),
                );
            }
            ev(
                json!({"type": "response.function_call_arguments.done", "item_id": fc_id, "output_index": 0,
                      "name": c.name, "arguments": c.arguments}),
            );
        }
        None => {
            let mut added = item.clone();
            added["content"] = json!([]);
            added["status"] = json!("in_progress");
            ev(json!({"type": "response.output_item.added", "output_index": 0, "item": added}));
            ev(
                json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0,
                      "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            for p in &r.pieces {
                ev(
                    json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
                          "content_index": 0, "delta": p, "logprobs": []}),
                );
            }
            ev(
                json!({"type": "response.output_text.done", "item_id": item_id, "output_index": 0,
                      "content_index": 0, "text": r.text, "logprobs": []}),
            );
            ev(
                json!({"type": "response.content_part.done", "item_id": item_id, "output_index": 0,
                      "content_index": 0, "part": item["content"][0]}),
            );
        }
    }
    ev(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    let last = if incomplete {
        "response.incomplete"
    } else {
        "response.completed"
    };
    ev(json!({"type": last, "response": response(status, json!([item]), usage)}));
    sse_response(events, ctl)
}

/// What the mock bills as a request's input: the tiktoken count of every input text, plus 3.
fn count_input(model: &str, req: &Value) -> u64 {
    tokens::count(model, &prompt(req).0) + 3
}

/// `POST /v1/responses/input_tokens`: the count `create` would bill (`model` and `input` are
/// optional here).
pub(super) fn input_tokens(req: &Value) -> Response<MockBody> {
    let model = req.get("model").and_then(Value::as_str).unwrap_or("gpt-4o");
    json_response(
        StatusCode::OK,
        &json!({"object": "response.input_tokens", "input_tokens": count_input(model, req)}),
    )
}

/// `POST /v1/responses/compact`: a `response.compaction` object, per the API reference: `output`
/// keeps the conversation's user messages and adds one `compaction` item whose
/// `encrypted_content` stands for the rest (opaque, as the provider's is), and `usage` bills the
/// input and a summary of 32 tokens.
pub(super) fn compact(rec: &Recorded, req: &Value) -> Response<MockBody> {
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &openai_error("Missing required parameter: 'model'.", "invalid_request_error"),
        );
    };
    let h = fnv(&rec.body);
    let mut output: Vec<Value> = match req.get("input") {
        Some(Value::String(s)) => vec![
            json!({"type": "message", "id": format!("msg_mock{h:016x}"), "role": "user",
                                              "status": "completed", "content": [{"type": "input_text", "text": s}]}),
        ],
        Some(Value::Array(items)) => items
            .iter()
            .filter(|i| i.get("role").and_then(Value::as_str) == Some("user"))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    let sealed: String = format!("{h:016x}").repeat(8);
    output
        .push(json!({"type": "compaction", "id": format!("cmp_mock{h:016x}"), "encrypted_content": sealed}));
    let input_tokens = count_input(model, req);
    let output_tokens = 32;
    json_response(
        StatusCode::OK,
        &json!({"id": format!("resp_cmp_mock{h:016x}"), "object": "response.compaction",
                "created_at": 1_700_000_000 + h % 100_000_000, "output": output,
                "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": input_tokens + output_tokens}}),
    )
}

/// `GET /v1/responses/{id}`: a response created earlier without `store: false`, as JSON (the
/// mock is deterministic: the request it answered, answered again, is the stored response).
pub(super) fn retrieve(journal: &Journal, id: &str) -> Response<MockBody> {
    let created = journal.requests().into_iter().rev().find(|r| {
        r.method == "POST" && r.path == "/v1/responses" && format!("resp_mock{:016x}", fnv(&r.body)) == id
    });
    let stored = created.and_then(|rec| {
        let mut req: Value = serde_json::from_slice(&rec.body).ok()?;
        (req.get("store") != Some(&json!(false))).then(|| {
            req["stream"] = json!(false);
            create(&rec, &req, &Controls::from(&rec))
        })
    });
    stored.unwrap_or_else(|| {
        json_response(
            StatusCode::NOT_FOUND,
            &openai_error(
                &format!("Response with id '{id}' not found."),
                "invalid_request_error",
            ),
        )
    })
}

/// Responses tools are flat (`{"type":"function","name",…}`); the shared tool-call helper reads
/// chat's nested shape.
fn tools_as_chat(req: &Value) -> Value {
    let tools: Vec<Value> = req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .map(
            |t| json!({"type": "function", "function": {"name": t.get("name").cloned().unwrap_or_default()}}),
        )
        .collect();
    json!({"tools": tools})
}
