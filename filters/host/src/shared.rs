//! Envoy shared data (one key-value store per Envoy, shared by all VMs with the same `vm_id`), with
//! compare-and-swap. Keys cannot be deleted, so callers keep a bounded key space.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedError {
    /// Someone else wrote the key since it was read; read again and retry.
    CasMismatch,
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

/// The value and its CAS token; `(None, None)` when the key was never set.
pub fn get(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SharedError> {
    hostcalls::get_shared_data(key).map_err(SharedError::from)
}

/// Writes `value` if the key still has `cas` (`None` writes unconditionally).
pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
    hostcalls::set_shared_data(key, Some(value), cas).map_err(SharedError::from)
}

/// Read-modify-write with CAS, retried up to `attempts` times on contention. `update` gets the
/// current value (if any) and returns the new one, or `None` to leave the key as it is.
pub fn update(
    key: &str,
    attempts: u32,
    mut update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<bool, SharedError> {
    for _ in 0..attempts.max(1) {
        let (current, cas) = get(key)?;
        let Some(next) = update(current.as_deref()) else {
            return Ok(false);
        };
        match set(key, &next, cas) {
            Ok(()) => return Ok(true),
            Err(SharedError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(SharedError::CasMismatch)
}
