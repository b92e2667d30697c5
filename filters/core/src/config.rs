//! Parsing filter configuration: JSON → typed config, with the path of the failing field in the error.
//! Filters parse with this, then compile (regexes, tables, keys) and report compile errors through
//! [`ConfigError::field`] so every rejection names its field.

use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration at `{path}`: {message}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `providers[0].issuer`; `.` for the whole document.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn field(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A regex compiled from configuration may not grow past this many bytes, so a pattern in config
/// cannot exhaust a VM's memory (pass to `RegexBuilder::size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Parses `bytes` as JSON into `T`. Types should use `#[serde(deny_unknown_fields)]` so typos are
/// rejected instead of silently ignored. An empty configuration parses as `{}`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        // serde_json appends " at line X column Y"; keep it, it helps with hand-written configs.
        ConfigError {
            path,
            message: inner.to_string(),
        }
    })
}

/// What a filter does when a dependency (the sidecar) does not answer in time: let the request
/// through without that check (`open`), or refuse it with 503 (`closed`, the default).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    Open,
    #[default]
    Closed,
}

/// Where a filter reaches the inference sidecar: an Envoy cluster (HTTP/2, see
/// `envoy/envoy.yaml`, cluster `inference_sidecar`) and a deadline per call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    #[serde(default = "SidecarConfig::default_cluster")]
    pub cluster: String,
    #[serde(default = "SidecarConfig::default_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        Self {
            cluster: Self::default_cluster(),
            timeout_ms: Self::default_timeout_ms(),
        }
    }
}

impl SidecarConfig {
    fn default_cluster() -> String {
        "inference_sidecar".to_owned()
    }

    fn default_timeout_ms() -> u64 {
        200
    }

    /// Checks the values serde cannot; `path` is where this object sits in the filter's config.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.cluster.trim().is_empty() {
            return Err(ConfigError::field(
                format!("{path}.cluster"),
                "must name an Envoy cluster",
            ));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(ConfigError::field(
                format!("{path}.timeout_ms"),
                format!("{} is outside 1..=60000", self.timeout_ms),
            ));
        }
        Ok(())
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Provider {
        issuer: String,
        #[serde(default)]
        audiences: Vec<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        providers: Vec<Provider>,
        #[serde(default = "default_limit")]
        max_body_bytes: u32,
    }

    fn default_limit() -> u32 {
        1024
    }

    #[test]
    fn reports_the_path_of_a_wrongly_typed_nested_field() {
        let err = parse::<Config>(br#"{"providers":[{"issuer":"a"},{"issuer":7}]}"#).unwrap_err();
        assert_eq!(err.path, "providers[1].issuer");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn rejects_unknown_fields_by_name() {
        let err = parse::<Config>(br#"{"providers":[{"issuer":"a","audience":["x"]}]}"#).unwrap_err();
        assert_eq!(err.path, "providers[0].audience");
        assert!(
            err.message.contains("unknown field `audience`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn rejects_out_of_range_numbers() {
        let err = parse::<Config>(br#"{"max_body_bytes": -1}"#).unwrap_err();
        assert_eq!(err.path, "max_body_bytes");
    }

    #[test]
    fn empty_config_means_defaults() {
        assert_eq!(
            parse::<Config>(b"  ").unwrap(),
            Config {
                providers: vec![],
                max_body_bytes: 1024
            }
        );
    }

    #[test]
    fn syntax_error_names_the_document() {
        let err = parse::<Config>(b"{\"providers\": [").unwrap_err();
        assert!(err.message.contains("EOF"), "{}", err.message);
        assert_eq!(
            err.to_string(),
            format!("invalid configuration at `{}`: {}", err.path, err.message)
        );
    }

    #[test]
    fn sidecar_config_defaults_and_names_bad_fields() {
        let c: SidecarConfig = parse(b"{}").unwrap();
        assert_eq!(c, SidecarConfig::default());
        assert_eq!(c.cluster, "inference_sidecar");
        assert_eq!(c.validate("sidecar"), Ok(()));
        let c: SidecarConfig = parse(br#"{"cluster": " ", "timeout_ms": 10}"#).unwrap();
        assert_eq!(c.validate("sidecar").unwrap_err().path, "sidecar.cluster");
        let c: SidecarConfig = parse(br#"{"timeout_ms": 0}"#).unwrap();
        let e = c.validate("moderation.sidecar").unwrap_err();
        assert_eq!(e.path, "moderation.sidecar.timeout_ms");
        assert_eq!(e.message, "0 is outside 1..=60000");
        assert!(
            parse::<SidecarConfig>(br#"{"clustr": "x"}"#)
                .unwrap_err()
                .message
                .contains("clustr")
        );
    }
}
