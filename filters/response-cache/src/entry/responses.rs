//! The Responses API's entries: a completed `response` whose output is one assistant message of
//! `output_text` parts (function calls, refusals and reasoning items are passed, not stored). A
//! streamed answer is recorded from its terminal `response.completed` event, which carries the
//! whole response; a hit is replayed as that JSON or as the API's typed event sequence
//! (platform.openai.com/docs/api-reference/responses-streaming), numbered from 0.

use filter_core::sse::Event;
use serde_json::{Value, json};

/// Checks that a `response` object can be stored and replayed.
pub fn storable(v: &Value) -> Result<(), &'static str> {
    if v.get("object").and_then(Value::as_str) != Some("response") {
        return Err("not a response");
    }
    if v.get("status").and_then(Value::as_str) != Some("completed") {
        return Err("not completed");
    }
    let output = v.get("output").and_then(Value::as_array).ok_or("no output")?;
    let [item] = output.as_slice() else {
        return Err("not exactly one output item");
    };
    if item.get("type").and_then(Value::as_str) != Some("message") {
        return Err("not text only");
    }
    let parts = item
        .get("content")
        .and_then(Value::as_array)
        .ok_or("no content")?;
    let text_only = !parts.is_empty()
        && parts.iter().all(|p| {
            p.get("type").and_then(Value::as_str) == Some("output_text")
                && p.get("text").is_some_and(Value::is_string)
        });
    if !text_only {
        return Err("not text only");
    }
    Ok(())
}

/// The events a provider streams for `v`, a stored (storable) response.
pub fn to_sse(v: &Value, out: &mut Vec<u8>) -> Option<()> {
    let item = v.get("output")?.get(0)?;
    let item_id = item.get("id").cloned().unwrap_or(Value::Null);
    let mut seq = 0u64;
    let mut push = |mut ev: Value| {
        ev["sequence_number"] = json!(seq);
        seq += 1;
        let name = ev
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        out.extend(Event::encode(Some(&name), &ev.to_string()));
    };
    let mut pending = v.clone();
    pending["status"] = json!("in_progress");
    pending["output"] = json!([]);
    pending["usage"] = Value::Null;
    push(json!({"type": "response.created", "response": pending}));
    push(json!({"type": "response.in_progress", "response": pending}));
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    added["content"] = json!([]);
    push(json!({"type": "response.output_item.added", "output_index": 0, "item": added}));
    for (i, part) in item.get("content")?.as_array()?.iter().enumerate() {
        let text = part.get("text")?.as_str()?;
        let mut empty = part.clone();
        empty["text"] = json!("");
        let at = |ev: Value| {
            let mut ev = ev;
            ev["item_id"] = item_id.clone();
            ev["output_index"] = json!(0);
            ev["content_index"] = json!(i);
            ev
        };
        push(at(json!({"type": "response.content_part.added", "part": empty})));
        if !text.is_empty() {
            push(at(
                json!({"type": "response.output_text.delta", "delta": text, "logprobs": []}),
            ));
        }
        push(at(
            json!({"type": "response.output_text.done", "text": text, "logprobs": []}),
        ));
        push(at(json!({"type": "response.content_part.done", "part": part})));
    }
    push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    push(json!({"type": "response.completed", "response": v}));
    Some(())
}

/// What one event of a streamed answer means for its recording.
pub enum Recorded {
    /// The whole response, from `response.completed`.
    Completed(Value),
    /// The answer failed or was cut short: not stored.
    Failed(&'static str),
    Other,
}

pub fn record(v: &Value) -> Recorded {
    match v.get("type").and_then(Value::as_str) {
        Some("response.completed") => match v.get("response") {
            Some(r) => Recorded::Completed(r.clone()),
            None => Recorded::Failed("a completed event without its response"),
        },
        Some("response.incomplete") => Recorded::Failed("the response is incomplete"),
        Some("response.failed" | "error") => Recorded::Failed("the stream ended in an error"),
        _ => Recorded::Other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::entry::{Recorder, storable, to_sse};
    use filter_core::Provider;
    use filter_core::sse::{Event, SseParser};
    use serde_json::{Value, json};

    fn response(output: Value, status: &str) -> Value {
        json!({"id": "resp_1", "object": "response", "created_at": 5, "status": status, "model": "gpt-4o",
               "output": output, "usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}})
    }

    fn message(text: &str) -> Value {
        json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": text, "annotations": []}]})
    }

    fn parse(sse: &[u8]) -> Vec<Value> {
        let mut events: Vec<Event> = Vec::new();
        SseParser::default().feed(sse, &mut events).unwrap();
        events
            .iter()
            .map(|e| {
                let v: Value = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
                assert_eq!(e.event.as_deref(), v["type"].as_str());
                v
            })
            .collect()
    }

    #[test]
    fn a_stream_is_recorded_from_its_completed_event_and_replayed_as_typed_events() {
        let done = response(json!([message("Bonjour")]), "completed");
        let mut body = Vec::new();
        for (i, v) in [
            json!({"type": "response.created", "response": response(json!([]), "in_progress")}),
            json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Bon"}),
            json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "jour"}),
            json!({"type": "response.completed", "response": done}),
        ]
        .into_iter()
        .enumerate()
        {
            let mut v = v;
            v["sequence_number"] = json!(i);
            body.extend(Event::encode(Some(v["type"].as_str().unwrap()), &v.to_string()));
        }
        let mut r = Recorder::new(Provider::OpenAiResponses, 4096);
        for part in body.chunks(5) {
            r.feed(part);
        }
        let json = r.finish().unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&json).unwrap(), done);
        assert!(storable(Provider::OpenAiResponses, &json).is_ok());

        let replay = parse(&to_sse(Provider::OpenAiResponses, &json, false).unwrap());
        let kinds: Vec<&str> = replay.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        for (i, v) in replay.iter().enumerate() {
            assert_eq!(v["sequence_number"], json!(i));
        }
        assert_eq!(replay[0]["response"]["status"], "in_progress");
        assert_eq!(replay[0]["response"]["output"], json!([]));
        assert_eq!(replay[4]["delta"], "Bonjour");
        assert_eq!(replay[4]["item_id"], "msg_1");
        assert_eq!(replay[5]["text"], "Bonjour");
        assert_eq!(replay[8]["response"], done);
    }

    #[test]
    fn only_completed_text_answers_are_stored() {
        let ok = |v: Value| storable(Provider::OpenAiResponses, v.to_string().as_bytes());
        assert!(ok(response(json!([message("hi")]), "completed")).is_ok());
        assert!(ok(response(json!([message("hi")]), "incomplete")).is_err());
        let call = json!({"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"});
        assert!(ok(response(json!([call]), "completed")).is_err());
        let reasoning = json!({"type": "reasoning", "summary": []});
        assert!(ok(response(json!([reasoning, message("hi")]), "completed")).is_err());
        let refusal = json!({"type": "message", "content": [{"type": "refusal", "refusal": "no"}]});
        assert!(ok(response(json!([refusal]), "completed")).is_err());

        for last in [
            json!({"type": "response.incomplete", "response": response(json!([message("h")]), "incomplete")}),
            json!({"type": "error", "code": "server_error", "message": "x"}),
        ] {
            let mut r = Recorder::new(Provider::OpenAiResponses, 4096);
            r.feed(&Event::encode(
                Some(last["type"].as_str().unwrap()),
                &last.to_string(),
            ));
            assert!(r.finish().is_err());
        }
        let mut r = Recorder::new(Provider::OpenAiResponses, 4096);
        r.feed(&Event::encode(
            Some("response.created"),
            "{\"type\":\"response.created\"}",
        ));
        assert_eq!(r.finish(), Err("the stream did not complete"));
    }
}
