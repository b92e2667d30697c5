//! Real token counts for the mock upstream, with tiktoken (the tables OpenAI's `tiktoken` uses).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use tiktoken_rs::CoreBPE;

static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();

/// The encoding OpenAI uses for `model`: cl100k_base for the gpt-4 / gpt-3.5 / embedding families,
/// o200k_base for gpt-4o, gpt-4.1, gpt-5, o-series and anything else (the mock's default).
pub fn encoding_for(model: &str) -> Option<&'static CoreBPE> {
    let cl100k =
        (model.starts_with("gpt-4") && !model.starts_with("gpt-4o") && !model.starts_with("gpt-4.1"))
            || model.starts_with("gpt-3.5")
            || model.starts_with("text-embedding-")
            || model.starts_with("davinci-002")
            || model.starts_with("babbage-002");
    if cl100k {
        CL100K.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
    } else {
        O200K.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
    }
}

pub fn count(model: &str, text: &str) -> u64 {
    // Benchmarks resend the same prompt thousands of times; remembering recent counts keeps the
    // mock provider from being the bottleneck of what it is there to serve.
    static MEMO: OnceLock<Mutex<HashMap<u64, u64>>> = OnceLock::new();
    let Some(bpe) = encoding_for(model) else {
        return 0;
    };
    let key = filter_core::hash::Fnv::default()
        .field(model.as_bytes())
        .write(text.as_bytes())
        .finish();
    let memo = MEMO.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(&n) = memo.lock().ok().as_ref().and_then(|m| m.get(&key)) {
        return n;
    }
    let n = bpe.encode_with_special_tokens(text).len() as u64;
    if let Ok(mut m) = memo.lock() {
        if m.len() >= 1024 {
            m.clear();
        }
        m.insert(key, n);
    }
    n
}

/// The first `max` tokens of `text`, and whether it was cut.
pub fn truncate(model: &str, text: &str, max: u64) -> (String, bool) {
    let Some(bpe) = encoding_for(model) else {
        return (text.to_owned(), false);
    };
    let toks = bpe.encode_with_special_tokens(text);
    if toks.len() as u64 <= max {
        return (text.to_owned(), false);
    }
    // Back off until the cut lands on a UTF-8 boundary.
    let mut n = max as usize;
    while n > 0 {
        if let Some(Ok(s)) = toks.get(..n).map(|prefix| bpe.decode(prefix)) {
            return (s, true);
        }
        n -= 1;
    }
    (String::new(), true)
}

/// Prompt tokens of a chat request by the OpenAI cookbook's formula for current models: 3 per
/// message, the tokens of every string field of the message (role, content, name), 1 more per
/// `name`, and 3 to prime the reply. Content-part arrays count their text parts.
pub fn chat_prompt_tokens(model: &str, messages: &[serde_json::Value]) -> u64 {
    let mut n = 3;
    for m in messages {
        n += 3;
        let Some(obj) = m.as_object() else { continue };
        for (k, v) in obj {
            match v {
                serde_json::Value::String(s) => {
                    n += count(model, s);
                    if k == "name" {
                        n += 1;
                    }
                }
                serde_json::Value::Array(parts) if k == "content" => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                            n += count(model, t);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cookbook_example_counts() {
        // The OpenAI cookbook's "How to count tokens with tiktoken" example conversation: the
        // cookbook prints 129 for gpt-4 / gpt-3.5-turbo-0613 (cl100k) and 124 for gpt-4o (o200k),
        // both matching the API's prompt_tokens.
        let messages = json!([
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
        ]);
        let msgs = messages.as_array().unwrap();
        assert_eq!(chat_prompt_tokens("gpt-4-0613", msgs), 129);
        assert_eq!(chat_prompt_tokens("gpt-4o", msgs), 124);
    }

    #[test]
    fn truncation_respects_token_budget() {
        let (t, cut) = truncate("gpt-4o", "one two three four five six", 3);
        assert!(cut);
        assert_eq!(count("gpt-4o", &t), 3);
        assert_eq!(truncate("gpt-4o", "short", 10), ("short".to_owned(), false));
    }
}
