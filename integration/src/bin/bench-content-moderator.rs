//! `bench-content-moderator [--seconds 5] [--json PATH]` — run by `scripts/bench.sh content-moderator`.
//! Bare Envoy and Envoy with the content moderator (every detector and a deny rule on the request,
//! detectors on the response), side by side in one run, in front of the in-process mock provider,
//! loaded with `wrk` (1 worker): 1 KB and 32 KB prompts of clean prose (the common case: scanned,
//! passed), and a streamed response of 200 deltas to show the added delay per chunk. Prints
//! Markdown; measurements of this machine, not assertions.

use serde_json::{Value, json};
use tollgate_it::bench::{Error, Flags, prose, wrk_with_headers};
use tollgate_it::envoy::{Envoy, Options, default_ports};
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
    let flags = Flags::parse(&[])?;
    let (seconds, json_out) = (flags.seconds, flags.json.clone());
    let mock = MockLlm::start()?;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-mod-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bare = Envoy::start(Options::new("envoy.yaml").upstream(default_ports::LLM_UPSTREAM, mock.port()))?;
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
