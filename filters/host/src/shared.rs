//! Envoy shared data (one key-value store per Envoy, shared by all VMs with the same `vm_id`), with
//! compare-and-swap. Keys cannot be deleted, so callers keep a bounded key space.
//!
//! Envoy's CAS has one gap: a write to a key that does not exist yet always succeeds, whatever CAS
//! it carries. Two workers making the first write to a fresh key at once would both succeed, and
//! one write would be lost. So a value that accumulates (a budget ledger) is never written to a
//! missing key: its keys are created empty at configure time with [`create`], and [`update`]
//! refuses a missing key. Envoy runs a plugin's first `on_configure` in a canary VM on the main
//! thread, before any worker VM of that plugin exists, so the creation is not raced by requests.

use crate::abi;
use proxy_wasm::types::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SharedError {
    /// Someone else wrote the key since it was read; read again and retry.
    #[error("shared data: the key changed since it was read (CAS mismatch)")]
    CasMismatch,
    /// [`update`] on a key that was never created.
    #[error("shared data: the key was never created")]
    Missing,
    #[error("shared data: host status {0}")]
    Other(u32),
}

impl From<Status> for SharedError {
    fn from(s: Status) -> Self {
        match s {
            Status::CasMismatch => Self::CasMismatch,
            other => Self::Other(other as u32),
        }
    }
}

/// The two shared-data calls, so the protocol below runs against Envoy or, in tests, a model of
/// Envoy's semantics.
pub trait Store {
    /// The value and its CAS token; `(None, None)` when the key was never set.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status>;
    /// Writes if the key still has `cas`; `None`, or a key that does not exist, writes always.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status>;
}

/// Envoy's shared data.
pub struct Host;

impl Store for Host {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
        abi::get_shared_data(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
        abi::set_shared_data(key, value, cas)
    }
}

/// The value and its CAS token; `(None, None)` when the key was never set.
pub fn get(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SharedError> {
    Host.get(key).map_err(SharedError::from)
}

/// Overwrites `key` when it still has `cas`, or when it does not exist. Only for values where the
/// last writer may win (a cache entry); anything that accumulates goes through [`update`].
pub fn replace(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
    Host.set(key, value, cas).map_err(SharedError::from)
}

/// Creates `key` with `initial` unless it exists (then it is left alone). Call it at configure time
/// only (see the module comment); `Ok(true)` when this call created the key.
pub fn create(key: &str, initial: &[u8]) -> Result<bool, SharedError> {
    create_in(&Host, key, initial)
}

/// Read-modify-write with CAS, retried up to `attempts` times on contention. `update` gets the
/// current value and returns the new one, or `None` to leave the key as it is. Every write is
/// conditional: a key that was never [`create`]d is [`SharedError::Missing`], not written.
pub fn update(
    key: &str,
    attempts: u32,
    update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<bool, SharedError> {
    update_in(&Host, key, attempts, update)
}

pub fn create_in(store: &impl Store, key: &str, initial: &[u8]) -> Result<bool, SharedError> {
    if store.get(key)?.1.is_some() {
        return Ok(false);
    }
    store.set(key, initial, None)?;
    Ok(true)
}

pub fn update_in(
    store: &impl Store,
    key: &str,
    attempts: u32,
    mut update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<bool, SharedError> {
    for _ in 0..attempts.max(1) {
        let (current, Some(cas)) = store.get(key)? else {
            return Err(SharedError::Missing);
        };
        let Some(next) = update(current.as_deref()) else {
            return Ok(false);
        };
        match store.set(key, &next, Some(cas)) {
            Ok(()) => return Ok(true),
            Err(Status::CasMismatch) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(SharedError::CasMismatch)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// Envoy's semantics (proxy-wasm-cpp-host `SharedData::set`): one global CAS counter, a CAS
    /// checked only when the key exists. `between` runs once, between an updater's read and its
    /// write: another worker's interleaved update.
    type Interleaved = Box<dyn FnOnce(&Model)>;

    #[derive(Default)]
    struct Model {
        data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: Cell<u32>,
        between: RefCell<Option<Interleaved>>,
    }

    impl Store for Model {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
            let got = self.data.borrow().get(key).cloned();
            let between = self.between.borrow_mut().take();
            if let Some(f) = between {
                f(self);
            }
            Ok(got.map_or((None, None), |(v, c)| (Some(v), Some(c))))
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
            let mut data = self.data.borrow_mut();
            if let (Some((_, current)), Some(cas)) = (data.get(key), cas)
                && *current != cas
            {
                return Err(Status::CasMismatch);
            }
            self.next_cas.set(self.next_cas.get() + 1);
            data.insert(key.to_owned(), (value.to_vec(), self.next_cas.get()));
            Ok(())
        }
    }

    fn add(n: u8) -> impl FnMut(Option<&[u8]>) -> Option<Vec<u8>> {
        move |cur| {
            let mut v = cur.unwrap_or_default().to_vec();
            v.push(n);
            Some(v)
        }
    }

    #[test]
    fn an_interleaved_update_is_retried_not_lost() {
        let m = Model::default();
        create_in(&m, "k", &[]).unwrap();
        *m.between.borrow_mut() = Some(Box::new(|m: &Model| {
            update_in(m, "k", 4, add(1)).unwrap();
        }));
        assert_eq!(update_in(&m, "k", 4, add(2)), Ok(true));
        assert_eq!(m.data.borrow()["k"].0, vec![1, 2], "both writes are in the value");
    }

    #[test]
    fn a_key_that_was_never_created_is_not_written() {
        // Envoy would take an unconditional first write from each of two workers, keeping one.
        let m = Model::default();
        assert_eq!(update_in(&m, "fresh", 4, add(1)), Err(SharedError::Missing));
        assert!(m.data.borrow().is_empty());
    }

    #[test]
    fn create_leaves_an_existing_key_alone() {
        let m = Model::default();
        assert_eq!(create_in(&m, "k", &[]), Ok(true));
        update_in(&m, "k", 4, add(7)).unwrap();
        assert_eq!(create_in(&m, "k", &[]), Ok(false));
        assert_eq!(m.data.borrow()["k"].0, vec![7]);
    }

    #[test]
    fn contention_past_the_attempts_is_reported() {
        let m = Model::default();
        create_in(&m, "k", &[]).unwrap();
        // Every read is followed by another worker's write.
        struct Busy<'a>(&'a Model);
        impl Store for Busy<'_> {
            fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
                let got = self.0.get(key);
                let _ = self.0.set(key, b"x", None);
                got
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
                self.0.set(key, value, cas)
            }
        }
        assert_eq!(
            update_in(&Busy(&m), "k", 3, add(1)),
            Err(SharedError::CasMismatch)
        );
    }
}
