//! Gateway state that must outlive one Envoy: token budgets and the response cache. In memory by
//! default; in Redis (`--redis-url`) so several sidecars, one per Envoy replica, share it.

pub mod lsh;
pub mod memory;
pub mod redis;

use inference_proto::v1::{CacheLookupResponse, ReserveResponse, SettleResponse};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("state backend returned an unexpected reply: {0}")]
    Protocol(String),
}

/// How long a settle for an unknown request id is remembered (longer than the longest window the
/// filters use, a day): a reserve with that id arriving later is refused without a charge.
pub const TOMBSTONE_TTL_SECS: u64 = 2 * 86_400;

/// A budget window: fixed, aligned to the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// `<budget>@<window start>`
    pub key: String,
    /// Seconds until the window resets.
    pub reset: u64,
    /// How long state about this window must be kept.
    pub ttl: u64,
}

impl Window {
    pub fn new(budget: &str, window_seconds: u32, now: u64) -> Self {
        let w = u64::from(window_seconds.max(1));
        let start = now / w * w;
        Self {
            key: format!("{budget}@{start}"),
            reset: start + w - now,
            ttl: start + w - now + 60,
        }
    }
}

/// What a cache entry holds.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub value: Vec<u8>,
    pub created: u64,
    pub expires: u64,
    pub vector: Option<Vec<f32>>,
}

/// A lookup, after the text (if any) was embedded.
pub struct Lookup<'a> {
    pub scope: &'a str,
    pub model: &'a str,
    pub key: &'a str,
    pub vector: Option<&'a [f32]>,
    pub threshold: f32,
}

pub struct Store {
    pub scope: String,
    pub model: String,
    pub key: String,
    pub vector: Option<Vec<f32>>,
    pub value: Vec<u8>,
    pub ttl: u64,
}

pub enum State {
    Memory(memory::MemoryState),
    Redis(redis::RedisState),
}

impl State {
    pub async fn reserve(
        &self,
        request_id: &str,
        budget: &str,
        tokens: u64,
        limit: u64,
        window_seconds: u32,
        now: u64,
    ) -> Result<ReserveResponse, StateError> {
        let w = Window::new(budget, window_seconds, now);
        match self {
            Self::Memory(m) => Ok(m.reserve(request_id, &w, tokens, limit, now)),
            Self::Redis(r) => r.reserve(request_id, &w, tokens, limit, now).await,
        }
    }

    pub async fn settle(
        &self,
        request_id: &str,
        actual: u64,
        now: u64,
    ) -> Result<SettleResponse, StateError> {
        match self {
            Self::Memory(m) => Ok(m.settle(request_id, actual, now)),
            Self::Redis(r) => r.settle(request_id, actual).await,
        }
    }

    pub async fn lookup(&self, q: &Lookup<'_>, now: u64) -> Result<CacheLookupResponse, StateError> {
        match self {
            Self::Memory(m) => Ok(m.lookup(q, now)),
            Self::Redis(r) => r.lookup(q, now).await,
        }
    }

    pub async fn store(&self, s: Store, now: u64) -> Result<bool, StateError> {
        match self {
            Self::Memory(m) => Ok(m.store(s, now)),
            Self::Redis(r) => r.store(s, now).await,
        }
    }
}

/// A miss.
pub fn miss() -> CacheLookupResponse {
    CacheLookupResponse {
        outcome: inference_proto::v1::cache_lookup_response::Outcome::Miss as i32,
        ..Default::default()
    }
}
