//! Benchmarks a running `tollgate-sidecar` over gRPC on loopback: embed latency (12-word and
//! 256-token prompts, sequential and 8-way concurrent), throughput with dynamic batching and with
//! client-side batches, repeat-prompt latency (LRU), the semantic cache over Redis, and the
//! process's RSS. Run by `scripts/bench.sh`, which starts the sidecar (release build) and Redis.
//!
//! Usage: sidecar_bench --addr 127.0.0.1:PORT --pid PID [--redis-addr 127.0.0.1:PORT2 --redis-pid PID2]
//! (`--redis-addr` is a second sidecar started with --redis-url). Prints a Markdown table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark: failing loudly is right

use inference_proto::v1::inference_client::InferenceClient;
use inference_proto::v1::semantic_cache_client::SemanticCacheClient;
use inference_proto::v1::{CacheLookupRequest, CacheStoreRequest, EmbedRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const WORDS: &[&str] = &[
    "gateway", "request", "budget", "token", "stream", "model", "prompt", "answer", "cluster", "policy",
    "tenant", "cache", "vector", "router", "latency", "window", "replica", "mesh", "filter", "header",
    "network", "storage", "compute", "market", "weather", "garden", "music", "history", "science", "travel",
];

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh 12-word prompt (unique, so the LRU cannot answer it).
fn short_prompt() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut words = vec![format!("q{n}")];
    let mut x = n
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for _ in 0..11 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        words.push(WORDS[(x >> 33) as usize % WORDS.len()].to_owned());
    }
    words.join(" ")
}

/// A fresh prompt of about 256 tokens (the model's window).
fn long_prompt() -> String {
    let mut s = short_prompt();
    while s.split_whitespace().count() < 260 {
        s.push(' ');
        s.push_str(&short_prompt());
    }
    s
}

struct Stats {
    name: String,
    samples: Vec<Duration>,
    wall: Duration,
    items: usize,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self.samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i]
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.2} | {:.2} | {:.0} |",
            self.name,
            self.samples.len(),
            self.pct(0.5),
            self.pct(0.99),
            self.items as f64 / self.wall.as_secs_f64()
        )
    }
}

async fn embed_once(c: &mut InferenceClient<Channel>, texts: Vec<String>) -> Duration {
    let t0 = Instant::now();
    let r = c.embed(EmbedRequest { texts }).await.unwrap().into_inner();
    let d = t0.elapsed();
    assert!(!r.embeddings.is_empty());
    d
}

/// `clients` concurrent clients, each sending `per_client` requests of `batch` texts from `make`.
async fn run(
    name: &str,
    ch: &Channel,
    clients: usize,
    per_client: usize,
    batch: usize,
    make: fn() -> String,
) -> Stats {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut c = InferenceClient::new(ch.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let texts = (0..batch).map(|_| make()).collect();
                out.push(embed_once(&mut c, texts).await);
            }
            out
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    Stats {
        name: name.to_owned(),
        wall: t0.elapsed(),
        items: samples.len() * batch,
        samples,
    }
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = arg(&args, "--addr").expect("--addr");
    let pid: u32 = arg(&args, "--pid").expect("--pid").parse().unwrap();
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (rss_idle, _) = rss_kib(pid);

    // Warm-up: first calls allocate the model's buffers.
    let mut c = InferenceClient::new(ch.clone());
    for _ in 0..10 {
        embed_once(&mut c, vec![short_prompt()]).await;
        embed_once(&mut c, vec![long_prompt()]).await;
    }

    let mut rows = vec![
        run("12-word prompt, 1 client", &ch, 1, 200, 1, short_prompt).await,
        run("12-word prompt, 8 clients", &ch, 8, 50, 1, short_prompt).await,
        run("256-token prompt, 1 client", &ch, 1, 30, 1, long_prompt).await,
        run("256-token prompt, 8 clients", &ch, 8, 8, 1, long_prompt).await,
        run(
            "12-word prompts, 32 per request, 4 clients",
            &ch,
            4,
            10,
            32,
            short_prompt,
        )
        .await,
    ];
    let repeated = "What is the capital of France? Answer in one short sentence.".to_owned();
    let t0 = Instant::now();
    let mut samples = Vec::new();
    for _ in 0..500 {
        samples.push(embed_once(&mut c, vec![repeated.clone()]).await);
    }
    rows.push(Stats {
        name: "repeated prompt (LRU), 1 client".into(),
        wall: t0.elapsed(),
        items: samples.len(),
        samples,
    });
    let (rss, hwm) = rss_kib(pid);

    println!("| sidecar gRPC on loopback | requests | p50 ms | p99 ms | embeddings/s |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.row());
    }
    println!();
    println!(
        "RSS: {:.0} MiB idle after model load, {:.0} MiB after the runs, peak {:.0} MiB",
        rss_idle as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let short = &rows[0];
    let short8 = &rows[1];
    let repeat = &rows[5];
    println!();
    println!("Targets (issue 3, this 2-core machine):");
    let check = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "- 12-word prompt p50 <= 8 ms: {:.2} ms, {}",
        short.pct(0.5),
        check(short.pct(0.5) <= 8.0)
    );
    println!(
        "- repeated prompt p50 <= 0.5 ms: {:.3} ms, {}",
        repeat.pct(0.5),
        check(repeat.pct(0.5) <= 0.5)
    );
    let best_rate = rows[1..=4]
        .iter()
        .filter(|r| r.name.starts_with("12-word"))
        .map(|r| r.items as f64 / r.wall.as_secs_f64())
        .fold(0.0, f64::max);
    println!(
        "- >= 150 short embeddings/s: {:.0}/s with 8 clients, {:.0}/s best, {}",
        short8.items as f64 / short8.wall.as_secs_f64(),
        best_rate,
        check(best_rate >= 150.0)
    );

    if let Some(raddr) = arg(&args, "--redis-addr") {
        redis_cache(&raddr).await;
    }
}

/// The semantic cache over Redis: lookups against 10 000 stored vectors, through the LSH index.
async fn redis_cache(addr: &str) {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = SemanticCacheClient::new(ch);
    let dim = 384;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let unit = |v: Vec<f32>| {
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.into_iter().map(|a| a / n).collect::<Vec<f32>>()
    };
    let n = 10_000;
    let mut stored = Vec::new();
    let t0 = Instant::now();
    for i in 0..n {
        let v = unit((0..dim).map(|_| rnd()).collect());
        c.store(CacheStoreRequest {
            scope: "bench".into(),
            model: "m".into(),
            key: format!("k{i}"),
            vector: v.clone(),
            value: vec![b'x'; 512],
            ttl_seconds: 600,
            ..Default::default()
        })
        .await
        .unwrap();
        if i % 50 == 0 {
            stored.push(v);
        }
    }
    let store_time = t0.elapsed();
    let mut hit_samples = Vec::new();
    let mut hits = 0;
    for v in &stored {
        // A near neighbour of a stored vector (cosine ~0.97) and a fresh random one.
        let near = unit(v.iter().map(|a| a + rnd() * 0.02).collect());
        let t = Instant::now();
        let r = c
            .lookup(CacheLookupRequest {
                scope: "bench".into(),
                model: "m".into(),
                vector: near,
                threshold: 0.9,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        hit_samples.push(t.elapsed());
        hits += usize::from(r.outcome == 3);
    }
    let mut miss_samples = Vec::new();
    for _ in 0..stored.len() {
        let v = unit((0..dim).map(|_| rnd()).collect());
        let t = Instant::now();
        c.lookup(CacheLookupRequest {
            scope: "bench".into(),
            model: "m".into(),
            vector: v,
            threshold: 0.9,
            ..Default::default()
        })
        .await
        .unwrap();
        miss_samples.push(t.elapsed());
    }
    let s = |name: &str, samples: Vec<Duration>| Stats {
        name: name.into(),
        wall: samples.iter().sum(),
        items: samples.len(),
        samples,
    };
    println!();
    println!(
        "Semantic cache in Redis, {n} entries of 384-d vectors (stored in {:.1} s):",
        store_time.as_secs_f64()
    );
    println!("| lookup | requests | p50 ms | p99 ms | lookups/s (1 client) |");
    println!("|---|---|---|---|---|");
    println!("{}", s("near neighbour (LSH probe)", hit_samples).row());
    println!("{}", s("random vector (miss)", miss_samples).row());
    println!("near-neighbour recall at threshold 0.9: {hits}/{}", stored.len());
}
