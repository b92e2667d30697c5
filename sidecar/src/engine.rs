//! Inference off the async workers: a bounded queue feeds dedicated threads that each take what is
//! already queued (no timed wait, which measured worse here), sort it by length and run it in
//! chunks of at most `max_batch` texts or `max_batch_tokens` padded tokens, so one long text does not
//! pad a whole batch. Recent embeddings are served from an LRU keyed by the text.

use crate::metrics::Metrics;
use crate::model::{Embedded, Encoded, Encoder, ModelError};
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
    pub embedder: Arc<dyn Encoder>,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn start(
        embedder: impl Encoder,
        cfg: &EngineConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<Self>> {
        let embedder: Arc<dyn Encoder> = Arc::new(embedder);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(cfg.queue.max(1));
        for i in 0..cfg.workers.max(1) {
            let rx = rx.clone();
            let embedder = embedder.clone();
            let metrics = metrics.clone();
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker(&rx, embedder.as_ref(), &cfg, &metrics))?;
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
fn worker(rx: &Receiver<Job>, embedder: &dyn Encoder, cfg: &EngineConfig, metrics: &Metrics) {
    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(|| serve(rx, embedder, cfg, metrics)),
        Err(e) => {
            tracing::warn!(error = %e, "no rayon pool for an inference thread; running without");
            serve(rx, embedder, cfg, metrics);
        }
    }
}

fn serve(rx: &Receiver<Job>, embedder: &dyn Encoder, cfg: &EngineConfig, metrics: &Metrics) {
    let never = crossbeam_channel::never();
    let invitations = embedder.invitations().unwrap_or(&never);
    loop {
        // Own jobs first; help another pass only while none is queued.
        let first = crossbeam_channel::select_biased! {
            recv(rx) -> job => match job {
                Ok(job) => job,
                Err(_) => return,
            },
            recv(invitations) -> team => {
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
    embedder: &dyn Encoder,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A model that is fast and predictable: one token per byte, a vector that encodes the text's
    /// length and first byte, and a record of every batch it was given.
    #[derive(Default)]
    struct Fake {
        batches: Mutex<Vec<Vec<usize>>>,
        encoded: AtomicUsize,
        /// Passes begun.
        entered: AtomicUsize,
        /// Held by a test to stall the worker inside a pass.
        gate: Mutex<()>,
    }

    impl Fake {
        /// Waits until the inference thread is inside its `n`th pass.
        async fn inside(&self, n: usize) {
            for _ in 0..2000 {
                if self.entered.load(Ordering::Relaxed) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("no pass began");
        }
    }

    impl Encoder for Arc<Fake> {
        fn name(&self) -> &str {
            "fake"
        }

        fn dimension(&self) -> usize {
            2
        }

        fn encode(&self, text: &str) -> Result<Encoded, ModelError> {
            self.encoded.fetch_add(1, Ordering::Relaxed);
            if text == "boom" {
                return Err(ModelError::Tokenizer("boom".into()));
            }
            Ok(Encoded {
                ids: text.bytes().map(u32::from).collect(),
                truncated: false,
            })
        }

        fn embed_encoded(&self, batch: &[&Encoded]) -> Result<Vec<Embedded>, ModelError> {
            self.entered.fetch_add(1, Ordering::Relaxed);
            let _held = self.gate.lock().unwrap();
            self.batches
                .lock()
                .unwrap()
                .push(batch.iter().map(|e| e.ids.len()).collect());
            Ok(batch
                .iter()
                .map(|e| Embedded {
                    vector: vec![e.ids.len() as f32, e.ids.first().copied().unwrap_or(0) as f32],
                    tokens: e.ids.len() as u32,
                    truncated: false,
                })
                .collect())
        }
    }

    fn engine(fake: &Arc<Fake>, cfg: EngineConfig) -> (Arc<Engine>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        (
            Engine::start(fake.clone(), &cfg, metrics.clone()).unwrap(),
            metrics,
        )
    }

    fn cfg() -> EngineConfig {
        EngineConfig {
            workers: 1,
            queue: 64,
            max_batch: 4,
            max_batch_tokens: 1000,
            lru_entries: 16,
        }
    }

    fn expected(text: &str) -> Vec<f32> {
        vec![text.len() as f32, text.bytes().next().unwrap_or(0) as f32]
    }

    #[tokio::test]
    async fn each_text_gets_its_own_vector_in_order_and_repeats_come_from_the_lru() {
        let fake = Arc::new(Fake::default());
        let (engine, metrics) = engine(&fake, cfg());
        let texts: Vec<String> = ["a", "bbb", "cc", "a"].map(String::from).to_vec();
        let out = engine.embed(&texts).await.unwrap();
        for (t, e) in texts.iter().zip(&out) {
            assert_eq!(e.vector, expected(t), "{t}");
        }
        let again = engine.embed(&texts[..2]).await.unwrap();
        assert_eq!(again[1].vector, expected("bbb"));
        // "a" twice in the first call is computed twice (the LRU fills after the call); the second
        // call is all hits.
        assert_eq!(fake.encoded.load(Ordering::Relaxed), 4);
        assert_eq!(metrics.lru_hits.get(), 2);
        assert_eq!(metrics.lru_misses.get(), 4);
    }

    // The test holds the fake's gate across awaits on purpose: it stalls the inference thread.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn queued_texts_are_batched_by_length_within_the_limits() {
        let fake = Arc::new(Fake::default());
        let cfg = EngineConfig {
            max_batch: 3,
            max_batch_tokens: 12,
            ..cfg()
        };
        let (engine, _) = engine(&fake, cfg);
        // Stall the worker so that every request below is queued before the next pass.
        let held = fake.gate.lock().unwrap();
        let first = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.embed(&["x".to_owned()]).await })
        };
        fake.inside(1).await;
        let mut tasks = Vec::new();
        for t in ["aaaaaa", "b", "cc", "dddd", "e", "ff"] {
            let engine = engine.clone();
            tasks.push(tokio::spawn(
                async move { (t, engine.embed(&[t.to_owned()]).await) },
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        first.await.unwrap().unwrap();
        for t in tasks {
            let (text, out) = t.await.unwrap();
            assert_eq!(out.unwrap()[0].vector, expected(text));
        }
        let batches = fake.batches.lock().unwrap().clone();
        assert_eq!(batches.first(), Some(&vec![1]), "the stalled pass");
        for b in &batches[1..] {
            assert!(b.len() <= 3, "{batches:?}");
            assert!(
                b.windows(2).all(|w| w[0] <= w[1]),
                "sorted by length: {batches:?}"
            );
            assert!(b.len() * b.last().unwrap() <= 12, "padded tokens: {batches:?}");
        }
        let total: usize = batches.iter().map(Vec::len).sum();
        assert_eq!(total, 7);
        assert!(
            batches.len() < 7,
            "texts waiting together share passes: {batches:?}"
        );
    }

    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_full_queue_is_refused_and_abandoned_work_is_skipped() {
        let fake = Arc::new(Fake::default());
        let (engine, metrics) = engine(
            &fake,
            EngineConfig {
                queue: 2,
                max_batch: 1,
                ..cfg()
            },
        );
        let held = fake.gate.lock().unwrap();
        let running = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.embed(&["running".to_owned()]).await })
        };
        fake.inside(1).await;
        // Two wait in the queue; their callers go away.
        for t in ["gone1", "gone2"] {
            let engine = engine.clone();
            let task = tokio::spawn(async move { engine.embed(&[t.to_owned()]).await });
            tokio::time::sleep(Duration::from_millis(20)).await;
            task.abort();
            // Awaited, the aborted task has been dropped, and its reply channel with it.
            assert!(task.await.unwrap_err().is_cancelled());
        }
        let full = engine.embed(&["third".to_owned()]).await;
        assert!(matches!(full, Err(EngineError::QueueFull(2))), "{full:?}");
        drop(held);
        running.await.unwrap().unwrap();
        // The inference thread drains the abandoned jobs on its own time.
        for _ in 0..200 {
            if metrics.cancelled.get() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let after = engine.embed(&["after".to_owned()]).await.unwrap();
        assert_eq!(after[0].vector, expected("after"));
        assert_eq!(metrics.cancelled.get(), 2);
        let computed: Vec<usize> = fake.batches.lock().unwrap().iter().flatten().copied().collect();
        assert_eq!(computed, vec!["running".len(), "after".len()]);
    }

    #[tokio::test]
    async fn a_model_error_reaches_every_caller_of_the_pass() {
        let fake = Arc::new(Fake::default());
        let (engine, _) = engine(&fake, cfg());
        let err = engine.embed(&["ok".to_owned(), "boom".to_owned()]).await;
        assert!(matches!(err, Err(EngineError::Model(_))), "{err:?}");
        assert_eq!(
            engine.embed(&["ok".to_owned()]).await.unwrap()[0].vector,
            expected("ok")
        );
    }
}
