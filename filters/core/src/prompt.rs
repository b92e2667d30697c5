//! The text a model will read, pulled out of any supported request without copying it.

use crate::api::responses::{ItemKind, ResponsesRequest};
use crate::api::{Request, anthropic, openai};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// Tool results (OpenAI `role: tool`/`function`, Anthropic `tool_result` blocks).
    Tool,
    /// Roles this crate does not know (e.g. `developer` maps to System; anything else lands here).
    Other,
}

impl Role {
    pub fn parse(role: &str) -> Self {
        match role {
            "system" | "developer" => Self::System,
            "user" => Self::User,
            "assistant" => Self::Assistant,
            "tool" | "function" => Self::Tool,
            _ => Self::Other,
        }
    }
}

/// One piece of prompt text and the role it is spoken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Index of the message it comes from; `None` for a top-level system prompt or a completions/
    /// embeddings input.
    pub message: Option<usize>,
    pub role: Role,
    pub text: &'a str,
}

/// Calls `f` for every text segment of `req`, in the order the model reads them: string content,
/// text parts, tool results and tool-call arguments. Images, audio and files are skipped.
pub fn for_each_segment<'a>(req: &'a Request, mut f: impl FnMut(Segment<'a>)) {
    match req {
        Request::Chat(r) => {
            for (i, m) in r.messages.iter().enumerate() {
                chat_message(i, m, &mut f);
            }
        }
        Request::Completions(r) => strings(&r.prompt, Role::User, &mut f),
        Request::Embeddings(r) => strings(&r.input, Role::User, &mut f),
        Request::Messages(r) => {
            if let Some(system) = &r.system {
                anthropic_content(None, Role::System, system, &mut f);
            }
            for (i, m) in r.messages.iter().enumerate() {
                anthropic_content(Some(i), Role::parse(&m.role), &m.content, &mut f);
            }
        }
        Request::Responses(r) => responses(r, &mut f),
    }
}

/// The texts of a Responses item, with the role they are read in: a message's content (a string,
/// or the `text` of its parts), a call's `arguments`, a call output's `output`, a reasoning
/// item's `summary` texts.
fn item_texts(item: &Value) -> (Role, Vec<&str>) {
    let mut out = Vec::new();
    let role = match ItemKind::of(item) {
        ItemKind::Message => {
            match item.get("content") {
                Some(Value::String(s)) => out.push(s.as_str()),
                Some(Value::Array(parts)) => out.extend(parts.iter().filter_map(|p| p.get("text")?.as_str())),
                _ => {}
            }
            Role::parse(item.get("role").and_then(Value::as_str).unwrap_or(""))
        }
        ItemKind::FunctionCall => {
            out.extend(
                ["arguments", "input"]
                    .iter()
                    .filter_map(|k| item.get(*k)?.as_str()),
            );
            Role::Assistant
        }
        ItemKind::FunctionCallOutput => {
            match item.get("output") {
                Some(Value::String(s)) => out.push(s.as_str()),
                Some(Value::Array(parts)) => out.extend(parts.iter().filter_map(|p| p.get("text")?.as_str())),
                _ => {}
            }
            Role::Tool
        }
        ItemKind::Reasoning => {
            let summary = item.get("summary").and_then(Value::as_array);
            out.extend(
                summary
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.get("text")?.as_str()),
            );
            Role::Assistant
        }
        ItemKind::Other => Role::Other,
    };
    (role, out)
}

fn responses<'a>(r: &'a ResponsesRequest, f: &mut impl FnMut(Segment<'a>)) {
    if let Some(t) = &r.instructions {
        f(Segment {
            message: None,
            role: Role::System,
            text: t,
        });
    }
    match &r.input {
        Value::String(s) => f(Segment {
            message: Some(0),
            role: Role::User,
            text: s,
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let (role, texts) = item_texts(item);
                for text in texts {
                    f(Segment {
                        message: Some(i),
                        role,
                        text,
                    });
                }
            }
        }
        _ => {}
    }
}

/// [`item_texts`], mutable: the same strings in the same order.
fn item_texts_mut(item: &mut Value, f: &mut impl FnMut(&mut String)) {
    let parts_text = |v: &mut Value, f: &mut dyn FnMut(&mut String)| match v {
        Value::String(s) => f(s),
        Value::Array(parts) => {
            for p in parts {
                if let Some(Value::String(t)) = p.get_mut("text") {
                    f(t);
                }
            }
        }
        _ => {}
    };
    match ItemKind::of(item) {
        ItemKind::Message => {
            if let Some(c) = item.get_mut("content") {
                parts_text(c, f);
            }
        }
        ItemKind::FunctionCall => {
            for k in ["arguments", "input"] {
                if let Some(Value::String(s)) = item.get_mut(k) {
                    f(s);
                }
            }
        }
        ItemKind::FunctionCallOutput => {
            if let Some(o) = item.get_mut("output") {
                parts_text(o, f);
            }
        }
        ItemKind::Reasoning => {
            if let Some(Value::Array(summary)) = item.get_mut("summary") {
                for p in summary {
                    if let Some(Value::String(t)) = p.get_mut("text") {
                        f(t);
                    }
                }
            }
        }
        ItemKind::Other => {}
    }
}

/// Every text [`for_each_segment`] visits, in the same order, mutable (a moderator masks in
/// place).
pub fn for_each_text_mut(req: &mut Request, mut f: impl FnMut(&mut String)) {
    match req {
        Request::Chat(r) => {
            for m in &mut r.messages {
                match &mut m.content {
                    Some(openai::Content::Text(t)) => f(t),
                    Some(openai::Content::Parts(parts)) => {
                        for t in parts.iter_mut().filter_map(|p| p.text.as_mut()) {
                            f(t);
                        }
                    }
                    None => {}
                }
                if let Some(Value::Array(calls)) = m.extra.get_mut("tool_calls") {
                    for call in calls {
                        if let Some(Value::String(args)) =
                            call.get_mut("function").and_then(|f| f.get_mut("arguments"))
                        {
                            f(args);
                        }
                    }
                }
            }
        }
        Request::Completions(r) => strings_mut(&mut r.prompt, &mut f),
        Request::Embeddings(r) => strings_mut(&mut r.input, &mut f),
        Request::Messages(r) => {
            if let Some(system) = &mut r.system {
                anthropic_content_mut(system, &mut f);
            }
            for m in &mut r.messages {
                anthropic_content_mut(&mut m.content, &mut f);
            }
        }
        Request::Responses(r) => {
            if let Some(t) = &mut r.instructions {
                f(t);
            }
            match &mut r.input {
                Value::String(s) => f(s),
                Value::Array(items) => items.iter_mut().for_each(|i| item_texts_mut(i, &mut f)),
                _ => {}
            }
        }
    }
}

fn anthropic_content_mut(content: &mut anthropic::Content, f: &mut impl FnMut(&mut String)) {
    match content {
        anthropic::Content::Text(t) => f(t),
        anthropic::Content::Blocks(blocks) => {
            for b in blocks {
                match (b.kind.as_str(), &mut b.text, &mut b.content) {
                    (_, Some(t), _) => f(t),
                    ("tool_result", None, Some(inner)) => anthropic_content_mut(inner, f),
                    _ => {}
                }
            }
        }
    }
}

fn strings_mut(v: &mut Value, f: &mut impl FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => {
            for item in items {
                if let Value::String(s) = item {
                    f(s);
                }
            }
        }
        _ => {}
    }
}

/// All segments, collected.
pub fn segments(req: &Request) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for_each_segment(req, |s| out.push(s));
    out
}

/// The new input of this turn: every user and tool text after the last assistant message (the
/// whole input for completions and embeddings), joined by newlines.
pub fn turn_input(req: &Request) -> String {
    let segs = segments(req);
    let last_assistant = segs
        .iter()
        .filter(|s| s.role == Role::Assistant)
        .filter_map(|s| s.message)
        .max();
    let mut out = String::new();
    for s in segs.iter().filter(|s| matches!(s.role, Role::User | Role::Tool)) {
        if last_assistant.is_some_and(|a| s.message.is_some_and(|m| m <= a)) {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(s.text);
    }
    out
}

/// The text of the last user message (parts joined with `\n`), which by default decides routes and
/// semantic-cache keys. For completions/embeddings, the whole input.
pub fn last_user_text(req: &Request) -> Option<String> {
    let segs = segments(req);
    let last = segs
        .iter()
        .rev()
        .find(|s| s.role == Role::User && s.message.is_some())
        .map(|s| s.message);
    let pick: Vec<&str> = match last {
        Some(idx) => segs
            .iter()
            .filter(|s| s.message == idx && s.role == Role::User)
            .map(|s| s.text)
            .collect(),
        None => segs
            .iter()
            .filter(|s| s.message.is_none() && s.role == Role::User)
            .map(|s| s.text)
            .collect(),
    };
    if pick.is_empty() {
        None
    } else {
        Some(pick.join("\n"))
    }
}

fn chat_message<'a>(i: usize, m: &'a openai::ChatMessage, f: &mut impl FnMut(Segment<'a>)) {
    let role = Role::parse(&m.role);
    match &m.content {
        Some(openai::Content::Text(t)) => f(Segment {
            message: Some(i),
            role,
            text: t,
        }),
        Some(openai::Content::Parts(parts)) => {
            for p in parts {
                if let Some(t) = &p.text {
                    f(Segment {
                        message: Some(i),
                        role,
                        text: t,
                    });
                }
            }
        }
        None => {}
    }
    // The model reads the arguments of its earlier tool calls too.
    if let Some(Value::Array(calls)) = m.extra.get("tool_calls") {
        for call in calls {
            if let Some(Value::String(args)) = call.get("function").and_then(|f| f.get("arguments")) {
                f(Segment {
                    message: Some(i),
                    role,
                    text: args,
                });
            }
        }
    }
}

fn anthropic_content<'a>(
    i: Option<usize>,
    role: Role,
    content: &'a anthropic::Content,
    f: &mut impl FnMut(Segment<'a>),
) {
    match content {
        anthropic::Content::Text(t) => f(Segment {
            message: i,
            role,
            text: t,
        }),
        anthropic::Content::Blocks(blocks) => {
            for b in blocks {
                match (b.kind.as_str(), &b.text, &b.content) {
                    (_, Some(t), _) => f(Segment {
                        message: i,
                        role,
                        text: t,
                    }),
                    ("tool_result", None, Some(inner)) => anthropic_content(i, Role::Tool, inner, f),
                    _ => {}
                }
            }
        }
    }
}

fn strings<'a>(v: &'a Value, role: Role, f: &mut impl FnMut(Segment<'a>)) {
    match v {
        Value::String(s) => f(Segment {
            message: None,
            role,
            text: s,
        }),
        Value::Array(items) => {
            for item in items {
                if let Value::String(s) = item {
                    f(Segment {
                        message: None,
                        role,
                        text: s,
                    });
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::api::Provider;

    fn texts(provider: Provider, body: &str) -> Vec<(Role, String)> {
        let req = Request::parse(provider, body.as_bytes()).unwrap();
        segments(&req)
            .into_iter()
            .map(|s| (s.role, s.text.to_owned()))
            .collect()
    }

    /// The mutable walk visits exactly the texts of the read-only one, in order, for every API.
    #[test]
    fn mutable_walk_matches_the_segments() {
        let bodies = [
            (
                Provider::OpenAiChat,
                r#"{"model":"m","messages":[{"role":"system","content":"a"},{"role":"user","content":[{"type":"text","text":"b"},{"type":"image_url","image_url":{"url":"x"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"c"}}]},{"role":"tool","tool_call_id":"1","content":"d"}]}"#,
            ),
            (Provider::OpenAiCompletions, r#"{"model":"m","prompt":["a","b"]}"#),
            (Provider::OpenAiEmbeddings, r#"{"model":"m","input":"a"}"#),
            (
                Provider::Anthropic,
                r#"{"model":"m","max_tokens":1,"system":[{"type":"text","text":"a"}],"messages":[{"role":"user","content":[{"type":"text","text":"b"},{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"c"}]}]},{"role":"assistant","content":"d"}]}"#,
            ),
            (
                Provider::OpenAiResponses,
                r#"{"model":"m","instructions":"a","input":"b"}"#,
            ),
            (Provider::OpenAiResponses, RESPONSES_ITEMS),
        ];
        for (provider, body) in bodies {
            let mut req = Request::parse(provider, body.as_bytes()).unwrap();
            let read: Vec<String> = segments(&req).iter().map(|s| s.text.to_owned()).collect();
            let mut seen = Vec::new();
            for_each_text_mut(&mut req, |t| {
                seen.push(t.clone());
                t.push('!');
            });
            assert_eq!(seen, read, "{provider:?}");
            let changed: Vec<String> = segments(&req).iter().map(|s| s.text.to_owned()).collect();
            assert!(
                changed.iter().all(|t| t.ends_with('!')),
                "{provider:?}: {changed:?}"
            );
        }
    }

    /// Every kind of Responses input item, in a two-turn conversation with a tool call.
    const RESPONSES_ITEMS: &str = r#"{"model":"m","instructions":"sys","input":[
        {"role":"developer","content":"dev"},
        {"type":"message","role":"user","content":[{"type":"input_text","text":"u1"},{"type":"input_image","image_url":"data:x"}]},
        {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"thought"}]},
        {"type":"function_call","call_id":"c1","name":"f","arguments":"{\"q\":1}"},
        {"type":"function_call_output","call_id":"c1","output":"result"},
        {"type":"message","role":"assistant","content":[{"type":"output_text","text":"a1"}]},
        {"role":"user","content":"u2"}]}"#;

    #[test]
    fn responses_input_items_are_read_in_their_roles_and_the_turn_is_the_last_user_input() {
        let got = texts(Provider::OpenAiResponses, RESPONSES_ITEMS);
        let want = [
            (Role::System, "sys"),
            (Role::System, "dev"),
            (Role::User, "u1"),
            (Role::Assistant, "thought"),
            (Role::Assistant, "{\"q\":1}"),
            (Role::Tool, "result"),
            (Role::Assistant, "a1"),
            (Role::User, "u2"),
        ];
        assert_eq!(got, want.map(|(r, t)| (r, t.to_owned())));
        let req = Request::parse(Provider::OpenAiResponses, RESPONSES_ITEMS.as_bytes()).unwrap();
        assert_eq!(turn_input(&req), "u2");
        assert_eq!(last_user_text(&req).as_deref(), Some("u2"));
        let one = Request::parse(Provider::OpenAiResponses, br#"{"model":"m","input":"hi"}"#).unwrap();
        assert_eq!(last_user_text(&one).as_deref(), Some("hi"));
        assert_eq!(one.to_vec().unwrap(), br#"{"model":"m","input":"hi"}"#);
    }

    #[test]
    fn openai_chat_strings_parts_tools() {
        let got = texts(
            Provider::OpenAiChat,
            r#"{"model":"m","messages":[
                {"role":"developer","content":"rules"},
                {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"u"}},{"type":"text","text":"here"}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{\"q\":1}"}}]},
                {"role":"tool","tool_call_id":"1","content":"result"}
            ]}"#,
        );
        assert_eq!(
            got,
            [
                (Role::System, "rules".into()),
                (Role::User, "look".into()),
                (Role::User, "here".into()),
                (Role::Assistant, "{\"q\":1}".into()),
                (Role::Tool, "result".into()),
            ]
        );
    }

    #[test]
    fn anthropic_system_blocks_and_tool_results() {
        let got = texts(
            Provider::Anthropic,
            r#"{"model":"c","max_tokens":5,"system":"sys","messages":[
                {"role":"user","content":[{"type":"text","text":"q"},{"type":"tool_result","tool_use_id":"t","content":"plain"}]},
                {"role":"assistant","content":"a"},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"nested"}]}]}
            ]}"#,
        );
        assert_eq!(
            got,
            [
                (Role::System, "sys".into()),
                (Role::User, "q".into()),
                (Role::Tool, "plain".into()),
                (Role::Assistant, "a".into()),
                (Role::Tool, "nested".into()),
            ]
        );
    }

    #[test]
    fn completions_and_embeddings_inputs() {
        assert_eq!(
            texts(Provider::OpenAiCompletions, r#"{"model":"m","prompt":["a","b"]}"#).len(),
            2
        );
        assert_eq!(
            texts(Provider::OpenAiEmbeddings, r#"{"model":"m","input":"x"}"#),
            [(Role::User, "x".into())]
        );
        assert!(texts(Provider::OpenAiEmbeddings, r#"{"model":"m","input":[1,2,3]}"#).is_empty());
    }

    #[test]
    fn last_user_text_joins_the_parts_of_the_last_user_message() {
        let req = Request::parse(
            Provider::OpenAiChat,
            br#"{"model":"m","messages":[{"role":"user","content":"old"},{"role":"assistant","content":"x"},
                {"role":"user","content":[{"type":"text","text":"new"},{"type":"text","text":"question"}]},
                {"role":"tool","content":"t"}]}"#,
        )
        .unwrap();
        assert_eq!(last_user_text(&req).as_deref(), Some("new\nquestion"));
        let req = Request::parse(Provider::OpenAiCompletions, br#"{"model":"m","prompt":"p"}"#).unwrap();
        assert_eq!(last_user_text(&req).as_deref(), Some("p"));
        let req = Request::parse(
            Provider::OpenAiChat,
            br#"{"model":"m","messages":[{"role":"system","content":"s"}]}"#,
        )
        .unwrap();
        assert_eq!(last_user_text(&req), None);
    }
}
