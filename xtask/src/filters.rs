//! The one table of Tollgate's filters. Everything that lists the filters — the chain's Envoy
//! config, the Istio manifests, the OCI images, the Docker build, the benchmarks and the tests —
//! reads it from here; `cargo xtask filters` prints it for shell scripts.

use std::path::{Path, PathBuf};

/// Where an Istio `WasmPlugin` runs in the gateway's filter chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Authn,
    Authz,
}

impl Phase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Authn => "AUTHN",
            Self::Authz => "AUTHZ",
        }
    }
}

/// What Istio does when the module cannot be fetched or fails to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    Close,
    Open,
}

impl Fail {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Close => "FAIL_CLOSE",
            Self::Open => "FAIL_OPEN",
        }
    }
}

#[derive(Debug)]
pub struct Filter {
    /// The crate (`filters/<name>`), the snippet (`envoy/filters/<name>.yaml`) and the image name.
    pub name: &'static str,
    /// The module, the proxy-wasm root id and the metric prefix: `<wasm>.wasm`, `tollgate_<wasm>_…`.
    pub wasm: &'static str,
    /// Pauses on request headers until it has read the body, so Envoy must be told to hold them
    /// (`allow_on_headers_stop_iteration`).
    pub reads_body_before_routing: bool,
    pub phase: Phase,
    /// Higher runs first within a phase.
    pub priority: u32,
    pub fail: Fail,
    /// Why that failure strategy.
    pub why: &'static str,
}

/// The filters in chain order (docs/ARCHITECTURE.md): who the caller is; the prompt as sent; whether
/// it may pass; where it goes; whether it is already answered; what it costs.
pub const CHAIN: [Filter; 6] = [
    Filter {
        name: "jwt-auth",
        wasm: "jwt_auth",
        reads_body_before_routing: false,
        phase: Phase::Authn,
        priority: 100,
        fail: Fail::Close,
        why: "identity: a request it cannot check must not pass",
    },
    Filter {
        name: "prompt-templater",
        wasm: "prompt_templater",
        reads_body_before_routing: true,
        phase: Phase::Authz,
        priority: 50,
        fail: Fail::Close,
        why: "an unrendered template request would reach the provider as garbage",
    },
    Filter {
        name: "content-moderator",
        wasm: "content_moderator",
        reads_body_before_routing: true,
        phase: Phase::Authz,
        priority: 40,
        fail: Fail::Close,
        why: "safety: an unmoderated prompt must not pass",
    },
    Filter {
        name: "semantic-router",
        wasm: "semantic_router",
        reads_body_before_routing: true,
        phase: Phase::Authz,
        priority: 30,
        fail: Fail::Open,
        why: "without it, Envoy's catch-all route still serves",
    },
    Filter {
        name: "response-cache",
        wasm: "response_cache",
        reads_body_before_routing: true,
        phase: Phase::Authz,
        priority: 20,
        fail: Fail::Open,
        why: "an optimisation: without it, every request is a miss",
    },
    Filter {
        name: "token-counter",
        wasm: "token_counter",
        reads_body_before_routing: false,
        phase: Phase::Authz,
        priority: 10,
        fail: Fail::Open,
        why: "budgets have their own failure_mode; a VM that failed to load should not stop traffic",
    },
];

impl Filter {
    /// The proxy-wasm root id (the snippet's `root_id`, the WasmPlugin's `pluginName`).
    pub const fn root_id(&self) -> &'static str {
        self.wasm
    }

    /// The Envoy filter and VM name.
    pub fn envoy_name(&self) -> String {
        format!("tollgate.{}", self.wasm)
    }

    /// The module as `cargo wasm` writes it, relative to the repository root.
    pub fn wasm_file(&self) -> String {
        format!("target/wasm32-wasip1/wasm/{}.wasm", self.wasm)
    }

    /// The snippet a mesh admin pastes before the router.
    pub fn snippet(&self, root: &Path) -> PathBuf {
        root.join("envoy/filters").join(format!("{}.yaml", self.name))
    }
}

/// The filter of that name (`jwt-auth`), or of that module (`jwt_auth`).
pub fn find(name: &str) -> Option<&'static Filter> {
    CHAIN.iter().find(|f| f.name == name || f.wasm == name)
}

/// Names separated by commas, in any order, as the filters in chain order.
pub fn parse_list(list: &str) -> Result<Vec<&'static Filter>, String> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let f = find(name).ok_or_else(|| {
            let known: Vec<&str> = CHAIN.iter().map(|f| f.name).collect();
            format!("unknown filter `{name}`; known: {}", known.join(", "))
        })?;
        if !out.iter().any(|o: &&Filter| o.name == f.name) {
            out.push(f);
        }
    }
    out.sort_by_key(|f| CHAIN.iter().position(|c| c.name == f.name));
    Ok(out)
}

/// The repository root (this crate sits at `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_modules_are_unique_and_priorities_keep_the_chain_order() {
        for (i, a) in CHAIN.iter().enumerate() {
            assert_eq!(a.wasm, a.name.replace('-', "_"), "{}", a.name);
            for b in &CHAIN[i + 1..] {
                assert_ne!(a.name, b.name);
                // Istio runs AUTHN before AUTHZ, and higher priority first within a phase.
                let before = (a.phase == Phase::Authn && b.phase == Phase::Authz)
                    || (a.phase == b.phase && a.priority > b.priority);
                assert!(before, "{} must run before {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn every_filter_has_its_crate() {
        let root = repo_root();
        for f in &CHAIN {
            let manifest = std::fs::read_to_string(root.join("filters").join(f.name).join("Cargo.toml"))
                .unwrap_or_default();
            assert!(
                manifest.contains(&format!("name = \"{}\"", f.name)),
                "filters/{}/Cargo.toml",
                f.name
            );
        }
    }

    #[test]
    fn lists_are_put_in_chain_order_and_unknown_names_refused() {
        let names: Vec<&str> = parse_list("token-counter, jwt_auth,,jwt-auth")
            .unwrap_or_default()
            .iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["jwt-auth", "token-counter"]);
        let err = parse_list("jwt-auth,rate-limit").err().unwrap_or_default();
        assert!(err.contains("unknown filter `rate-limit`"), "{err}");
    }
}
