//! A request's reservations, from the first to their settlement: in shared data through
//! [`super::ledger`], or on the sidecar (asynchronous: the request waits for every answer).

use super::metrics::add;
use super::{Denial, Held, Http, ledger};
use crate::config::{Budgets, FailureMode};
use crate::decide::Refusal;
use filter_host::metrics::Record as _;
use filter_host::proxy_wasm::types::Action;
use filter_host::sidecar::{reply, v1};
use filter_host::{http, log, root};
use std::time::UNIX_EPOCH;

impl Http {
    pub(super) fn reserve_shared(&mut self, budgets: &Budgets, rules: &[usize], identity: &str) -> Action {
        let now = self.now_secs();
        let mut remaining = u64::MAX;
        for (i, rule) in rules.iter().filter_map(|&i| Some((i, budgets.rules.get(i)?))) {
            match ledger::reserve(budgets, rule, identity, now, self.amount) {
                ledger::Outcome::Reserved {
                    slot,
                    remaining: left,
                } => {
                    remaining = remaining.min(left);
                    self.held.push(Held::Shared(slot));
                }
                ledger::Outcome::Denied { used, retry_after } => {
                    self.denied = Some(Denial {
                        rule: i,
                        used,
                        retry_after,
                    });
                    return self.reject_budget();
                }
                ledger::Outcome::Failed(why) => {
                    self.shared.metrics.borrow().budget_errors.inc();
                    log!(Warn, Some(self.id), "budget `{}` store failed: {why}", rule.name);
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

    pub(super) fn reserve_sidecar(&mut self, budgets: &Budgets, rules: &[usize], identity: &str) -> Action {
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

    pub(super) fn on_reserved(&mut self, token: u32, status_code: u32, size: usize) {
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

    pub(super) fn reject_budget(&mut self) -> Action {
        self.release_all();
        let shared = self.shared.clone();
        let (Some(budgets), Some(d)) = (&shared.config.budgets, self.denied.take()) else {
            return Action::Continue;
        };
        let Some(rule) = budgets.rules.get(d.rule) else {
            return Action::Continue;
        };
        add(&mut shared.metrics.borrow_mut().budget_rejections, &rule.name, 1);
        self.refuse(&Refusal::BudgetExceeded {
            rule: rule.name.clone(),
            window: rule.window,
            used: d.used,
            limit: rule.tokens,
            needed: self.amount,
            retry_after: d.retry_after,
        })
    }

    pub(super) fn budget_unavailable(&mut self) -> Action {
        self.release_all();
        self.refuse(&Refusal::BudgetUnavailable)
    }

    pub(super) fn release_all(&mut self) {
        self.settle(0);
    }

    /// Replaces every reservation by `actual` tokens.
    pub(super) fn settle(&mut self, actual: u64) {
        let reserved = self.amount;
        for h in std::mem::take(&mut self.held) {
            match h {
                Held::Shared(slot) => {
                    if let Err(e) = ledger::settle(&slot, reserved, actual) {
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
}
