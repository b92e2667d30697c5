//! The text a model will read, pulled out of any supported request without copying it.

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
