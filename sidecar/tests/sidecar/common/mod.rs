//! Starts real sidecars (real model, real state backend) in-process on free loopback ports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use inference_proto::v1::budget_client::BudgetClient;
use inference_proto::v1::inference_client::InferenceClient;
use inference_proto::v1::semantic_cache_client::SemanticCacheClient;
use std::path::PathBuf;
use std::sync::OnceLock;

use tonic::transport::Channel;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn model_dir() -> PathBuf {
    let dir = workspace().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "model not found at {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

pub struct Running(sidecar_testkit::Background);

impl std::ops::Deref for Running {
    type Target = sidecar_testkit::Background;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect().await.unwrap()
    }

    pub async fn inference(&self) -> InferenceClient<Channel> {
        InferenceClient::new(self.channel().await)
    }

    pub async fn cache(&self) -> SemanticCacheClient<Channel> {
        SemanticCacheClient::new(self.channel().await)
    }

    pub async fn budget(&self) -> BudgetClient<Channel> {
        BudgetClient::new(self.channel().await)
    }

    pub fn metrics_text(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Value of an unlabelled counter or gauge in /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("metric {name} not found"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Signals shutdown and waits until the server has stopped.
    pub fn stop(self) {
        self.0.stop();
    }
}

/// Starts a sidecar with the default model, the repo's label sets and `extra` flags, on its own
/// runtime thread (so it outlives any one `#[tokio::test]` runtime).
pub fn spawn(extra: &[&str]) -> Running {
    let mut args: Vec<String> = vec![
        "--model-dir".into(),
        model_dir().display().to_string(),
        "--label-sets".into(),
        workspace().join("sidecar/label-sets.json").display().to_string(),
        "--shutdown-grace-seconds".into(),
        "5".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Running(sidecar_testkit::Background::start(&args).unwrap())
}

/// One sidecar (in-memory state) shared by every test of a test binary.
pub fn shared() -> &'static Running {
    static S: OnceLock<Running> = OnceLock::new();
    S.get_or_init(|| spawn(&[]))
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[allow(unused_imports)] // used by redis.rs only
pub use sidecar_testkit::RedisServer as Redis;
