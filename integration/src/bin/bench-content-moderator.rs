//! `bench-content-moderator [--seconds 5] [--json PATH]` — run by `scripts/bench.sh content-moderator`.
//! Bare Envoy and Envoy with the content moderator (every detector and a deny rule on the request,
//! detectors on the response), side by side in one run, in front of the in-process mock provider,
//! loaded with `wrk` (1 worker): 1 KB and 32 KB prompts of clean prose (the common case: scanned,
//! passed), and a streamed response of 200 deltas to show the added delay per chunk. Then streams
//! at a model's pace (250 deltas, 25 ms apart) through the shipped snippet's response rules, of
//! ordinary prose and of prose with card numbers and SSNs: the delay each token gains against bare
//! Envoy in the same run, first token and median. Prints Markdown; measurements of this machine,
//! not assertions.

use serde_json::{Value, json};
use tollgate_it::bench::{Error, Flags, added_per_token, prose, quantile, stream_arrivals, wrk_with_headers};
use tollgate_it::envoy::{Envoy, Options, default_ports, snippet_config};
use tollgate_it::mock::MockLlm;

const CHAT: &str = "/v1/chat/completions";

fn config() -> Value {
    let detectors: serde_json::Map<String, Value> = [
        "email",
        "phone",
        "payment_card",
        "us_ssn",
        "iban",
        "ipv4",
        "ipv6",
        "aws_access_key",
        "github_token",
        "openai_key",
        "slack_token",
        "jwt",
        "private_key",
    ]
    .iter()
    .map(|d| ((*d).to_owned(), json!({"action": "mask"})))
    .collect();
    json!({"request": {"detectors": detectors.clone(),
                       "deny": [{"name": "prompt_injection", "case_insensitive": true,
                                 "pattern": "ignore (all |any )?(previous|prior|above) (instructions|rules)"}]},
           "response": {"detectors": detectors}})
}

fn main() -> Result<(), Error> {
    let flags = Flags::parse(&["only"])?;
    let (seconds, json_out) = (flags.seconds, flags.json.clone());
    let mock = MockLlm::start()?;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-mod-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bare = Envoy::start(Options::new("envoy.yaml").upstream(default_ports::LLM_UPSTREAM, mock.port()))?;
    if flags.own("only") == Some("paced") {
        paced(&bare, &mock)?;
        return Ok(());
    }
    let moderated = Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .wasm_filter_reading_body("content-moderator", "content_moderator.wasm", &config()),
    )?;
    println!(
        "\n### content-moderator vs bare Envoy (1 worker, wrk -t1, {seconds} s per run, all detectors)\n"
    );
    println!(
        "| request | bare rps (c8) | moderator rps (c8) | 1 connection: bare / moderator p50 ms | added p50 ms |"
    );
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (label, bytes, headers, stream) in [
        ("1 KB prompt", 1024, vec![], false),
        ("32 KB prompt", 32 * 1024, vec![], false),
        (
            "streamed reply, 200 deltas",
            256,
            vec![("x-mock-chunks", "200")],
            true,
        ),
    ] {
        let body = json!({"model": "gpt-4o-mini", "max_tokens": 400, "stream": stream,
                          "messages": [{"role": "user", "content": prose(bytes, 11)}]});
        let b = wrk_with_headers(&bare.url(CHAT), &body, &headers, seconds, 8, &dir)?;
        let m = wrk_with_headers(&moderated.url(CHAT), &body, &headers, seconds, 8, &dir)?;
        let b1 = wrk_with_headers(&bare.url(CHAT), &body, &headers, seconds.div_ceil(2), 1, &dir)?;
        let m1 = wrk_with_headers(
            &moderated.url(CHAT),
            &body,
            &headers,
            seconds.div_ceil(2),
            1,
            &dir,
        )?;
        if b.errors + m.errors + b1.errors + m1.errors > 0 {
            return Err(format!("{label}: non-2xx responses").into());
        }
        let added = m1.p50_ms - b1.p50_ms;
        let per_chunk = if stream {
            format!(" ({:.3} ms per delta)", added / 200.0)
        } else {
            String::new()
        };
        println!(
            "| {label} | {:.0} | {:.0} | {:.2} / {:.2} | {added:.2}{per_chunk} |",
            b.rps, m.rps, b1.p50_ms, m1.p50_ms
        );
        rows.push(
            json!({"request": label, "bare_rps": b.rps, "moderator_rps": m.rps,
                         "one_connection_p50_ms": {"bare": b1.p50_ms, "moderator": m1.p50_ms}}),
        );
    }
    drop(moderated);
    let paced = paced(&bare, &mock)?;
    if let Some(path) = json_out {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&json!({"seconds": seconds, "rows": rows, "paced": paced}))?,
        )?;
        println!("\n(written to {})", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Streams at a model's pace through the shipped response rules: the delay each token gains.
fn paced(bare: &Envoy, mock: &MockLlm) -> Result<Value, Error> {
    let shipped = snippet_config("content-moderator.yaml")?;
    let cfg = json!({"response": shipped["response"].clone()});
    let moderated = Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .wasm_filter_reading_body("content-moderator", "content_moderator.wasm", &cfg),
    )?;
    let (deltas, gap_ms, streams) = (250, 25, 3);
    println!(
        "\n### streams at a model's pace: {deltas} deltas {gap_ms} ms apart, the shipped response rules ({}), {streams} streams per row\n",
        shipped["response"]["detectors"]
            .as_object()
            .map(|d| d.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    println!("| reply | first token added ms (p50 / max) | per-token added ms (p50 / p99) |");
    println!("|---|---|---|");
    let pii = "Your card 4111 1111 1111 1111 is on file, and the SSN 123-45-6789 with it. ";
    let mut rows = Vec::new();
    for (label, text) in [
        ("ordinary prose", prose(1600, 5)),
        (
            "prose with card numbers and SSNs",
            format!("{pii}{}{pii}{}{pii}", prose(500, 6), prose(500, 7)),
        ),
    ] {
        let body = json!({"model": "gpt-4o-mini", "stream": true,
                          "messages": [{"role": "user", "content": text}]});
        let n = deltas.to_string();
        let gap = gap_ms.to_string();
        let headers = [
            ("x-mock-echo", "1"),
            ("x-mock-chunks", n.as_str()),
            ("x-mock-chunk-delay-ms", gap.as_str()),
        ];
        let (mut first, mut all) = (Vec::new(), Vec::new());
        for _ in 0..streams {
            let b = stream_arrivals(&bare.url(CHAT), &body, &headers)?;
            let m = stream_arrivals(&moderated.url(CHAT), &body, &headers)?;
            let added = added_per_token(&b, &m);
            first.extend(added.first().copied());
            all.extend(added);
        }
        first.sort_by(f64::total_cmp);
        all.sort_by(f64::total_cmp);
        let row = json!({"reply": label,
                         "first_token_added_ms": {"p50": quantile(&first, 0.5), "max": first.last()},
                         "per_token_added_ms": {"p50": quantile(&all, 0.5), "p99": quantile(&all, 0.99)}});
        println!(
            "| {label} | {:.2} / {:.2} | {:.2} / {:.2} |",
            quantile(&first, 0.5),
            first.last().copied().unwrap_or(f64::NAN),
            quantile(&all, 0.5),
            quantile(&all, 0.99)
        );
        rows.push(row);
    }
    Ok(json!(rows))
}
