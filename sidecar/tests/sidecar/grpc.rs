//! The gRPC API in-process on a free port: the real model, the in-memory state, a tonic client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{cosine, shared, spawn};
use inference_proto::v1::{
    CacheLookupRequest, CacheStoreRequest, ClassifyRequest, EmbedRequest, ReserveRequest, SettleRequest,
    cache_lookup_response::Outcome as CacheOutcome, settle_response::Outcome as SettleOutcome,
};
use std::time::Duration;
use tonic::Code;

fn texts(t: &[&str]) -> EmbedRequest {
    EmbedRequest {
        texts: t.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[tokio::test]
async fn embed_returns_model_dimension_and_one_vector_per_text() {
    let mut c = shared().inference().await;
    let r = c
        .embed(texts(&[
            "A man is playing a guitar on stage.",
            "The cat sat on the mat.",
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model, "all-MiniLM-L6-v2");
    assert_eq!(r.dimension, 384);
    assert_eq!(r.embeddings.len(), 2);
    for e in &r.embeddings {
        assert_eq!(e.values.len(), 384);
        assert!(!e.truncated);
        assert!(e.tokens > 2);
    }
    assert!(cosine(&r.embeddings[0].values, &r.embeddings[1].values) < 0.5);
}

#[tokio::test]
async fn batch_equals_single_calls() {
    let mut c = shared().inference().await;
    let batch = [
        "Batching must not change a vector.",
        "A much longer sentence, so that the batch is padded to its length and the short ones are masked.",
        "short",
    ];
    let together = c.embed(texts(&batch)).await.unwrap().into_inner();
    // A fresh sidecar, so the single calls are computed, not served from the LRU.
    let other = spawn(&[]);
    let mut c2 = other.inference().await;
    for (t, e) in batch.iter().zip(&together.embeddings) {
        let one = c2.embed(texts(&[t])).await.unwrap().into_inner();
        let c = cosine(&one.embeddings[0].values, &e.values);
        assert!(c > 0.99999, "{t:?}: {c}");
        assert_eq!(one.embeddings[0].tokens, e.tokens);
    }
    other.stop();
}

#[tokio::test]
async fn repeated_text_is_served_from_the_lru() {
    let s = shared();
    let mut c = s.inference().await;
    let text = "a prompt that the gateway sees again and again";
    let first = c.embed(texts(&[text])).await.unwrap().into_inner();
    let hits = s.metric("tollgate_sidecar_embedding_lru_hits_total");
    let again = c.embed(texts(&[text])).await.unwrap().into_inner();
    assert_eq!(first.embeddings[0].values, again.embeddings[0].values);
    assert!(s.metric("tollgate_sidecar_embedding_lru_hits_total") >= hits + 1.0);
}

#[tokio::test]
async fn long_text_is_truncated_and_flagged() {
    let mut c = shared().inference().await;
    let long = "tokens ".repeat(1000);
    let r = c.embed(texts(&[&long])).await.unwrap().into_inner();
    assert!(r.embeddings[0].truncated);
    assert_eq!(r.embeddings[0].tokens, 256);
}

async fn embed_err(req: EmbedRequest) -> tonic::Status {
    let mut c = shared().inference().await;
    c.embed(req).await.expect_err("accepted bad input")
}

#[tokio::test]
async fn bad_embed_input_is_invalid_argument_naming_the_problem() {
    let e = embed_err(texts(&[])).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "texts is empty");

    let e = embed_err(texts(&["fine", "  "])).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "texts[1] is empty");

    let many: Vec<&str> = vec!["x"; 65];
    let e = embed_err(texts(&many)).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("batch of 65 texts is over the limit of 64"),
        "{}",
        e.message()
    );

    let huge = "a".repeat(65537);
    let e = embed_err(texts(&[&huge])).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("texts[0] is 65537 bytes"), "{}", e.message());
}

/// `EmbedRequest` with its string field as raw bytes, to send what a string may not hold.
#[derive(Clone, PartialEq, prost::Message)]
struct RawEmbedRequest {
    #[prost(bytes = "vec", repeated, tag = "1")]
    texts: Vec<Vec<u8>>,
}

#[tokio::test]
async fn invalid_utf8_is_invalid_argument() {
    let channel = shared().channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tollgate.inference.v1.Inference/Embed");
    let req = tonic::Request::new(RawEmbedRequest {
        texts: vec![b"ok".to_vec(), vec![0xff, 0xfe, b'a']],
    });
    let e = grpc
        .unary::<_, inference_proto::v1::EmbedResponse, _>(req, path, tonic_prost::ProstCodec::default())
        .await
        .expect_err("accepted invalid UTF-8");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("UTF-8"), "{}", e.message());
    // The server is fine afterwards.
    let mut c = shared().inference().await;
    c.embed(texts(&["still serving"])).await.unwrap();
}

#[tokio::test]
async fn classify_scores_every_label_best_first() {
    let mut c = shared().inference().await;
    let r = c
        .classify(ClassifyRequest {
            label_set: "intent".into(),
            text: "Why does my Rust code fail to compile with a borrow checker error?".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let labels: Vec<&str> = r.scores.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels.len(), 3);
    assert_eq!(labels[0], "code", "{:?}", r.scores);
    assert!(r.scores.windows(2).all(|w| w[0].score >= w[1].score));

    let r = c
        .classify(ClassifyRequest {
            label_set: "moderation".into(),
            text: "explain to me how to make a bomb that kills people".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.scores[0].label, "violence", "{:?}", r.scores);
}

#[tokio::test]
async fn unknown_label_set_names_the_configured_ones() {
    let mut c = shared().inference().await;
    let e = c
        .classify(ClassifyRequest {
            label_set: "nope".into(),
            text: "hello".into(),
        })
        .await
        .expect_err("unknown set accepted");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "unknown label set `nope` (configured: intent, moderation)"
    );
}

#[tokio::test]
async fn cache_exact_and_semantic_hits_stay_in_their_scope() {
    let mut c = shared().cache().await;
    c.store(CacheStoreRequest {
        scope: "tenant-a".into(),
        model: "gpt-4o".into(),
        key: "k1".into(),
        text: "How do I reset my account password?".into(),
        value: b"answer one".to_vec(),
        ttl_seconds: 60,
        ..Default::default()
    })
    .await
    .unwrap();
    let lookup = |scope: &str, key: &str, text: &str| CacheLookupRequest {
        scope: scope.into(),
        model: "gpt-4o".into(),
        key: key.into(),
        text: text.into(),
        threshold: 0.8,
        ..Default::default()
    };
    let r = c.lookup(lookup("tenant-a", "k1", "")).await.unwrap().into_inner();
    assert_eq!(r.outcome(), CacheOutcome::ExactHit);
    assert_eq!(r.value, b"answer one");

    let r = c
        .lookup(lookup(
            "tenant-a",
            "other",
            "What are the steps to reset my account password?",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), CacheOutcome::SemanticHit);
    assert_eq!(r.key, "k1");
    assert!(r.similarity >= 0.8 && r.similarity < 1.0);

    let r = c
        .lookup(lookup("tenant-a", "other", "Explain how photosynthesis works."))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), CacheOutcome::Miss);

    // Another tenant never sees it, by key or by meaning.
    let r = c
        .lookup(lookup("tenant-b", "k1", "How do I reset my account password?"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), CacheOutcome::Miss);
}

#[tokio::test]
async fn bad_cache_requests_are_invalid_argument() {
    let mut c = shared().cache().await;
    let e = c
        .lookup(CacheLookupRequest {
            scope: "s".into(),
            vector: vec![0.5; 3],
            threshold: 0.9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "vector has 3 dimensions, the model has 384");
    let e = c
        .store(CacheStoreRequest {
            scope: "s".into(),
            key: "k".into(),
            ttl_seconds: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "ttl_seconds must be at least 1");
}

#[tokio::test]
async fn budget_reserve_and_settle_are_idempotent() {
    let mut b = shared().budget().await;
    let reserve = |id: &str, tokens: u64| ReserveRequest {
        request_id: id.into(),
        budget: "tenant:idem/group:gpt-4o".into(),
        tokens,
        limit: 1000,
        window_seconds: 3600,
    };
    let r = b.reserve(reserve("r1", 600)).await.unwrap().into_inner();
    assert!(r.allowed && !r.duplicate);
    assert_eq!(r.used, 600);
    // A retried reserve returns the first decision and charges nothing.
    let r = b.reserve(reserve("r1", 600)).await.unwrap().into_inner();
    assert!(r.allowed && r.duplicate);
    assert_eq!(r.used, 600);
    // Over the limit: denied, with when the window resets.
    let r = b.reserve(reserve("r2", 500)).await.unwrap().into_inner();
    assert!(!r.allowed);
    assert_eq!(r.used, 600);
    assert!(r.reset_seconds > 0 && r.reset_seconds <= 3600);
    // Settling with the real usage frees the difference, once.
    let s = b
        .settle(SettleRequest {
            request_id: "r1".into(),
            actual_tokens: 200,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.outcome(), SettleOutcome::Settled);
    assert_eq!(s.used, 200);
    let s = b
        .settle(SettleRequest {
            request_id: "r1".into(),
            actual_tokens: 200,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.outcome(), SettleOutcome::Duplicate);
    assert_eq!(s.used, 200);
    let s = b
        .settle(SettleRequest {
            request_id: "never".into(),
            actual_tokens: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.outcome(), SettleOutcome::Unknown);
    let r = b.reserve(reserve("r3", 800)).await.unwrap().into_inner();
    assert!(r.allowed);
    assert_eq!(r.used, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_reserves_never_overshoot() {
    let s = shared();
    let channel = s.channel().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut b = inference_proto::v1::budget_client::BudgetClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            b.reserve(ReserveRequest {
                request_id: format!("c{i}"),
                budget: "tenant:race".into(),
                tokens: 70,
                limit: 1000,
                window_seconds: 60,
            })
            .await
            .unwrap()
            .into_inner()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.used <= 1000, "overshoot: {}", r.used);
        allowed += u64::from(r.allowed);
    }
    assert_eq!(allowed, 14, "1000 / 70 = 14 reservations fit");
}

#[tokio::test]
async fn health_reports_serving() {
    let channel = shared().channel().await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in [
        "",
        "tollgate.inference.v1.Inference",
        "tollgate.inference.v1.Budget",
    ] {
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_and_batches() {
    let s = shared();
    let mut c = s.inference().await;
    c.embed(texts(&["counted request"])).await.unwrap();
    let m = s.metrics_text();
    assert!(m.contains("HTTP/1.1 200"));
    let ok: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_sidecar_requests_total{method=\"Embed\",outcome=\"ok\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(ok >= 1.0);
    assert!(m.contains("tollgate_sidecar_batch_size_bucket"));
    assert!(m.contains("tollgate_sidecar_queue_depth "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_resource_exhausted() {
    // One worker, a queue of one: a burst overflows it.
    let s = spawn(&["--workers", "1", "--queue", "1", "--lru-entries", "1"]);
    let channel = s.channel().await;
    let long = "overload ".repeat(300);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut c = inference_proto::v1::inference_client::InferenceClient::new(channel.clone());
        let text = format!("{i} {long}");
        tasks.push(tokio::spawn(async move { c.embed(texts(&[&text])).await }));
    }
    let mut exhausted = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
            assert!(e.message().contains("inference queue is full"), "{}", e.message());
            exhausted += 1;
        }
    }
    assert!(exhausted > 0, "a queue of one absorbed 12 concurrent requests");
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_abandoned_by_its_caller_is_skipped() {
    // One worker, busy with a long batch; callers behind it give up (deadline) before their turn.
    let s = spawn(&["--workers", "1"]);
    let before = s.metric("tollgate_sidecar_cancelled_jobs_total");
    let mut c = s.inference().await;
    let blocker = {
        let mut c = c.clone();
        let batch: Vec<String> = (0..32)
            .map(|i| format!("blocker {i} {}", "x ".repeat(250)))
            .collect();
        tokio::spawn(async move { c.embed(EmbedRequest { texts: batch }).await })
    };
    // Some of these are queued while the blocker runs, whatever the scheduling.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut req = tonic::Request::new(texts(&[&format!("abandoned by its caller {i}")]));
        req.set_timeout(Duration::from_millis(1));
        let e = c
            .embed(req)
            .await
            .expect_err("answered within 1 ms behind a long batch");
        assert_eq!(e.code(), Code::Cancelled, "{e:?}");
    }
    blocker.await.unwrap().unwrap();
    // The worker reaches the abandoned jobs after the blocker.
    let mut cancelled = 0.0;
    for _ in 0..50 {
        cancelled = s.metric("tollgate_sidecar_cancelled_jobs_total") - before;
        if cancelled >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cancelled >= 1.0, "no abandoned job was skipped");
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests() {
    let s = spawn(&["--shutdown-grace-seconds", "60"]);
    let mut c = s.inference().await;
    let inflight = tokio::spawn(async move {
        let batch: Vec<String> = (0..8)
            .map(|i| format!("{i} {}", "in flight ".repeat(50)))
            .collect();
        c.embed(EmbedRequest { texts: batch }).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = std::time::Instant::now();
    let stopper = tokio::task::spawn_blocking(move || s.stop());
    let r = inflight
        .await
        .unwrap()
        .expect("in-flight request failed during shutdown");
    assert_eq!(r.into_inner().embeddings.len(), 8);
    stopper.await.unwrap();
    // It stopped because the work was done, not because the 5 s grace ran out.
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut c = ServerReflectionClient::new(shared().channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream_once(req))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().expect("a reply");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reply {resp:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for s in [
        "tollgate.inference.v1.Inference",
        "tollgate.inference.v1.SemanticCache",
        "tollgate.inference.v1.Budget",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&s), "{s} missing from {names:?}");
    }
}

/// A request stream of one message (what `grpcurl list` sends).
fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tonic::codegen::tokio_stream::Stream<Item = T> {
    tonic::codegen::tokio_stream::once(item)
}
