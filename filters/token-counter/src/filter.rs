//! The proxy-wasm callbacks: they fetch bytes from Envoy, call the pure modules and turn the result
//! into an `Action` or a local reply. Kept out of `lib.rs` so the pure modules' tests also run as
//! wasm under Node, which has no proxy-wasm host to import from.

use crate::budget;
use crate::config::{self, Backend, Budgets, Config, FailureMode, MissingIdentity, Price};
use crate::count::{self, Counter};
use crate::response::{Chunk, Tap};
use filter_core::api::{Provider, Request, openai};
use filter_core::error::redact_quoted;
use filter_core::hash::fnv1a;
use filter_core::usage::TokenUsage;
use filter_core::{ApiError, ErrorKind, headers};
use filter_host::body::{self, Body};
use filter_host::metrics::{Family, Metric, Record as _};
use filter_host::proxy_wasm::{self, traits::*, types::*};
use filter_host::reply::send_error;
use filter_host::sidecar::{Sidecar, reply, v1};
use filter_host::{http, log, root, shared, state};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    filter_host::init("token-counter");
    proxy_wasm::set_root_context(|_| Box::new(Root { shared: None }));
}}

/// CAS attempts on one budget slot before the store counts as failing.
const CAS_ATTEMPTS: u32 = 32;

struct Shared {
    config: Config,
    counter: RefCell<Counter>,
    metrics: RefCell<Metrics>,
    sidecar: Option<Sidecar>,
    /// Sidecar settlements waiting for the root context's next tick: a stream context's own calls
    /// are cancelled when it is destroyed, and settlement must outlive an aborted request.
    settle_queue: RefCell<Vec<v1::SettleRequest>>,
}

struct Metrics {
    prompt_tokens: Family,
    completion_tokens: Family,
    cache_read_tokens: Family,
    cache_write_tokens: Family,
    cost_micro_usd: Family,
    tenant_tokens: Family,
    tenant_cost_micro_usd: Family,
    context_rejections: Family,
    budget_rejections: Family,
    invalid_requests: Option<Metric>,
    responses_without_usage: Option<Metric>,
    aborted: Option<Metric>,
    streams_cut: Option<Metric>,
    usage_chunks_removed: Option<Metric>,
    budget_errors: Option<Metric>,
    count_cache_hits: Option<Metric>,
    count_cache_misses: Option<Metric>,
    table_load_ms: Option<Metric>,
}

impl Metrics {
    fn new(rules: usize, max_tenants: usize) -> Self {
        const MODELS: usize = 64;
        let model = |what: &str| Family::counter(format!("tollgate_token_counter_{what}"), "model", MODELS);
        let counter = |what: &str| Metric::counter(&format!("tollgate_token_counter_{what}"));
        Self {
            prompt_tokens: model("prompt_tokens"),
            completion_tokens: model("completion_tokens"),
            cache_read_tokens: model("cache_read_tokens"),
            cache_write_tokens: model("cache_write_tokens"),
            cost_micro_usd: model("cost_micro_usd"),
            tenant_tokens: Family::counter("tollgate_token_counter_tenant_tokens", "tenant", max_tenants),
            tenant_cost_micro_usd: Family::counter(
                "tollgate_token_counter_tenant_cost_micro_usd",
                "tenant",
                max_tenants,
            ),
            context_rejections: model("context_rejections"),
            budget_rejections: Family::counter(
                "tollgate_token_counter_budget_rejections",
                "rule",
                rules.max(1),
            ),
            invalid_requests: counter("invalid_requests"),
            responses_without_usage: counter("responses_without_usage"),
            aborted: counter("aborted"),
            streams_cut: counter("streams_cut"),
            usage_chunks_removed: counter("usage_chunks_removed"),
            budget_errors: counter("budget_errors"),
            count_cache_hits: counter("count_cache_hits"),
            count_cache_misses: counter("count_cache_misses"),
            table_load_ms: Metric::histogram("tollgate_token_counter_table_load_ms"),
        }
    }
}

fn add(f: &mut Family, model: &str, n: u64) {
    if n > 0
        && let Some(m) = f.get(model)
    {
        m.add(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

struct Root {
    shared: Option<Rc<Shared>>,
}

/// Creates every rule's slot keys, empty, so that every ledger write after them is conditional
/// (`filter_host::shared`). A marker per rule records the slot count done, so worker VMs (and
/// reloads with the same slots) skip the loop the main thread's canary VM already ran.
fn create_slots(b: &Budgets) -> Result<(), shared::SharedError> {
    let slots = b.slots.to_le_bytes();
    for rule in &b.rules {
        let marker = format!("{}created", rule.key_prefix);
        if shared::get(&marker)?.0.as_deref() == Some(&slots[..]) {
            continue;
        }
        let mut key = String::with_capacity(rule.key_prefix.len() + 5);
        for slot in 0..b.slots {
            key.clear();
            key.push_str(&rule.key_prefix);
            key.push_str(&slot.to_string());
            shared::create(&key, &[])?;
        }
        shared::replace(&marker, &slots, None)?;
    }
    Ok(())
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, size: usize) {
        // Settlements: the sidecar's answer only matters for the log.
        if let Err(e) = reply::<v1::SettleResponse>(status_code, size) {
            log!(Warn, None, "budget settle failed: {e}");
            if let Some(s) = &self.shared {
                s.metrics.borrow().budget_errors.inc();
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = filter_host::config::load(config::compile) else {
            return false;
        };
        let rules = config.budgets.as_ref().map_or(0, |b| b.rules.len());
        let sidecar = config
            .budgets
            .as_ref()
            .filter(|b| b.backend == Backend::Sidecar)
            .map(|b| Sidecar::new(b.sidecar.clone()));
        if sidecar.is_some() {
            let _ = root::set_tick_period(Duration::from_millis(100));
        }
        if let Some(b) = config
            .budgets
            .as_ref()
            .filter(|b| b.backend == Backend::SharedData)
            && let Err(e) = create_slots(b)
        {
            log!(
                Critical,
                None,
                "budget slots could not be created in shared data: {e}"
            );
            return false;
        }
        self.shared = Some(Rc::new(Shared {
            counter: RefCell::new(Counter::new(config.count_cache_entries)),
            metrics: RefCell::new(Metrics::new(
                rules,
                config.tenant_metrics.as_ref().map_or(1, |t| t.max_tenants),
            )),
            config,
            sidecar,
            settle_queue: RefCell::new(Vec::new()),
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(s) = &self.shared else { return };
        let Some(sidecar) = &s.sidecar else { return };
        let queue = std::mem::take(&mut *s.settle_queue.borrow_mut());
        for req in &queue {
            if let Err(e) = sidecar.settle(req) {
                log!(Warn, None, "budget settle not sent: {e}");
                s.metrics.borrow().budget_errors.inc();
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Http {
            id: context_id,
            shared,
            provider: None,
            model: String::new(),
            price: None,
            counted: None,
            identity: None,
            tenant: None,
            request_id: String::new(),
            amount: 0,
            held: Vec::new(),
            pending: HashMap::new(),
            denied: None,
            remaining: None,
            drop_usage_chunk: false,
            tap: None,
            status: None,
            finished: false,
            replied: false,
            forwarded: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A reservation this request holds.
#[derive(Debug)]
enum Held {
    Shared { key: String, id: u64, window_start: u64 },
    Sidecar { request_id: String },
}

/// Why a budget refused the request.
struct Denial {
    rule: usize,
    used: u64,
    retry_after: u64,
}

struct Http {
    id: u32,
    shared: Rc<Shared>,
    provider: Option<Provider>,
    model: String,
    price: Option<Price>,
    counted: Option<u64>,
    identity: Option<String>,
    tenant: Option<String>,
    request_id: String,
    /// Tokens reserved per rule (prompt + completion limit or estimate).
    amount: u64,
    held: Vec<Held>,
    /// Sidecar reservations in flight: call token → rule index.
    pending: HashMap<u32, usize>,
    denied: Option<Denial>,
    remaining: Option<u64>,
    drop_usage_chunk: bool,
    tap: Option<Tap>,
    status: Option<u32>,
    finished: bool,
    replied: bool,
    /// The request went on to the upstream (all reservations made).
    forwarded: bool,
}

impl Http {
    fn reply(&mut self, err: &ApiError, extra: &[(&str, &str)]) -> Action {
        self.replied = true;
        send_error(self.id, err, extra);
        Action::Pause
    }

    fn now_secs(&self) -> u64 {
        root::now_secs()
    }

    fn on_request(&mut self, provider: Provider, mut body: Vec<u8>) -> Action {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let mut req = match Request::parse(provider, &body) {
            Ok(r) => r,
            Err(e) => {
                shared.metrics.borrow().invalid_requests.inc();
                // The parser quotes values it rejects: keep prompt text out of the reply's log line.
                return self.reply(
                    &ApiError::invalid_request(
                        "invalid_request_body",
                        format!("invalid request body: {}", redact_quoted(&e.to_string())),
                    ),
                    &[],
                );
            }
        };
        self.model = req.model().to_owned();
        let entry = cfg.model(&self.model);
        self.price = entry.and_then(|m| m.price);
        let encoding = cfg.encoding_for(&self.model, entry);

        let loaded_before = count::is_loaded(encoding);
        let started = root::now();
        let counted = shared.counter.borrow_mut().prompt(encoding, &req);
        let counted = match counted {
            Ok(n) => n,
            Err(e) => {
                // Cannot happen with the embedded tables; fail open rather than stop traffic.
                log!(Error, Some(self.id), "not counted: {e}");
                return Action::Continue;
            }
        };
        {
            let m = shared.metrics.borrow();
            if !loaded_before {
                if let (Some(h), Ok(d)) = (m.table_load_ms, root::now().duration_since(started)) {
                    h.record(d.as_millis() as u64);
                }
                log!(Info, Some(self.id), "{} table built for this VM", encoding.name());
            }
            let mut c = shared.counter.borrow_mut();
            let (hits, misses) = (std::mem::take(&mut c.hits), std::mem::take(&mut c.misses));
            for (metric, n) in [(m.count_cache_hits, hits), (m.count_cache_misses, misses)] {
                if let (Some(metric), Ok(n)) = (metric, i64::try_from(n)) {
                    metric.add(n);
                }
            }
        }
        self.counted = Some(counted);
        state::set(headers::state::MODEL, &self.model);
        state::set(headers::state::COUNTED_PROMPT_TOKENS, &counted.to_string());

        let max_out = req.max_output_tokens();
        if let Some(limit) = entry.and_then(|m| m.max_context_tokens) {
            let total = counted.saturating_add(max_out.unwrap_or(0));
            if total > limit {
                add(
                    &mut shared.metrics.borrow_mut().context_rejections,
                    &self.model,
                    1,
                );
                let msg = match max_out {
                    Some(out) => format!(
                        "This model's maximum context length is {limit} tokens. However, you requested {total} tokens ({counted} in the messages, {out} in the completion). Please reduce the length of the messages or completion."
                    ),
                    None => format!(
                        "This model's maximum context length is {limit} tokens. However, your messages resulted in {counted} tokens. Please reduce the length of the messages."
                    ),
                };
                return self.reply(&ApiError::invalid_request("context_length_exceeded", msg), &[]);
            }
        }

        if self.wants_usage_injection(&mut req) {
            match req.to_vec() {
                Ok(new_body) => {
                    if let Err(s) = body::replace(BufferType::HttpRequestBody, body.len(), &new_body) {
                        log!(Error, Some(self.id), "cannot rewrite the body: {s:?}");
                    } else {
                        self.drop_usage_chunk = true;
                        body = new_body;
                    }
                }
                Err(e) => log!(Error, Some(self.id), "cannot serialise the body: {e}"),
            }
        }
        drop(body);

        let Some(budgets) = &cfg.budgets else {
            return Action::Continue;
        };
        let completion = match &req {
            Request::Embeddings(_) => 0,
            // Each of `n` choices (`best_of` candidates) may use the whole completion budget.
            _ => match choices(&req) {
                Ok(n) => max_out.unwrap_or(cfg.completion_estimate).saturating_mul(n),
                Err(e) => return self.reply(&e, &[]),
            },
        };
        self.amount = counted.saturating_add(completion);
        let group = entry.and_then(|m| m.group.as_deref());
        let rules: Vec<usize> = budgets
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.group.is_none() || r.group.as_deref() == group)
            .map(|(i, _)| i)
            .collect();
        if rules.is_empty() {
            return Action::Continue;
        }
        let identity = match self.identity.clone() {
            Some(i) => i,
            None if budgets.missing_identity == MissingIdentity::Anonymous => "anonymous".to_owned(),
            None => {
                return self.reply(
                    &ApiError::new(
                        ErrorKind::Authentication,
                        "identity_required",
                        format!("token budgets need an identity in `{}`", budgets.identity_header),
                    ),
                    &[],
                );
            }
        };
        match budgets.backend {
            Backend::SharedData => self.reserve_shared(budgets, &rules, &identity),
            Backend::Sidecar => self.reserve_sidecar(budgets, &rules, &identity),
        }
    }

    /// OpenAI streams report usage only when asked: ask, and remember to hide the extra chunk.
    fn wants_usage_injection(&self, req: &mut Request) -> bool {
        let opts = match req {
            Request::Chat(r) if r.stream == Some(true) => &mut r.stream_options,
            Request::Completions(r) if r.stream == Some(true) => &mut r.stream_options,
            _ => return false,
        };
        let asked = opts.as_ref().and_then(|o| o.include_usage) == Some(true);
        if asked {
            return false;
        }
        opts.get_or_insert_with(|| openai::StreamOptions {
            include_usage: None,
            extra: Default::default(),
        })
        .include_usage = Some(true);
        true
    }

    fn reserve_shared(&mut self, budgets: &Budgets, rules: &[usize], identity: &str) -> Action {
        let now = self.now_secs();
        let id = fnv1a(identity.as_bytes());
        let slot = id % u64::from(budgets.slots);
        let mut remaining = u64::MAX;
        for &i in rules {
            let Some(rule) = budgets.rules.get(i) else {
                continue;
            };
            let window = rule.window.seconds();
            let key = format!("{}{slot}", rule.key_prefix);
            let mut decision = None;
            let res = shared::update(&key, CAS_ATTEMPTS, |cur| {
                let (d, next) = budget::reserve(cur, id, now, window, rule.tokens, self.amount);
                decision = Some(d);
                next
            });
            match (res, decision) {
                (Ok(true), Some(budget::Reserve::Allowed { used })) => {
                    remaining = remaining.min(rule.tokens - used);
                    self.held.push(Held::Shared {
                        key,
                        id,
                        window_start: budget::window_start(now, window),
                    });
                }
                (Ok(false), Some(budget::Reserve::Denied { used, retry_after })) => {
                    self.denied = Some(Denial {
                        rule: i,
                        used,
                        retry_after,
                    });
                    return self.reject_budget();
                }
                (res, decision) => {
                    self.shared.metrics.borrow().budget_errors.inc();
                    log!(
                        Warn,
                        Some(self.id),
                        "budget `{}` store failed: {res:?} {decision:?}",
                        rule.name
                    );
                    if budgets.failure_mode == FailureMode::Closed {
                        return self.budget_unavailable();
                    }
                }
            }
        }
        self.remaining = (remaining != u64::MAX).then_some(remaining);
        self.forwarded = true;
        Action::Continue
    }

    fn reserve_sidecar(&mut self, budgets: &Budgets, rules: &[usize], identity: &str) -> Action {
        let Some(sidecar) = &self.shared.sidecar else {
            return Action::Continue;
        };
        // Reserve is idempotent per id, so the id must be ours alone: a client that resent an
        // x-request-id must not get a second request on the first one's reservation.
        let nanos = root::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        self.request_id = format!("{}:{nanos:x}:{}", self.request_id, self.id);
        for &i in rules {
            let Some(rule) = budgets.rules.get(i) else {
                continue;
            };
            let req = v1::ReserveRequest {
                request_id: format!("{}/{}", self.request_id, rule.name),
                budget: format!("{}/{identity}", rule.name),
                tokens: self.amount,
                limit: rule.tokens,
                window_seconds: rule.window.seconds() as u32,
            };
            match sidecar.reserve(&req) {
                Ok(token) => {
                    self.pending.insert(token, i);
                    // Held from the moment it is sent: whatever happens next (a denial on another
                    // rule, a 503, the client leaving) releases it; an id the sidecar never
                    // reserved settles as `UNKNOWN`, harmlessly.
                    self.held.push(Held::Sidecar {
                        request_id: req.request_id.clone(),
                    });
                }
                Err(e) => {
                    self.shared.metrics.borrow().budget_errors.inc();
                    log!(Warn, Some(self.id), "budget `{}`: {e}", rule.name);
                    if budgets.failure_mode == FailureMode::Closed {
                        return self.budget_unavailable();
                    }
                }
            }
        }
        if self.pending.is_empty() {
            self.forwarded = true;
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_reserved(&mut self, token: u32, status_code: u32, size: usize) {
        let Some(rule_idx) = self.pending.remove(&token) else {
            return;
        };
        if self.finished || self.replied {
            // Answered already (our reply, or Envoy's); its reservations were released.
            return;
        }
        let shared = self.shared.clone();
        let Some(budgets) = &shared.config.budgets else {
            return;
        };
        let Some(rule) = budgets.rules.get(rule_idx) else {
            return;
        };
        match reply::<v1::ReserveResponse>(status_code, size) {
            Ok(r) if r.allowed => {
                let left = rule.tokens.saturating_sub(r.used);
                self.remaining = Some(self.remaining.map_or(left, |x| x.min(left)));
            }
            Ok(r) => {
                if self.denied.is_none() {
                    self.denied = Some(Denial {
                        rule: rule_idx,
                        used: r.used,
                        retry_after: r.reset_seconds.max(1),
                    });
                }
            }
            Err(e) => {
                shared.metrics.borrow().budget_errors.inc();
                log!(Warn, Some(self.id), "budget `{}`: {e}", rule.name);
                if budgets.failure_mode == FailureMode::Closed && !self.replied {
                    let _ = self.budget_unavailable();
                }
            }
        }
        if !self.pending.is_empty() || self.replied {
            return;
        }
        if self.denied.is_some() {
            let _ = self.reject_budget();
        } else {
            self.forwarded = true;
            // A failure is logged; the stream then ends by Envoy's timeouts.
            let _ = http::resume_request(self.id);
        }
    }

    fn reject_budget(&mut self) -> Action {
        self.release_all();
        let shared = self.shared.clone();
        let (Some(budgets), Some(d)) = (&shared.config.budgets, self.denied.take()) else {
            return Action::Continue;
        };
        let Some(rule) = budgets.rules.get(d.rule) else {
            return Action::Continue;
        };
        add(&mut shared.metrics.borrow_mut().budget_rejections, &rule.name, 1);
        let window = match rule.window {
            config::Window::Minute => "minute",
            config::Window::Hour => "hour",
            config::Window::Day => "day",
        };
        let msg = format!(
            "token budget `{}` exhausted: {} of {} tokens used this {window}, this request needs {}; retry after {} s",
            rule.name, d.used, rule.tokens, self.amount, d.retry_after
        );
        let retry = d.retry_after.to_string();
        self.reply(
            &ApiError::new(ErrorKind::RateLimited, "budget_exceeded", msg),
            &[("retry-after", &retry)],
        )
    }

    fn budget_unavailable(&mut self) -> Action {
        self.release_all();
        self.reply(
            &ApiError::new(
                ErrorKind::Unavailable,
                "budget_unavailable",
                "the token budget store did not answer",
            ),
            &[],
        )
    }

    fn release_all(&mut self) {
        self.settle(0);
    }

    /// Replaces every reservation by `actual` tokens.
    fn settle(&mut self, actual: u64) {
        let reserved = self.amount;
        for h in std::mem::take(&mut self.held) {
            match h {
                Held::Shared {
                    key,
                    id,
                    window_start,
                } => {
                    let res = shared::update(&key, CAS_ATTEMPTS, |cur| {
                        budget::settle(cur, id, window_start, reserved, actual)
                    });
                    if let Err(e) = res {
                        self.shared.metrics.borrow().budget_errors.inc();
                        log!(Warn, Some(self.id), "budget settle failed: {e:?}");
                    }
                }
                Held::Sidecar { request_id } => {
                    self.shared.settle_queue.borrow_mut().push(v1::SettleRequest {
                        request_id,
                        actual_tokens: actual,
                    });
                }
            }
        }
    }

    /// The response has ended: report usage and cost, settle with the real numbers.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let usage = self.tap.as_ref().and_then(Tap::usage);
        let ok = self.status.is_some_and(|s| (200..300).contains(&s));
        if self.tap.as_ref().is_some_and(|t| t.cut) {
            self.shared.metrics.borrow().streams_cut.inc();
        }
        match usage {
            Some(u) => {
                self.report(&u);
                self.settle(u.total());
            }
            None if ok => {
                // A success without usage: the reservation stands as the charge.
                self.shared.metrics.borrow().responses_without_usage.inc();
                self.held.clear();
            }
            // The provider does not bill errors.
            None => self.release_all(),
        }
    }

    fn report(&self, u: &TokenUsage) {
        let mut m = self.shared.metrics.borrow_mut();
        let model = self.model.as_str();
        add(&mut m.prompt_tokens, model, u.total_input());
        add(&mut m.completion_tokens, model, u.output_tokens);
        add(&mut m.cache_read_tokens, model, u.cache_read_tokens);
        add(&mut m.cache_write_tokens, model, u.cache_write_tokens);
        state::set(headers::state::PROMPT_TOKENS, &u.total_input().to_string());
        state::set(headers::state::COMPLETION_TOKENS, &u.output_tokens.to_string());
        state::set(
            headers::state::CACHE_READ_TOKENS,
            &u.cache_read_tokens.to_string(),
        );
        state::set(
            headers::state::CACHE_WRITE_TOKENS,
            &u.cache_write_tokens.to_string(),
        );
        let micro_usd = self.price.map(|p| {
            let usd = p.cost(u);
            state::set(headers::state::COST_USD, &format!("{usd:.6}"));
            (usd * 1e6).round() as u64
        });
        if let Some(micro) = micro_usd {
            add(&mut m.cost_micro_usd, model, micro);
        }
        if let Some(t) = self.tenant.as_deref() {
            add(&mut m.tenant_tokens, t, u.total());
            if let Some(micro) = micro_usd {
                add(&mut m.tenant_cost_micro_usd, t, micro);
            }
        }
    }
}

/// Completions the provider generates for `req`: `n` choices, or `best_of` candidates. Anything but
/// an integer in 1..=128 is refused: some OpenAI-compatible servers read `8.0` or `"8"` as 8.
fn choices(req: &Request) -> Result<u64, ApiError> {
    let extra = match req {
        Request::Chat(r) => &r.extra,
        Request::Completions(r) => &r.extra,
        _ => return Ok(1),
    };
    let mut n = 1;
    for key in ["n", "best_of"] {
        match extra.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => match v.as_u64().filter(|x| (1..=128).contains(x)) {
                Some(x) => n = n.max(x),
                None => {
                    return Err(ApiError::invalid_request(
                        "invalid_request_body",
                        format!("`{key}` must be an integer from 1 to 128"),
                    ));
                }
            },
        }
    }
    Ok(n)
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, size: usize) {
        self.on_reserved(token, status_code, size);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        if end_of_stream || http::request_header(self.id, ":method").as_deref() != Some("POST") {
            return Action::Continue;
        }
        let Some(path) = http::request_header(self.id, ":path") else {
            return Action::Continue;
        };
        self.provider = Provider::from_path(&path);
        if self.provider.is_none() {
            return Action::Continue;
        }
        if let Some(t) = &self.shared.config.tenant_metrics {
            self.tenant = http::request_header(self.id, &t.header).filter(|v| !v.is_empty());
        }
        if let Some(b) = &self.shared.config.budgets {
            self.identity = http::request_header(self.id, &b.identity_header).filter(|v| !v.is_empty());
            if b.backend == Backend::Sidecar {
                self.request_id = http::request_header(self.id, "x-request-id").unwrap_or_default();
            }
        }
        // The body may be rewritten (stream_options.include_usage) after these headers went on.
        let _ = http::set_request_header(self.id, "content-length", None);
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        if self.replied || !self.pending.is_empty() {
            return Action::Pause;
        }
        if self.counted.is_some() {
            return Action::Continue;
        }
        let limit = self.shared.config.max_body_bytes;
        match body::collect(BufferType::HttpRequestBody, body_size, end_of_stream, limit) {
            Body::Wait(a) => a,
            Body::TooLarge(e) => self.reply(&e, &[]),
            Body::Complete(b) => {
                let action = self.on_request(provider, b);
                if action == Action::Continue {
                    self.forwarded = true;
                }
                action
            }
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let Some(provider) = self.provider else {
            return Action::Continue;
        };
        if self.replied {
            return Action::Continue;
        }
        self.status = http::response_header(self.id, ":status").and_then(|s| s.parse().ok());
        let ct = http::response_header(self.id, "content-type").unwrap_or_default();
        let ok = self.status == Some(200);
        let tap = Tap::new(provider, &ct, self.drop_usage_chunk && ok);
        if tap.rewrites() {
            let _ = http::set_response_header(self.id, "content-length", None);
        }
        self.tap = Some(tap);
        if self.shared.config.response_headers {
            if let Some(n) = self.counted {
                let _ = http::set_response_header(self.id, headers::PROMPT_TOKENS, Some(&n.to_string()));
            }
            if let Some(r) = self.remaining {
                let _ = http::set_response_header(self.id, headers::BUDGET_REMAINING, Some(&r.to_string()));
            }
        }
        if end_of_stream {
            self.finish();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.tap.is_none() {
            return Action::Continue;
        }
        let bytes = if body_size == 0 {
            Vec::new()
        } else {
            http::response_body(self.id, 0, body_size).unwrap_or_default()
        };
        let Some(tap) = self.tap.as_mut() else {
            return Action::Continue;
        };
        if let Chunk::Replace(out) = tap.chunk(&bytes, end_of_stream) {
            if out.len() != bytes.len() {
                self.shared.metrics.borrow().usage_chunks_removed.inc();
            }
            if out != bytes {
                let _ = http::set_response_body(self.id, 0, body_size, &out);
            }
        }
        if end_of_stream {
            self.finish();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // A local reply of ours released its reservations already.
        if self.finished || self.provider.is_none() || self.replied {
            return;
        }
        self.finished = true;
        if !self.forwarded {
            // Ended while reservations were being made: the provider never saw it.
            self.release_all();
            return;
        }
        // The stream ended early (client gone, upstream reset). An error status means the provider
        // billed nothing. OpenAI's usage chunk is final, so with it the charge is exact; otherwise
        // the provider may have billed, and the reservation stands.
        self.shared.metrics.borrow().aborted.inc();
        if self.tap.is_some() && self.status.is_some_and(|s| (200..300).contains(&s)) {
            self.shared.metrics.borrow().streams_cut.inc();
        }
        let usage = self.tap.as_ref().and_then(Tap::usage);
        match (self.status, usage) {
            (Some(s), _) if !(200..300).contains(&s) => self.release_all(),
            (_, Some(u)) if self.provider.is_some_and(Provider::is_openai) => {
                self.report(&u);
                self.settle(u.total());
            }
            (_, Some(u)) => {
                self.report(&u);
                self.held.clear();
            }
            (_, None) => self.held.clear(),
        }
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        if self.provider.is_none() || self.counted.is_some() || self.replied {
            return Action::Continue;
        }
        // The body ended without end_of_stream (trailers follow): counting would be skipped.
        self.reply(
            &ApiError::invalid_request(
                "trailers_not_supported",
                "request trailers are not supported on LLM API requests",
            ),
            &[],
        )
    }
}
