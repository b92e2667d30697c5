//! In-process state: the default when no Redis is configured (one sidecar per Envoy, or tests).

use super::{CacheEntry, Lookup, Store, Window, miss};
use crate::model::cosine;
use inference_proto::v1::{
    CacheLookupResponse, ReserveResponse, SettleResponse, cache_lookup_response::Outcome as CacheOutcome,
    settle_response::Outcome as SettleOutcome,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

struct Reservation {
    window: String,
    reserved: u64,
    allowed: bool,
    settled: bool,
    limit: u64,
    reset_at: u64,
    expires: u64,
}

#[derive(Default)]
struct Budgets {
    /// window key → (used, expires)
    windows: HashMap<String, (u64, u64)>,
    reservations: HashMap<String, Reservation>,
    ops: u64,
}

impl Budgets {
    /// Drops expired windows and reservations every 1024 operations.
    fn maybe_purge(&mut self, now: u64) {
        self.ops += 1;
        if self.ops.is_multiple_of(1024) {
            self.windows.retain(|_, (_, exp)| *exp > now);
            self.reservations.retain(|_, r| r.expires > now);
        }
    }
}

type Scope = (String, String);

#[derive(Default)]
struct Cache {
    exact: HashMap<(Scope, String), CacheEntry>,
    /// Insertion order, for eviction when full.
    order: VecDeque<(Scope, String)>,
    /// Entries with a vector, per scope and model.
    semantic: HashMap<Scope, Vec<String>>,
}

pub struct MemoryState {
    budgets: Mutex<Budgets>,
    cache: Mutex<Cache>,
    max_entries: usize,
}

impl MemoryState {
    pub fn new(max_entries: usize) -> Self {
        Self {
            budgets: Mutex::default(),
            cache: Mutex::default(),
            max_entries: max_entries.max(1),
        }
    }

    pub fn reserve(
        &self,
        request_id: &str,
        w: &Window,
        tokens: u64,
        limit: u64,
        now: u64,
    ) -> ReserveResponse {
        let Ok(mut b) = self.budgets.lock() else {
            return ReserveResponse::default();
        };
        b.maybe_purge(now);
        if let Some(r) = b.reservations.get(request_id) {
            let used = b.windows.get(&r.window).map_or(0, |w| w.0);
            return ReserveResponse {
                allowed: r.allowed,
                used,
                limit: r.limit,
                reset_seconds: r.reset_at.saturating_sub(now),
                duplicate: true,
            };
        }
        let entry = b.windows.entry(w.key.clone()).or_insert((0, now + w.ttl));
        let allowed = entry.0.saturating_add(tokens) <= limit;
        if allowed {
            entry.0 += tokens;
        }
        let used = entry.0;
        b.reservations.insert(
            request_id.to_owned(),
            Reservation {
                window: w.key.clone(),
                reserved: if allowed { tokens } else { 0 },
                allowed,
                settled: false,
                limit,
                reset_at: now + w.reset,
                expires: now + w.ttl,
            },
        );
        ReserveResponse {
            allowed,
            used,
            limit,
            reset_seconds: w.reset,
            duplicate: false,
        }
    }

    pub fn settle(&self, request_id: &str, actual: u64, now: u64) -> SettleResponse {
        let Ok(mut b) = self.budgets.lock() else {
            return SettleResponse::default();
        };
        b.maybe_purge(now);
        let Budgets {
            windows,
            reservations,
            ..
        } = &mut *b;
        let Some(r) = reservations.get_mut(request_id) else {
            // A tombstone: a reserve with this id arriving later (a slow call its filter already
            // released) is refused without a charge.
            reservations.insert(
                request_id.to_owned(),
                Reservation {
                    window: String::new(),
                    reserved: 0,
                    allowed: false,
                    settled: true,
                    limit: 0,
                    reset_at: now,
                    expires: now + super::TOMBSTONE_TTL_SECS,
                },
            );
            return SettleResponse {
                outcome: SettleOutcome::Unknown as i32,
                used: 0,
            };
        };
        let window = windows.get_mut(&r.window);
        if r.settled {
            return SettleResponse {
                outcome: SettleOutcome::Duplicate as i32,
                used: window.map_or(0, |w| w.0),
            };
        }
        r.settled = true;
        let used = match window {
            // A denied request never reached the provider; there is nothing to charge.
            Some(w) if r.allowed => {
                w.0 = (w.0 + actual).saturating_sub(r.reserved);
                w.0
            }
            Some(w) => w.0,
            None => 0,
        };
        SettleResponse {
            outcome: SettleOutcome::Settled as i32,
            used,
        }
    }

    pub fn lookup(&self, q: &Lookup<'_>, now: u64) -> CacheLookupResponse {
        let Ok(c) = self.cache.lock() else { return miss() };
        let scope = (q.scope.to_owned(), q.model.to_owned());
        if !q.key.is_empty()
            && let Some(e) = c
                .exact
                .get(&(scope.clone(), q.key.to_owned()))
                .filter(|e| e.expires > now)
        {
            return CacheLookupResponse {
                outcome: CacheOutcome::ExactHit as i32,
                value: e.value.clone(),
                similarity: 1.0,
                age_seconds: now.saturating_sub(e.created),
                key: q.key.to_owned(),
            };
        }
        let Some(v) = q.vector else { return miss() };
        let mut best: Option<(f32, &String, &CacheEntry)> = None;
        for key in c.semantic.get(&scope).into_iter().flatten() {
            let Some(e) = c
                .exact
                .get(&(scope.clone(), key.clone()))
                .filter(|e| e.expires > now)
            else {
                continue;
            };
            let Some(ev) = &e.vector else { continue };
            let sim = cosine(ev, v);
            if sim >= q.threshold && best.as_ref().is_none_or(|b| sim > b.0) {
                best = Some((sim, key, e));
            }
        }
        match best {
            Some((sim, key, e)) => CacheLookupResponse {
                outcome: CacheOutcome::SemanticHit as i32,
                value: e.value.clone(),
                similarity: sim,
                age_seconds: now.saturating_sub(e.created),
                key: key.clone(),
            },
            None => miss(),
        }
    }

    pub fn store(&self, s: Store, now: u64) -> bool {
        let Ok(mut c) = self.cache.lock() else {
            return false;
        };
        let scope = (s.scope, s.model);
        let id = (scope.clone(), s.key.clone());
        if c.exact.contains_key(&id) {
            c.order.retain(|k| *k != id);
            if let Some(keys) = c.semantic.get_mut(&scope) {
                keys.retain(|k| *k != s.key);
            }
        }
        while c.order.len() >= self.max_entries {
            let Some(old) = c.order.pop_front() else { break };
            c.exact.remove(&old);
            if let Some(keys) = c.semantic.get_mut(&old.0) {
                keys.retain(|k| *k != old.1);
            }
        }
        if s.vector.is_some() {
            c.semantic.entry(scope).or_default().push(s.key.clone());
        }
        c.exact.insert(
            id.clone(),
            CacheEntry {
                value: s.value,
                created: now,
                expires: now + s.ttl,
                vector: s.vector,
            },
        );
        c.order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_denies_over_limit_and_settle_charges_the_difference_once() {
        let m = MemoryState::new(10);
        let w = Window::new("t:acme", 60, 120);
        let r = m.reserve("r1", &w, 70, 100, 120);
        assert!(r.allowed && r.used == 70 && !r.duplicate);
        let r = m.reserve("r2", &w, 40, 100, 121);
        assert!(!r.allowed && r.used == 70);
        // A retried reserve returns the first decision and charges nothing more.
        let r = m.reserve("r1", &w, 70, 100, 121);
        assert!(r.allowed && r.duplicate && r.used == 70);
        let s = m.settle("r1", 20, 122);
        assert_eq!((s.outcome, s.used), (SettleOutcome::Settled as i32, 20));
        let s = m.settle("r1", 20, 123);
        assert_eq!((s.outcome, s.used), (SettleOutcome::Duplicate as i32, 20));
        assert_eq!(m.settle("nope", 5, 123).outcome, SettleOutcome::Unknown as i32);
        // Its reserve arriving after the release is refused and charges nothing.
        let late = m.reserve("nope", &w, 10, 100, 123);
        assert!(!late.allowed && late.duplicate, "{late:?}");
        assert_eq!(
            m.reserve("probe", &w, 0, 100, 123).used,
            20,
            "the window was not charged"
        );
        // Settling a denied reservation charges nothing.
        assert_eq!(m.settle("r2", 40, 124).used, 20);
        // The next window starts empty.
        let next = Window::new("t:acme", 60, 180);
        assert_eq!(m.reserve("r3", &next, 90, 100, 180).used, 90);
    }

    #[test]
    fn scopes_never_see_each_other_and_the_oldest_entry_is_evicted() {
        let m = MemoryState::new(2);
        let v = vec![1.0, 0.0];
        for (scope, key) in [("a", "k1"), ("b", "k2")] {
            let store = Store {
                scope: scope.into(),
                model: "m".into(),
                key: key.into(),
                vector: Some(v.clone()),
                value: scope.as_bytes().to_vec(),
                ttl: 10,
            };
            assert!(m.store(store, 0));
        }
        let q = |scope, key| Lookup {
            scope,
            model: "m",
            key,
            vector: Some(&[1.0, 0.0]),
            threshold: 0.9,
        };
        assert_eq!(m.lookup(&q("a", "k2"), 1).value, b"a");
        assert_eq!(m.lookup(&q("a", "k1"), 1).outcome, CacheOutcome::ExactHit as i32);
        assert_eq!(m.lookup(&q("c", "k1"), 1).outcome, CacheOutcome::Miss as i32);
        assert_eq!(
            m.lookup(&q("a", "k1"), 11).outcome,
            CacheOutcome::Miss as i32,
            "expired"
        );
        let store = Store {
            scope: "c".into(),
            model: "m".into(),
            key: "k3".into(),
            vector: None,
            value: vec![],
            ttl: 10,
        };
        m.store(store, 2);
        assert_eq!(
            m.lookup(&q("a", "k1"), 3).outcome,
            CacheOutcome::Miss as i32,
            "evicted"
        );
    }
}
