//! The providers' keys, from the root context: JWKS fetches through Envoy clusters (refresh, retry,
//! a refetch for an unknown `kid`), and the requests that waited for them finished in their own
//! stream contexts once they arrive. `crate::auth::KeySet` decides when to fetch.

use super::{Http, MAX_JWKS_BYTES, Metrics, Reason, Shared, TICK, TICK_NOW, finish, now_s};
use crate::auth::KeySet;
use crate::cache::TokenCache;
use crate::config::{self, KeySource};
use crate::jwks::Jwks;
use filter_host::configured::Filter;
use filter_host::metrics::{Family, Metric};
use filter_host::proxy_wasm::traits::HttpContext;
use filter_host::proxy_wasm::types::{BufferType, MapType};
use filter_host::{abi, call, log, root};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

pub(super) fn count_fetch(shared: &Shared, ok: bool) {
    if let Some(m) = shared
        .metrics
        .borrow_mut()
        .fetches
        .get(if ok { "ok" } else { "error" })
    {
        m.inc();
    }
}

/// The fetched JWKS of provider `p`, or `None` (logged at warn: status, size or parse error).
fn read_jwks(shared: &Shared, p: usize, body_size: usize) -> Option<(Jwks, u64)> {
    let provider = shared.config.providers.get(p)?;
    let KeySource::Remote(r) = &provider.keys else {
        return None;
    };
    let status = abi::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten();
    if status.as_deref() != Some("200") {
        log!(
            Warn,
            None,
            "JWKS fetch for provider {} from cluster {} failed: {}",
            provider.name,
            r.cluster,
            status.map_or_else(
                || "no response (timeout or reset)".to_owned(),
                |s| format!("status {s}")
            )
        );
        return None;
    }
    if body_size > MAX_JWKS_BYTES {
        log!(
            Warn,
            None,
            "JWKS for provider {} rejected: {body_size} bytes is over {MAX_JWKS_BYTES}",
            provider.name
        );
        return None;
    }
    let body = abi::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    match Jwks::parse(&body, false) {
        Ok((jwks, skipped)) => {
            for s in skipped {
                log!(
                    Warn,
                    None,
                    "JWKS for provider {}: key skipped at {s}",
                    provider.name
                );
            }
            log!(
                Info,
                None,
                "JWKS for provider {} loaded: {} keys",
                provider.name,
                jwks.keys.len()
            );
            Some((jwks, filter_core::hash::fnv1a(&body)))
        }
        Err(e) => {
            log!(Warn, None, "JWKS for provider {} rejected: {e}", provider.name);
            None
        }
    }
}

/// Finishes the requests that waited for provider `p`'s keys, each in its own stream context.
fn wake(shared: &Rc<Shared>, p: usize) {
    let waiting = shared
        .waiters
        .borrow_mut()
        .get_mut(p)
        .map(std::mem::take)
        .unwrap_or_default();
    for w in waiting {
        // A request whose client went away is gone; nothing to finish.
        if abi::set_effective_context(w.id).is_ok() {
            finish(w.id, shared, w.rule, w.found, true);
        }
    }
    let _ = abi::set_effective_context(shared.root_id);
}

impl Filter for Shared {
    fn configure(root_id: u32) -> Option<Self> {
        let config = filter_host::config::load(config::compile)?;
        let keys: Vec<KeySet> = config.providers.iter().map(KeySet::for_provider).collect();
        let remote = keys.iter().any(|k| k.refresh.is_some());
        let metrics = Metrics {
            allowed: Family::counter(
                "tollgate_jwt_auth_allowed",
                "provider",
                config.providers.len() + 1,
            ),
            denied: Family::counter("tollgate_jwt_auth_denied", "reason", Reason::ALL.len()),
            fetches: Family::counter("tollgate_jwt_auth_jwks_fetches", "result", 2),
            cache_hits: Metric::counter("tollgate_jwt_auth_cache_hits"),
            cache_misses: Metric::counter("tollgate_jwt_auth_cache_misses"),
        };
        // Fetched keys load at once, before traffic if the cluster is up.
        let _ = root::set_tick_period(if remote { TICK_NOW } else { TICK });
        Some(Self {
            root_id,
            native: Cell::new(config.native_verify),
            waiters: RefCell::new(config.providers.iter().map(|_| Vec::new()).collect()),
            cache: RefCell::new(TokenCache::new(config.cache_entries)),
            keys: RefCell::new(keys),
            metrics: RefCell::new(metrics),
            calls: RefCell::new(HashMap::new()),
            config,
        })
    }

    fn http_context(shared: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext> {
        Box::new(Http {
            id: context_id,
            shared: shared.clone(),
        })
    }

    fn on_tick(shared: &Rc<Self>) {
        let now = now_s();
        let due: Vec<usize> = shared
            .keys
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, k)| k.due(now))
            .map(|(i, _)| i)
            .collect();
        for p in due {
            fetch(shared, p, now);
        }
        let (hits, misses) = shared.cache.borrow_mut().take_counts();
        let m = shared.metrics.borrow();
        for (metric, n) in [(m.cache_hits, hits), (m.cache_misses, misses)] {
            if let (Some(c), true) = (metric, n > 0) {
                c.add(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        // A waiter re-queued while starting a fetch still wants one at once.
        let wanted = shared.keys.borrow().iter().any(|k| k.wanted);
        let _ = root::set_tick_period(if wanted { TICK_NOW } else { TICK });
    }

    fn on_http_call_response(
        shared: &Rc<Self>,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(p) = shared.calls.borrow_mut().remove(&token) else {
            return;
        };
        let now = now_s();
        let jwks = read_jwks(shared, p, body_size);
        count_fetch(shared, jwks.is_some());
        if let Some(k) = shared.keys.borrow_mut().get_mut(p) {
            k.finished(now, jwks);
        }
        wake(shared, p);
    }
}

/// Starts the JWKS fetch of provider `p` from the root context.
pub(super) fn fetch(shared: &Rc<Shared>, p: usize, now: u64) {
    let Some(provider) = shared.config.providers.get(p) else {
        return;
    };
    let KeySource::Remote(r) = &provider.keys else {
        return;
    };
    if let Some(k) = shared.keys.borrow_mut().get_mut(p) {
        k.started(now);
    }
    let headers = vec![
        (":method", "GET"),
        (":path", r.path.as_str()),
        (":authority", r.authority.as_str()),
        ("accept", "application/json"),
    ];
    match call::http(&r.cluster, headers, None, Duration::from_millis(r.timeout_ms)) {
        Ok(token) => {
            shared.calls.borrow_mut().insert(token, p);
        }
        Err(e) => {
            log!(
                Warn,
                None,
                "JWKS fetch for provider {} not started (cluster {}): {e}",
                provider.name,
                r.cluster
            );
            count_fetch(shared, false);
            if let Some(k) = shared.keys.borrow_mut().get_mut(p) {
                k.finished(now, None);
            }
            wake(shared, p);
        }
    }
}
