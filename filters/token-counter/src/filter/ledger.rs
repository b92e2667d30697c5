//! Budget reservations in Envoy shared data: the compare-and-swap loops around the pure ledger in
//! `crate::budget`. Every write is conditional (`filter_host::shared`), which is why the slot keys
//! are created at configure time.

use crate::budget;
use crate::config::{Budgets, Rule};
use filter_core::hash::fnv1a;
use filter_host::shared::{self, SharedError};

/// CAS attempts on one budget slot before the store counts as failing.
const CAS_ATTEMPTS: u32 = 32;

/// A reservation in shared data, settled when the response ends.
#[derive(Debug)]
pub struct Slot {
    key: String,
    id: u64,
    window_start: u64,
}

#[derive(Debug)]
pub enum Outcome {
    Reserved {
        slot: Slot,
        remaining: u64,
    },
    Denied {
        used: u64,
        retry_after: u64,
    },
    /// The store failed, or the slot holds its maximum of identities this window: the budgets'
    /// failure mode decides.
    Failed(String),
}

/// Creates every rule's slot keys, empty, so that every ledger write after them is conditional
/// (`filter_host::shared`). A marker per rule records the slot count done, so worker VMs (and
/// reloads with the same slots) skip the loop the main thread's canary VM already ran.
pub fn create_slots(b: &Budgets) -> Result<(), SharedError> {
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

/// Reserves `amount` tokens of `rule` for `identity` at `now` (seconds).
pub fn reserve(budgets: &Budgets, rule: &Rule, identity: &str, now: u64, amount: u64) -> Outcome {
    let id = fnv1a(identity.as_bytes());
    let key = format!("{}{}", rule.key_prefix, id % u64::from(budgets.slots));
    let window = rule.window.seconds();
    let mut decision = None;
    let res = shared::update(&key, CAS_ATTEMPTS, |cur| {
        let (d, next) = budget::reserve(cur, id, now, window, rule.tokens, amount);
        decision = Some(d);
        next
    });
    match (res, decision) {
        (Ok(true), Some(budget::Reserve::Allowed { used })) => Outcome::Reserved {
            remaining: rule.tokens.saturating_sub(used),
            slot: Slot {
                key,
                id,
                window_start: budget::window_start(now, window),
            },
        },
        (Ok(false), Some(budget::Reserve::Denied { used, retry_after })) => {
            Outcome::Denied { used, retry_after }
        }
        (res, decision) => Outcome::Failed(format!("{res:?} {decision:?}")),
    }
}

/// Replaces the `reserved` tokens of `slot` by `actual`, in the window it was made in.
pub fn settle(slot: &Slot, reserved: u64, actual: u64) -> Result<(), SharedError> {
    shared::update(&slot.key, CAS_ATTEMPTS, |cur| {
        budget::settle(cur, slot.id, slot.window_start, reserved, actual)
    })
    .map(|_| ())
}
