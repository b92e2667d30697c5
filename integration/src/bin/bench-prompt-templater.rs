//! `bench-prompt-templater [--seconds 5] [--json PATH]` — run by `scripts/bench.sh prompt-templater`.
//! Bare Envoy and Envoy with the prompt templater, side by side in one run, in front of the
//! in-process mock provider, loaded with `wrk` (1 worker): a templated request against bare Envoy
//! given the same messages already rendered, and a request without a template (the pass-through
//! path). Prints Markdown; measurements of this machine, not assertions.

use serde_json::{Value, json};
use tollgate_it::bench::{Error, Flags, prose, wrk};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";

fn library() -> Value {
    json!({"templates": [{"id": "support",
        "variables": {"product": {"type": "enum", "values": ["widgets", "gadgets"], "required": true},
                      "question": {"required": true, "max_length": 4000},
                      "tone": {"default": "friendly", "pattern": "[a-z ]{1,20}"}},
        "versions": {"v1": {"messages": [
            {"role": "system", "content": "You answer questions about our {{product}}. Be {{tone}} and brief."},
            {"role": "user", "content": "{{question}}"}]}}}],
        "decorators": [{"position": "prepend", "role": "system", "content": "Follow the company policy."}]})
}

fn main() -> Result<(), Error> {
    let flags = Flags::parse(&[])?;
    let (seconds, json_out) = (flags.seconds, flags.json.clone());
    let mock = MockLlm::start()?;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-tpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bare = Envoy::start(Options::new("envoy.yaml").upstream(default_ports::LLM_UPSTREAM, mock.port()))?;
    let templater = Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .wasm_filter_reading_body("prompt-templater", "prompt_templater.wasm", &library()),
    )?;
    let question = prose(600, 7);
    let templated = json!({"model": "gpt-4o-mini", "max_tokens": 16, "tollgate_template":
        {"id": "support", "variables": {"product": "widgets", "question": question}}});
    let rendered = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [
        {"role": "system", "content": "Follow the company policy."},
        {"role": "system", "content": "You answer questions about our widgets. Be friendly and brief."},
        {"role": "user", "content": question}]});
    let plain = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": prose(600, 8)}]});
    // The plain request on the templater gets the decorator too; on a path without decorators it
    // would be the scan-and-pass path. Both are measured.
    let no_decorator = {
        let mut l = library();
        l["decorators"] = json!([]);
        l
    };
    let passthrough = Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .wasm_filter_reading_body("prompt-templater", "prompt_templater.wasm", &no_decorator),
    )?;

    println!("\n### prompt-templater vs bare Envoy (1 worker, wrk -t1, {seconds} s per run)\n");
    println!(
        "| request | bare rps (c8) | templater rps (c8) | 1 connection: bare / templater p50 ms | added latency ms |"
    );
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (label, bare_body, body, envoy) in [
        (
            "templated (bare gets the rendered messages)",
            &rendered,
            &templated,
            &templater,
        ),
        ("no template, decorator added", &plain, &plain, &templater),
        (
            "no template, no decorator (pass-through)",
            &plain,
            &plain,
            &passthrough,
        ),
    ] {
        let b = wrk(&bare.url(CHAT), bare_body, seconds, 8, &dir)?;
        let t = wrk(&envoy.url(CHAT), body, seconds, 8, &dir)?;
        let b1 = wrk(&bare.url(CHAT), bare_body, seconds.div_ceil(2), 1, &dir)?;
        let t1 = wrk(&envoy.url(CHAT), body, seconds.div_ceil(2), 1, &dir)?;
        if b.errors + t.errors + b1.errors + t1.errors > 0 {
            return Err(format!("{label}: non-2xx responses").into());
        }
        println!(
            "| {label} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} |",
            b.rps,
            t.rps,
            b1.p50_ms,
            t1.p50_ms,
            t1.p50_ms - b1.p50_ms
        );
        rows.push(
            json!({"request": label, "bare_rps": b.rps, "templater_rps": t.rps,
                         "one_connection_p50_ms": {"bare": b1.p50_ms, "templater": t1.p50_ms}}),
        );
    }
    if let Some(path) = json_out {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&json!({"seconds": seconds, "rows": rows}))?,
        )?;
        println!("\n(written to {})", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
