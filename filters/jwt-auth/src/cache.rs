//! Tokens this VM has verified, so a repeated token costs one hash lookup instead of a signature
//! check. Keyed by the whole token (header, claims and signature), so an entry can only ever be
//! found by the exact bytes that were verified. Bounded: the oldest entry makes room for a new one.
//! Each entry remembers the provider and the generation of its key set; a changed key set or a
//! passed `exp` makes the entry useless and it is dropped on sight.

use crate::claims::Window;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

#[derive(Debug)]
pub struct Verified {
    pub provider: usize,
    /// The provider's key-set generation the signature was checked against.
    pub generation: u64,
    pub window: Window,
    pub claims: Map<String, Value>,
}

#[derive(Debug)]
pub struct TokenCache {
    // std's HashMap hashes with a per-process random key (WASI random in Envoy), so a client
    // cannot aim tokens at one bucket.
    map: HashMap<Rc<str>, Rc<Verified>>,
    order: VecDeque<Rc<str>>,
    capacity: usize,
    hits: u64,
    misses: u64,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::with_capacity(capacity.min(4096)),
            order: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            hits: 0,
            misses: 0,
        }
    }

    /// Lookups that found / did not find an entry since the last call.
    pub fn take_counts(&mut self) -> (u64, u64) {
        (std::mem::take(&mut self.hits), std::mem::take(&mut self.misses))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&mut self, token: &str) -> Option<Rc<Verified>> {
        let hit = self.map.get(token).cloned();
        if hit.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        hit
    }

    pub fn remove(&mut self, token: &str) {
        // The key stays in `order` until it reaches the front; `insert` skips stale keys there.
        self.map.remove(token);
    }

    pub fn insert(&mut self, token: &str, verified: Rc<Verified>) {
        if self.capacity == 0 {
            return;
        }
        if let Some(slot) = self.map.get_mut(token) {
            *slot = verified;
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        // `order` may hold keys already removed; keep it from growing past twice the capacity.
        if self.order.len() >= self.capacity.saturating_mul(2) {
            self.order.retain(|k| self.map.contains_key(k));
        }
        let key: Rc<str> = Rc::from(token);
        self.order.push_back(key.clone());
        self.map.insert(key, verified);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn entry(provider: usize) -> Rc<Verified> {
        Rc::new(Verified {
            provider,
            generation: 1,
            window: Window::default(),
            claims: Map::new(),
        })
    }

    #[test]
    fn bounded_oldest_first_and_exact_keys() {
        let mut c = TokenCache::new(2);
        c.insert("a.b.c", entry(0));
        c.insert("d.e.f", entry(1));
        assert_eq!(c.get("a.b.c").unwrap().provider, 0);
        assert!(c.get("a.b.").is_none());
        c.insert("g.h.i", entry(2));
        assert_eq!(c.len(), 2);
        assert!(c.get("a.b.c").is_none(), "oldest evicted");
        assert_eq!(c.get("g.h.i").unwrap().provider, 2);
        c.insert("g.h.i", entry(3));
        assert_eq!(c.get("g.h.i").unwrap().provider, 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.take_counts(), (3, 2));
        assert_eq!(c.take_counts(), (0, 0));
    }

    #[test]
    fn removed_keys_do_not_grow_the_queue() {
        let mut c = TokenCache::new(4);
        for i in 0..1000 {
            let k = format!("t{i}");
            c.insert(&k, entry(i));
            c.remove(&k);
        }
        assert!(c.is_empty());
        assert!(c.order.len() <= 8, "{}", c.order.len());
        let mut zero = TokenCache::new(0);
        zero.insert("x", entry(0));
        assert!(zero.get("x").is_none());
    }
}
