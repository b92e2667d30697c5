//! Applying a template and the route's decorators to a request body, keeping every other field.
//!
//! Order of the messages the model reads: prepend decorators (in config order), the template's
//! messages, the client's own messages, append decorators (in config order). For Anthropic, system
//! messages go to the top-level `system` in that same order, around the client's own system prompt.
//! For the Responses API they are `input` items, system ones included, around the client's input.

use crate::config::{Decorator, Position};
use crate::template::{Library, Template, VariableError, shown};
use filter_core::{ApiError, ErrorKind, Provider};
use serde_json::{Map, Value, json};

/// The body field a client selects a template with; removed before the upstream sees the body.
pub const FIELD: &str = "tollgate_template";
/// [`FIELD`] as it appears as a JSON key, for the scan that lets most bodies pass unparsed.
pub const FIELD_KEY: &[u8] = b"\"tollgate_template\"";

/// A client's choice of template.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub id: String,
    pub version: Option<String>,
    pub variables: Option<Map<String, Value>>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, code, message)
}

/// Splits a select-header value `id` or `id@version`.
fn from_header(h: &str) -> Option<(String, Option<String>)> {
    let h = h.trim();
    if h.is_empty() {
        return None;
    }
    Some(match h.split_once('@') {
        Some((id, v)) => (id.to_owned(), Some(v.to_owned())),
        None => (h.to_owned(), None),
    })
}

/// Takes the template choice out of `body` (the `tollgate_template` field) and the select header's
/// value (`id` or `id@version`). An `id` in the body wins; without one, the header names the
/// template and the body's `tollgate_template.variables` (if any) fill it.
pub fn take_ask(body: &mut Map<String, Value>, header: Option<&str>) -> Result<Option<Ask>, ApiError> {
    let header = header.and_then(from_header);
    let Some(v) = body.remove(FIELD) else {
        return Ok(header.map(|(id, version)| Ask {
            id,
            version,
            variables: None,
        }));
    };
    let Value::Object(mut o) = v else {
        return Err(bad(
            "invalid_template_request",
            format!("`{FIELD}` must be an object"),
        ));
    };
    let id = match o.remove("id") {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(bad(
                "invalid_template_request",
                format!("`{FIELD}.id` must be a string"),
            ));
        }
    };
    let version = match o.remove("version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(bad(
                "invalid_template_request",
                format!("`{FIELD}.version` must be a string"),
            ));
        }
    };
    let variables = match o.remove("variables") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            return Err(bad(
                "invalid_template_request",
                format!("`{FIELD}.variables` must be an object"),
            ));
        }
    };
    if let Some(k) = o.keys().next() {
        return Err(bad(
            "invalid_template_request",
            format!("unknown field `{FIELD}.{}`", shown(k)),
        ));
    }
    let (id, version) = match (id, header) {
        (Some(id), _) => (id, version),
        (None, Some((id, hv))) => (id, version.or(hv)),
        (None, None) => {
            return Err(bad(
                "invalid_template_request",
                format!("`{FIELD}.id` is required (or name the template in the select header)"),
            ));
        }
    };
    Ok(Some(Ask {
        id,
        version,
        variables,
    }))
}

/// A template resolved for one request: which version, and the checked values.
#[derive(Debug)]
pub struct Rendered<'a> {
    pub template: &'a Template,
    pub version: usize,
    pub values: Vec<String>,
}

impl Rendered<'_> {
    pub fn version_name(&self) -> &str {
        self.template
            .versions
            .get(self.version)
            .map_or("", |v| v.name.as_str())
    }
}

/// Why a template could not be rendered, for the reply and the metrics.
#[derive(Debug)]
pub enum RenderError {
    UnknownTemplate(String),
    UnknownVersion { template: String, version: String },
    Variable(VariableError),
}

impl RenderError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownTemplate(_) => "unknown_template",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::Variable(_) => "invalid_variable",
        }
    }

    pub fn to_api(&self) -> ApiError {
        match self {
            Self::UnknownTemplate(id) => bad("unknown_template", format!("unknown template `{}`", shown(id))),
            Self::UnknownVersion { template, version } => bad(
                "unknown_version",
                format!("template `{template}` has no version `{}`", shown(version)),
            ),
            Self::Variable(e) => bad("invalid_variable", e.message.clone()),
        }
    }
}

/// Resolves `ask` against the library; `sticky` picks the A/B version when none is asked for.
pub fn resolve<'a>(lib: &'a Library, ask: &Ask, sticky: u64) -> Result<Rendered<'a>, RenderError> {
    let template = lib
        .templates
        .get(&ask.id)
        .ok_or_else(|| RenderError::UnknownTemplate(ask.id.clone()))?;
    let version = match &ask.version {
        Some(v) => template.version(v).ok_or_else(|| RenderError::UnknownVersion {
            template: ask.id.clone(),
            version: v.clone(),
        })?,
        None => template.pick(sticky),
    };
    let values = template
        .values(ask.variables.as_ref())
        .map_err(RenderError::Variable)?;
    Ok(Rendered {
        template,
        version,
        values,
    })
}

/// Rewrites `body` with the rendered template (if any) and the decorators that apply.
pub fn apply(
    body: &mut Map<String, Value>,
    provider: Provider,
    rendered: Option<&Rendered<'_>>,
    decorators: &[&Decorator],
) -> Result<(), ApiError> {
    let mut template_msgs: Vec<(&str, String)> = Vec::new();
    if let Some(r) = rendered
        && let Some(v) = r.template.versions.get(r.version)
    {
        template_msgs = v
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.render(&r.values)))
            .collect();
    }
    let at = |pos: Position| {
        decorators
            .iter()
            .filter(move |d| d.position == pos)
            .map(|d| (d.role.as_str(), d.content.clone()))
    };
    let before: Vec<(&str, String)> = at(Position::Prepend).chain(template_msgs).collect();
    let after: Vec<(&str, String)> = at(Position::Append).collect();
    match provider {
        Provider::OpenAiChat => {
            let client = take_messages(body)?;
            let mut msgs: Vec<Value> = Vec::with_capacity(before.len() + client.len() + after.len());
            msgs.extend(
                before
                    .into_iter()
                    .map(|(role, text)| json!({"role": role, "content": text})),
            );
            msgs.extend(client);
            msgs.extend(
                after
                    .into_iter()
                    .map(|(role, text)| json!({"role": role, "content": text})),
            );
            body.insert("messages".to_owned(), Value::Array(msgs));
        }
        // count_tokens counts the prompt the template renders, as the message would send it.
        Provider::Anthropic | Provider::AnthropicCountTokens => {
            let client = take_messages(body)?;
            let split = |list: Vec<(&str, String)>| -> (Vec<String>, Vec<Value>) {
                let mut system = Vec::new();
                let mut msgs = Vec::new();
                for (role, text) in list {
                    if role == "system" {
                        system.push(text);
                    } else {
                        msgs.push(json!({"role": role, "content": text}));
                    }
                }
                (system, msgs)
            };
            let (sys_before, msgs_before) = split(before);
            let (sys_after, msgs_after) = split(after);
            wrap_system(body, &sys_before, &sys_after)?;
            let mut msgs = msgs_before;
            msgs.extend(client);
            msgs.extend(msgs_after);
            body.insert("messages".to_owned(), Value::Array(msgs));
        }
        // The Responses API: the messages become `input` items around the client's own (a string
        // `input` is one user message); `instructions` stays the client's and is read first.
        Provider::OpenAiResponses
        | Provider::OpenAiResponsesInputTokens
        | Provider::OpenAiResponsesCompact => {
            let client = match body.remove("input") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
                Some(Value::Array(a)) => a,
                Some(_) => {
                    return Err(bad(
                        "invalid_request_body",
                        "`input` must be a string or an array",
                    ));
                }
            };
            let item =
                |(role, text): (&str, String)| json!({"type": "message", "role": role, "content": text});
            let mut items: Vec<Value> = Vec::with_capacity(before.len() + client.len() + after.len());
            items.extend(before.into_iter().map(item));
            items.extend(client);
            items.extend(after.into_iter().map(item));
            body.insert("input".to_owned(), Value::Array(items));
        }
        _ => {
            return Err(bad(
                "template_not_supported",
                "templates and decorators apply to chat completions, responses and messages requests",
            ));
        }
    }
    Ok(())
}

fn take_messages(body: &mut Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    match body.get_mut("messages").map(Value::take) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(bad("invalid_request_body", "`messages` must be an array")),
    }
}

/// Anthropic's top-level `system`: one text block per system message, `before` ahead of the
/// client's own system prompt and `after` behind it, so each message keeps its own boundary (a
/// value cannot pose as a separate policy block). A client's string becomes a text block; its
/// blocks are kept as they are.
fn wrap_system(body: &mut Map<String, Value>, before: &[String], after: &[String]) -> Result<(), ApiError> {
    if before.is_empty() && after.is_empty() {
        return Ok(());
    }
    let text = |t: &String| json!({"type": "text", "text": t});
    let mut blocks: Vec<Value> = before.iter().map(text).collect();
    match body.remove("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => blocks.push(json!({"type": "text", "text": s})),
        Some(Value::Array(client)) => blocks.extend(client),
        Some(_) => {
            return Err(bad(
                "invalid_request_body",
                "`system` must be a string or an array",
            ));
        }
    }
    blocks.extend(after.iter().map(text));
    body.insert("system".to_owned(), Value::Array(blocks));
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use crate::config::{RawConfig, compile};

    fn lib() -> crate::config::Config {
        let raw: RawConfig = filter_core::config::parse(
            br#"{"templates":[{"id":"greet","variables":{"name":{"required":true,"max_length":40}},
                 "versions":{"v1":{"messages":[{"role":"system","content":"Greet politely."},
                                               {"role":"user","content":"Say hello to {{name}}."}]}}}],
                 "decorators":[{"position":"prepend","role":"system","content":"Policy A."},
                               {"position":"append","role":"user","content":"Answer in English."},
                               {"position":"prepend","role":"system","content":"Policy B."}]}"#,
        )
        .unwrap();
        compile(raw).unwrap()
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!(),
        }
    }

    #[test]
    fn openai_messages_in_the_defined_order_and_other_fields_kept() {
        let c = lib();
        let mut body = obj(json!({"model": "gpt-4o", "temperature": 0.2,
            "tollgate_template": {"id": "greet", "variables": {"name": "Ada"}},
            "messages": [{"role": "user", "content": "and also hi", "name": "u1"}]}));
        let ask = take_ask(&mut body, None).unwrap().unwrap();
        let r = resolve(&c.library, &ask, 0).unwrap();
        let decos: Vec<&Decorator> = c.decorators.iter().collect();
        apply(&mut body, Provider::OpenAiChat, Some(&r), &decos).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"model": "gpt-4o", "temperature": 0.2, "messages": [
                {"role": "system", "content": "Policy A."},
                {"role": "system", "content": "Policy B."},
                {"role": "system", "content": "Greet politely."},
                {"role": "user", "content": "Say hello to Ada."},
                {"role": "user", "content": "and also hi", "name": "u1"},
                {"role": "user", "content": "Answer in English."}]})
        );
    }

    #[test]
    fn anthropic_system_messages_wrap_the_clients_system_prompt() {
        let c = lib();
        let decos: Vec<&Decorator> = c.decorators.iter().collect();
        let ask = Ask {
            id: "greet".into(),
            version: None,
            variables: Some(obj(json!({"name": "Bo"}))),
        };
        let r = resolve(&c.library, &ask, 0).unwrap();
        let mut body = obj(json!({"model": "claude", "max_tokens": 10, "system": "Client system."}));
        apply(&mut body, Provider::Anthropic, Some(&r), &decos).unwrap();
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "Policy A."}, {"type": "text", "text": "Policy B."},
                   {"type": "text", "text": "Greet politely."}, {"type": "text", "text": "Client system."}])
        );
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "Say hello to Bo."}, {"role": "user", "content": "Answer in English."}])
        );
        let mut blocks = obj(json!({"model": "claude", "max_tokens": 10,
            "system": [{"type": "text", "text": "Client.", "cache_control": {"type": "ephemeral"}}], "messages": []}));
        apply(&mut blocks, Provider::Anthropic, None, &decos[..1]).unwrap();
        assert_eq!(
            blocks["system"],
            json!([{"type": "text", "text": "Policy A."}, {"type": "text", "text": "Client.", "cache_control": {"type": "ephemeral"}}])
        );
    }

    #[test]
    fn the_scanned_key_is_the_field() {
        assert_eq!(FIELD_KEY, format!("\"{FIELD}\"").as_bytes());
    }

    #[test]
    fn the_header_selects_when_the_body_does_not() {
        let mut body = obj(json!({"messages": []}));
        let ask = take_ask(&mut body, Some("greet@v1")).unwrap().unwrap();
        assert_eq!((ask.id.as_str(), ask.version.as_deref()), ("greet", Some("v1")));
        assert_eq!(take_ask(&mut body, None).unwrap(), None);
        let mut body = obj(json!({"tollgate_template": {"id": "a"}}));
        assert_eq!(take_ask(&mut body, Some("b")).unwrap().unwrap().id, "a");
        // The header names the template, the body fills its variables.
        let mut body = obj(json!({"tollgate_template": {"variables": {"name": "Cy"}}}));
        let ask = take_ask(&mut body, Some("greet@v1")).unwrap().unwrap();
        assert_eq!((ask.id.as_str(), ask.version.as_deref()), ("greet", Some("v1")));
        assert_eq!(ask.variables.unwrap()["name"], "Cy");
        let mut body = obj(json!({"tollgate_template": {"variables": {}}}));
        assert_eq!(
            take_ask(&mut body, None).unwrap_err().code,
            "invalid_template_request"
        );
    }

    #[test]
    fn malformed_choices_and_unknown_names_are_400s() {
        let c = lib();
        for v in [
            json!(1),
            json!({"id": 3}),
            json!({"id": "x", "variables": []}),
            json!({"id": "x", "extra": 1}),
        ] {
            let mut body = obj(json!({"tollgate_template": v}));
            assert_eq!(take_ask(&mut body, None).unwrap_err().status(), 400);
        }
        let ask = |id: &str, v: Option<&str>| Ask {
            id: id.into(),
            version: v.map(Into::into),
            variables: Some(obj(json!({"name": "x"}))),
        };
        let e = resolve(&c.library, &ask("nope", None), 0).unwrap_err();
        assert_eq!(
            (e.reason(), e.to_api().message),
            ("unknown_template", "unknown template `nope`".to_owned())
        );
        let e = resolve(&c.library, &ask("greet", Some("v9")), 0).unwrap_err();
        assert_eq!(e.to_api().message, "template `greet` has no version `v9`");
        let mut a = ask("greet", None);
        a.variables = Some(obj(json!({"nam": "x"})));
        assert_eq!(
            resolve(&c.library, &a, 0).unwrap_err().to_api().message,
            "template `greet` has no variable `nam`"
        );
        let mut body = obj(json!({"model": "m", "prompt": "p"}));
        assert_eq!(
            apply(&mut body, Provider::OpenAiCompletions, None, &[])
                .unwrap_err()
                .code,
            "template_not_supported"
        );
    }

    #[test]
    fn responses_input_items_in_the_defined_order_and_instructions_kept() {
        let c = lib();
        let a = Ask {
            id: "greet".into(),
            version: None,
            variables: Some(obj(json!({"name": "Ada"}))),
        };
        let r = resolve(&c.library, &a, 0).unwrap();
        let decos: Vec<&Decorator> = c.decorators.iter().collect();
        let mut body =
            obj(json!({"model": "m", "instructions": "Be brief.", "input": "hello", "stream": true}));
        apply(&mut body, Provider::OpenAiResponses, Some(&r), &decos).unwrap();
        let mut chat = obj(json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}));
        apply(&mut chat, Provider::OpenAiChat, Some(&r), &decos).unwrap();
        let roles = |list: &Value| -> Vec<(String, String)> {
            list.as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap().to_owned(),
                        m["content"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        assert_eq!(
            roles(&body["input"]),
            roles(&chat["messages"]),
            "the order chat gets"
        );
        assert!(
            body["input"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["type"] == "message")
        );
        assert_eq!(body["instructions"], "Be brief.");
        assert_eq!(body["stream"], true);
        let mut items = obj(
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "4"}]}),
        );
        apply(&mut items, Provider::OpenAiResponses, None, &decos).unwrap();
        assert!(
            items["input"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["type"] == "function_call_output")
        );
        let mut bad_input = obj(json!({"model": "m", "input": 5}));
        assert_eq!(
            apply(&mut bad_input, Provider::OpenAiResponses, None, &decos)
                .unwrap_err()
                .code,
            "invalid_request_body"
        );
    }
}
