//! Root-context host calls: the clock, the tick timer, and waking the root from a stream.

use crate::abi;
use crate::error::HostError;
use crate::log;
use proxy_wasm::types::LogLevel;
use std::time::{Duration, SystemTime};

/// The host's wall clock. Envoy's never fails; if a host's did, the Unix epoch is returned and the
/// failure logged at error (time-based decisions then see a time long past: caches miss, windows
/// start over), which is safer than a VM abort.
pub fn now() -> SystemTime {
    abi::current_time_ns().map_or_else(
        |status| {
            let e = HostError {
                call: "get_current_time",
                status,
            };
            log::write(LogLevel::Error, None, format_args!("{e}"));
            SystemTime::UNIX_EPOCH
        },
        |ns| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns),
    )
}

/// Seconds since the Unix epoch on the host's clock.
pub fn now_secs() -> u64 {
    now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sets the effective context's tick period (`Duration::ZERO` stops the timer). Call it from the
/// root context, or through [`wake`].
pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
    abi::set_tick_period(period).map_err(|status| {
        let e = HostError {
            call: "set_tick_period",
            status,
        };
        log::write(LogLevel::Warn, None, format_args!("{e}"));
        e
    })
}

/// From stream `from`, sets the tick period of root `root_id` (e.g. 1 ms to run background work
/// that the stream queued, such as a batched sidecar call or a JWKS refresh), then makes `from`
/// the effective context again so its own host calls keep working.
pub fn wake(root_id: u32, from: u32, period: Duration) {
    if let Err(status) = abi::set_effective_context(root_id) {
        log::write(
            LogLevel::Warn,
            Some(from),
            format_args!("set_effective_context(root {root_id}) failed: {status:?}"),
        );
        return;
    }
    let _ = set_tick_period(period);
    if let Err(status) = abi::set_effective_context(from) {
        log::write(
            LogLevel::Warn,
            Some(from),
            format_args!("set_effective_context({from}) failed: {status:?}"),
        );
    }
}
