//! The prompt templater: template text compiled into literal pieces and variable slots
//! (`template::compile_text`, which `config::compile` runs on every message), and the per-request
//! path on an arbitrary body and select header: `render::take_ask`, `render::resolve` (variable
//! checks: types, enums, max_length, patterns, A/B pick) and `render::apply` for OpenAI and
//! Anthropic bodies.
//!
//! Checked beyond "no panic": a compiled template rendered with each slot written back as
//! `{{name}}` compiles to the same pieces, and every checked value lands in the rendered messages
//! verbatim (values are never parsed as template text).
//!
//! Input: template text, `\0`, request body (JSON), optionally `\0` and a select-header value.

#![no_main]

use filter_core::Provider;
use filter_core::config as core_config;
use libfuzzer_sys::fuzz_target;
use prompt_templater::config::{self, Config, Decorator};
use prompt_templater::render;
use prompt_templater::template::{Library, Message, Piece, compile_text};
use serde_json::{Map, Value, json};

const FALLBACK: &str = "Hello {{name}}: {{ n }} items, {{tone}} tone, code {{code}}.";

fn library(text: &str) -> Result<Config, config::ConfigError> {
    let raw = json!({
        "templates": [{
            "id": "t",
            "variables": {
                "name": {"required": true, "max_length": 40},
                "n": {"type": "number", "default": 3},
                "tone": {"type": "enum", "values": ["formal", "casual"], "default": "formal"},
                "code": {"pattern": "[a-z]{1,8}"}
            },
            "versions": {
                "v1": {"messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": text}]},
                "v2": {"messages": [{"role": "user", "content": text}]}
            },
            "split": {"v1": 3, "v2": 1}
        }],
        "decorators": [
            {"position": "prepend", "role": "system", "content": "Policy."},
            {"position": "append", "role": "user", "content": "Answer in English.", "path_prefix": "/v1/"}
        ]
    });
    config::compile(core_config::parse(raw.to_string().as_bytes())?)
}

thread_local! {
    /// Compiled once: recompiling the variables' patterns per input would cost most of the run.
    static CFG: Config = library(FALLBACK).expect("the fallback template compiles");
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let header = parts.next().map(String::from_utf8_lossy);
    CFG.with(|cfg| run(cfg, &text, body, header.as_deref()));
});

fn run(cfg: &Config, text: &str, body: &[u8], header: Option<&str>) {
    // The fuzzed text replaces the template's messages when it compiles (as `config::compile`
    // compiles each message's content); otherwise the request runs against the fallback.
    let mut template = cfg.library.templates["t"].clone();
    if let Ok(pieces) = compile_text(text, &template.variables, "m") {
        // Round trip: slots written back canonically compile to the same pieces.
        let canonical: Vec<String> = template
            .variables
            .iter()
            .map(|v| format!("{{{{{}}}}}", v.name))
            .collect();
        let message = Message {
            role: "user".to_owned(),
            pieces,
        };
        let again = compile_text(&message.render(&canonical), &template.variables, "m")
            .expect("canonical text compiles");
        assert_eq!(again, message.pieces);
        for version in &mut template.versions {
            if let Some(last) = version.messages.last_mut() {
                last.pieces = message.pieces.clone();
            }
        }
    }
    let mut lib = Library::default();
    lib.templates.insert(template.id.clone(), template);

    let Ok(body) = serde_json::from_slice::<Map<String, Value>>(body) else {
        return;
    };
    let decorators: Vec<&Decorator> = cfg.decorators.iter().collect();
    for provider in [
        Provider::OpenAiChat,
        Provider::Anthropic,
        Provider::OpenAiEmbeddings,
    ] {
        let mut body = body.clone();
        let Ok(ask) = render::take_ask(&mut body, header) else {
            continue;
        };
        let sticky = filter_core::hash::fnv1a(header.unwrap_or("").as_bytes());
        let rendered = match &ask {
            Some(a) => match render::resolve(&lib, a, sticky) {
                Ok(r) => Some(r),
                Err(e) => {
                    let _ = (e.reason(), e.to_api().to_json());
                    continue;
                }
            },
            None => None,
        };
        if let Some(r) = &rendered {
            let _ = r.version_name();
            let version = &r.template.versions[r.version];
            for m in &version.messages {
                let out = m.render(&r.values);
                for p in &m.pieces {
                    if let Piece::Var(i) = p {
                        assert!(
                            out.contains(r.values[*i].as_str()),
                            "a value was not inserted verbatim"
                        );
                    }
                }
            }
        }
        match render::apply(&mut body, provider, rendered.as_ref(), &decorators) {
            Ok(()) => {
                let _ = serde_json::to_vec(&body);
            }
            Err(e) => {
                let _ = e.to_json();
            }
        }
    }
}
