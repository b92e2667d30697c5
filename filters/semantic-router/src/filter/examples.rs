//! Embedding the routes' examples through the sidecar, from the root context: rounds of batched
//! `Embed` calls, retried with backoff until every example has its vector, then installed as the
//! index the requests route by.

use super::{EXAMPLE_BATCH, EXAMPLE_TIMEOUT_MS, RETRY_FIRST, RETRY_MAX, Shared};
use crate::decide;
use filter_core::config::SidecarConfig;
use filter_host::sidecar::{self, Sidecar, v1};
use filter_host::{log, root};
use std::collections::HashMap;
use std::time::Duration;

/// One VM's example-loading state.
#[derive(Default)]
pub struct Loader {
    /// Calls in flight: token → index of the first example in the batch.
    calls: HashMap<u32, usize>,
    fetched: Vec<Option<Vec<f32>>>,
    failed: bool,
    attempt: u32,
}

impl Loader {
    /// No round is in flight.
    pub fn idle(&self) -> bool {
        self.calls.is_empty()
    }

    /// Starts one round of `Embed` calls for every pending example.
    pub(super) fn load_examples(&mut self, shared: &Shared) {
        let cfg = &shared.config;
        let loader = Sidecar::new(SidecarConfig {
            cluster: cfg.sidecar.cluster.clone(),
            timeout_ms: EXAMPLE_TIMEOUT_MS,
        });
        self.fetched = vec![None; cfg.pending.len()];
        self.failed = false;
        self.attempt += 1;
        shared.last_attempt.set(root::now());
        for (n, batch) in cfg.pending.chunks(EXAMPLE_BATCH).enumerate() {
            // Cut like a request's text, so an example and a prompt are read alike.
            let texts = batch
                .iter()
                .map(|(_, t)| decide::truncate(t, cfg.input.max_bytes()).to_owned())
                .collect();
            match loader.embed(texts) {
                Ok(token) => {
                    self.calls.insert(token, n * EXAMPLE_BATCH);
                }
                Err(e) => {
                    // Also what Envoy answers before its clusters are initialised (the main
                    // thread's VM can tick that early): retried like any failed round.
                    log!(
                        Warn,
                        None,
                        "route examples: the sidecar call did not start: {e}; check sidecar.cluster if this persists"
                    );
                    self.failed = true;
                }
            }
        }
        self.finish_round(shared);
    }

    /// After the last call of a round: installs the index, or schedules the next attempt.
    fn finish_round(&mut self, shared: &Shared) {
        shared.loading.set(!self.calls.is_empty());
        if !self.calls.is_empty() || shared.broken.get() {
            let _ = root::set_tick_period(Duration::ZERO);
            return;
        }
        if !self.failed && self.fetched.iter().any(Option::is_none) {
            log!(
                Warn,
                None,
                "route examples: the sidecar answered fewer vectors than texts"
            );
            self.failed = true;
        }
        if self.failed {
            let wait = RETRY_FIRST
                .saturating_mul(1 << self.attempt.min(6))
                .min(RETRY_MAX);
            log!(
                Warn,
                None,
                "route examples not embedded (attempt {}); retrying in {} ms, meanwhile requests that need the sidecar go by failure_mode",
                self.attempt,
                wait.as_millis()
            );
            let _ = root::set_tick_period(wait);
            return;
        }
        let _ = root::set_tick_period(Duration::ZERO);
        let cfg = &shared.config;
        let mut index = cfg.index.clone();
        for ((route, _), v) in cfg.pending.iter().zip(std::mem::take(&mut self.fetched)) {
            let pushed = v
                .ok_or_else(|| "missing".to_owned())
                .and_then(|v| index.push(*route, &v));
            if let Err(e) = pushed {
                let hint = if cfg.index.is_empty() {
                    ""
                } else {
                    " (are the precomputed `embeddings` from the sidecar's model?)"
                };
                log!(Critical, None, "route examples cannot be used: {e}{hint}");
                shared.broken.set(true);
                return;
            }
        }
        log!(
            Info,
            None,
            "route examples ready: {} vectors of dimension {} over {} routes",
            index.len(),
            index.dimension(),
            cfg.routes.len()
        );
        shared.ready(index);
    }

    /// The answer to one `Embed` call of the round.
    pub(super) fn on_reply(&mut self, shared: &Shared, token: u32, status_code: u32, size: usize) {
        let Some(start) = self.calls.remove(&token) else {
            return;
        };
        match sidecar::reply::<v1::EmbedResponse>(status_code, size) {
            Ok(r) => {
                for (i, e) in r.embeddings.into_iter().enumerate() {
                    if e.truncated {
                        log!(
                            Warn,
                            None,
                            "route example #{} is longer than the model reads; it was cut",
                            start + i
                        );
                    }
                    if let Some(slot) = self.fetched.get_mut(start + i) {
                        *slot = Some(e.values);
                    }
                }
            }
            Err(e) if e.is_invalid_argument() => {
                // Retrying cannot help: an example the sidecar refuses (too long, too many).
                log!(
                    Critical,
                    None,
                    "route examples #{start}… refused by the sidecar: {e}; fix the examples or the sidecar's limits"
                );
                shared.broken.set(true);
            }
            Err(e) => {
                log!(Warn, None, "route examples: {e}");
                self.failed = true;
            }
        }
        self.finish_round(shared);
    }
}
