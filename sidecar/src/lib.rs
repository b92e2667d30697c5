//! The Tollgate inference sidecar: embeddings and similarity classification with a local model
//! (candle + tokenizers), and the gateway state that must outlive one Envoy (response cache, token
//! budgets), over gRPC (`tollgate.inference.v1`), with health, reflection and Prometheus metrics.

pub mod bert;
pub mod classify;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod model;
pub mod service;
pub mod state;

use crate::classify::LabelSets;
use crate::config::Config;
use crate::engine::{Engine, EngineConfig};
use crate::metrics::Metrics;
use crate::model::Embedder;
use crate::service::{Limits, Sidecar};
use crate::state::State;
use inference_proto::v1::{
    budget_server::BudgetServer, inference_server::InferenceServer,
    semantic_cache_server::SemanticCacheServer,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Loads the model, starts the inference workers, embeds label-set exemplars and connects the state
/// backend: everything that can fail at start-up fails here, with the cause.
pub async fn build(cfg: &Config) -> Result<Sidecar, Error> {
    let t0 = Instant::now();
    // One part of each layer per worker, but no more than the cores: a part whose helper is
    // descheduled keeps its caller waiting.
    let parts = cfg
        .workers
        .min(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let embedder = Embedder::load(&cfg.model_dir, cfg.max_tokens, parts)
        .map_err(|e| format!("loading model from {}: {e}", cfg.model_dir.display()))?;
    tracing::info!(model = %embedder.name, dimension = embedder.dimension, max_tokens = embedder.max_tokens,
                   elapsed_ms = t0.elapsed().as_millis() as u64, "model loaded");
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::start(
        embedder,
        &EngineConfig {
            workers: cfg.workers,
            queue: cfg.queue,
            max_batch: cfg.max_batch,
            max_batch_tokens: cfg.max_batch_tokens,
            lru_entries: cfg.lru_entries,
        },
        metrics.clone(),
    )?;
    let labels = match &cfg.label_sets {
        Some(path) => LabelSets::build(LabelSets::read(path)?, &engine).await?,
        None => LabelSets::default(),
    };
    let state = match &cfg.redis_url {
        Some(url) => State::Redis(
            state::redis::RedisState::connect(
                url,
                &cfg.redis_prefix,
                cfg.lsh_tables,
                cfg.lsh_bits,
                cfg.lsh_seed,
            )
            .await
            .map_err(|e| format!("connecting to Redis at {url}: {e}"))?,
        ),
        None => State::Memory(state::memory::MemoryState::new(cfg.cache_max_entries)),
    };
    Ok(Sidecar {
        engine,
        labels: Arc::new(labels),
        state: Arc::new(state),
        metrics,
        limits: Limits {
            max_request_texts: cfg.max_request_texts,
            max_text_bytes: cfg.max_text_bytes,
        },
    })
}

/// Serves `sidecar` on `listener` (and metrics on `metrics`, if given) until `shutdown` resolves,
/// then stops taking requests and gives in-flight ones `grace` to finish.
pub async fn serve(
    sidecar: Sidecar,
    listener: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), Error> {
    let sidecar = Arc::new(sidecar);
    if let Some(l) = metrics {
        tokio::spawn(metrics::serve(l, sidecar.metrics.clone()));
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<InferenceServer<Arc<Sidecar>>>().await;
    health.set_serving::<SemanticCacheServer<Arc<Sidecar>>>().await;
    health.set_serving::<BudgetServer<Arc<Sidecar>>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(inference_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(InferenceServer::from_arc(sidecar.clone()))
        .add_service(SemanticCacheServer::from_arc(sidecar.clone()))
        .add_service(BudgetServer::from_arc(sidecar.clone()))
        // Small unary calls: Nagle's algorithm would hold replies for the client's delayed ACK.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.map_err(Into::into),
        () = shutdown => {}
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: finishing in-flight requests"
    );
    health.set_not_serving::<InferenceServer<Arc<Sidecar>>>().await;
    let _ = stop.send(());
    match tokio::time::timeout(grace, server).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => {
            tracing::warn!("grace period over; dropping the requests still in flight");
            Ok(())
        }
    }
}
