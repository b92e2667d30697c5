//! The inference sidecar called from a wasm filter inside the real Envoy, through the shipped
//! `inference_sidecar` cluster of `envoy/envoy.yaml` (HTTP/2, gRPC health check). The filter is the
//! `sidecar-probe` test fixture, which answers with what `filter_host::sidecar` decoded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::start_sidecar;

use serde_json::{Value, json};
use std::time::Duration;
use tollgate_it::client::Client;
use tollgate_it::envoy::{Envoy, Options, default_ports};
use tollgate_it::mock::MockLlm;

/// The demo chain plus the probe. The mock provider stands behind the `/v1/` route, as it would
/// for a product filter that answers a request itself.
fn envoy(
    mock: &MockLlm,
    sidecar_port: u16,
    probe_config: &Value,
) -> Result<Envoy, tollgate_it::envoy::Error> {
    Envoy::start(
        Options::new("envoy.yaml")
            .upstream(default_ports::LLM_UPSTREAM, mock.port())
            .upstream(default_ports::SIDECAR, sidecar_port)
            .wasm_filter("sidecar-probe", "sidecar_probe.wasm", probe_config),
    )
}

async fn probe(envoy: &Envoy, op: &str, text: &str) -> (u16, Value) {
    let r = Client::new()
        .request(
            "POST",
            &envoy.url(&format!("/v1/probe/{op}")),
            &[],
            text.to_owned(),
        )
        .await
        .unwrap();
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_and_classify_from_a_wasm_filter() {
    let sc = start_sidecar();
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(
        &mock,
        sc.addr.port(),
        &json!({"label_set": "intent", "sidecar": {"timeout_ms": 5000}}),
    )
    .unwrap();

    let text = "Why does my Rust code fail to compile with a borrow checker error?";
    let (status, body) = probe(&envoy, "embed", text).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "all-MiniLM-L6-v2");
    assert_eq!(body["dimension"], 384);
    assert_eq!(body["truncated"], false);
    let through_envoy: Vec<f32> = serde_json::from_value(body["values"].clone()).unwrap();

    // The same text straight to the sidecar over tonic: identical vector.
    let mut direct =
        inference_proto::v1::inference_client::InferenceClient::connect(format!("http://{}", sc.addr))
            .await
            .unwrap();
    let r = direct
        .embed(inference_proto::v1::EmbedRequest {
            texts: vec![text.to_owned()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(through_envoy, r.embeddings[0].values);

    let (status, body) = probe(&envoy, "classify", text).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scores"][0]["label"], "code", "{body}");
    assert_eq!(body["scores"].as_array().unwrap().len(), 3);

    // Envoy's gRPC health check reached the sidecar over the same cluster.
    let mut healthy = false;
    for _ in 0..50 {
        if envoy
            .stat("cluster.inference_sidecar.health_check.success")
            .unwrap_or(0)
            >= 1
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "no successful health check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_errors_reach_the_filter_as_statuses() {
    let sc = start_sidecar();
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(
        &mock,
        sc.addr.port(),
        &json!({"label_set": "intent", "sidecar": {"timeout_ms": 5000}}),
    )
    .unwrap();
    // INVALID_ARGUMENT with the sidecar's message.
    let (status, body) = probe(&envoy, "embed", "   ").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "sidecar returned gRPC status 3: texts[0] is empty"
    );
    let huge = "a".repeat(70_000);
    let (status, body) = probe(&envoy, "embed", &huge).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 65536"),
        "{body}"
    );

    // The sidecar goes away: UNAVAILABLE, and the VM keeps serving.
    sc.stop();
    for _ in 0..2 {
        let (status, body) = probe(&envoy, "classify", "hello").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "sidecar_unavailable");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("gRPC status 14"),
            "{body}"
        );
    }
    assert!(!envoy.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_shorter_than_inference_is_deadline_exceeded() {
    let sc = start_sidecar();
    let mock = MockLlm::start().unwrap();
    let envoy = envoy(
        &mock,
        sc.addr.port(),
        &json!({"label_set": "intent", "sidecar": {"timeout_ms": 1}}),
    )
    .unwrap();
    let long = "deadline ".repeat(400);
    let (status, body) = probe(&envoy, "embed", &long).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gRPC status 4: deadline exceeded"),
        "{body}"
    );
}

#[test]
fn a_bad_sidecar_config_is_rejected_at_load_naming_the_field() {
    let mock = MockLlm::start().unwrap();
    let err = match envoy(
        &mock,
        1,
        &json!({"label_set": "intent", "sidecar": {"timeout_ms": 0}}),
    ) {
        Ok(_) => panic!("Envoy accepted timeout_ms 0"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("invalid configuration at `sidecar.timeout_ms`: 0 is outside 1..=60000"),
        "{err}"
    );
}
