//! The gRPC services: request validation, calls into the engine and the state backend, and the
//! mapping of every failure to a gRPC status that names it.

use crate::classify::LabelSets;
use crate::engine::{Engine, EngineError};
use crate::metrics::{Method, Metrics};
use crate::state::{Lookup, State, StateError, Store};
use inference_proto::v1::{
    CacheLookupRequest, CacheLookupResponse, CacheStoreRequest, CacheStoreResponse, ClassifyRequest,
    ClassifyResponse, EmbedRequest, EmbedResponse, Embedding, LabelScore, ReserveRequest, ReserveResponse,
    SettleRequest, SettleResponse, budget_server::Budget, cache_lookup_response::Outcome,
    inference_server::Inference, semantic_cache_server::SemanticCache,
};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_texts: usize,
    pub max_text_bytes: usize,
}

pub struct Sidecar {
    pub engine: Arc<Engine>,
    pub labels: Arc<LabelSets>,
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

fn engine_status(e: EngineError) -> Status {
    match e {
        EngineError::QueueFull(_) => Status::resource_exhausted(e.to_string()),
        EngineError::Stopped => Status::unavailable(e.to_string()),
        EngineError::Model(_) => Status::internal(e.to_string()),
    }
}

fn state_status(e: StateError) -> Status {
    tracing::warn!(error = %e, "state backend failed");
    Status::unavailable(format!("state backend: {e}"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks one text; `index` names its place in a batch (`texts[3]`), formatted only on error.
fn check_text(field: &str, index: Option<usize>, text: &str, limits: Limits) -> Result<(), Status> {
    let name = || match index {
        Some(i) => format!("{field}[{i}]"),
        None => field.to_owned(),
    };
    if text.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{} is empty", name())));
    }
    if text.len() > limits.max_text_bytes {
        return Err(Status::invalid_argument(format!(
            "{} is {} bytes, over the limit of {}",
            name(),
            text.len(),
            limits.max_text_bytes
        )));
    }
    Ok(())
}

impl Sidecar {
    async fn embed_texts(&self, texts: &[String]) -> Result<Vec<Arc<crate::model::Embedded>>, Status> {
        let out = self.engine.embed(texts).await.map_err(engine_status)?;
        if out.iter().any(|e| e.vector.iter().any(|x| !x.is_finite())) {
            tracing::error!("model produced a non-finite embedding");
            return Err(Status::internal("model produced a non-finite embedding"));
        }
        Ok(out)
    }

    /// The vector of a cache request: given (checked and normalised) or embedded from `text`.
    async fn query_vector(&self, vector: Vec<f32>, text: &str) -> Result<Option<Vec<f32>>, Status> {
        if !vector.is_empty() {
            let dim = self.engine.embedder.dimension();
            if vector.len() != dim {
                return Err(Status::invalid_argument(format!(
                    "vector has {} dimensions, the model has {dim}",
                    vector.len()
                )));
            }
            if vector.iter().any(|x| !x.is_finite()) {
                return Err(Status::invalid_argument("vector has a NaN or infinite component"));
            }
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm == 0.0 {
                return Err(Status::invalid_argument("vector is all zeros"));
            }
            return Ok(Some(vector.into_iter().map(|x| x / norm).collect()));
        }
        if text.is_empty() {
            return Ok(None);
        }
        check_text("text", None, text, self.limits)?;
        let e = self.embed_texts(&[text.to_owned()]).await?;
        Ok(e.into_iter().next().map(|e| e.vector.clone()))
    }

    fn timed<T>(&self, m: Method, t0: Instant, r: Result<T, Status>) -> Result<Response<T>, Status> {
        self.metrics.record(m, r.is_ok(), t0.elapsed());
        if let Err(s) = &r {
            tracing::debug!(method = ?m, code = ?s.code(), message = s.message(), "request failed");
        }
        r.map(Response::new)
    }
}

#[tonic::async_trait]
impl Inference for Sidecar {
    async fn embed(&self, req: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let texts = req.into_inner().texts;
            if texts.is_empty() {
                return Err(Status::invalid_argument("texts is empty"));
            }
            if texts.len() > self.limits.max_request_texts {
                return Err(Status::invalid_argument(format!(
                    "batch of {} texts is over the limit of {}",
                    texts.len(),
                    self.limits.max_request_texts
                )));
            }
            for (i, t) in texts.iter().enumerate() {
                check_text("texts", Some(i), t, self.limits)?;
            }
            let out = self.embed_texts(&texts).await?;
            Ok(EmbedResponse {
                model: self.engine.embedder.name().to_owned(),
                dimension: self.engine.embedder.dimension() as u32,
                embeddings: out
                    .iter()
                    .map(|e| Embedding {
                        values: e.vector.clone(),
                        tokens: e.tokens,
                        truncated: e.truncated,
                    })
                    .collect(),
            })
        }
        .await;
        self.timed(Method::Embed, t0, r)
    }

    async fn classify(&self, req: Request<ClassifyRequest>) -> Result<Response<ClassifyResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let req = req.into_inner();
            if req.label_set.is_empty() {
                return Err(Status::invalid_argument("label_set is empty"));
            }
            check_text("text", None, &req.text, self.limits)?;
            if !self.labels.contains(&req.label_set) {
                let mut known: Vec<&str> = self.labels.names().collect();
                known.sort_unstable();
                return Err(Status::invalid_argument(format!(
                    "unknown label set `{}` (configured: {})",
                    req.label_set,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            let e = self.embed_texts(&[req.text]).await?;
            let e = e.first().ok_or_else(|| Status::internal("no embedding"))?;
            let scores = self
                .labels
                .classify(&req.label_set, &e.vector)
                .unwrap_or_default();
            Ok(ClassifyResponse {
                model: self.engine.embedder.name().to_owned(),
                scores: scores
                    .into_iter()
                    .map(|(label, score)| LabelScore { label, score })
                    .collect(),
                truncated: e.truncated,
            })
        }
        .await;
        self.timed(Method::Classify, t0, r)
    }
}

#[tonic::async_trait]
impl SemanticCache for Sidecar {
    async fn lookup(
        &self,
        req: Request<CacheLookupRequest>,
    ) -> Result<Response<CacheLookupResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let req = req.into_inner();
            if req.scope.is_empty() {
                return Err(Status::invalid_argument("scope is empty"));
            }
            if req.key.is_empty() && req.vector.is_empty() && req.text.is_empty() {
                return Err(Status::invalid_argument("set key, vector or text"));
            }
            let semantic = !req.vector.is_empty() || !req.text.is_empty();
            if semantic && !(req.threshold > 0.0 && req.threshold <= 1.0) {
                return Err(Status::invalid_argument(format!(
                    "threshold {} is not in (0, 1]",
                    req.threshold
                )));
            }
            let mut q = Lookup {
                scope: &req.scope,
                model: &req.model,
                key: &req.key,
                vector: None,
                threshold: req.threshold,
            };
            // The exact key first: a hit needs no embedding.
            let mut resp = if req.key.is_empty() {
                crate::state::miss()
            } else {
                self.state.lookup(&q, now()).await.map_err(state_status)?
            };
            if semantic && resp.outcome != Outcome::ExactHit as i32 {
                let vector = self.query_vector(req.vector, &req.text).await?;
                q.key = "";
                q.vector = vector.as_deref();
                resp = self.state.lookup(&q, now()).await.map_err(state_status)?;
            }
            match Outcome::try_from(resp.outcome) {
                Ok(Outcome::ExactHit) => self.metrics.cache_exact_hits.inc(),
                Ok(Outcome::SemanticHit) => self.metrics.cache_semantic_hits.inc(),
                _ => self.metrics.cache_misses.inc(),
            }
            Ok(resp)
        }
        .await;
        self.timed(Method::CacheLookup, t0, r)
    }

    async fn store(&self, req: Request<CacheStoreRequest>) -> Result<Response<CacheStoreResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let req = req.into_inner();
            if req.scope.is_empty() {
                return Err(Status::invalid_argument("scope is empty"));
            }
            if req.key.is_empty() {
                return Err(Status::invalid_argument("key is empty"));
            }
            if req.ttl_seconds == 0 {
                return Err(Status::invalid_argument("ttl_seconds must be at least 1"));
            }
            let vector = self.query_vector(req.vector, &req.text).await?;
            let s = Store {
                scope: req.scope,
                model: req.model,
                key: req.key,
                vector,
                value: req.value,
                ttl: u64::from(req.ttl_seconds),
            };
            let stored = self.state.store(s, now()).await.map_err(state_status)?;
            self.metrics.cache_stores.inc();
            Ok(CacheStoreResponse { stored })
        }
        .await;
        self.timed(Method::CacheStore, t0, r)
    }
}

#[tonic::async_trait]
impl Budget for Sidecar {
    async fn reserve(&self, req: Request<ReserveRequest>) -> Result<Response<ReserveResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let req = req.into_inner();
            if req.request_id.is_empty() {
                return Err(Status::invalid_argument("request_id is empty"));
            }
            if req.budget.is_empty() {
                return Err(Status::invalid_argument("budget is empty"));
            }
            if req.window_seconds == 0 {
                return Err(Status::invalid_argument("window_seconds must be at least 1"));
            }
            let resp = self
                .state
                .reserve(
                    &req.request_id,
                    &req.budget,
                    req.tokens,
                    req.limit,
                    req.window_seconds,
                    now(),
                )
                .await
                .map_err(state_status)?;
            if !resp.allowed {
                self.metrics.budget_denied.inc();
            }
            Ok(resp)
        }
        .await;
        self.timed(Method::Reserve, t0, r)
    }

    async fn settle(&self, req: Request<SettleRequest>) -> Result<Response<SettleResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let req = req.into_inner();
            if req.request_id.is_empty() {
                return Err(Status::invalid_argument("request_id is empty"));
            }
            self.state
                .settle(&req.request_id, req.actual_tokens, now())
                .await
                .map_err(state_status)
        }
        .await;
        self.timed(Method::Settle, t0, r)
    }
}
