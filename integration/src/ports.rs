//! Free loopback ports for the processes a test starts.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports are handed out from below Linux's ephemeral range (32768–60999 by default). A port taken
/// from the ephemeral range with `bind(:0)` and released until Envoy binds it can meanwhile become
/// the source port of one of the thousands of client connections a load test opens: Envoy then
/// fails with "Address already in use". Nothing picks source ports here.
const FIRST: u32 = 20_000;
const COUNT: u32 = 12_000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A port that is free now on 127.0.0.1. Each test process (nextest runs one per test) starts at
/// its own offset, derived from its pid, and walks on from there, so parallel tests do not try the
/// same ports in the same order.
pub fn free_port() -> std::io::Result<u16> {
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7_919)) % COUNT,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(FIRST + n).unwrap_or(u16::MAX);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // Everything below the ephemeral range is taken: let the OS choose.
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|&p| (20_000..32_000).contains(&p)), "{ports:?}");
    }
}
