//! Helpers for the benchmark drivers (`src/bin/bench-*.rs`, run by `scripts/bench.sh`): load with
//! `wrk`, process RSS, prompt text.

use serde_json::Value;
use std::process::Command;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Prose of about `bytes` bytes (varied words, as prompts are; a repeated character would make
/// BPE unrealistically cheap).
pub fn prose(bytes: usize, seed: u64) -> String {
    const WORDS: [&str; 24] = [
        "gateway", "tokens", "budget", "latency", "stream", "provider", "request", "model", "context",
        "window", "cache", "route", "tenant", "policy", "usage", "the", "of", "and", "with", "for",
        "measured", "Envoy", "filter", "response",
    ];
    let mut s = String::with_capacity(bytes + 16);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while s.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        s.push(if x.is_multiple_of(11) { '.' } else { ' ' });
    }
    s.truncate(bytes);
    s
}

pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Runs wrk against `url` with `body` as a POST.
pub fn wrk(
    url: &str,
    body: &Value,
    seconds: u64,
    connections: u32,
    dir: &std::path::Path,
) -> Result<Load, Error> {
    wrk_with_headers(url, body, &[], seconds, connections, dir)
}

/// [`wrk`] with extra request headers (values must not contain `'` or `\`).
pub fn wrk_with_headers(
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
    seconds: u64,
    connections: u32,
    dir: &std::path::Path,
) -> Result<Load, Error> {
    let body_path = dir.join("body.json");
    std::fs::write(&body_path, serde_json::to_vec(body)?)?;
    let script = dir.join("post.lua");
    let mut lua = format!(
        "local f = io.open({:?}, 'rb')\nwrk.method = 'POST'\nwrk.body = f:read('*a')\nf:close()\nwrk.headers['content-type'] = 'application/json'\n",
        body_path.display().to_string()
    );
    lua.push_str(&lua_headers(headers)?);
    run_wrk(&script, &lua, url, seconds, connections)
}

fn lua_headers(headers: &[(&str, &str)]) -> Result<String, Error> {
    let mut lua = String::new();
    for (k, v) in headers {
        if v.contains(['\'', '\\']) || k.contains(['\'', '\\']) {
            return Err(format!("header {k}: not usable in a wrk script").into());
        }
        lua.push_str(&format!("wrk.headers['{k}'] = '{v}'\n"));
    }
    Ok(lua)
}

/// [`wrk`] with a body that differs per request: the first `marker` in the serialised `body`
/// becomes a run-unique prefix and a counter, so no two requests are the same (a cache below the
/// gateway cannot answer them from memory). Use with one wrk thread (`wrk` here runs `-t1`).
pub fn wrk_varying(
    url: &str,
    body: &Value,
    marker: &str,
    seconds: u64,
    connections: u32,
    dir: &std::path::Path,
) -> Result<Load, Error> {
    wrk_varying_with_headers(url, body, marker, &[], seconds, connections, dir)
}

/// [`wrk_varying`] with extra request headers (as in [`wrk_with_headers`]).
pub fn wrk_varying_with_headers(
    url: &str,
    body: &Value,
    marker: &str,
    headers: &[(&str, &str)],
    seconds: u64,
    connections: u32,
    dir: &std::path::Path,
) -> Result<Load, Error> {
    let text = serde_json::to_string(body)?;
    let Some((pre, post)) = text.split_once(marker) else {
        return Err(format!("the body has no {marker}").into());
    };
    let (pre_path, post_path) = (dir.join("pre.json"), dir.join("post.json"));
    std::fs::write(&pre_path, pre)?;
    std::fs::write(&post_path, post)?;
    let script = dir.join("varying.lua");
    // A prefix unique to this run: no two runs (nor two wrk threads) send the same text.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut lua = format!(
        "local function slurp(p) local f = io.open(p, 'rb'); local s = f:read('*a'); f:close(); return s end\n\
         local pre, post = slurp({:?}), slurp({:?})\n\
         local n = 0\n\
         wrk.method = 'POST'\n\
         wrk.headers['content-type'] = 'application/json'\n\
         request = function() n = n + 1; return wrk.format(nil, nil, nil, pre .. '{run}-' .. tostring(n) .. post) end\n",
        pre_path.display().to_string(),
        post_path.display().to_string()
    );
    lua.push_str(&lua_headers(headers)?);
    run_wrk(&script, &lua, url, seconds, connections)
}

fn run_wrk(
    script: &std::path::Path,
    lua: &str,
    url: &str,
    seconds: u64,
    connections: u32,
) -> Result<Load, Error> {
    std::fs::write(script, lua)?;
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| format!("wrk: {e} (scripts/bench.sh installs it)"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
    };
    let ms = |v: String| -> f64 {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => f64::NAN,
        }
    };
    let errors = find("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Load {
        rps: find("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
        p50_ms: find("50%").map_or(f64::NAN, ms),
        p99_ms: find("99%").map_or(f64::NAN, ms),
        errors,
    })
}

pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The flags every driver takes: `--seconds N` (per run, default 5), `--json PATH`, `--sidecar
/// ADDR`, and the driver's own (`own`, each taking a value).
pub struct Flags {
    pub seconds: u64,
    pub json: Option<std::path::PathBuf>,
    pub sidecar: Option<std::net::SocketAddr>,
    own: Vec<(String, String)>,
}

impl Flags {
    pub fn parse(own: &[&str]) -> Result<Self, Error> {
        let mut flags = Self {
            seconds: 5,
            json: None,
            sidecar: None,
            own: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let v = args.next().ok_or(format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--seconds" => flags.seconds = v.parse().map_err(|e| format!("--seconds {v}: {e}"))?,
                "--json" => flags.json = Some(v.into()),
                "--sidecar" => flags.sidecar = Some(v.parse().map_err(|e| format!("--sidecar {v}: {e}"))?),
                f if own.contains(&f.trim_start_matches('-')) => {
                    flags.own.push((f.trim_start_matches('-').to_owned(), v));
                }
                _ => return Err(format!("unknown flag {flag}").into()),
            }
        }
        Ok(flags)
    }

    /// The value of the driver's own flag `--name`.
    pub fn own(&self, name: &str) -> Option<&str> {
        self.own
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `--sidecar`, for drivers that need one.
    pub fn sidecar(&self) -> Result<std::net::SocketAddr, Error> {
        self.sidecar
            .ok_or_else(|| "--sidecar ADDR is required (scripts/bench.sh starts one)".into())
    }

    /// Writes `results` to `--json`, if given.
    pub fn write_json(&self, results: &Value) -> Result<(), Error> {
        if let Some(path) = &self.json {
            std::fs::write(path, serde_json::to_vec_pretty(results)?)?;
            println!("\n(written to {})", path.display());
        }
        Ok(())
    }
}

/// The `q` quantile (0..=1) of `sorted` (ascending); NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A fixed-rate (open-loop) run: requests leave on schedule whether or not earlier ones have
/// answered, and each latency is measured from the moment its request was due, so a stall shows
/// in the percentiles instead of slowing the load (no coordinated omission).
pub struct OpenLoad {
    pub rate: f64,
    pub sent: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Runs an open-loop load of `rate` requests/s for `seconds` against `url`. With `marker`, the
/// first occurrence of it in the serialised `body` becomes a run-unique counter (as in
/// [`wrk_varying`]). A request that fails or takes over 10 s counts as an error.
pub fn open_loop(
    url: &str,
    body: &Value,
    marker: Option<&str>,
    headers: &[(&str, &str)],
    rate: f64,
    seconds: u64,
) -> Result<OpenLoad, Error> {
    let text = serde_json::to_string(body)?;
    let (pre, post) = match marker {
        Some(m) => text.split_once(m).ok_or(format!("the body has no {m}"))?,
        None => (text.as_str(), ""),
    };
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut owned: Vec<(String, String)> = vec![("content-type".into(), "application/json".into())];
    owned.extend(headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let owned = std::sync::Arc::new(owned);
    let n = (rate * seconds as f64).round() as u64;
    let every = std::time::Duration::from_secs_f64(1.0 / rate);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results: Vec<Option<f64>> = rt.block_on(async {
        let client = crate::client::Client::new();
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let due = start + every.mul_f64(i as f64);
            tokio::time::sleep_until(due).await;
            let body = match marker {
                Some(_) => format!("{pre}{run}-{i}{post}"),
                None => text.clone(),
            };
            let (client, url, owned) = (client.clone(), url.to_owned(), owned.clone());
            tasks.spawn(async move {
                let h: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let answer = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    client.request("POST", &url, &h, body),
                )
                .await;
                match answer {
                    Ok(Ok(r)) if r.status < 300 => Some(due.elapsed().as_secs_f64() * 1000.0),
                    _ => None,
                }
            });
        }
        let mut out = Vec::with_capacity(n as usize);
        while let Some(r) = tasks.join_next().await {
            out.push(r.ok().flatten());
        }
        out
    });
    let mut ms: Vec<f64> = results.iter().flatten().copied().collect();
    ms.sort_by(f64::total_cmp);
    Ok(OpenLoad {
        rate,
        sent: n,
        errors: results.iter().filter(|r| r.is_none()).count() as u64,
        p50_ms: quantile(&ms, 0.5),
        p99_ms: quantile(&ms, 0.99),
        p999_ms: quantile(&ms, 0.999),
    })
}

/// Streaming timings over `streams` requests sent one after another: time to the first token (the
/// first chunk that carries a non-empty `content` delta), and the gaps between the body chunks
/// after it.
pub struct StreamTiming {
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub gap_p50_ms: f64,
    pub gap_p99_ms: f64,
    pub errors: u64,
}

/// Sends `body` (a streaming request; `marker` as in [`open_loop`]) `streams` times and times the
/// chunks of each answer. Errors (a status over 299, a cut stream, no `end` — `[DONE]`, or the
/// Responses API's `event: response.completed`) are counted.
pub fn stream_timing(
    url: &str,
    body: &Value,
    marker: Option<&str>,
    headers: &[(&str, &str)],
    streams: usize,
    end: &str,
) -> Result<StreamTiming, Error> {
    let (text, rt, h) = json_client(body, headers)?;
    // Unique to this call: no two rows of a run (nor two runs) stream the same prompt, so no
    // cache, not even the sidecar's, answers one of them.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let (mut ttft, mut gaps, mut errors) = (Vec::new(), Vec::new(), 0u64);
    rt.block_on(async {
        let client = crate::client::Client::new();
        for i in 0..streams {
            let body = match marker {
                Some(m) => text.replacen(m, &format!("stream-{run}-{i}"), 1),
                None => text.clone(),
            };
            let t = std::time::Instant::now();
            let Ok(resp) = client.send("POST", url, &h, body).await else {
                errors += 1;
                continue;
            };
            if resp.status().as_u16() >= 300 {
                errors += 1;
                continue;
            }
            let mut body = resp.into_body();
            let (mut last, mut tail, mut ended) = (None::<std::time::Instant>, Vec::new(), false);
            loop {
                match crate::client::next_chunk(&mut body).await {
                    Ok(Some(chunk)) => {
                        let now = std::time::Instant::now();
                        if let Some(l) = last {
                            gaps.push((now - l).as_secs_f64() * 1000.0);
                            last = Some(now);
                        } else if carries_token(&chunk) {
                            ttft.push((now - t).as_secs_f64() * 1000.0);
                            last = Some(now);
                        }
                        // The end marker may be split across chunks.
                        tail.extend_from_slice(&chunk);
                        ended |= tail.windows(end.len()).any(|w| w == end.as_bytes());
                        let cut = tail.len().saturating_sub(end.len());
                        tail.drain(..cut);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            if !ended {
                errors += 1;
            }
        }
    });
    ttft.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    Ok(StreamTiming {
        ttft_p50_ms: quantile(&ttft, 0.5),
        ttft_p99_ms: quantile(&ttft, 0.99),
        gap_p50_ms: quantile(&gaps, 0.5),
        gap_p99_ms: quantile(&gaps, 0.99),
        errors,
    })
}

/// Whether an SSE chunk holds a non-empty `"content"` string (an OpenAI delta or message) or
/// `"delta"` string (a Responses API text delta; chat's `delta` is an object).
fn carries_token(chunk: &[u8]) -> bool {
    [b"\"content\":".as_slice(), b"\"delta\":"].iter().any(|key| {
        chunk.windows(key.len()).enumerate().any(|(i, w)| {
            w == *key && {
                let rest = &chunk[i + key.len()..];
                let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
                rest.len() > 1 && rest[0] == b'"' && rest[1] != b'"'
            }
        })
    })
}

/// When each part of a streamed reply's text reached the client: `(text bytes so far, ms since the
/// request was sent)` per SSE event carrying OpenAI `choices[0].delta.content`.
pub fn stream_arrivals(
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<Vec<(usize, f64)>, Error> {
    let (text, rt, h) = json_client(body, headers)?;
    rt.block_on(async {
        let client = crate::client::Client::new();
        let t = std::time::Instant::now();
        let resp = client.send("POST", url, &h, text).await?;
        if resp.status().as_u16() != 200 {
            return Err(format!("status {}", resp.status()).into());
        }
        let mut body = resp.into_body();
        let (mut pending, mut total, mut out) = (Vec::new(), 0usize, Vec::new());
        while let Some(chunk) = crate::client::next_chunk(&mut body).await? {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                let Some(data) = std::str::from_utf8(&event)
                    .ok()
                    .and_then(|e| e.trim().strip_prefix("data: "))
                else {
                    continue;
                };
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if let Some(s) = v.pointer("/choices/0/delta/content").and_then(Value::as_str)
                    && !s.is_empty()
                {
                    total += s.len();
                    out.push((total, ms));
                }
            }
        }
        Ok(out)
    })
}

/// The delay each token of `bare`'s stream gained in `other` (the same reply through another
/// chain): for every point where the bare stream's text grew, the time `other` reached the same
/// length minus the bare time. The first entry is the first token's.
pub fn added_per_token(bare: &[(usize, f64)], other: &[(usize, f64)]) -> Vec<f64> {
    bare.iter()
        .filter_map(|&(len, t)| other.iter().find(|(l, _)| *l >= len).map(|&(_, t2)| t2 - t))
        .collect()
}

/// Request headers as the client takes them.
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// A JSON request's text, a one-thread runtime to send it on, and its headers.
fn json_client<'a>(
    body: &Value,
    headers: &[(&'a str, &'a str)],
) -> Result<(String, tokio::runtime::Runtime, Headers<'a>), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut h: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    Ok((serde_json::to_string(body)?, rt, h))
}
