//! The mock provider's `usage` counts equal OpenAI's own: Python `tiktoken` with the cookbook's chat
//! formula, computed independently (`tests/data/make-token-counts.py`, output committed) — so tests
//! that compare a filter's counts with the mock's usage compare against the real thing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use tollgate_it::tokens;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/token-counts.reference.json"
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn mock_counts_equal_python_tiktoken_for_every_conversation() {
    let r = reference();
    let conversations = r["conversations"].as_object().unwrap();
    assert!(conversations.len() >= 8);
    for (name, c) in conversations {
        if c.get("tools").is_some() {
            // The mock does not count tool definitions; the token counter's test covers them.
            continue;
        }
        let messages = c["messages"].as_array().unwrap();
        for model in ["gpt-4o", "gpt-4-0613"] {
            let want = c["prompt_tokens"][model].as_u64().unwrap();
            assert_eq!(
                tokens::chat_prompt_tokens(model, messages),
                want,
                "{name} / {model}"
            );
            for (m, want) in messages
                .iter()
                .zip(c["content_tokens"][model].as_array().unwrap())
            {
                let text = m["content"].as_str().unwrap();
                assert_eq!(
                    tokens::count(model, text),
                    want.as_u64().unwrap(),
                    "{name} / {model}: {text:?}"
                );
            }
        }
    }
}
