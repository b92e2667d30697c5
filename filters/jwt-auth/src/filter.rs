//! The proxy-wasm callbacks. Decisions are made on the request headers; a request whose provider's
//! keys are being fetched waits (paused) and is finished from the root context when they arrive, so
//! a fetch is never cancelled with the request that wanted it.

use crate::auth::{self, Decision, Found, KeySet};
use crate::cache::{TokenCache, Verified};
use crate::claims;
use crate::config::{self, Config, KeySource, Unmatched};
use crate::jwks::Jwks;
use crate::native;
use crate::reason::Reason;
use filter_host::configured::Filter;
use filter_host::metrics::{Family, Metric, Record as _};
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::reply::send_error;
use filter_host::{HostError, abi, call, http, log, root, state};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    filter_host::configured::main::<Shared>("jwt-auth");
}}

/// Background timer of a VM with fetched keys (refresh and retry are checked at this pace).
const TICK: Duration = Duration::from_secs(1);
/// A waiting request asks the root to fetch at once.
const TICK_NOW: Duration = Duration::from_millis(1);
/// Requests that may wait for one provider's keys; more get 503 at once.
const MAX_WAITERS: usize = 4096;
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

struct Metrics {
    allowed: Family,
    denied: Family,
    fetches: Family,
    cache_hits: Option<Metric>,
    cache_misses: Option<Metric>,
}

struct Waiter {
    id: u32,
    rule: usize,
    found: Vec<Found>,
}

struct Shared {
    root_id: u32,
    /// Envoy's `verify_signature` is used while this holds (off in config, or once the host says
    /// it has no such function).
    native: Cell<bool>,
    config: Config,
    keys: RefCell<Vec<KeySet>>,
    waiters: RefCell<Vec<Vec<Waiter>>>,
    cache: RefCell<TokenCache>,
    metrics: RefCell<Metrics>,
    /// The root's JWKS fetches in flight: call token → provider.
    calls: RefCell<HashMap<u32, usize>>,
}

/// Seconds since the epoch. A clock the host cannot give reads as the end of time, so every token
/// with an `exp` is expired (fail closed).
fn now_s() -> u64 {
    abi::current_time_ns().map_or(u64::MAX, |ns| ns / 1_000_000_000)
}

fn count_fetch(shared: &Shared, ok: bool) {
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
fn fetch(shared: &Rc<Shared>, p: usize, now: u64) {
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

struct Http {
    id: u32,
    shared: Rc<Shared>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_log(&mut self) {
        // The stream is ending: a request still waiting for keys must not be resumed or counted.
        for list in self.shared.waiters.borrow_mut().iter_mut() {
            list.retain(|w| w.id != self.id);
        }
    }

    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let Ok(headers) = http::request_headers(self.id) else {
            return deny(self.id, &shared, Reason::HeaderEdit);
        };
        // Only this filter says who the caller is: every client-sent copy goes first, also when
        // spelt with `_` (frameworks that read `x_tollgate_subject` as `x-tollgate-subject`).
        for (name, _) in &headers {
            let spelt = |h: &String| {
                h.len() == name.len()
                    && h.bytes()
                        .zip(name.bytes())
                        .all(|(a, b)| a == b || (a == b'-' && b == b'_'))
            };
            if cfg.strip.iter().any(spelt) && http::set_request_header(self.id, name, None).is_err() {
                return deny(self.id, &shared, Reason::HeaderEdit);
            }
        }
        let path = headers
            .iter()
            .find(|(n, _)| n == ":path")
            .map_or("", |(_, v)| v.as_str());
        let route_path = path.split('?').next().unwrap_or("");
        let Some(rule) = cfg.rules.iter().position(|r| r.matcher.matches(route_path)) else {
            return match cfg.unmatched {
                Unmatched::Allow => Action::Continue,
                Unmatched::Deny => deny(self.id, &shared, Reason::NoRule),
            };
        };
        let Some(r) = cfg.rules.get(rule) else {
            return Action::Continue;
        };
        let found = auth::extract(cfg, r, &headers, path);
        finish(self.id, &shared, rule, found, false)
    }
}

/// Decides and acts on the request in the current effective context. `resumed`: the request was
/// paused waiting for keys and must be resumed when allowed.
fn finish(id: u32, shared: &Rc<Shared>, rule: usize, found: Vec<Found>, resumed: bool) -> Action {
    let cfg = &shared.config;
    let Some(r) = cfg.rules.get(rule) else {
        return Action::Continue;
    };
    let decision = {
        let mut keys = shared.keys.borrow_mut();
        let mut cache = shared.cache.borrow_mut();
        auth::decide(
            cfg,
            r,
            &found,
            &mut keys,
            &mut cache,
            now_s(),
            &mut |hash, spki, sig, text| native_verify(shared, hash, spki, sig, text),
        )
    };
    match decision {
        Decision::Allow { identity } => {
            if allow(id, shared, &r.requires, identity.as_deref()).is_err() {
                return deny(id, shared, Reason::HeaderEdit);
            }
            // A failure is logged; the stream then ends by Envoy's timeouts, never unauthenticated.
            if resumed {
                let _ = http::resume_request(id);
            }
            Action::Continue
        }
        Decision::Deny(reason) => deny(id, shared, reason),
        Decision::Wait(p) => {
            let mut waiters = shared.waiters.borrow_mut();
            let Some(list) = waiters.get_mut(p) else {
                drop(waiters);
                return deny(id, shared, Reason::JwksUnavailable);
            };
            if list.len() >= MAX_WAITERS {
                drop(waiters);
                return deny(id, shared, Reason::JwksUnavailable);
            }
            list.push(Waiter { id, rule, found });
            drop(waiters);
            let wanted = shared.keys.borrow().get(p).is_some_and(|k| k.wanted);
            if wanted {
                // The fetch starts from the root (a request's own call dies with the request).
                root::wake(shared.root_id, id, TICK_NOW);
            }
            Action::Pause
        }
    }
}

/// Envoy's BoringSSL check; `None` lets Rust verify.
fn native_verify(shared: &Shared, hash: &str, spki: &[u8], sig: &[u8], text: &[u8]) -> Option<bool> {
    if !shared.native.get() {
        return None;
    }
    let args = native::arguments(hash, spki, sig, text);
    match abi::call_foreign_function(native::FUNCTION, &args) {
        Ok(Some(reply)) => native::result(&reply),
        Ok(None) => None,
        Err(Status::NotFound) => {
            log!(
                Info,
                None,
                "this Envoy has no {}: signatures are verified in Rust",
                native::FUNCTION
            );
            shared.native.set(false);
            None
        }
        // The host did not take the key: Rust decides.
        Err(_) => None,
    }
}

fn deny(id: u32, shared: &Shared, reason: Reason) -> Action {
    shared.metrics.borrow_mut().denied.get(reason.name()).inc();
    let challenge = shared.config.challenge(reason.bearer_error());
    let err = reason.to_api();
    if err.status() >= 500 {
        send_error(id, &err, &[]);
    } else {
        send_error(id, &err, &[("www-authenticate", challenge)]);
    }
    Action::Pause
}

/// Sets the identity headers and filter state from the verified claims, and removes the tokens
/// (of every provider the rule names that does not forward them; on an anonymous pass too, so an
/// unverified token never reaches the upstream).
/// `Err` when Envoy refused a header edit: the caller denies the request.
fn allow(
    id: u32,
    shared: &Shared,
    rule_providers: &[usize],
    identity: Option<&Verified>,
) -> Result<(), HostError> {
    let cfg = &shared.config;
    let name = identity
        .and_then(|v| cfg.providers.get(v.provider))
        .map_or("none", |p| p.name.as_str());
    shared.metrics.borrow_mut().allowed.get(name).inc();
    if let Some(v) = identity
        && let Some(provider) = cfg.providers.get(v.provider)
    {
        for (claim, header) in &provider.claim_to_headers {
            if let Some(value) = claims::lookup(&v.claims, claim).and_then(claims::header_value) {
                http::set_request_header(id, header, Some(&value))?;
            }
        }
        for (claim, key) in &provider.claims_to_state {
            if let Some(value) = claims::lookup(&v.claims, claim).and_then(claims::header_value) {
                state::set(key, &value);
            }
        }
        state::set(filter_core::headers::state::AUTH_PROVIDER, &provider.name);
    }
    for provider in rule_providers.iter().filter_map(|&p| cfg.providers.get(p)) {
        if provider.forward {
            continue;
        }
        for (name, prefix) in &provider.from_headers {
            let carries = http::request_header(id, name).is_some_and(|v| {
                v.len() > prefix.len()
                    && v.get(..prefix.len())
                        .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
            });
            if carries {
                http::set_request_header(id, name, None)?;
            }
        }
        if !provider.from_params.is_empty()
            && let Some(path) = http::request_header(id, ":path")
            && let Some(stripped) = auth::without_params(&path, &provider.from_params)
        {
            http::set_request_header(id, ":path", Some(&stripped))?;
        }
    }
    Ok(())
}
