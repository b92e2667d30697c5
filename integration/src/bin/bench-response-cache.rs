//! `bench-response-cache --sidecar ADDR [--seconds 5] [--json PATH]` — run by
//! `scripts/bench.sh response-cache`, which starts the release sidecar. Bare Envoy and Envoy with
//! the response cache side by side in one run, in front of the in-process mock provider (which
//! answers at once: a real provider takes hundreds of milliseconds), loaded with `wrk` (1 worker):
//! an exact hit (the same temperature-0 question), misses with the exact cache only, and misses
//! that also ask the sidecar for a semantic match (an embedding per prompt). Misses use distinct
//! prompts. Then the semantic match's quality on the labelled pairs of
//! integration/tests/data/cache-pairs.heldout.json: precision and recall per similarity threshold,
//! with and without the verification step (`response_cache::verify`), on the tuning and the
//! held-out half, from the sidecar's embeddings (`--only quality` prints just that).
//! Prints Markdown; measurements of this machine, not assertions.

use filter_core::verify;
use serde_json::{Value, json};
use tollgate_it::bench::{Error, Flags, Load, wrk, wrk_varying};
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::labelled::{self, Confusion};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 16,
           "messages": [{"role": "user", "content": text}]})
}

fn main() -> Result<(), Error> {
    let flags = Flags::parse(&["only"])?;
    let (seconds, json_out) = (flags.seconds, flags.json.clone());
    let sidecar = flags.sidecar()?;
    if flags.own("only") == Some("quality") {
        quality(sidecar)?;
        return Ok(());
    }
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
                         "semantic": {"enabled": semantic, "scope": "cache", "threshold": 1.0,
                                      "same_words_threshold": 1.0}});
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
    let quality = quality(sidecar)?;
    if let Some(path) = json_out {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&json!({"seconds": seconds, "rows": rows, "quality": quality}))?,
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

/// Precision and recall of the semantic match per threshold on the labelled pairs. Similarity
/// only: a hit when the similarity reaches the threshold. Verified (what the filter does): a
/// contrast refuses, the same content words need `same_words_threshold`, other words `threshold`.
fn quality(sidecar: std::net::SocketAddr) -> Result<Value, Error> {
    let pairs = labelled::cache_pairs()?;
    let texts: Vec<String> = pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();
    let vectors = labelled::embed(sidecar, &texts)?;
    let sims: Vec<f32> = vectors
        .chunks(2)
        .map(|v| labelled::cosine(&v[0], &v[1]))
        .collect();
    // The shipped settings: the snippet's.
    let snippet = tollgate_it::envoy::snippet_config("response-cache.yaml")?;
    let setting = |k: &str| -> Result<f32, Error> {
        let v = snippet["semantic"][k].as_f64();
        Ok(v.ok_or(format!("envoy/filters/response-cache.yaml sets no semantic.{k}"))? as f32)
    };
    let shipped = Shipped {
        threshold: setting("threshold")?,
        same_words_threshold: setting("same_words_threshold")?,
    };
    let verdicts = |limits| -> Vec<verify::Verdict> {
        pairs
            .iter()
            .map(|p| verify::compare_with(&p.a, &p.b, limits))
            .collect()
    };
    let shipped_verdicts = verdicts(verify::Limits::SHIPPED);
    let score = |tune: bool, verdicts: Option<&[verify::Verdict]>, t: f32, t_same: f32| {
        let mut c = Confusion::default();
        for (i, p) in pairs.iter().enumerate().filter(|(_, p)| p.tune() == tune) {
            let s = sims[i];
            let hit = match verdicts.map(|v| v[i]) {
                None => s >= t,
                Some(verify::Verdict::Different(_)) => false,
                Some(verify::Verdict::SameWords) => s >= t_same.min(t),
                Some(verify::Verdict::Close) => s >= t,
            };
            c.add(p.same(), hit);
        }
        c
    };
    let count = |tune: bool| pairs.iter().filter(|p| p.tune() == tune).count();
    let pr = |c: Confusion| format!("{:.3} / {:.3}", c.precision(), c.recall());
    println!(
        "\n### semantic match quality: {} labelled pairs ({} tune, {} held out), precision / recall\n",
        pairs.len(),
        count(true),
        count(false)
    );
    println!(
        "Verified: the shipped verifier, same-words threshold {:.2}; the shipped threshold is {:.2}.\n",
        shipped.same_words_threshold, shipped.threshold
    );
    println!(
        "| threshold | similarity only, tune | verified, tune | similarity only, held out | verified, held out |"
    );
    println!("|---|---|---|---|---|");
    let mut curve = Vec::new();
    let v = Some(shipped_verdicts.as_slice());
    let t_same = shipped.same_words_threshold;
    for t in [
        0.60f32, 0.65, 0.70, 0.75, 0.78, 0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.96,
    ] {
        let cells = [
            score(true, None, t, t),
            score(true, v, t, t_same),
            score(false, None, t, t),
            score(false, v, t, t_same),
        ];
        let mark = if (t - shipped.threshold).abs() < 1e-6 {
            " (shipped)"
        } else {
            ""
        };
        println!(
            "| {t:.2}{mark} | {} | {} | {} | {} |",
            pr(cells[0]),
            pr(cells[1]),
            pr(cells[2]),
            pr(cells[3])
        );
        curve.push(json!({"threshold": t,
            "tune": {"similarity": [cells[0].precision(), cells[0].recall()], "verified": [cells[1].precision(), cells[1].recall()]},
            "heldout": {"similarity": [cells[2].precision(), cells[2].recall()], "verified": [cells[3].precision(), cells[3].recall()]}}));
    }
    // How the verifier's limits and the same-words threshold were chosen: the tuning half only.
    println!("\nThe verifier's settings on the tuning half only (precision / recall at each threshold):\n");
    println!(
        "| exchange / addition / context, same-words threshold | 0.55 | 0.60 | 0.65 | 0.70 | 0.75 | 0.80 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (exchange, addition, context, t_same) in [
        (1, 0, 3, 0.35f32),
        (1, 1, 3, 0.35),
        (2, 0, 3, 0.35),
        (2, 1, 3, 0.35),
        (2, 2, 3, 0.35),
        (3, 0, 3, 0.35),
        (3, 1, 3, 0.35),
        (3, 2, 3, 0.35),
        (3, 1, 2, 0.35),
        (3, 1, 4, 0.35),
        (2, 1, 2, 0.35),
        (2, 1, 4, 0.35),
        (2, 1, 99, 0.35),
        (3, 1, 3, 0.25),
        (3, 1, 3, 0.45),
        (3, 1, 3, 0.55),
        (3, 1, 3, 1.0),
    ] {
        let limits = verify::Limits {
            exchange,
            addition,
            context,
        };
        let vs = verdicts(limits);
        let cells: Vec<String> = [0.55f32, 0.60, 0.65, 0.70, 0.75, 0.80]
            .iter()
            .map(|&t| {
                let c = score(true, Some(&vs), t, t_same);
                format!("{} ({} wrong)", pr(c), c.hits_wrong)
            })
            .collect();
        let mark =
            if limits == verify::Limits::SHIPPED && (t_same - shipped.same_words_threshold).abs() < 1e-6 {
                " (shipped)"
            } else {
                ""
            };
        println!(
            "| {exchange} / {addition} / {context}, {t_same:.2}{mark} | {} |",
            cells.join(" | ")
        );
    }
    if std::env::var_os("TOLLGATE_BENCH_PAIRS").is_some() {
        for ((p, s), v) in pairs.iter().zip(&sims).zip(&shipped_verdicts) {
            let why = match v {
                verify::Verdict::Different(c) => c.as_str(),
                verify::Verdict::SameWords => "same words",
                verify::Verdict::Close => "-",
            };
            println!(
                "{} {:>9} {s:.3} {why:<34} {:<22} {} | {}",
                p.split, p.label, p.category, p.a, p.b
            );
        }
    }
    Ok(json!(curve))
}

struct Shipped {
    threshold: f32,
    same_words_threshold: f32,
}
