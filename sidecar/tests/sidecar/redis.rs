//! Redis mode: two sidecars (one per Envoy replica) share budgets and the response cache through a
//! real redis-server on a free loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{Redis, Running, spawn};
use inference_proto::v1::budget_client::BudgetClient;
use inference_proto::v1::{
    CacheLookupRequest, CacheStoreRequest, ReserveRequest, SettleRequest,
    cache_lookup_response::Outcome as CacheOutcome, settle_response::Outcome as SettleOutcome,
};
use tonic::Code;

fn pair(redis: &Redis) -> (Running, Running) {
    let url = redis.url();
    let a = spawn(&["--redis-url", &url]);
    let b = spawn(&["--redis-url", &url]);
    (a, b)
}

fn reserve(id: &str, budget: &str, tokens: u64, limit: u64) -> ReserveRequest {
    ReserveRequest {
        request_id: id.into(),
        budget: budget.into(),
        tokens,
        limit,
        window_seconds: 3600,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_share_budgets_and_settle_once() {
    let redis = Redis::start().unwrap();
    let (a, b) = pair(&redis);
    let mut ba = a.budget().await;
    let mut bb = b.budget().await;
    let r = ba
        .reserve(reserve("q1", "tenant:shared", 700, 1000))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed);
    // The other replica sees the spend, and the same request id retried there is a duplicate.
    let r = bb
        .reserve(reserve("q2", "tenant:shared", 400, 1000))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);
    assert_eq!(r.used, 700);
    let r = bb
        .reserve(reserve("q1", "tenant:shared", 700, 1000))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed && r.duplicate);
    assert_eq!(r.used, 700);
    // Settle on one replica, retry on the other: charged once.
    let settle = SettleRequest {
        request_id: "q1".into(),
        actual_tokens: 250,
    };
    let s = ba.settle(settle.clone()).await.unwrap().into_inner();
    assert_eq!(s.outcome(), SettleOutcome::Settled);
    assert_eq!(s.used, 250);
    let s = bb.settle(settle).await.unwrap().into_inner();
    assert_eq!(s.outcome(), SettleOutcome::Duplicate);
    assert_eq!(s.used, 250);
    let r = bb
        .reserve(reserve("q3", "tenant:shared", 750, 1000))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed);
    assert_eq!(r.used, 1000);
    // A release that overtakes its reserve leaves a tombstone: the late reserve charges nothing.
    let s = ba
        .settle(SettleRequest {
            request_id: "late".into(),
            actual_tokens: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.outcome(), SettleOutcome::Unknown);
    let r = bb
        .reserve(reserve("late", "tenant:other", 10, 1000))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed && r.duplicate, "{r:?}");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_on_two_sidecars_never_overshoot() {
    let redis = Redis::start().unwrap();
    let (a, b) = pair(&redis);
    let (ca, cb) = (a.channel().await, b.channel().await);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut client = BudgetClient::new(if i % 2 == 0 { ca.clone() } else { cb.clone() });
        tasks.push(tokio::spawn(async move {
            client
                .reserve(reserve(&format!("c{i}"), "tenant:race", 70 + i % 3, 1000))
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut charged = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.used <= 1000, "overshoot: {}", r.used);
        if r.allowed {
            charged += r.used.min(1000);
        }
    }
    assert!(charged > 0);
    // What the window holds equals the sum of the allowed reservations, and fits the limit.
    let mut c = BudgetClient::new(ca.clone());
    let probe = c
        .reserve(reserve("probe", "tenant:race", 0, 1000))
        .await
        .unwrap()
        .into_inner();
    assert!(
        probe.used <= 1000 && probe.used > 1000 - 73,
        "used {}",
        probe.used
    );
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stored_on_one_sidecar_is_found_by_the_other() {
    let redis = Redis::start().unwrap();
    let (a, b) = pair(&redis);
    let mut ca = a.cache().await;
    let mut cb = b.cache().await;
    ca.store(CacheStoreRequest {
        scope: "tenant-a".into(),
        model: "gpt-4o".into(),
        key: "h1".into(),
        text: "How do I reset my account password?".into(),
        value: b"{\"answer\":1}".to_vec(),
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
    let r = cb
        .lookup(lookup("tenant-a", "h1", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), CacheOutcome::ExactHit);
    assert_eq!(r.value, b"{\"answer\":1}");
    let r = cb
        .lookup(lookup(
            "tenant-a",
            "h2",
            "What are the steps to reset my account password?",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), CacheOutcome::SemanticHit, "{r:?}");
    assert_eq!(r.key, "h1");
    let r = cb
        .lookup(lookup(
            "tenant-a",
            "h3",
            "Recommend a good book for the holidays.",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), CacheOutcome::Miss);
    let r = cb
        .lookup(lookup("tenant-b", "h1", "How do I reset my account password?"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), CacheOutcome::Miss, "another scope saw the entry");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_entries_expire() {
    let redis = Redis::start().unwrap();
    let a = spawn(&["--redis-url", &redis.url()]);
    let mut c = a.cache().await;
    c.store(CacheStoreRequest {
        scope: "s".into(),
        model: "m".into(),
        key: "short-lived".into(),
        text: "an answer that expires".into(),
        value: b"v".to_vec(),
        ttl_seconds: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let lookup = CacheLookupRequest {
        scope: "s".into(),
        model: "m".into(),
        key: "short-lived".into(),
        text: "an answer that expires".into(),
        threshold: 0.9,
        ..Default::default()
    };
    let r = c.lookup(lookup.clone()).await.unwrap().into_inner();
    assert_eq!(r.outcome(), CacheOutcome::ExactHit);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = c.lookup(lookup).await.unwrap().into_inner();
    assert_eq!(r.outcome(), CacheOutcome::Miss);
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_unavailable_not_a_crash() {
    let redis = Redis::start().unwrap();
    let a = spawn(&["--redis-url", &redis.url()]);
    let mut b = a.budget().await;
    b.reserve(reserve("before", "tenant:x", 1, 10)).await.unwrap();
    drop(redis);
    let e = b.reserve(reserve("after", "tenant:x", 1, 10)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().starts_with("state backend: "), "{}", e.message());
    // Inference does not depend on Redis.
    let mut i = a.inference().await;
    i.embed(inference_proto::v1::EmbedRequest {
        texts: vec!["still embedding".into()],
    })
    .await
    .unwrap();
    a.stop();
}

#[test]
fn unreachable_redis_fails_start_up_with_the_url() {
    let cfg = sidecar::config::Config::parse(
        &[
            "--model-dir".into(),
            crate::common::model_dir().display().to_string(),
            "--redis-url".into(),
            "redis://127.0.0.1:1/".into(),
        ],
        |_| None,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Err(e) = rt.block_on(sidecar::build(&cfg)) else {
        panic!("started without its Redis");
    };
    assert!(
        e.to_string()
            .contains("connecting to Redis at redis://127.0.0.1:1/"),
        "{e}"
    );
}
