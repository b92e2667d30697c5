//! `bench-chain --sidecar ADDR [--seconds 5] [--rate 20] [--streams 20] [--json PATH]
//! [--markdown PATH]` — run by `scripts/bench.sh chain`, which starts the release sidecar and pins
//! Envoy to one core and this driver (load generator and mock provider) and the sidecar to the
//! other. In one run: bare Envoy, each shipped filter snippet alone, the tiers a mesh admin builds
//! up (auth + token counting; + moderation; + the response cache, hit and miss; + semantic routing)
//! and the full chain of six, each on a fresh Envoy with one worker. Per row: start-up time, RSS,
//! closed-loop latency at one connection (added over bare Envoy) and throughput at 16, an open-loop
//! fixed-rate run (latency from each request's due time), and streaming time to first token and
//! gaps between chunks. Prints Markdown; measurements of this machine, not assertions.
//!
//! Every request carries a JWT (the chain's jwt-auth checks it) and the identity headers a chain
//! without jwt-auth would lack (jwt-auth replaces them). Misses use distinct prompts; the semantic
//! cache threshold is raised to 1.0 so the lookup runs but distinct prompts that differ only by a
//! number cannot match, and the per-minute token budget is raised so the load never meets it.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tollgate_it::bench::{
    Error, Flags, Load, OpenLoad, StreamTiming, open_loop, rss_mb, stream_timing, wrk_varying_with_headers,
    wrk_with_headers,
};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::issuer::{JwksServer, KeyDir, KeyKind, Mode, jwks, now};
use tollgate_it::mock::MockLlm;
use xtask::filters::{CHAIN, Filter};

const CHAT: &str = "/v1/chat/completions";
// The filters, from the one table (xtask/src/filters.rs), in chain order.
const J: &Filter = &CHAIN[0];
const T: &Filter = &CHAIN[1];
const M: &Filter = &CHAIN[2];
const R: &Filter = &CHAIN[3];
const C: &Filter = &CHAIN[4];
const K: &Filter = &CHAIN[5];

struct Row {
    label: &'static str,
    /// In the documented order.
    snippets: &'static [&'static Filter],
    /// The same prompt every time (answered from the cache after the first).
    hit: bool,
    api: Api,
}

/// The API a row's requests use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    /// OpenAI's Responses API: its typed event stream ends with `response.completed`.
    Responses,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Self::Chat => CHAT,
            Self::Responses => "/v1/responses",
        }
    }

    fn body(self, stream: bool) -> Value {
        match self {
            Self::Chat => chat(stream),
            // Room for the mock's whole reply: an answer cut at max_output_tokens ends with
            // response.incomplete, which the cache does not store.
            Self::Responses => {
                let mut body = json!({"model": "gpt-4o-mini", "temperature": 0, "max_output_tokens": 64,
                    "input": [{"role": "user", "content": [{"type": "input_text",
                               "text": "Summarise the deployment notes for release MARK in two sentences."}]}]});
                if stream {
                    body["stream"] = json!(true);
                }
                body
            }
        }
    }

    /// What the last event of a complete stream carries.
    fn end_marker(self) -> &'static str {
        match self {
            Self::Chat => "[DONE]",
            Self::Responses => "event: response.completed",
        }
    }
}

const ROWS: &[Row] = &[
    Row {
        label: "bare Envoy",
        snippets: &[],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "jwt-auth alone",
        snippets: &[J],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "prompt-templater alone",
        snippets: &[T],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "content-moderator alone",
        snippets: &[M],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "semantic-router alone",
        snippets: &[R],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "response-cache alone, miss",
        snippets: &[C],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "response-cache alone, hit",
        snippets: &[C],
        hit: true,
        api: Api::Chat,
    },
    Row {
        label: "token-counter alone",
        snippets: &[K],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "auth + token counting",
        snippets: &[J, K],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "+ moderation",
        snippets: &[J, M, K],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "+ response cache, miss",
        snippets: &[J, M, C, K],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "+ response cache, hit",
        snippets: &[J, M, C, K],
        hit: true,
        api: Api::Chat,
    },
    Row {
        label: "+ semantic routing, miss",
        snippets: &[J, M, R, C, K],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "full chain (six), miss",
        snippets: &[J, T, M, R, C, K],
        hit: false,
        api: Api::Chat,
    },
    Row {
        label: "full chain (six), hit",
        snippets: &[J, T, M, R, C, K],
        hit: true,
        api: Api::Chat,
    },
    Row {
        label: "bare Envoy, Responses API",
        snippets: &[],
        hit: false,
        api: Api::Responses,
    },
    Row {
        label: "full chain (six), miss, Responses API",
        snippets: &[J, T, M, R, C, K],
        hit: false,
        api: Api::Responses,
    },
    Row {
        label: "full chain (six), hit, Responses API",
        snippets: &[J, T, M, R, C, K],
        hit: true,
        api: Api::Responses,
    },
];

/// Textual changes to the shipped snippets for the benchmark (each must apply).
const BUDGET: (&str, &str) = (
    r#"{"name": "per-minute", "window": "minute", "tokens": 200000}"#,
    r#"{"name": "per-minute", "window": "minute", "tokens": 100000000000}"#,
);
const THRESHOLD: (&str, &str) = (
    r#""semantic": {"enabled": true, "threshold": 0.6, "same_words_threshold": 0.35}"#,
    r#""semantic": {"enabled": true, "threshold": 1.0, "same_words_threshold": 1.0}"#,
);

fn chat(stream: bool) -> Value {
    let mut body = json!({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 16,
        "messages": [{"role": "user",
                      "content": "Summarise the deployment notes for release MARK in two sentences."}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

struct Measured {
    ready: Duration,
    rss_idle: f64,
    rss_loaded: f64,
    one: Load,
    many: Load,
    open: OpenLoad,
    stream: StreamTiming,
}

fn main() -> Result<(), Error> {
    let flags = Flags::parse(&["rate", "streams", "markdown"])?;
    let sidecar = flags.sidecar()?;
    let seconds = flags.seconds;
    let rate: f64 = flags.own("rate").unwrap_or("20").parse()?;
    let streams: usize = flags.own("streams").unwrap_or("20").parse()?;

    let mock = MockLlm::start()?;
    let keys = KeyDir::new()?;
    let key = keys.key(KeyKind::P256, "bench")?;
    let jwks_server = JwksServer::start(Mode::Serve(jwks(&[&key])))?;
    let claims = json!({"iss": "https://issuer.tollgate.local", "aud": "tollgate-gateway",
                        "sub": "alice", "tenant": "acme", "iat": now(), "exp": now() + 86_400});
    let bearer = format!("Bearer {}", key.sign("ES256", &claims)?);
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-tollgate-subject", "alice"),
        ("x-tollgate-tenant", "acme"),
    ];
    let mut stream_headers = headers.to_vec();
    stream_headers.extend([("x-mock-chunks", "20"), ("x-mock-chunk-delay-ms", "5")]);
    let dir = std::env::temp_dir().join(format!("tollgate-bench-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let how = format!(
        "{} cores ({}); this driver (wrk, the open-loop generator, the mock provider) on CPUs {}; \
         Envoy --concurrency 1 on the CPUs in the table's note; {seconds} s per closed-loop and \
         open-loop run, {streams} streams of 20 chunks 5 ms apart per row",
        online_cpus(),
        cpu_model(),
        cpus_allowed("self"),
    );
    println!("\n### The chain, tier by tier, vs bare Envoy\n\n{how}\n");
    let mut envoy_cpus = String::new();
    let mut results = Vec::new();
    let mut bare: Option<(f64, f64)> = None;
    for row in ROWS {
        let mut opts = Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .upstream(default_ports::MATH, mock.port())
            .upstream(default_ports::CODE, mock.port())
            .upstream(default_ports::SUPPORT[0], mock.port())
            .upstream(default_ports::SUPPORT[1], mock.port())
            .upstream(default_ports::SIDECAR, sidecar.port())
            .upstream(default_ports::JWKS, jwks_server.port);
        for f in row.snippets {
            opts = opts.filter(f);
        }
        if row.snippets.iter().any(|f| f.name == K.name) {
            opts = opts.replace(BUDGET.0, BUDGET.1);
        }
        if row.snippets.iter().any(|f| f.name == C.name) {
            opts = opts.replace(THRESHOLD.0, THRESHOLD.1);
        }
        let t = Instant::now();
        let envoy = Envoy::start(opts)?;
        if row.snippets.iter().any(|f| f.name == R.name) {
            // Until its examples are embedded the router sends everything to the default route.
            let deadline = Instant::now() + Duration::from_secs(60);
            while envoy.stat("wasmcustom.tollgate_semantic_router_ready_vms") != Some(2) {
                if Instant::now() > deadline {
                    return Err(
                        format!("{}: router examples never loaded:\n{}", row.label, envoy.log()).into(),
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let ready = t.elapsed();
        envoy_cpus = cpus_allowed(&envoy.pid().to_string());
        let rss_idle = rss_mb(envoy.pid());
        let url = envoy.url(row.api.path());
        let json_body = row.api.body(false);
        let closed = |connections: u32, secs: u64| {
            if row.hit {
                wrk_with_headers(&url, &json_body, &headers, secs, connections, &dir)
            } else {
                wrk_varying_with_headers(&url, &json_body, "MARK", &headers, secs, connections, &dir)
            }
        };
        closed(4, 1)?; // warm-up (and, for hit rows, the entry the rest hit)
        let one = closed(1, seconds)?;
        let many = closed(16, seconds)?;
        let marker = (!row.hit).then_some("MARK");
        let open = open_loop(&url, &json_body, marker, &headers, rate, seconds)?;
        let stream = stream_timing(
            &url,
            &row.api.body(true),
            marker,
            &stream_headers,
            streams,
            row.api.end_marker(),
        )?;
        let rss_loaded = rss_mb(envoy.pid());
        let m = Measured {
            ready,
            rss_idle,
            rss_loaded,
            one,
            many,
            open,
            stream,
        };
        let base = *bare.get_or_insert((m.one.p50_ms, m.one.p99_ms));
        let errors = m.one.errors + m.many.errors + m.open.errors + m.stream.errors;
        if errors > 0 {
            eprintln!("{}: {errors} errors; Envoy's log:\n{}", row.label, envoy.log());
            return Err(format!("{}: {errors} failed requests", row.label).into());
        }
        results.push(record(row, &m, base));
        drop(envoy);
    }
    let table = markdown(&results, rate);
    println!("{table}\nEnvoy ran on CPUs {envoy_cpus}.");
    if let Some(path) = flags.own("markdown") {
        std::fs::write(
            path,
            format!(
                "### The chain, tier by tier, vs bare Envoy\n\n{how}; Envoy on CPUs {envoy_cpus}.\n\n{table}"
            ),
        )?;
    }
    flags.write_json(&json!({"how": how, "envoy_cpus": envoy_cpus, "seconds": seconds,
                              "open_loop_rate": rate, "streams": streams, "rows": results}))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn record(row: &Row, m: &Measured, bare: (f64, f64)) -> Value {
    json!({
        "row": row.label,
        "filters": row.snippets.iter().map(|f| f.name).collect::<Vec<_>>(),
        "cache_hits": row.hit,
        "ready_ms": m.ready.as_secs_f64() * 1000.0,
        "rss_mb": {"idle": m.rss_idle, "after_load": m.rss_loaded},
        "c1": {"p50_ms": m.one.p50_ms, "p99_ms": m.one.p99_ms,
               "added_p50_ms": m.one.p50_ms - bare.0, "added_p99_ms": m.one.p99_ms - bare.1},
        "c16_rps": m.many.rps,
        "open_loop": {"rate": m.open.rate, "sent": m.open.sent, "p50_ms": m.open.p50_ms,
                      "p99_ms": m.open.p99_ms, "p999_ms": m.open.p999_ms},
        "stream": {"ttft_p50_ms": m.stream.ttft_p50_ms, "ttft_p99_ms": m.stream.ttft_p99_ms,
                   "chunk_gap_p50_ms": m.stream.gap_p50_ms, "chunk_gap_p99_ms": m.stream.gap_p99_ms},
    })
}

fn markdown(rows: &[Value], rate: f64) -> String {
    let f = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let mut t = format!(
        "| configuration | ready ms | RSS idle / loaded MiB | c1 p50 / p99 ms | added p50 / p99 ms | \
         max rps (c16) | {rate:.0}/s open loop p50 / p99 / p99.9 ms | stream first token p50 / p99 ms | \
         chunk gap p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {:.0} | {:.0} / {:.0} | {:.2} / {:.2} | {:+.2} / {:+.2} | {:.0} | {:.2} / {:.2} / {:.2} | \
             {:.2} / {:.2} | {} |\n",
            r["row"].as_str().unwrap_or_default(),
            f(r, "/ready_ms"),
            f(r, "/rss_mb/idle"),
            f(r, "/rss_mb/after_load"),
            f(r, "/c1/p50_ms"),
            f(r, "/c1/p99_ms"),
            f(r, "/c1/added_p50_ms"),
            f(r, "/c1/added_p99_ms"),
            f(r, "/c16_rps"),
            f(r, "/open_loop/p50_ms"),
            f(r, "/open_loop/p99_ms"),
            f(r, "/open_loop/p999_ms"),
            f(r, "/stream/ttft_p50_ms"),
            f(r, "/stream/ttft_p99_ms"),
            match (f(r, "/stream/chunk_gap_p50_ms"), f(r, "/stream/chunk_gap_p99_ms")) {
                (a, b) if a.is_nan() || b.is_nan() => "one chunk (replayed)".to_owned(),
                (a, b) => format!("{a:.2} / {b:.2}"),
            },
        ));
    }
    t
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `Cpus_allowed_list` of a process (`self` or a pid).
fn cpus_allowed(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".into())
}

/// CPUs on the machine (`available_parallelism` would give this process's, which is pinned).
fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0)
}
