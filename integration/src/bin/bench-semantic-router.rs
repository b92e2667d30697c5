//! `bench-semantic-router --sidecar ADDR [--seconds 5] [--json PATH]` — run by
//! `scripts/bench.sh semantic-router`, which starts the release sidecar. Bare Envoy and Envoy with
//! the shipped semantic-router snippet, side by side in one run, in front of the in-process mock
//! provider, loaded with `wrk` (1 worker): a keyword decision (no sidecar call), a repeated
//! 12-word prompt (the sidecar answers from its embedding LRU) and distinct 12-word prompts (a
//! model inference each). Each router row runs on a fresh Envoy so the filter's sidecar-time
//! histogram holds that row alone. Prints Markdown; measurements of this machine, not assertions.

use serde_json::{Value, json};
use std::time::Duration;
use tollgate_it::bench::{Error, Flags, Load, wrk, wrk_varying};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";
const SIDECAR_US: &str = "wasmcustom.tollgate_semantic_router_sidecar_us";

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": text}]})
}

fn main() -> Result<(), Error> {
    let flags = Flags::parse(&[])?;
    let (seconds, json_out) = (flags.seconds, flags.json.clone());
    let sidecar = flags.sidecar()?;
    let mock = MockLlm::start()?;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-router-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let options = || {
        let mut o = Options::new("envoy.yaml").upstream(default_ports::SIDECAR, sidecar.port());
        for port in [
            default_ports::LLM_UPSTREAM,
            default_ports::CODE,
            default_ports::MATH,
        ]
        .into_iter()
        .chain(default_ports::SUPPORT)
        {
            o = o.upstream(port, mock.port());
        }
        o
    };
    let routed = || -> Result<Envoy, Error> {
        let e = Envoy::start(options().snippet("semantic-router.yaml"))?;
        for _ in 0..600 {
            if e.stat("wasmcustom.tollgate_semantic_router_ready_vms") == Some(2) {
                return Ok(e);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the router's examples did not load within 30 s".into())
    };

    let prompt = "Write a Go function that reverses a slice of integers in place";
    let keyword = "I get a traceback when my script imports numpy, what is wrong";
    let distinct = "Write a Go function that reverses a slice of integers, variant MARK";
    println!(
        "\n### semantic-router vs bare Envoy (1 worker, wrk -t1, {seconds} s per run; 12-word prompts)\n"
    );
    println!(
        "| request | 1 connection p50 / p99 ms | added p50 / p99 ms | of which sidecar p50 / p99 ms | rps (c8) |"
    );
    println!("|---|---|---|---|---|");
    let bare = Envoy::start(options())?;
    // One second of load first: the first requests of a fresh Envoy pay for connection set-up.
    wrk(&bare.url(CHAT), &chat(prompt), 1, 8, &dir)?;
    let b1 = wrk(&bare.url(CHAT), &chat(prompt), seconds, 1, &dir)?;
    let b8 = wrk(&bare.url(CHAT), &chat(prompt), seconds, 8, &dir)?;
    drop(bare);
    let mut rows = vec![row("bare Envoy", &b1, &b1, None, &b8)];
    type Run<'a> = Box<dyn Fn(&Envoy, u32) -> Result<Load, Error> + 'a>;
    let runs: Vec<(&str, Run<'_>)> = vec![
        (
            "keyword decision (no sidecar call)",
            Box::new(|e, c| wrk(&e.url(CHAT), &chat(keyword), seconds, c, &dir)),
        ),
        (
            "semantic, repeated prompt (sidecar LRU hit)",
            Box::new(|e, c| wrk(&e.url(CHAT), &chat(prompt), seconds, c, &dir)),
        ),
        (
            "semantic, distinct prompts (model inference)",
            Box::new(|e, c| wrk_varying(&e.url(CHAT), &chat(distinct), "MARK", seconds, c, &dir)),
        ),
    ];
    for (label, run) in runs {
        let envoy = routed()?;
        wrk(&envoy.url(CHAT), &chat(keyword), 1, 8, &dir)?;
        let one = run(&envoy, 1)?;
        // Envoy computes histogram quantiles at its stats flush (every 5 s).
        std::thread::sleep(Duration::from_millis(5500));
        let sidecar_ms = envoy
            .histogram_quantile(SIDECAR_US, "P50")
            .zip(envoy.histogram_quantile(SIDECAR_US, "P99"))
            .map(|(p50, p99)| (p50 / 1000.0, p99 / 1000.0));
        let eight = run(&envoy, 8)?;
        if one.errors + eight.errors > 0 {
            return Err(format!("{label}: non-2xx responses").into());
        }
        rows.push(row(label, &one, &b1, sidecar_ms, &eight));
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

fn row(label: &str, one: &Load, bare: &Load, sidecar_ms: Option<(f64, f64)>, eight: &Load) -> Value {
    let sidecar = sidecar_ms.map_or("–".to_owned(), |(p50, p99)| format!("{p50:.2} / {p99:.2}"));
    println!(
        "| {label} | {:.2} / {:.2} | {:.2} / {:.2} | {sidecar} | {:.0} |",
        one.p50_ms,
        one.p99_ms,
        one.p50_ms - bare.p50_ms,
        one.p99_ms - bare.p99_ms,
        eight.rps
    );
    json!({"request": label, "p50_ms": one.p50_ms, "p99_ms": one.p99_ms,
           "sidecar_ms": sidecar_ms.map(|(a, b)| json!({"p50": a, "p99": b})), "rps_c8": eight.rps})
}
