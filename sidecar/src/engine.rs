//! Inference off the async workers: a bounded queue feeds dedicated threads that each take what is
//! already queued (no timed wait, which measured worse here), sort it by length and run it in
//! chunks of at most `max_batch` texts or `max_batch_tokens` padded tokens, so one long text does not
//! pad a whole batch. Recent embeddings are served from an LRU keyed by the text.

use crate::metrics::Metrics;
use crate::model::{Embedded, Embedder, Encoded, ModelError};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("inference queue is full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("inference workers stopped")]
    Stopped,
    #[error(transparent)]
    Model(#[from] ModelError),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub workers: usize,
    pub queue: usize,
    pub max_batch: usize,
    pub max_batch_tokens: usize,
    pub lru_entries: usize,
}

struct Job {
    texts: Vec<Arc<str>>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Vec<Arc<Embedded>>, EngineError>>,
}

pub struct Engine {
    tx: Sender<Job>,
    queue_cap: usize,
    lru: Mutex<LruCache<Arc<str>, Arc<Embedded>>>,
    pub embedder: Arc<Embedder>,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn start(
        embedder: Embedder,
        cfg: &EngineConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<Self>> {
        let embedder = Arc::new(embedder);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(cfg.queue.max(1));
        for i in 0..cfg.workers.max(1) {
            let rx = rx.clone();
            let embedder = embedder.clone();
            let metrics = metrics.clone();
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker(&rx, &embedder, &cfg, &metrics))?;
        }
        let lru = LruCache::new(NonZeroUsize::new(cfg.lru_entries.max(1)).unwrap_or(NonZeroUsize::MIN));
        Ok(Arc::new(Self {
            tx,
            queue_cap: cfg.queue,
            lru: Mutex::new(lru),
            embedder,
            metrics,
        }))
    }

    /// Embeds `texts`, from the LRU where possible. Dropping the future (client gone) cancels the
    /// work: a worker skips jobs whose caller stopped waiting.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Arc<Embedded>>, EngineError> {
        let mut out: Vec<Option<Arc<Embedded>>> = Vec::with_capacity(texts.len());
        let mut missing: Vec<Arc<str>> = Vec::new();
        if let Ok(mut lru) = self.lru.lock() {
            for t in texts {
                let hit = lru.get(t.as_str()).cloned();
                if hit.is_none() {
                    missing.push(Arc::from(t.as_str()));
                }
                out.push(hit);
            }
        } else {
            out.resize(texts.len(), None);
            missing = texts.iter().map(|t| Arc::from(t.as_str())).collect();
        }
        self.metrics.lru_hits.add((texts.len() - missing.len()) as u64);
        self.metrics.lru_misses.add(missing.len() as u64);
        if !missing.is_empty() {
            let (reply, rx) = oneshot::channel();
            let job = Job {
                texts: missing.clone(),
                enqueued: Instant::now(),
                reply,
            };
            match self.tx.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(EngineError::QueueFull(self.queue_cap)),
                Err(TrySendError::Disconnected(_)) => return Err(EngineError::Stopped),
            }
            self.metrics.queue_depth.set(self.tx.len() as u64);
            let computed = rx.await.map_err(|_| EngineError::Stopped)??;
            let mut computed = computed.into_iter();
            if let Ok(mut lru) = self.lru.lock() {
                for (slot, text) in out.iter_mut().filter(|s| s.is_none()).zip(&missing) {
                    if let Some(e) = computed.next() {
                        lru.put(text.clone(), e.clone());
                        *slot = Some(e);
                    }
                }
            } else {
                for slot in out.iter_mut().filter(|s| s.is_none()) {
                    *slot = computed.next();
                }
            }
        }
        out.into_iter().map(|e| e.ok_or(EngineError::Stopped)).collect()
    }
}

/// An inference thread: takes jobs, or helps another thread's forward pass while it has none.
/// It runs inside a one-thread rayon pool of its own, so candle's parallel loops run inline
/// instead of being handed to another thread and waited for.
fn worker(rx: &Receiver<Job>, embedder: &Embedder, cfg: &EngineConfig, metrics: &Metrics) {
    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(|| serve(rx, embedder, cfg, metrics)),
        Err(e) => {
            tracing::warn!(error = %e, "no rayon pool for an inference thread; running without");
            serve(rx, embedder, cfg, metrics);
        }
    }
}

fn serve(rx: &Receiver<Job>, embedder: &Embedder, cfg: &EngineConfig, metrics: &Metrics) {
    loop {
        // Own jobs first; help another pass only while none is queued.
        let first = crossbeam_channel::select_biased! {
            recv(rx) -> job => match job {
                Ok(job) => job,
                Err(_) => return,
            },
            recv(embedder.invitations()) -> team => {
                if let Some(team) = team.ok().and_then(|t| t.upgrade()) {
                    team.help(|| !rx.is_empty());
                }
                continue;
            }
        };
        // Take what is already queued, up to one batch worth of texts.
        let mut jobs = vec![first];
        let mut n = jobs.iter().map(|j| j.texts.len()).sum::<usize>();
        while n < cfg.max_batch {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.texts.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        metrics.queue_depth.set(rx.len() as u64);
        // Callers that went away (client disconnect, deadline) are not worth computing for.
        let before = jobs.len();
        jobs.retain(|j| !j.reply.is_closed());
        metrics.cancelled.add((before - jobs.len()) as u64);
        for j in &jobs {
            metrics.queue_wait.observe(j.enqueued.elapsed());
        }
        if jobs.is_empty() {
            continue;
        }
        let results = run(embedder, &jobs, cfg, metrics);
        match results {
            Ok(mut per_job) => {
                for (job, res) in jobs.into_iter().zip(per_job.drain(..)) {
                    let _ = job.reply.send(Ok(res));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "inference failed");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(EngineError::Model(ModelError::Tokenizer(msg.clone()))));
                }
            }
        }
    }
}

/// Runs every text of `jobs`, sorted by length and chunked, and hands each job its vectors in order.
fn run(
    embedder: &Embedder,
    jobs: &[Job],
    cfg: &EngineConfig,
    metrics: &Metrics,
) -> Result<Vec<Vec<Arc<Embedded>>>, ModelError> {
    // (job, index, tokens), each text tokenized once
    let mut items: Vec<(usize, usize, Encoded)> = Vec::new();
    for (ji, j) in jobs.iter().enumerate() {
        for (ti, t) in j.texts.iter().enumerate() {
            items.push((ji, ti, embedder.encode(t)?));
        }
    }
    items.sort_by_key(|i| i.2.ids.len());
    let mut results: Vec<Vec<Option<Arc<Embedded>>>> =
        jobs.iter().map(|j| vec![None; j.texts.len()]).collect();
    let mut start = 0;
    while start < items.len() {
        // Items are sorted, so the last one in a chunk sets its padded length.
        let mut end = start + 1;
        while end < items.len()
            && end - start < cfg.max_batch
            && (end + 1 - start) * items.get(end).map_or(0, |i| i.2.ids.len()) <= cfg.max_batch_tokens
        {
            end += 1;
        }
        let chunk = items.get(start..end).unwrap_or_default();
        let batch: Vec<&Encoded> = chunk.iter().map(|i| &i.2).collect();
        let t0 = Instant::now();
        let embedded = embedder.embed_encoded(&batch)?;
        metrics.batch_size.observe_value(batch.len() as f64);
        metrics.inference.observe(t0.elapsed());
        for (item, e) in chunk.iter().zip(embedded) {
            if let Some(slot) = results.get_mut(item.0).and_then(|r| r.get_mut(item.1)) {
                *slot = Some(Arc::new(e));
            }
        }
        start = end;
    }
    results
        .into_iter()
        .map(|r| {
            r.into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ModelError::Tokenizer("missing output".into()))
        })
        .collect()
}
