//! The cache itself, for one request: the lookup (Envoy shared data, then the sidecar for the
//! sidecar backend or a semantic match), serving a hit as the provider's JSON or SSE, and storing
//! a recorded response.

use super::{Http, SIMILARITY_HEADER};
use crate::config::Backend;
use crate::decide;
use crate::entry::{self, Entry};
use filter_core::headers;
use filter_host::metrics::Record as _;
use filter_host::proxy_wasm::types::Action;
use filter_host::shared as shared_data;
use filter_host::sidecar::v1;
use filter_host::{http, log, state};

impl Http {
    /// The shared-data slot an exact key lives in.
    fn slot_key(&self, exact: &str) -> String {
        let h = exact
            .get(..16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        format!(
            "tollgate.response_cache.{}",
            h % u64::from(self.shared.config.slots)
        )
    }

    /// Looks the request up; returns the callback's action.
    pub(super) fn lookup(&mut self) -> Action {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let Some(k) = self.keyed.clone() else {
            return Action::Continue;
        };
        if cfg.backend == Backend::SharedData {
            let now = self.now();
            let found = shared_data::get(&self.slot_key(&k.exact))
                .ok()
                .and_then(|(v, _)| v)
                .and_then(|v| Entry::decode(&v))
                .filter(|e| e.key == k.exact && e.is_fresh(now, cfg.ttl_s));
            if let Some(e) = found {
                let age = e.age(now);
                if self.serve(&e.body, age, None) {
                    return Action::Pause;
                }
            }
        }
        let ask_sidecar = cfg.backend == Backend::Sidecar || k.semantic_text.is_some();
        let Some(sidecar) = shared.sidecar.as_ref().filter(|_| ask_sidecar) else {
            return self.miss(false);
        };
        let req = v1::CacheLookupRequest {
            scope: self.scope.clone(),
            model: k.namespace.clone(),
            key: k.exact.clone(),
            vector: Vec::new(),
            text: k.semantic_text.clone().unwrap_or_default(),
            // The lower bar: a candidate with the same content words needs only this; the
            // filter holds every other candidate to `threshold` (`verify::compare`).
            threshold: cfg.semantic.same_words_threshold,
        };
        match sidecar.cache_lookup(&req) {
            Ok(_) => {
                self.looking_up = true;
                Action::Pause
            }
            Err(e) => {
                shared.metrics.borrow().sidecar_errors.inc();
                log!(Warn, Some(self.id), "cache lookup not sent: {e}");
                self.miss(false)
            }
        }
    }

    /// Whether a semantic candidate (the cached `prompt`, at `similarity`) answers `asked`
    /// ([`decide::semantic_candidate`]); a refusal is counted and logged with its reason.
    pub(super) fn verified(&self, prompt: &str, asked: &str, similarity: f32) -> bool {
        match decide::semantic_candidate(&self.shared.config.semantic, prompt, asked, similarity) {
            Ok(()) => true,
            Err(why) => {
                if let Some(c) = why.contrast() {
                    self.shared.metrics.borrow_mut().refused.get(c.name()).inc();
                }
                log!(
                    Debug,
                    Some(self.id),
                    "semantic candidate refused at {similarity:.3}: {}",
                    why.reason()
                );
                false
            }
        }
    }

    /// Answers from the cache, as JSON or as the provider's stream. `similarity`: a semantic hit.
    /// False when the entry cannot be served to this request (then it is a miss).
    pub(super) fn serve(&mut self, body: &[u8], age: u64, similarity: Option<f32>) -> bool {
        let (Some(k), Some(provider)) = (&self.keyed, self.provider) else {
            return false;
        };
        let (payload, content_type) = if k.stream {
            match entry::to_sse(provider, body, k.include_usage) {
                Some(s) => (s, "text/event-stream"),
                None => return false,
            }
        } else {
            (body.to_vec(), "application/json")
        };
        let status = if similarity.is_some() {
            headers::cache::SEMANTIC_HIT
        } else {
            headers::cache::HIT
        };
        let age = age.to_string();
        let sim = similarity.map(|s| format!("{s:.3}"));
        let mut hdrs = vec![
            ("content-type", content_type),
            (headers::CACHE, status),
            ("age", age.as_str()),
        ];
        if let Some(s) = &sim {
            hdrs.push((SIMILARITY_HEADER, s.as_str()));
        }
        if http::send_response(self.id, 200, hdrs, Some(&payload)).is_err() {
            return false;
        }
        self.served = true;
        state::set(headers::state::CACHE, status);
        let m = self.shared.metrics.borrow();
        match similarity {
            Some(s) => {
                m.semantic_hits.inc();
                if let Some(h) = m.similarity {
                    h.record((s.clamp(0.0, 1.0) * 1000.0).round() as u64);
                }
            }
            None => m.hits.inc(),
        }
        if let (Some(t), Some(u)) = (m.tokens_saved, filter_core::usage::from_response(provider, body)) {
            t.add(i64::try_from(u.total()).unwrap_or(i64::MAX));
        }
        log!(
            Debug,
            Some(self.id),
            "served from the cache ({status}, age {age} s)"
        );
        true
    }

    /// Stores a complete response under the request's key.
    pub(super) fn store(&mut self, body: Vec<u8>) {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let (Some(k), Some(provider)) = (self.keyed.take(), self.provider) else {
            return;
        };
        if body.len() > cfg.max_entry_bytes {
            return;
        }
        if let Err(why) = entry::storable(provider, &body) {
            log!(Debug, Some(self.id), "response not stored: {why}");
            return;
        }
        let now = self.now();
        let e = Entry {
            key: k.exact.clone(),
            created: now,
            ttl: cfg.ttl_s,
            prompt: k.semantic_text.clone().unwrap_or_default(),
            body,
        };
        let encoded = e.encode();
        let m = shared.metrics.borrow();
        if cfg.backend == Backend::SharedData {
            let slot = self.slot_key(&k.exact);
            let (old, cas) = shared_data::get(&slot).unwrap_or((None, None));
            let evicts = old
                .and_then(|v| Entry::decode(&v))
                .is_some_and(|old| old.key != k.exact && old.is_fresh(now, cfg.ttl_s));
            // Conditional on what was read: when another response took the slot meanwhile, the
            // newer entry stays and the eviction count stays true.
            match shared_data::replace(&slot, &encoded, cas) {
                Ok(()) => {
                    m.stores.inc();
                    if evicts {
                        m.evictions.inc();
                    }
                    if let Some(b) = m.bytes_stored {
                        b.add(encoded.len() as i64);
                    }
                }
                Err(err) => log!(Warn, Some(self.id), "cache store in shared data failed: {err:?}"),
            }
        }
        if cfg.backend == Backend::Sidecar || k.semantic_text.is_some() {
            if cfg.backend == Backend::Sidecar {
                m.stores.inc();
                if let Some(b) = m.bytes_stored {
                    b.add(encoded.len() as i64);
                }
            }
            drop(m);
            let req = v1::CacheStoreRequest {
                scope: self.scope.clone(),
                model: k.namespace,
                key: k.exact,
                vector: Vec::new(),
                text: k.semantic_text.unwrap_or_default(),
                value: encoded,
                ttl_seconds: cfg.ttl_s,
            };
            shared.queue_store(req, self.id);
        }
    }
}
