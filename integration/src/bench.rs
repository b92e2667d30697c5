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
    for (k, v) in headers {
        if v.contains(['\'', '\\']) {
            return Err(format!("header {k}: value not usable in a wrk script").into());
        }
        lua.push_str(&format!("wrk.headers['{k}'] = '{v}'\n"));
    }
    run_wrk(&script, &lua, url, seconds, connections)
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
    let lua = format!(
        "local function slurp(p) local f = io.open(p, 'rb'); local s = f:read('*a'); f:close(); return s end\n\
         local pre, post = slurp({:?}), slurp({:?})\n\
         local n = 0\n\
         wrk.method = 'POST'\n\
         wrk.headers['content-type'] = 'application/json'\n\
         request = function() n = n + 1; return wrk.format(nil, nil, nil, pre .. '{run}-' .. tostring(n) .. post) end\n",
        pre_path.display().to_string(),
        post_path.display().to_string()
    );
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
