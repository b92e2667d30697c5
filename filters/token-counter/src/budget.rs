//! Token budgets in Envoy shared data: the pure ledger that the filter runs inside a compare-and-swap
//! loop, so reservations from every worker of one Envoy are atomic.
//!
//! Shared-data keys cannot be deleted, so the key space is bounded: each rule has `slots` keys and an
//! identity lives in slot `hash(identity) % slots`. A slot's value lists the identities that landed
//! in it (64-bit hash, window start, tokens used), so two identities in one slot never share a
//! budget; entries of past windows are dropped on the next write.
//!
//! A request reserves `prompt + max completion` before it leaves; admitted reservations never sum past
//! the limit, so the only overshoot possible is completions longer than reserved (requests without
//! `max_tokens` reserve the configured estimate). Settlement replaces the reservation by the real usage
//! in the window it was made in; a window that has ended is not charged retroactively.

const ENTRY_BYTES: usize = 24;

/// Identities one slot holds per window; past it new identities are refused (`SlotFull`).
pub const MAX_ENTRIES_PER_SLOT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub window_start: u64,
    pub used: u64,
}

pub fn decode(bytes: &[u8]) -> Vec<Entry> {
    bytes
        .chunks_exact(ENTRY_BYTES)
        .map(|c| {
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&c[i * 8..i * 8 + 8]);
                u64::from_le_bytes(w)
            };
            Entry {
                id: word(0),
                window_start: word(1),
                used: word(2),
            }
        })
        .collect()
}

pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&e.id.to_le_bytes());
        out.extend_from_slice(&e.window_start.to_le_bytes());
        out.extend_from_slice(&e.used.to_le_bytes());
    }
    out
}

/// Fixed windows aligned to the Unix epoch (as the sidecar's Redis budgets are).
pub const fn window_start(now: u64, window: u64) -> u64 {
    now - now % window
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// Reserved; `used` includes this reservation.
    Allowed { used: u64 },
    /// Over the limit; the window resets in `retry_after` seconds.
    Denied { used: u64, retry_after: u64 },
    /// The slot holds [`MAX_ENTRIES_PER_SLOT`] identities this window already.
    SlotFull,
}

/// Reserves `amount` for identity `id` at `now`; the new slot value when allowed.
pub fn reserve(
    current: Option<&[u8]>,
    id: u64,
    now: u64,
    window: u64,
    limit: u64,
    amount: u64,
) -> (Reserve, Option<Vec<u8>>) {
    let start = window_start(now, window);
    let mut entries: Vec<Entry> = current
        .map(decode)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.window_start == start)
        .collect();
    let pos = entries.iter().position(|e| e.id == id);
    let used = pos.and_then(|i| entries.get(i)).map_or(0, |e| e.used);
    if used.saturating_add(amount) > limit {
        let retry_after = (start + window).saturating_sub(now).max(1);
        return (Reserve::Denied { used, retry_after }, None);
    }
    if let Some(e) = pos.and_then(|i| entries.get_mut(i)) {
        e.used += amount;
    } else if entries.len() >= MAX_ENTRIES_PER_SLOT {
        return (Reserve::SlotFull, None);
    } else {
        entries.push(Entry {
            id,
            window_start: start,
            used: amount,
        });
    }
    (Reserve::Allowed { used: used + amount }, Some(encode(&entries)))
}

/// Replaces a reservation by the real usage; `None` when nothing changes (same amount, or the
/// window has ended).
pub fn settle(
    current: Option<&[u8]>,
    id: u64,
    window_start: u64,
    reserved: u64,
    actual: u64,
) -> Option<Vec<u8>> {
    if reserved == actual {
        return None;
    }
    let mut entries = decode(current?);
    let e = entries
        .iter_mut()
        .find(|e| e.id == id && e.window_start == window_start)?;
    e.used = e.used.saturating_sub(reserved).saturating_add(actual);
    Some(encode(&entries))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn used(slot: &[u8], id: u64) -> u64 {
        decode(slot).iter().find(|e| e.id == id).map_or(0, |e| e.used)
    }

    #[test]
    fn reservations_never_sum_past_the_limit() {
        let mut slot: Option<Vec<u8>> = None;
        let mut admitted = 0;
        for _ in 0..50 {
            match reserve(slot.as_deref(), 7, 1000, 60, 1000, 90) {
                (Reserve::Allowed { .. }, Some(next)) => {
                    admitted += 1;
                    slot = Some(next);
                }
                (Reserve::Denied { used, retry_after }, None) => {
                    assert_eq!(used, 990);
                    assert_eq!(retry_after, 20, "window 960..1020");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(admitted, 11);
        assert_eq!(used(slot.as_deref().unwrap(), 7), 990);
    }

    #[test]
    fn identities_in_one_slot_keep_separate_budgets() {
        let (_, s) = reserve(None, 1, 0, 60, 100, 100);
        let (d, s2) = reserve(s.as_deref(), 2, 0, 60, 100, 100);
        assert_eq!(d, Reserve::Allowed { used: 100 });
        let s2 = s2.unwrap();
        assert_eq!((used(&s2, 1), used(&s2, 2)), (100, 100));
        assert!(matches!(
            reserve(Some(&s2), 1, 0, 60, 100, 1).0,
            Reserve::Denied { .. }
        ));
    }

    #[test]
    fn a_new_window_starts_from_zero_and_drops_old_entries() {
        let (_, s) = reserve(None, 1, 59, 60, 100, 100);
        let (d, s) = reserve(s.as_deref(), 2, 60, 60, 100, 10);
        assert_eq!(d, Reserve::Allowed { used: 10 });
        assert_eq!(
            decode(s.as_deref().unwrap()).len(),
            1,
            "identity 1's old window is gone"
        );
        let (d, _) = reserve(s.as_deref(), 1, 61, 60, 100, 100);
        assert_eq!(d, Reserve::Allowed { used: 100 });
    }

    #[test]
    fn settlement_replaces_the_reservation_in_its_window_only() {
        let (_, s) = reserve(None, 1, 10, 60, 1000, 300);
        let s = settle(s.as_deref(), 1, 0, 300, 120).unwrap();
        assert_eq!(used(&s, 1), 120);
        assert_eq!(settle(Some(&s), 1, 0, 120, 120), None, "nothing to change");
        assert_eq!(settle(Some(&s), 1, 60, 300, 0), None, "another window");
        assert_eq!(settle(Some(&s), 9, 0, 300, 0), None, "unknown identity");
        let released = settle(Some(&s), 1, 0, 120, 0).unwrap();
        assert_eq!(used(&released, 1), 0);
    }

    #[test]
    fn a_full_slot_refuses_new_identities_but_serves_known_ones() {
        let mut s: Option<Vec<u8>> = None;
        for id in 0..MAX_ENTRIES_PER_SLOT as u64 {
            s = reserve(s.as_deref(), id, 0, 60, 10, 1).1;
        }
        assert_eq!(reserve(s.as_deref(), 99_999, 0, 60, 10, 1).0, Reserve::SlotFull);
        assert_eq!(
            reserve(s.as_deref(), 3, 0, 60, 10, 1).0,
            Reserve::Allowed { used: 2 }
        );
    }

    #[test]
    fn garbage_in_a_slot_is_ignored_not_a_panic() {
        assert!(decode(&[1, 2, 3]).is_empty());
        let (d, _) = reserve(Some(&[0xff; 30]), 1, 0, 60, 10, 1);
        assert_eq!(d, Reserve::Allowed { used: 1 });
    }
}
