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

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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
}
