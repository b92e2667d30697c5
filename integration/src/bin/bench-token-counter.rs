//! `bench-token-counter [--seconds 5] [--connections 8] [--json PATH]` — run by
//! `scripts/bench.sh token-counter`. Bare Envoy and Envoy with the token counter, side by side in
//! one run, in front of the in-process mock provider, loaded with `wrk`:
//! - requests/s and latency (p50, p99) for ~200 B, 8 KB and 100 KB chat prompts (1 worker);
//! - start-up: time to `/ready`, and the first counted request (it builds the BPE table);
//! - Envoy RSS at `--concurrency 2` once both workers have served requests;
//! - a 20-turn conversation with the per-message count cache on and off.
//!
//! Prints Markdown; `--json` also writes the numbers. Measurements of this machine, not assertions.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tollgate_it::bench::{Flags, prose, rss_mb, wrk};
use tollgate_it::client::Client;
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

type Error = Box<dyn std::error::Error + Send + Sync>;

const CHAT: &str = "/v1/chat/completions";

struct Args {
    seconds: u64,
    connections: u32,
    json: Option<PathBuf>,
}

fn args() -> Result<Args, Error> {
    let flags = Flags::parse(&["connections"])?;
    Ok(Args {
        seconds: flags.seconds,
        connections: flags.own("connections").unwrap_or("8").parse()?,
        json: flags.json,
    })
}

fn filter_config(cache_entries: usize) -> Value {
    json!({"count_cache_entries": cache_entries,
           "models": {"gpt-4o*": {"max_context_tokens": 128000,
                                   "price": {"input": 2.5, "output": 10.0, "cached_input": 1.25}}}})
}

fn start(mock: &MockLlm, filter: Option<&Value>, concurrency: u32) -> Result<(Envoy, Duration), Error> {
    let mut opts = Options::new("envoy.yaml").upstream(default_ports::LLM_UPSTREAM, mock.port());
    if let Some(cfg) = filter {
        opts = opts.wasm_filter("token-counter", "token_counter.wasm", cfg);
    }
    opts.concurrency = concurrency;
    let t = Instant::now();
    let envoy = Envoy::start(opts)?;
    Ok((envoy, t.elapsed()))
}

fn chat_body(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": content}]})
}

async fn timed_post(c: &Client, url: &str, body: &Value) -> Result<Duration, Error> {
    let t = Instant::now();
    let r = c.post_json(url, &[], body).await?;
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.text()).into());
    }
    Ok(t.elapsed())
}

/// Sum of the latencies of a 20-turn conversation (each turn resends the history), fresh text per
/// repetition so no turn is cached from an earlier run. Returns (all turns, last turn) in ms.
async fn conversation(envoy: &Envoy, reps: u64) -> Result<(f64, f64), Error> {
    let c = Client::new();
    let (mut total, mut last) = (0.0, 0.0);
    for rep in 0..reps {
        let mut messages = vec![json!({"role": "system", "content": prose(2000, 1000 + rep)})];
        for turn in 0..20 {
            messages.push(json!({"role": "user", "content": prose(600, rep * 100 + turn * 2)}));
            let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": messages});
            let d = timed_post(&c, &envoy.url(CHAT), &body).await?.as_secs_f64() * 1000.0;
            total += d;
            if turn == 19 {
                last += d;
            }
            messages.push(json!({"role": "assistant", "content": prose(600, rep * 100 + turn * 2 + 1)}));
        }
    }
    Ok((total / reps as f64, last / reps as f64))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let a = args()?;
    let mock = MockLlm::start()?;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = filter_config(0);
    let c = Client::new();
    let mut out = json!({"seconds": a.seconds, "connections": a.connections, "throughput": [], "cache": {}});

    // The mock builds its own tiktoken table on first use: warm it, so first requests below time
    // Envoy alone.
    timed_post(&c, &mock.url(CHAT), &chat_body("warm up")).await?;

    // Start-up and first request, one worker (the first counted request builds the o200k table).
    // Throughput runs with the count cache off: wrk resends one body, and real prompts are new.
    let (bare, bare_ready) = start(&mock, None, 1)?;
    let (filtered, filtered_ready) = start(&mock, Some(&cfg), 1)?;
    let small = chat_body(&prose(200, 1));
    let first_bare = timed_post(&c, &bare.url(CHAT), &small).await?;
    let first_filtered = timed_post(&c, &filtered.url(CHAT), &small).await?;
    let second_filtered = timed_post(&c, &filtered.url(CHAT), &chat_body(&prose(200, 2))).await?;
    out["startup"] = json!({
        "ready_ms": {"bare": bare_ready.as_millis(), "token_counter": filtered_ready.as_millis()},
        "first_request_ms": {"bare": first_bare.as_secs_f64() * 1e3, "token_counter": first_filtered.as_secs_f64() * 1e3},
        "second_request_ms": {"token_counter": second_filtered.as_secs_f64() * 1e3},
    });

    println!(
        "\n### token-counter vs bare Envoy (1 worker, wrk -t1 -c{} -d{}s, count cache off: every prompt counted)\n",
        a.connections, a.seconds
    );
    // The same filter with the count cache on: a repeated prompt is a cache hit, which isolates
    // the filter's cost without counting.
    let (cached, _) = start(&mock, Some(&filter_config(4096)), 1)?;
    timed_post(&c, &cached.url(CHAT), &small).await?;
    println!(
        "| prompt | bare rps | filter rps | filter rps, cache hit | bare p50 / p99 ms | filter p50 / p99 ms | 1 connection: bare / filter p50 ms | added latency ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, bytes) in [("200 B", 200), ("8 KB", 8 << 10), ("100 KB", 100 << 10)] {
        let body = chat_body(&prose(bytes, bytes as u64));
        let b = wrk(&bare.url(CHAT), &body, a.seconds, a.connections, &dir)?;
        let f = wrk(&filtered.url(CHAT), &body, a.seconds, a.connections, &dir)?;
        let h = wrk(&cached.url(CHAT), &body, a.seconds, a.connections, &dir)?;
        if b.errors + f.errors + h.errors > 0 {
            return Err(format!(
                "{label}: non-2xx responses (bare {}, filter {}, cached {})",
                b.errors, f.errors, h.errors
            )
            .into());
        }
        // Without queueing: one connection, so the difference is the filter's own time.
        let b1 = wrk(&bare.url(CHAT), &body, a.seconds.div_ceil(2), 1, &dir)?;
        let f1 = wrk(&filtered.url(CHAT), &body, a.seconds.div_ceil(2), 1, &dir)?;
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} |",
            b.rps,
            f.rps,
            h.rps,
            b.p50_ms,
            b.p99_ms,
            f.p50_ms,
            f.p99_ms,
            b1.p50_ms,
            f1.p50_ms,
            f1.p50_ms - b1.p50_ms
        );
        if let Some(list) = out["throughput"].as_array_mut() {
            list.push(json!({"prompt": label, "bytes": bytes,
                "bare": {"rps": b.rps, "p50_ms": b.p50_ms, "p99_ms": b.p99_ms},
                "token_counter": {"rps": f.rps, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms},
                "token_counter_cache_hit": {"rps": h.rps, "p50_ms": h.p50_ms, "p99_ms": h.p99_ms},
                "one_connection_p50_ms": {"bare": b1.p50_ms, "token_counter": f1.p50_ms}}));
        }
    }

    // The count cache on a 20-turn conversation (both filtered Envoys are warm).
    let (bare_conv, bare_last) = conversation(&bare, 3).await?;
    let (on, on_last) = conversation(&cached, 3).await?;
    let (off, off_last) = conversation(&filtered, 3).await?;
    out["cache"] = json!({"turns": 20, "bare_ms": bare_conv, "cache_on_ms": on, "cache_off_ms": off,
                          "last_turn_ms": {"bare": bare_last, "cache_on": on_last, "cache_off": off_last}});
    drop((bare, filtered, cached));
    println!("\n### 20-turn conversation (2 KB system prompt, 600 B per message; mean of 3)\n");
    println!("| | all 20 turns ms | 20th turn ms |\n|---|---|---|");
    println!("| bare Envoy | {bare_conv:.1} | {bare_last:.2} |");
    println!("| count cache on | {on:.1} | {on_last:.2} |");
    println!("| count cache off | {off:.1} | {off_last:.2} |");

    // RSS with two workers, after both have served (and so built their tables).
    let (bare2, _) = start(&mock, None, 2)?;
    let (filtered2, ready2) = start(&mock, Some(&cfg), 2)?;
    let idle = (rss_mb(bare2.pid()), rss_mb(filtered2.pid()));
    for i in 0..40 {
        // A fresh connection each time, so both workers take requests.
        let c = Client::new();
        timed_post(&c, &bare2.url(CHAT), &chat_body(&prose(300, i))).await?;
        timed_post(&c, &filtered2.url(CHAT), &chat_body(&prose(300, i))).await?;
    }
    let loaded = (rss_mb(bare2.pid()), rss_mb(filtered2.pid()));
    out["rss_mb_concurrency_2"] = json!({"bare": {"idle": idle.0, "after_requests": loaded.0},
                                          "token_counter": {"idle": idle.1, "after_requests": loaded.1},
                                          "ready_ms_token_counter": ready2.as_millis()});
    println!("\n### Start-up and memory\n");
    println!("| | bare | token-counter |\n|---|---|---|");
    println!(
        "| ready, 1 worker (ms) | {} | {} |",
        bare_ready.as_millis(),
        filtered_ready.as_millis()
    );
    println!(
        "| first request (ms) | {:.1} | {:.1} (builds o200k; next: {:.1}) |",
        first_bare.as_secs_f64() * 1e3,
        first_filtered.as_secs_f64() * 1e3,
        second_filtered.as_secs_f64() * 1e3
    );
    println!("| RSS, 2 workers, idle (MB) | {:.0} | {:.0} |", idle.0, idle.1);
    println!(
        "| RSS, 2 workers, after 40 requests (MB) | {:.0} | {:.0} |",
        loaded.0, loaded.1
    );

    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&out)?)?;
        println!("\n(written to {})", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
