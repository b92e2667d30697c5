//! Log lines as `[tollgate.<filter>] #<context id> message`, so one request's lines can be followed
//! in Envoy's log. Never pass tokens, keys or prompt text at info level or above.

use crate::abi;
use proxy_wasm::types::LogLevel;
use std::cell::Cell;
use std::fmt::Arguments;

thread_local! {
    // A wasm VM is single-threaded; the cell only satisfies Rust's rules for statics.
    static FILTER: Cell<&'static str> = const { Cell::new("tollgate") };
}

pub(crate) fn set_filter_name(name: &'static str) {
    FILTER.with(|f| f.set(name));
}

pub fn filter_name() -> &'static str {
    FILTER.with(Cell::get)
}

/// Logs through the host. A failing log call has nowhere to report to, so its status is dropped.
/// A line below Envoy's current level is not even formatted (debug lines cost nothing at info).
pub fn write(level: LogLevel, context_id: Option<u32>, args: Arguments<'_>) {
    if abi::log_level().is_ok_and(|current| (level as u32) < current) {
        return;
    }
    let msg = match context_id {
        Some(id) => format!("[tollgate.{}] #{id} {args}", filter_name()),
        None => format!("[tollgate.{}] {args}", filter_name()),
    };
    let _ = abi::log(level, &msg);
}

pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = abi::log(
            LogLevel::Critical,
            &format!("[tollgate.{}] panic: {info}", filter_name()),
        );
    }));
}

/// `log!(Level, ctx_id, "fmt", args…)` where `ctx_id` is `Some(id)` inside a stream context and
/// `None` in a root context.
#[macro_export]
macro_rules! log {
    ($level:ident, $ctx:expr, $($arg:tt)+) => {
        $crate::log::write($crate::proxy_wasm::types::LogLevel::$level, $ctx, format_args!($($arg)+))
    };
}
