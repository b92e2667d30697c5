//! The templater's configuration: parsed with the failing field named, then compiled once in
//! `on_configure` (placeholders to slots, patterns to regexes, splits to cumulative weights).

pub use filter_core::config::ConfigError;

use crate::template::{Kind, Library, Message, Template, Variable, Version, compile_text};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Request header that selects a template as `id` or `id@version` (the body field wins).
    #[serde(default = "default_select_header")]
    pub select_header: String,
    /// Request header whose value keeps one identity on one A/B version.
    #[serde(default = "default_identity_header")]
    pub identity_header: String,
    #[serde(default)]
    pub templates: Vec<RawTemplate>,
    #[serde(default)]
    pub decorators: Vec<RawDecorator>,
}

fn default_max_body() -> usize {
    1 << 20
}

fn default_select_header() -> String {
    "x-tollgate-use-template".to_owned()
}

fn default_identity_header() -> String {
    filter_core::headers::SUBJECT.to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    pub id: String,
    #[serde(default)]
    pub variables: BTreeMap<String, RawVariable>,
    pub versions: BTreeMap<String, RawVersion>,
    #[serde(default)]
    pub default_version: Option<String>,
    /// Version → weight; traffic is split by weight, sticky per identity.
    #[serde(default)]
    pub split: BTreeMap<String, u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVariable {
    #[serde(rename = "type", default)]
    pub kind: RawKind,
    /// For `enum`.
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Allow-list regex (Rust `regex` syntax); the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawKind {
    #[default]
    String,
    Number,
    Enum,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    pub messages: Vec<RawMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Prepend,
    Append,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecorator {
    /// Requests whose path starts with this get the message.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    pub position: Position,
    pub role: String,
    pub content: String,
}

fn default_prefix() -> String {
    "/".to_owned()
}

#[derive(Debug, Clone)]
pub struct Decorator {
    pub path_prefix: String,
    pub position: Position,
    pub role: String,
    pub content: String,
}

#[derive(Debug)]
pub struct Config {
    pub max_body_bytes: usize,
    pub select_header: String,
    pub identity_header: String,
    pub library: Library,
    pub decorators: Vec<Decorator>,
}

const ROLES: [&str; 3] = ["system", "user", "assistant"];

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.max_body_bytes == 0 {
        return Err(ConfigError::field("max_body_bytes", "must be at least 1"));
    }
    for (field, h) in [
        ("select_header", &raw.select_header),
        ("identity_header", &raw.identity_header),
    ] {
        if !filter_core::headers::is_valid_name(h) {
            return Err(ConfigError::field(field, "must be a lower-case HTTP header name"));
        }
    }
    if raw.select_header == filter_core::headers::TEMPLATE {
        return Err(ConfigError::field(
            "select_header",
            "x-tollgate-template is the header this filter sets (client copies are removed)",
        ));
    }
    if raw.select_header == raw.identity_header {
        return Err(ConfigError::field(
            "select_header",
            "must differ from identity_header",
        ));
    }
    let mut library = Library::default();
    for (i, t) in raw.templates.into_iter().enumerate() {
        let path = format!("templates[{i}]");
        if !name_ok(&t.id) {
            return Err(ConfigError::field(
                format!("{path}.id"),
                "must be 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
        if t.id == "none" {
            return Err(ConfigError::field(
                format!("{path}.id"),
                "`none` is reserved (errors for unknown template ids are counted under it)",
            ));
        }
        if library.templates.contains_key(&t.id) {
            return Err(ConfigError::field(
                format!("{path}.id"),
                format!("duplicate template id `{}`", t.id),
            ));
        }
        let template = compile_template(&path, t)?;
        library.templates.insert(template.id.clone(), template);
    }
    let mut decorators = Vec::new();
    for (i, d) in raw.decorators.into_iter().enumerate() {
        if !ROLES.contains(&d.role.as_str()) {
            return Err(ConfigError::field(
                format!("decorators[{i}].role"),
                "must be system, user or assistant",
            ));
        }
        if d.content.contains("{{") {
            return Err(ConfigError::field(
                format!("decorators[{i}].content"),
                "decorators are literal text: `{{` is not allowed (use a template for variables)",
            ));
        }
        if !d.path_prefix.starts_with('/') {
            return Err(ConfigError::field(
                format!("decorators[{i}].path_prefix"),
                "must start with `/`",
            ));
        }
        decorators.push(Decorator {
            path_prefix: d.path_prefix,
            position: d.position,
            role: d.role,
            content: d.content,
        });
    }
    Ok(Config {
        max_body_bytes: raw.max_body_bytes,
        select_header: raw.select_header,
        identity_header: raw.identity_header,
        library,
        decorators,
    })
}

fn compile_template(path: &str, t: RawTemplate) -> Result<Template, ConfigError> {
    let mut variables = Vec::with_capacity(t.variables.len());
    for (name, v) in t.variables {
        let vpath = format!("{path}.variables.{name}");
        variables.push(compile_variable(&vpath, name, v)?);
    }
    if t.versions.is_empty() {
        return Err(ConfigError::field(
            format!("{path}.versions"),
            "needs at least one version",
        ));
    }
    let mut versions = Vec::with_capacity(t.versions.len());
    for (name, v) in t.versions {
        let vpath = format!("{path}.versions.{name}");
        if !name_ok(&name) {
            return Err(ConfigError::field(
                vpath,
                "a version name is 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
        if v.messages.is_empty() {
            return Err(ConfigError::field(
                format!("{vpath}.messages"),
                "needs at least one message",
            ));
        }
        let mut messages = Vec::with_capacity(v.messages.len());
        for (j, m) in v.messages.into_iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(ConfigError::field(
                    format!("{vpath}.messages[{j}].role"),
                    "must be system, user or assistant",
                ));
            }
            messages.push(Message {
                pieces: compile_text(&m.content, &variables, &format!("{vpath}.messages[{j}].content"))?,
                role: m.role,
            });
        }
        versions.push(Version { name, messages });
    }
    let find = |field: &str, name: &str| {
        versions
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| ConfigError::field(format!("{path}.{field}"), format!("no version `{name}`")))
    };
    let mut split = Vec::with_capacity(t.split.len());
    let mut total = 0u64;
    for (name, weight) in &t.split {
        let idx = find(&format!("split.{name}"), name)?;
        if *weight == 0 {
            return Err(ConfigError::field(
                format!("{path}.split.{name}"),
                "a weight must be at least 1",
            ));
        }
        total += u64::from(*weight);
        split.push((idx, total));
    }
    let default_version = match (&t.default_version, versions.len()) {
        (Some(name), _) => find("default_version", name)?,
        (None, 1) => 0,
        (None, _) if !split.is_empty() => split.first().map_or(0, |(v, _)| *v),
        (None, _) => {
            return Err(ConfigError::field(
                format!("{path}.default_version"),
                "required when a template has several versions and no split",
            ));
        }
    };
    Ok(Template {
        id: t.id,
        variables,
        versions,
        default_version,
        split,
    })
}

fn compile_variable(path: &str, name: String, v: RawVariable) -> Result<Variable, ConfigError> {
    let ok_name = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok_name {
        return Err(ConfigError::field(
            path,
            "a variable name is [A-Za-z_][A-Za-z0-9_]*",
        ));
    }
    if v.kind != RawKind::Enum && !v.values.is_empty() {
        return Err(ConfigError::field(
            format!("{path}.values"),
            "only an enum has values",
        ));
    }
    let kind = match v.kind {
        RawKind::String => Kind::String,
        RawKind::Number => Kind::Number,
        RawKind::Enum if v.values.is_empty() => {
            return Err(ConfigError::field(
                format!("{path}.values"),
                "an enum needs at least one value",
            ));
        }
        RawKind::Enum => Kind::Enum(v.values),
    };
    let pattern = v
        .pattern
        .as_deref()
        .map(|p| {
            regex::RegexBuilder::new(&format!("^(?:{p})$"))
                .size_limit(filter_core::config::REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ConfigError::field(format!("{path}.pattern"), e.to_string()))
        })
        .transpose()?;
    let mut var = Variable {
        name,
        kind,
        required: v.required,
        default: None,
        max_length: v.max_length,
        pattern,
    };
    if let Some(d) = &v.default {
        // The default obeys the same rules as a client's value.
        let text = var
            .check(Some(d))
            .map_err(|e| ConfigError::field(format!("{path}.default"), e.message))?;
        var.default = Some(text);
    }
    Ok(var)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use filter_core::config::parse;

    fn load(json: &str) -> Result<Config, ConfigError> {
        parse::<RawConfig>(json.as_bytes()).and_then(compile)
    }

    const GOOD: &str = r#"{"templates":[{"id":"support","variables":{
        "product":{"type":"enum","values":["widgets","gadgets"],"required":true},
        "question":{"required":true,"max_length":200},
        "tone":{"default":"friendly","pattern":"[a-z ]{1,20}"}},
      "versions":{"v1":{"messages":[{"role":"system","content":"You support {{product}}. Be {{tone}}."},
                                    {"role":"user","content":"{{question}}"}]},
                  "v2":{"messages":[{"role":"system","content":"Expert on {{ product }}."},
                                    {"role":"user","content":"{{question}}"}]}},
      "split":{"v1":80,"v2":20}}],
      "decorators":[{"position":"prepend","role":"system","content":"Policy."}]}"#;

    #[test]
    fn a_library_compiles() {
        let c = load(GOOD).unwrap();
        let t = &c.library.templates["support"];
        assert_eq!(t.versions.len(), 2);
        assert_eq!(t.split, [(0, 80), (1, 100)]);
        assert_eq!(t.default_version, 0);
        assert_eq!(
            t.variables
                .iter()
                .find(|v| v.name == "tone")
                .unwrap()
                .default
                .as_deref(),
            Some("friendly")
        );
        assert_eq!(c.decorators[0].path_prefix, "/");
    }

    #[test]
    fn bad_libraries_name_the_field() {
        let cases = [
            (
                r#"{"templates":[{"id":"a","versions":{"v":{"messages":[{"role":"user","content":"{{x}}"}]}}}]}"#,
                "templates[0].versions.v.messages[0].content",
            ),
            (
                r#"{"templates":[{"id":"a","versions":{"v":{"messages":[{"role":"user","content":"x"}]}}},
                              {"id":"a","versions":{"v":{"messages":[{"role":"user","content":"x"}]}}}]}"#,
                "templates[1].id",
            ),
            (
                r#"{"templates":[{"id":"a","variables":{"x":{"pattern":"(unclosed"}},"versions":{"v":{"messages":[{"role":"user","content":"{{x}}"}]}}}]}"#,
                "templates[0].variables.x.pattern",
            ),
            (
                r#"{"templates":[{"id":"a","variables":{"x":{"pattern":"a{1000}{1000}"}},"versions":{"v":{"messages":[{"role":"user","content":"{{x}}"}]}}}]}"#,
                "templates[0].variables.x.pattern",
            ),
            (
                r#"{"templates":[{"id":"a","versions":{"v":{"messages":[{"role":"robot","content":"x"}]}}}]}"#,
                "templates[0].versions.v.messages[0].role",
            ),
            (
                r#"{"templates":[{"id":"a","versions":{"v":{"messages":[{"role":"user","content":"x"}]},"w":{"messages":[{"role":"user","content":"y"}]}}}]}"#,
                "templates[0].default_version",
            ),
            (
                r#"{"templates":[{"id":"a","split":{"z":1},"versions":{"v":{"messages":[{"role":"user","content":"x"}]}}}]}"#,
                "templates[0].split.z",
            ),
            (
                r#"{"templates":[{"id":"a","variables":{"t":{"type":"enum","values":["a"],"default":"b"}},"versions":{"v":{"messages":[{"role":"user","content":"{{t}}"}]}}}]}"#,
                "templates[0].variables.t.default",
            ),
            (
                r#"{"templates":[{"id":"a","variables":{"t":{"type":"enum"}},"versions":{"v":{"messages":[{"role":"user","content":"{{t}}"}]}}}]}"#,
                "templates[0].variables.t.values",
            ),
            (
                r#"{"templates":[{"id":"a b","versions":{"v":{"messages":[{"role":"user","content":"x"}]}}}]}"#,
                "templates[0].id",
            ),
            (
                r#"{"decorators":[{"position":"middle","role":"system","content":"x"}]}"#,
                "decorators[0].position",
            ),
            (
                r#"{"decorators":[{"position":"append","role":"tool","content":"x"}]}"#,
                "decorators[0].role",
            ),
            (r#"{"select_header":"X-Template"}"#, "select_header"),
            (r#"{"select_header":"x-tollgate-template"}"#, "select_header"),
            (r#"{"select_header":"x-tollgate-subject"}"#, "select_header"),
            (
                r#"{"decorators":[{"position":"append","role":"user","content":"{{x}}"}]}"#,
                "decorators[0].content",
            ),
            (
                r#"{"templates":[{"id":"none","versions":{"v":{"messages":[{"role":"user","content":"x"}]}}}]}"#,
                "templates[0].id",
            ),
        ];
        for (json, path) in cases {
            let err = load(json).unwrap_err();
            assert_eq!(err.path, path, "{json}: {err}");
        }
    }
}
