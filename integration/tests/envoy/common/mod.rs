//! Set-up shared by the integration tests that need the real inference sidecar.
#![allow(dead_code, clippy::expect_used)]

use sidecar_testkit::Background;
use std::net::SocketAddr;
use tollgate_it::repo_root;

/// The sidecar's flags for the shipped model and label sets.
pub fn sidecar_args() -> Vec<String> {
    let root = repo_root();
    vec![
        "--model-dir".to_owned(),
        root.join("models/all-MiniLM-L6-v2").display().to_string(),
        "--label-sets".to_owned(),
        root.join("sidecar/label-sets.json").display().to_string(),
    ]
}

/// The real sidecar with the real model, on free loopback ports.
pub fn start_sidecar() -> Background {
    Background::start(&sidecar_args()).expect("sidecar starts (models/ comes from scripts/setup.sh)")
}

/// The same on a chosen gRPC address (e.g. one a running Envoy already names).
pub fn start_sidecar_at(listen: SocketAddr) -> Background {
    Background::start_at(&sidecar_args(), listen)
        .expect("sidecar starts (models/ comes from scripts/setup.sh)")
}

/// The value of a sample on the sidecar's `/metrics`, e.g.
/// `tollgate_sidecar_requests_total{method="Embed",outcome="ok"}`.
pub async fn sidecar_metric(sc: &Background, sample: &str) -> f64 {
    let r = tollgate_it::client::Client::new()
        .get(&format!("http://{}/metrics", sc.metrics))
        .await
        .expect("sidecar metrics");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}
