//! `bench-response-cache --sidecar ADDR [--seconds 5] [--json PATH]` — run by
//! `scripts/bench.sh response-cache`, which starts the release sidecar. Bare Envoy and Envoy with
//! the response cache side by side in one run, in front of the in-process mock provider (which
//! answers at once: a real provider takes hundreds of milliseconds), loaded with `wrk` (1 worker):
//! an exact hit (the same temperature-0 question), misses with the exact cache only, and misses
//! that also ask the sidecar for a semantic match (an embedding per prompt). Misses use distinct
//! prompts. Prints Markdown; measurements of this machine, not assertions.

use serde_json::{Value, json};
use tollgate_it::bench::{Error, Flags, Load, wrk, wrk_varying};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 16,
           "messages": [{"role": "user", "content": text}]})
}

fn main() -> Result<(), Error> {
    let flags = Flags::parse(&[])?;
    let (seconds, json_out) = (flags.seconds, flags.json.clone());
    let sidecar = flags.sidecar()?;
    let mock = MockLlm::start()?;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let options = || {
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .upstream(default_ports::SIDECAR, sidecar.port())
    };
    let cached = |semantic: bool| -> Result<Envoy, Error> {
        // Threshold 1: every lookup embeds and searches, and none hits (the prompts below differ
        // only by a number, which would hit at the shipped threshold).
        let cfg = json!({"scope": "shared",
                         "semantic": {"enabled": semantic, "scope": "cache", "threshold": 1.0}});
        Envoy::start(options().wasm_filter_reading_body("response-cache", "response_cache.wasm", &cfg))
    };
    let question = "What is the boiling point of water at sea level in Celsius?";
    let distinct = "What is the boiling point of water at an altitude of MARK metres?";
    println!(
        "\n### response-cache vs bare Envoy (1 worker, wrk -t1, {seconds} s per run; the mock answers in ~0 ms)\n"
    );
    println!("| request | 1 connection p50 / p99 ms | vs bare p50 / p99 ms | rps (c8) |");
    println!("|---|---|---|---|");
    let bare = Envoy::start(options())?;
    wrk(&bare.url(CHAT), &chat(question), 1, 8, &dir)?;
    let b1 = wrk(&bare.url(CHAT), &chat(question), seconds, 1, &dir)?;
    let b8 = wrk(&bare.url(CHAT), &chat(question), seconds, 8, &dir)?;
    drop(bare);
    let mut rows = vec![row("bare Envoy (upstream path)", &b1, &b1, &b8)];

    let exact = cached(false)?;
    wrk(&exact.url(CHAT), &chat(question), 1, 8, &dir)?;
    let h1 = wrk(&exact.url(CHAT), &chat(question), seconds, 1, &dir)?;
    let h8 = wrk(&exact.url(CHAT), &chat(question), seconds, 8, &dir)?;
    rows.push(row("hit (exact, shared data)", &h1, &b1, &h8));
    let m1 = wrk_varying(&exact.url(CHAT), &chat(distinct), "MARK", seconds, 1, &dir)?;
    let m8 = wrk_varying(&exact.url(CHAT), &chat(distinct), "MARK", seconds, 8, &dir)?;
    rows.push(row("miss, exact cache only (stored after)", &m1, &b1, &m8));
    drop(exact);

    let semantic = cached(true)?;
    wrk(&semantic.url(CHAT), &chat(question), 1, 8, &dir)?;
    let s1 = wrk_varying(&semantic.url(CHAT), &chat(distinct), "MARK", seconds, 1, &dir)?;
    let s8 = wrk_varying(&semantic.url(CHAT), &chat(distinct), "MARK", seconds, 8, &dir)?;
    rows.push(row(
        "miss with semantic lookup (sidecar embeds the prompt)",
        &s1,
        &b1,
        &s8,
    ));
    for l in [&h1, &h8, &m1, &m8, &s1, &s8] {
        if l.errors > 0 {
            return Err("non-2xx responses".into());
        }
    }
    let semantic_hits = semantic
        .stat("wasmcustom.tollgate_response_cache_semantic_hits")
        .unwrap_or(0);
    if semantic_hits > 0 {
        return Err(format!("{semantic_hits} semantic hits in the miss rows").into());
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

fn row(label: &str, one: &Load, bare: &Load, eight: &Load) -> Value {
    println!(
        "| {label} | {:.2} / {:.2} | {:+.2} / {:+.2} | {:.0} |",
        one.p50_ms,
        one.p99_ms,
        one.p50_ms - bare.p50_ms,
        one.p99_ms - bare.p99_ms,
        eight.rps
    );
    json!({"request": label, "p50_ms": one.p50_ms, "p99_ms": one.p99_ms, "rps_c8": eight.rps})
}
