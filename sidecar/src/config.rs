//! Sidecar configuration: every setting is a flag `--name value` or an environment variable
//! `TOLLGATE_SIDECAR_NAME` (flags win). `tollgate-sidecar --help` prints this table.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub model_dir: PathBuf,
    pub max_tokens: Option<usize>,
    pub workers: usize,
    pub queue: usize,
    pub max_batch: usize,
    pub max_batch_tokens: usize,
    pub max_request_texts: usize,
    pub max_text_bytes: usize,
    pub lru_entries: usize,
    pub label_sets: Option<PathBuf>,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub cache_max_entries: usize,
    pub lsh_tables: usize,
    pub lsh_bits: usize,
    pub lsh_seed: u64,
    pub log_json: bool,
    pub shutdown_grace_secs: u64,
}

/// (flag, default, help)
pub const FLAGS: &[(&str, &str, &str)] = &[
    ("listen", "127.0.0.1:50051", "gRPC address"),
    (
        "metrics-addr",
        "127.0.0.1:9464",
        "Prometheus /metrics address; \"off\" disables",
    ),
    (
        "model-dir",
        "models/all-MiniLM-L6-v2",
        "directory with config.json, tokenizer.json, model.safetensors",
    ),
    (
        "max-tokens",
        "",
        "model window in tokens (default: sentence_bert_config.json, capped by the model)",
    ),
    ("workers", "2", "inference threads (one per core is best)"),
    (
        "queue",
        "256",
        "queued Embed/Classify requests before RESOURCE_EXHAUSTED",
    ),
    ("max-batch", "32", "texts per inference pass"),
    ("max-batch-tokens", "2048", "padded tokens per inference pass"),
    ("max-request-texts", "64", "texts per Embed request"),
    ("max-text-bytes", "65536", "bytes per text"),
    ("lru-entries", "10000", "recent embeddings kept, keyed by text"),
    (
        "label-sets",
        "",
        "JSON file of label sets for Classify: {set: {label: [exemplar, ...]}}",
    ),
    (
        "redis-url",
        "",
        "redis://host:port/db — share cache and budgets with other sidecars",
    ),
    ("redis-prefix", "tollgate:", "prefix of every Redis key"),
    (
        "cache-max-entries",
        "100000",
        "in-memory cache entries before the oldest is evicted",
    ),
    ("lsh-tables", "4", "Redis semantic index: hash tables"),
    ("lsh-bits", "10", "Redis semantic index: hyperplanes per table"),
    (
        "lsh-seed",
        "7412",
        "Redis semantic index: seed (identical on every sidecar)",
    ),
    ("log-format", "text", "text or json"),
    (
        "shutdown-grace-seconds",
        "10",
        "time to finish in-flight requests on SIGTERM/SIGINT",
    ),
];

fn env_name(flag: &str) -> String {
    format!("TOLLGATE_SIDECAR_{}", flag.replace('-', "_").to_ascii_uppercase())
}

pub fn usage() -> String {
    let mut s = String::from("tollgate-sidecar [--flag value]...\n\n");
    for (flag, default, help) in FLAGS {
        s.push_str(&format!(
            "  --{flag:<24} {help}\n  {:<26} env {}, default {default:?}\n",
            "",
            env_name(flag)
        ));
    }
    s
}

impl Config {
    /// From `args` (without the program name) and an environment lookup.
    pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut values: Vec<(&str, String)> = FLAGS
            .iter()
            .map(|(f, d, _)| (*f, env(&env_name(f)).unwrap_or_else(|| (*d).to_owned())))
            .collect();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument `{a}`\n\n{}", usage()))?;
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (name, None),
            };
            let slot = values
                .iter_mut()
                .find(|(f, _)| *f == name)
                .ok_or_else(|| format!("unknown flag `--{name}`\n\n{}", usage()))?;
            slot.1 = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("flag `--{name}` needs a value"))?,
            };
        }
        let get = |name: &str| {
            values
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("--{name}: `{v}` is not a valid number"))
        }
        let positive = |name: &str| -> Result<usize, String> {
            let n: usize = num(name, get(name))?;
            if n == 0 {
                Err(format!("--{name}: must be at least 1"))
            } else {
                Ok(n)
            }
        };
        let opt = |name: &str| Some(get(name).to_owned()).filter(|s| !s.is_empty());
        let addr = |name: &str| {
            get(name)
                .parse::<SocketAddr>()
                .map_err(|e| format!("--{name}: `{}`: {e}", get(name)))
        };
        let log_json = match get("log-format") {
            "text" => false,
            "json" => true,
            other => return Err(format!("--log-format: `{other}` is not text or json")),
        };
        let lsh_bits = positive("lsh-bits")?;
        if lsh_bits > 24 {
            return Err("--lsh-bits: at most 24".into());
        }
        Ok(Self {
            listen: addr("listen")?,
            metrics_addr: if get("metrics-addr") == "off" {
                None
            } else {
                Some(addr("metrics-addr")?)
            },
            model_dir: PathBuf::from(get("model-dir")),
            max_tokens: opt("max-tokens").map(|v| num("max-tokens", &v)).transpose()?,
            workers: positive("workers")?,
            queue: positive("queue")?,
            max_batch: positive("max-batch")?,
            max_batch_tokens: positive("max-batch-tokens")?,
            max_request_texts: positive("max-request-texts")?,
            max_text_bytes: positive("max-text-bytes")?,
            lru_entries: positive("lru-entries")?,
            label_sets: opt("label-sets").map(PathBuf::from),
            redis_url: opt("redis-url"),
            redis_prefix: get("redis-prefix").to_owned(),
            cache_max_entries: positive("cache-max-entries")?,
            lsh_tables: positive("lsh-tables")?,
            lsh_bits,
            lsh_seed: num("lsh-seed", get("lsh-seed"))?,
            log_json,
            shutdown_grace_secs: num("shutdown-grace-seconds", get("shutdown-grace-seconds"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Config::parse(&args, |k| {
            env.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_env_and_flags_in_order_of_precedence() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(
            (c.workers, c.redis_url.clone(), c.metrics_addr.is_some()),
            (2, None, true)
        );
        let c = parse(
            &["--workers", "3"],
            &[
                ("TOLLGATE_SIDECAR_WORKERS", "5"),
                ("TOLLGATE_SIDECAR_REDIS_URL", "redis://x"),
            ],
        )
        .unwrap();
        assert_eq!((c.workers, c.redis_url.as_deref()), (3, Some("redis://x")));
        let c = parse(&["--metrics-addr=off", "--log-format", "json"], &[]).unwrap();
        assert_eq!((c.metrics_addr, c.log_json), (None, true));
    }

    #[test]
    fn errors_name_the_flag() {
        assert!(
            parse(&["--workers", "zero"], &[])
                .unwrap_err()
                .starts_with("--workers:")
        );
        assert!(
            parse(&["--workers", "0"], &[])
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            parse(&["--listen", "nowhere"], &[])
                .unwrap_err()
                .starts_with("--listen:")
        );
        assert!(
            parse(&["--bogus", "1"], &[])
                .unwrap_err()
                .contains("unknown flag `--bogus`")
        );
        assert!(parse(&["--queue"], &[]).unwrap_err().contains("needs a value"));
        assert!(
            parse(&["--log-format", "xml"], &[])
                .unwrap_err()
                .starts_with("--log-format:")
        );
    }
}
