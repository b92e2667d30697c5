//! OpenAI chat completions, completions and embeddings, as the API sends them.

use super::reply::{base64_encode, fnv, last_user_text, pseudo_embedding, reply};
use super::{Controls, MockBody, Recorded, json_response, openai_error, sse_response, tools};
use crate::tokens;
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

pub(super) fn chat(rec: &Recorded, req: &Value, ctl: &Controls) -> Response<MockBody> {
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &openai_error("you must provide a model parameter", "invalid_request_error"),
        );
    };
    let Some(messages) = req.get("messages").and_then(Value::as_array) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &openai_error("Missing required parameter: 'messages'.", "invalid_request_error"),
        );
    };
    let max = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64);
    let prompt = last_user_text(messages);
    let r = reply(model, &prompt, rec, ctl, max);
    let call = tools::tool_call(model, req, rec, ctl, &prompt, false);
    let prompt_tokens = tokens::chat_prompt_tokens(model, messages);
    let h = fnv(&rec.body);
    let id = format!("chatcmpl-mock{h:016x}");
    let created = 1_700_000_000 + h % 100_000_000;
    let fingerprint = "fp_mock0001";
    let finish = match (&call, r.finish_length) {
        (Some(_), _) => "tool_calls",
        (None, true) => "length",
        (None, false) => "stop",
    };
    let completion_tokens = call.as_ref().map_or(r.completion_tokens, |c| c.completion_tokens);
    let usage = openai_usage(prompt_tokens, completion_tokens, ctl.cached_tokens);
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        let message = match &call {
            Some(c) => json!({"role": "assistant", "content": null, "refusal": null, "annotations": [],
                              "tool_calls": [{"id": c.id, "type": "function",
                                              "function": {"name": c.name, "arguments": c.arguments}}]}),
            None => json!({"role": "assistant", "content": r.text, "refusal": null, "annotations": []}),
        };
        let mut body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage, "service_tier": "default", "system_fingerprint": fingerprint
        });
        if ctl.no_usage
            && let Some(o) = body.as_object_mut()
        {
            o.remove("usage");
        }
        return json_response(StatusCode::OK, &body);
    }
    let include_usage = !ctl.no_usage
        && req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "service_tier": "default", "system_fingerprint": fingerprint, "choices": choices});
        if include_usage {
            c["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        openai_event(&c)
    };
    let mut events = Vec::new();
    match &call {
        // The first chunk names the call; the rest carry argument fragments.
        Some(c) => {
            events.push(chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": null, "refusal": null,
                        "tool_calls": [{"index": 0, "id": c.id, "type": "function",
                                        "function": {"name": c.name, "arguments": ""}}]},
                        "logprobs": null, "finish_reason": null}]),
                None,
            ));
            for p in &c.pieces {
                events.push(chunk(
                    json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]},
                            "logprobs": null, "finish_reason": null}]),
                    None,
                ));
            }
        }
        None => {
            events.push(chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]),
                None,
            ));
            for p in &r.pieces {
                events.push(chunk(
                    json!([{"index": 0, "delta": {"content": p}, "logprobs": null, "finish_reason": null}]),
                    None,
                ));
            }
        }
    }
    events.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}]),
        None,
    ));
    if include_usage {
        events.push(chunk(json!([]), Some(&usage)));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(events, ctl)
}

pub(super) fn completions(rec: &Recorded, req: &Value, ctl: &Controls) -> Response<MockBody> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-3.5-turbo-instruct");
    let prompt = match req.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    };
    // The legacy endpoint defaults max_tokens to 16.
    let max = req.get("max_tokens").and_then(Value::as_u64).unwrap_or(16);
    let r = reply(model, &prompt, rec, ctl, Some(max));
    let prompt_tokens = tokens::count(model, &prompt);
    let h = fnv(&rec.body);
    let id = format!("cmpl-mock{h:016x}");
    let created = 1_700_000_000 + h % 100_000_000;
    let finish = if r.finish_length { "length" } else { "stop" };
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": r.completion_tokens,
                       "total_tokens": prompt_tokens + r.completion_tokens});
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        return json_response(
            StatusCode::OK,
            &json!({"id": id, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"text": r.text, "index": 0, "logprobs": null, "finish_reason": finish}],
                    "usage": usage, "system_fingerprint": null}),
        );
    }
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let chunk = |text: &str, finish: Option<&str>, usage: Option<&Value>, choices_empty: bool| {
        let choices = if choices_empty {
            json!([])
        } else {
            json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}])
        };
        let mut c = json!({"id": id, "object": "text_completion", "created": created, "choices": choices,
                           "model": model, "system_fingerprint": null});
        if include_usage {
            c["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        openai_event(&c)
    };
    let mut events: Vec<Bytes> = r.pieces.iter().map(|p| chunk(p, None, None, false)).collect();
    events.push(chunk("", Some(finish), None, false));
    if include_usage {
        events.push(chunk("", None, Some(&usage), true));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(events, ctl)
}

pub(super) fn embeddings(req: &Value) -> Response<MockBody> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("text-embedding-3-small");
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &openai_error(
                    "'input' must be a string or an array of strings",
                    "invalid_request_error",
                ),
            );
        }
    };
    let default_dim = if model.contains("large") { 3072 } else { 1536 };
    let dim = req
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(default_dim)
        .clamp(1, 8192) as usize;
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut tokens_used = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens_used += tokens::count(model, text);
            let v = pseudo_embedding(text, dim);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens_used, "total_tokens": tokens_used}}),
    )
}

pub(super) fn openai_usage(prompt: u64, completion: u64, cached: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached.min(prompt), "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                         "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

pub(super) fn openai_event(v: &Value) -> Bytes {
    Bytes::from(format!(
        "data: {}\n\n",
        serde_json::to_string(v).unwrap_or_default()
    ))
}
