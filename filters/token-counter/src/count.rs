//! Prompt token counts by OpenAI's chat accounting, with tiktoken's tables.
//!
//! Chat (OpenAI cookbook, "How to count tokens with tiktoken", current models): 3 tokens per message,
//! the tokens of every string field of the message (role, content, name, tool_call_id …), 1 more
//! per `name`, 3 to prime the reply; tool definitions by the cookbook's `num_tokens_for_tools`.
//! Legacy completions and embeddings: the tokens of the input. Anthropic does not publish its
//! tokenizer: its requests are counted the same way with the configured encoding, an estimate used
//! for context limits and reservations only; settlement always uses the usage the provider reports.
//!
//! A conversation resends its history every turn, so counts are cached per text (hash of encoding +
//! text → count), bounded per VM: a new turn costs only its new text.

use crate::config::Encoding;
use filter_core::api::{Request, anthropic, openai};
use filter_core::prompt;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();

/// The BPE table for `enc`, built on first use and kept for the VM's life. Each constructor embeds
/// only its own table, so a filter that never sees a cl100k model never builds one.
pub fn table(enc: Encoding) -> Option<&'static CoreBPE> {
    match enc {
        Encoding::O200kBase => O200K.get_or_init(|| tiktoken_rs::o200k_base().ok()),
        Encoding::Cl100kBase => CL100K.get_or_init(|| tiktoken_rs::cl100k_base().ok()),
    }
    .as_ref()
}

/// True once `enc`'s table is built (for the first-request metric and tests).
pub fn is_loaded(enc: Encoding) -> bool {
    match enc {
        Encoding::O200kBase => O200K.get().is_some(),
        Encoding::Cl100kBase => CL100K.get().is_some(),
    }
}

/// The embedded table could not be built (it is compiled in, so this means a broken build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableUnavailable(pub Encoding);

impl std::fmt::Display for TableUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} table could not be built", self.0.name())
    }
}

/// Counts with a bounded per-text cache.
#[derive(Debug)]
pub struct Counter {
    cache: HashMap<u64, u32>,
    order: VecDeque<u64>,
    capacity: usize,
    seed: RandomState,
    pub hits: u64,
    pub misses: u64,
}

/// Texts longer than this are counted in pieces: tiktoken's pre-tokenising regex (fancy-regex)
/// fails on very long runs without a break (e.g. a million `^`), and tiktoken-rs then panics.
const CHUNK_BYTES: usize = 32 << 10;

/// `bpe.count_ordinary(text)`, in pieces of at most [`CHUNK_BYTES`]. A piece ends just before a
/// space that follows a letter or digit, where the pre-tokeniser always starts a new token, so the
/// count is exact for text; a run with no such point for half a piece (adversarial input) is cut at
/// a character boundary, which can shift the count there by a token or two.
pub fn count_chunked(bpe: &CoreBPE, text: &str) -> usize {
    let mut rest = text;
    let mut n = 0;
    while rest.len() > CHUNK_BYTES {
        let window = &rest.as_bytes()[CHUNK_BYTES / 2..CHUNK_BYTES];
        let cut = window
            .windows(2)
            .rposition(|w| w[0].is_ascii_alphanumeric() && w[1] == b' ')
            .map(|i| CHUNK_BYTES / 2 + i + 1)
            .unwrap_or_else(|| {
                let mut i = CHUNK_BYTES;
                while !rest.is_char_boundary(i) {
                    i -= 1;
                }
                i
            });
        let (head, tail) = rest.split_at(cut);
        n += bpe.count_ordinary(head);
        rest = tail;
    }
    n + bpe.count_ordinary(rest)
}

impl Counter {
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: HashMap::with_capacity(capacity.min(4096)),
            order: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            seed: RandomState::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// Tokens of `text` as the API reads it: special-token strings in user text are ordinary text.
    pub fn text(&mut self, bpe: &CoreBPE, enc: Encoding, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        if self.capacity == 0 {
            return count_chunked(bpe, text) as u64;
        }
        // Keyed by a hash seeded per VM (WASI random), so a client cannot craft a text that
        // collides with another tenant's and make it count as something else.
        let key = self.seed.hash_one((enc as u8, text));
        if let Some(&n) = self.cache.get(&key) {
            self.hits += 1;
            return u64::from(n);
        }
        self.misses += 1;
        let n = count_chunked(bpe, text);
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.cache.remove(&old);
        }
        self.cache.insert(key, u32::try_from(n).unwrap_or(u32::MAX));
        self.order.push_back(key);
        n as u64
    }

    /// Prompt tokens of `req` with encoding `enc`.
    pub fn prompt(&mut self, enc: Encoding, req: &Request) -> Result<u64, TableUnavailable> {
        let bpe = table(enc).ok_or(TableUnavailable(enc))?;
        Ok(match req {
            Request::Chat(r) => self.chat(bpe, enc, r),
            Request::Completions(r) => self.inputs(bpe, enc, &r.prompt),
            Request::Embeddings(r) => self.inputs(bpe, enc, &r.input),
            Request::Messages(r) => self.anthropic(bpe, enc, req, r),
            Request::Responses(r) => self.responses(bpe, enc, req, r),
        })
    }

    fn chat(&mut self, bpe: &CoreBPE, enc: Encoding, r: &openai::ChatCompletionRequest) -> u64 {
        let mut n = 3;
        for m in &r.messages {
            n += 3 + self.text(bpe, enc, &m.role);
            match &m.content {
                Some(openai::Content::Text(t)) => n += self.text(bpe, enc, t),
                Some(openai::Content::Parts(parts)) => {
                    for p in parts {
                        if let Some(t) = &p.text {
                            n += self.text(bpe, enc, t);
                        }
                    }
                }
                None => {}
            }
            if let Some(name) = &m.name {
                n += self.text(bpe, enc, name) + 1;
            }
            for (key, v) in &m.extra {
                match v {
                    // tool_call_id and any other string field the model reads.
                    Value::String(s) => n += self.text(bpe, enc, s),
                    // An assistant turn's earlier tool calls: their names and arguments.
                    Value::Array(calls) if key == "tool_calls" => {
                        for call in calls {
                            if let Some(f) = call.get("function") {
                                for field in ["name", "arguments"] {
                                    if let Some(Value::String(s)) = f.get(field) {
                                        n += self.text(bpe, enc, s);
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(tools) = r.tools.as_deref().filter(|t| !t.is_empty()) {
            n += self.tools(bpe, enc, tools);
        }
        n
    }

    /// The cookbook's `num_tokens_for_tools` (gpt-4o family: 7 per function, gpt-4/3.5: 10).
    fn tools(&mut self, bpe: &CoreBPE, enc: Encoding, tools: &[Value]) -> u64 {
        let func_init: i64 = match enc {
            Encoding::O200kBase => 7,
            Encoding::Cl100kBase => 10,
        };
        let (prop_init, prop_key, enum_init, enum_item, func_end) = (3i64, 3i64, -3i64, 3i64, 12i64);
        let mut n: i64 = 0;
        for tool in tools {
            let Some(f) = tool.get("function") else { continue };
            n += func_init;
            let name = f.get("name").and_then(Value::as_str).unwrap_or("");
            let desc = f.get("description").and_then(Value::as_str).unwrap_or("");
            let desc = desc.strip_suffix('.').unwrap_or(desc);
            n += self.text(bpe, enc, &format!("{name}:{desc}")) as i64;
            let props = f
                .get("parameters")
                .and_then(|p| p.get("properties"))
                .and_then(Value::as_object);
            if let Some(props) = props.filter(|p| !p.is_empty()) {
                n += prop_init;
                for (key, p) in props {
                    n += prop_key;
                    if let Some(items) = p.get("enum").and_then(Value::as_array) {
                        n += enum_init;
                        for item in items {
                            n += enum_item;
                            if let Some(s) = item.as_str() {
                                n += self.text(bpe, enc, s) as i64;
                            }
                        }
                    }
                    let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
                    let d = p.get("description").and_then(Value::as_str).unwrap_or("");
                    let d = d.strip_suffix('.').unwrap_or(d);
                    n += self.text(bpe, enc, &format!("{key}:{ty}:{d}")) as i64;
                }
            }
        }
        n += func_end;
        n.max(0) as u64
    }

    /// Completions `prompt` / embeddings `input`: a string, strings, or token arrays.
    fn inputs(&mut self, bpe: &CoreBPE, enc: Encoding, v: &Value) -> u64 {
        match v {
            Value::String(s) => self.text(bpe, enc, s),
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => self.text(bpe, enc, s),
                    // A pre-tokenised input: one token per number.
                    Value::Number(_) => 1,
                    Value::Array(toks) => toks.len() as u64,
                    _ => 0,
                })
                .sum(),
            _ => 0,
        }
    }

    /// The Responses API: no published formula, so chat's framing (3 tokens per item and its role)
    /// around the texts `filter_core::prompt` reads, and each function tool's name, description
    /// and parameter schema. An estimate for admission; the provider's usage settles the charge.
    fn responses(
        &mut self,
        bpe: &CoreBPE,
        enc: Encoding,
        req: &Request,
        r: &filter_core::api::responses::ResponsesRequest,
    ) -> u64 {
        let mut n = 3;
        if r.instructions.is_some() {
            n += 3 + self.text(bpe, enc, "developer");
        }
        match &r.input {
            Value::Array(items) => {
                for item in items {
                    n += 3;
                    if let Some(Value::String(role)) = item.get("role") {
                        n += self.text(bpe, enc, role);
                    }
                }
            }
            _ => n += 3 + self.text(bpe, enc, "user"),
        }
        let mut texts = 0;
        prompt::for_each_segment(req, |s| texts += self.text(bpe, enc, s.text));
        n += texts;
        for tool in r.tools.iter().flatten() {
            for field in ["name", "description"] {
                if let Some(Value::String(s)) = tool.get(field) {
                    n += self.text(bpe, enc, s);
                }
            }
            if let Some(p) = tool.get("parameters") {
                n += self.text(bpe, enc, &p.to_string());
            }
        }
        n
    }

    fn anthropic(
        &mut self,
        bpe: &CoreBPE,
        enc: Encoding,
        req: &Request,
        r: &anthropic::MessagesRequest,
    ) -> u64 {
        let mut n = 3 + 3 * r.messages.len() as u64;
        for m in &r.messages {
            n += self.text(bpe, enc, &m.role);
        }
        let mut texts = 0;
        prompt::for_each_segment(req, |s| texts += self.text(bpe, enc, s.text));
        n += texts;
        for tool in r.tools.iter().flatten() {
            for field in ["name", "description"] {
                if let Some(Value::String(s)) = tool.get(field) {
                    n += self.text(bpe, enc, s);
                }
            }
            if let Some(schema) = tool.get("input_schema") {
                n += self.text(bpe, enc, &schema.to_string());
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use filter_core::Provider;

    fn chat(json: &str) -> Request {
        Request::parse(Provider::OpenAiChat, json.as_bytes()).unwrap()
    }

    #[test]
    fn cookbook_example_conversation() {
        // The cookbook prints 129 (gpt-4-0613, cl100k) and 124 (gpt-4o, o200k) for this example,
        // matching the API's prompt_tokens.
        let req = chat(
            r#"{"model":"gpt-4o","messages":[
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}]}"#,
        );
        let mut c = Counter::new(64);
        assert_eq!(c.prompt(Encoding::Cl100kBase, &req).unwrap(), 129);
        assert_eq!(c.prompt(Encoding::O200kBase, &req).unwrap(), 124);
    }

    #[test]
    fn the_cache_serves_repeated_turns_with_the_same_counts() {
        let req = chat(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"first question"},
            {"role":"assistant","content":"first answer"},{"role":"user","content":"second"}]}"#,
        );
        let mut cached = Counter::new(16);
        let mut uncached = Counter::new(0);
        let want = uncached.prompt(Encoding::O200kBase, &req).unwrap();
        assert_eq!(cached.prompt(Encoding::O200kBase, &req).unwrap(), want);
        let misses = cached.misses;
        assert_eq!(cached.prompt(Encoding::O200kBase, &req).unwrap(), want);
        assert_eq!(cached.misses, misses, "second pass is all hits");
        assert!(cached.hits >= 5);
        // The same text under another encoding is another entry.
        let cl = cached.prompt(Encoding::Cl100kBase, &req).unwrap();
        assert_eq!(cl, uncached.prompt(Encoding::Cl100kBase, &req).unwrap());
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let mut c = Counter::new(3);
        let bpe = table(Encoding::O200kBase).unwrap();
        for i in 0..10 {
            c.text(bpe, Encoding::O200kBase, &format!("text number {i}"));
        }
        assert_eq!(c.cache.len(), 3);
        assert_eq!(c.order.len(), 3);
    }

    #[test]
    fn long_texts_count_in_pieces_exactly_and_adversarial_runs_do_not_panic() {
        let bpe = table(Encoding::O200kBase).unwrap();
        let words = [
            "gateway ",
            "tokens, ",
            "東京 ",
            "emoji 🎉 ",
            "x1 ",
            "\n\n",
            "naïve ",
            "a.b ",
        ];
        let text: String = (0..40_000).map(|i| words[i * 7 % words.len()]).collect();
        assert!(text.len() > 4 * CHUNK_BYTES);
        assert_eq!(count_chunked(bpe, &text), bpe.count_ordinary(&text));
        // One run with no break point: tiktoken alone fails on this.
        let run = "^".repeat(1 << 20);
        assert!(count_chunked(bpe, &run) > 0);
        let cjk = "東".repeat(100_000);
        assert!(count_chunked(bpe, &cjk) > 0);
    }

    #[test]
    fn special_token_strings_count_as_text() {
        let bpe = table(Encoding::O200kBase).unwrap();
        let mut c = Counter::new(0);
        assert!(c.text(bpe, Encoding::O200kBase, "<|endoftext|>") > 1);
    }

    #[test]
    fn completions_and_embeddings_count_their_inputs() {
        let mut c = Counter::new(0);
        let r = Request::parse(
            Provider::OpenAiEmbeddings,
            br#"{"model":"text-embedding-3-small","input":["hello world", [1,2,3]]}"#,
        )
        .unwrap();
        assert_eq!(c.prompt(Encoding::Cl100kBase, &r).unwrap(), 2 + 3);
        let r = Request::parse(
            Provider::OpenAiCompletions,
            br#"{"model":"m","prompt":"hello world"}"#,
        )
        .unwrap();
        assert_eq!(c.prompt(Encoding::Cl100kBase, &r).unwrap(), 2);
    }

    #[test]
    fn anthropic_requests_get_an_estimate() {
        let r = Request::parse(
            Provider::Anthropic,
            br#"{"model":"claude","max_tokens":10,"system":"Be brief.","messages":[{"role":"user","content":"hello world"}]}"#,
        )
        .unwrap();
        let n = Counter::new(0).prompt(Encoding::O200kBase, &r).unwrap();
        let bpe = table(Encoding::O200kBase).unwrap();
        let t = |s: &str| bpe.count_ordinary(s) as u64;
        // 3 + 3 per message + role + system + text.
        assert_eq!(n, 3 + 3 + t("user") + t("Be brief.") + t("hello world"));
    }
}
