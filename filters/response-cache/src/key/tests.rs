#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::config::{RawConfig, compile};
use filter_core::config::parse;
use serde_json::json;

fn cfg(v: Value) -> Config {
    parse::<RawConfig>(v.to_string().as_bytes())
        .and_then(compile)
        .unwrap()
}

fn ctx(scope: &str) -> Context<'_> {
    Context {
        scope,
        semantic_scope: Some("subject:u"),
        headers: Default::default(),
    }
}

fn build_with(p: Provider, body: &Value, c: &Context<'_>, config: &Config) -> Result<Keyed, Bypass> {
    build(p, body.to_string().as_bytes(), c, config)
}

fn key(body: &Value, scope: &str) -> Result<Keyed, Bypass> {
    build_with(Provider::OpenAiChat, body, &ctx(scope), &cfg(json!({})))
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

#[test]
fn same_meaning_same_key() {
    let a = key(&chat("What is Rust?"), "tenant:a").unwrap();
    // Key order, whitespace around the text, 0 vs 0.0, transport fields: the same request.
    let b = json!({"stream": true, "stream_options": {"include_usage": true}, "user": "u1",
                   "prompt_cache_key": "k", "messages": [{"content": "  What is Rust?\n", "role": "user"}],
                   "temperature": 0.0, "model": "gpt-4o"});
    let b = key(&b, "tenant:a").unwrap();
    assert_eq!(a.exact, b.exact);
    assert_eq!(a.namespace, b.namespace);
    assert!(b.stream && b.include_usage && !a.stream);
    assert_eq!(a.semantic_text.as_deref(), Some("What is Rust?"));
}

#[test]
fn everything_that_changes_the_answer_changes_the_key() {
    let base = key(&chat("What is Rust?"), "tenant:a").unwrap().exact;
    let anthropic = json!({"model": "gpt-4o", "temperature": 0, "max_tokens": 5,
                           "messages": [{"role": "user", "content": "What is Rust?"}]});
    let mut variants = vec![
        key(&chat("What is Rust?"), "tenant:b").unwrap().exact,
        key(&chat("What is Go?"), "tenant:a").unwrap().exact,
        build_with(Provider::Anthropic, &anthropic, &ctx("tenant:a"), &cfg(json!({})))
            .unwrap()
            .exact,
    ];
    // Each header that selects a template, route, upstream or provider feature.
    for i in 0..5 {
        let mut c = ctx("tenant:a");
        c.headers[i] = "x";
        variants.push(
            build_with(Provider::OpenAiChat, &chat("What is Rust?"), &c, &cfg(json!({})))
                .unwrap()
                .exact,
        );
    }
    for (field, value) in [
        ("model", json!("gpt-4o-mini")),
        ("max_tokens", json!(10)),
        ("top_p", json!(0.5)),
        ("seed", json!(7)),
        ("tools", json!([{"type": "function", "function": {"name": "f"}}])),
        ("tool_choice", json!("required")),
        ("response_format", json!({"type": "json_object"})),
        ("stop", json!(["\n"])),
        ("temperature", json!(-0.5)),
    ] {
        let mut b = chat("What is Rust?");
        b[field] = value;
        variants.push(key(&b, "tenant:a").unwrap().exact);
    }
    for v in &variants {
        assert_ne!(*v, base);
    }
    let mut unique = variants.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), variants.len());
}

#[test]
fn what_is_not_cached() {
    let c = cfg(json!({}));
    let k = |p: Provider, v: Value| build_with(p, &v, &ctx("s"), &c);
    assert_eq!(
        k(Provider::OpenAiEmbeddings, json!({"model": "m", "input": "x"})),
        Err(Bypass::Api)
    );
    assert_eq!(
        build(Provider::OpenAiChat, b"{not json", &ctx("s"), &c),
        Err(Bypass::InvalidBody)
    );
    assert_eq!(
        k(Provider::OpenAiChat, json!({"messages": []})),
        Err(Bypass::InvalidBody)
    );
    assert_eq!(
        k(
            Provider::OpenAiChat,
            json!({"model": "m", "messages": [], "temperature": 0.7})
        ),
        Err(Bypass::Sampled)
    );
    // The providers' default temperature is 1.
    assert_eq!(
        k(Provider::OpenAiChat, json!({"model": "m", "messages": []})),
        Err(Bypass::Sampled)
    );
    assert_eq!(
        k(
            Provider::OpenAiChat,
            json!({"model": "m", "messages": [], "temperature": 0, "n": 2})
        ),
        Err(Bypass::Choices)
    );
    assert_eq!(
        k(
            Provider::OpenAiChat,
            json!({"model": "m", "messages": [], "temperature": 0, "logprobs": true})
        ),
        Err(Bypass::Logprobs)
    );
    let sampled = cfg(json!({"cache_sampled": true}));
    assert!(
        build_with(
            Provider::OpenAiChat,
            &json!({"model": "m", "messages": []}),
            &ctx("s"),
            &sampled
        )
        .is_ok()
    );
}

#[test]
fn semantic_text_only_for_a_single_text_turn_by_default() {
    let multi = json!({"model": "m", "temperature": 0, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "What is Rust?"}]});
    assert_eq!(key(&multi, "s").unwrap().semantic_text, None);
    let c = cfg(json!({"semantic": {"multi_turn": true}}));
    let k = build_with(Provider::OpenAiChat, &multi, &ctx("s"), &c).unwrap();
    assert_eq!(k.semantic_text.as_deref(), Some("What is Rust?"));
    // A system prompt is context, not turn: single-turn still.
    let sys = json!({"model": "m", "temperature": 0, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
    let k = key(&sys, "s").unwrap();
    assert_eq!(k.semantic_text.as_deref(), Some("a\nb"));
    // Another system prompt: another namespace, so no semantic match across them.
    let mut other = sys.clone();
    other["messages"][0]["content"] = json!("Be verbose.");
    assert_ne!(key(&other, "s").unwrap().namespace, k.namespace);
    // The same context with another question: the same namespace.
    let mut q = sys.clone();
    q["messages"][1]["content"] = json!("something else");
    assert_eq!(key(&q, "s").unwrap().namespace, k.namespace);
    // Another subject: another namespace; no subject: no semantic match.
    let mut c2 = ctx("s");
    c2.semantic_scope = Some("subject:v");
    assert_ne!(
        build_with(Provider::OpenAiChat, &sys, &c2, &cfg(json!({})))
            .unwrap()
            .namespace,
        k.namespace
    );
    c2.semantic_scope = None;
    assert_eq!(
        build_with(Provider::OpenAiChat, &sys, &c2, &cfg(json!({})))
            .unwrap()
            .semantic_text,
        None
    );
    // Images are not matched by meaning.
    let img = json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "x"}}]}]});
    assert_eq!(key(&img, "s").unwrap().semantic_text, None);
    let off = cfg(json!({"semantic": {"enabled": false}}));
    let k = build_with(Provider::OpenAiChat, &chat("x"), &ctx("s"), &off).unwrap();
    assert_eq!(k.semantic_text, None);
}

#[test]
fn responses_requests_are_keyed_on_their_canonical_body() {
    let c = cfg(json!({}));
    let k = |v: Value| build_with(Provider::OpenAiResponses, &v, &ctx("s"), &c);
    let base = json!({"model": "gpt-4o", "temperature": 0, "instructions": "Be brief.",
                      "input": [{"role": "user", "content": [{"type": "input_text", "text": "What is Rust?"}]}]});
    let a = k(base.clone()).unwrap();
    assert_eq!(a.semantic_text.as_deref(), Some("What is Rust?"));
    assert!(!a.include_usage);
    let mut same = base.clone();
    same["stream"] = json!(true);
    same["store"] = json!(false);
    same["instructions"] = json!("  Be brief. ");
    same["input"][0]["content"][0]["text"] = json!("What is Rust? ");
    let b = k(same).unwrap();
    assert_eq!((b.exact.as_str(), b.stream), (a.exact.as_str(), true));
    // The same words as a plain string input are another body.
    let plain =
        json!({"model": "gpt-4o", "temperature": 0, "instructions": "Be brief.", "input": "What is Rust?"});
    let p = k(plain).unwrap();
    assert_ne!(p.exact, a.exact);
    assert_eq!(p.semantic_text.as_deref(), Some("What is Rust?"));
    for (field, v) in [
        ("instructions", json!("Be long.")),
        ("tools", json!([{"type": "function", "name": "f"}])),
        ("max_output_tokens", json!(5)),
        ("text", json!({"format": {"type": "json_object"}})),
    ] {
        let mut other = base.clone();
        other[field] = v;
        assert_ne!(k(other).unwrap().exact, a.exact, "{field}");
    }
    // A turn after a function call is not matched by meaning; its key still holds.
    let mut tool_turn = base.clone();
    tool_turn["input"] = json!([{"type": "function_call_output", "call_id": "c", "output": "42"}]);
    assert_eq!(k(tool_turn).unwrap().semantic_text, None);

    let mut continued = base.clone();
    continued["previous_response_id"] = json!("resp_1");
    assert_eq!(k(continued.clone()), Err(Bypass::Continued));
    let on = cfg(json!({"cache_continued_responses": true}));
    let kept = build_with(Provider::OpenAiResponses, &continued, &ctx("s"), &on).unwrap();
    let mut other_prev = continued.clone();
    other_prev["previous_response_id"] = json!("resp_2");
    let other = build_with(Provider::OpenAiResponses, &other_prev, &ctx("s"), &on).unwrap();
    assert_ne!(
        kept.exact, other.exact,
        "keyed by the stored response it continues"
    );

    let mut bg = base.clone();
    bg["background"] = json!(true);
    assert_eq!(k(bg), Err(Bypass::Api));
    let mut lp = base.clone();
    lp["include"] = json!(["message.output_text.logprobs"]);
    assert_eq!(k(lp), Err(Bypass::Logprobs));
    let mut sampled = base.clone();
    sampled.as_object_mut().unwrap().remove("temperature");
    assert_eq!(k(sampled), Err(Bypass::Sampled));
    assert_eq!(
        k(json!({"model": "gpt-4o", "temperature": 0})),
        Err(Bypass::InvalidBody)
    );
}
