//! Loading the plugin configuration in `on_configure`.

use crate::abi;
use crate::log;
use filter_core::config::{self, ConfigError};
use proxy_wasm::types::{BufferType, LogLevel};
use serde::de::DeserializeOwned;

/// Reads the plugin configuration and parses it with [`filter_core::config::parse`], then runs
/// `compile` (regexes, tables, keys) on it. On any error, logs `invalid configuration at <field>:
/// <why>` and returns `None`; the caller returns `false` from `on_configure` so Envoy rejects it.
pub fn load<T, C>(compile: impl FnOnce(T) -> Result<C, ConfigError>) -> Option<C>
where
    T: DeserializeOwned,
{
    let bytes = match abi::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(b) => b.unwrap_or_default(),
        Err(status) => {
            log::write(
                LogLevel::Critical,
                None,
                format_args!("cannot read plugin configuration: {status:?}"),
            );
            return None;
        }
    };
    match config::parse::<T>(&bytes).and_then(compile) {
        Ok(c) => Some(c),
        Err(err) => {
            log::write(LogLevel::Critical, None, format_args!("{err}"));
            None
        }
    }
}
