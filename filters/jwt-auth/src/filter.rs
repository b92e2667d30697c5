//! The proxy-wasm callbacks. Decisions are made on the request headers; a request whose provider's
//! keys are being fetched waits (paused) and is finished from the root context when they arrive, so
//! a fetch is never cancelled with the request that wanted it.

use crate::auth::{self, Decision, Found, KeySet};
use crate::cache::{TokenCache, Verified};
use crate::claims;
use crate::config::{Config, Unmatched};
use crate::native;
use crate::reason::Reason;
use filter_host::metrics::{Family, Metric, Record as _};
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::reply::{send_error, shape_of_request};
use filter_host::{HostError, abi, http, log, root, state};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

mod keys;

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
    // jwt-auth only answers while it holds the request headers: their path is readable.
    let shape = shape_of_request(id);
    if err.status() >= 500 {
        send_error(id, shape, &err, &[]);
    } else {
        send_error(id, shape, &err, &[("www-authenticate", challenge)]);
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
