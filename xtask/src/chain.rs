//! The whole chain's Envoy config, built as data: `envoy/envoy.yaml` with the filters' snippets
//! (`envoy/filters/<name>.yaml`) inserted before the router in chain order, for every place the
//! chain runs — the local demo (`--wasm-root`, `--port`), docker-compose (`--compose`: service
//! host names) and a real provider (`--provider`: TLS to the provider, its key in place of the
//! client's token). Edits are made on the parsed document, so they do not depend on its layout;
//! `envoy --mode validate` checks every output (scripts/test.sh).

use crate::filters::{CHAIN, Filter};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub type Error = String;

const ROUTER: &str = "envoy.filters.http.router";
const HCM: &str = "envoy.filters.network.http_connection_manager";
/// The clusters that carry LLM traffic (a real provider replaces them).
pub const LLM_CLUSTERS: [&str; 4] = ["llm_upstream", "llm_code", "llm_math", "llm_support"];
/// Where each default port lives in docker-compose (envoy/compose/docker-compose.yaml).
pub const COMPOSE_HOSTS: [(u64, &str); 7] = [
    (8081, "mock"),
    (8091, "mock"),
    (8092, "mock"),
    (8093, "mock"),
    (8094, "mock"),
    (50051, "sidecar"),
    (8083, "issuer"),
];
/// Where the system CA bundle lives: Debian/Ubuntu (and the official Envoy image), Fedora/RHEL,
/// Alpine/macOS.
pub const CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

pub fn parse_yaml(text: &str, what: &str) -> Result<Value, Error> {
    yaml_serde::from_str(text).map_err(|e| format!("{what}: {e}"))
}

pub fn to_yaml(value: &Value) -> Result<String, Error> {
    yaml_serde::to_string(value).map_err(|e| format!("writing YAML: {e}"))
}

/// A filter's snippet: the one `http_filters` entry of `envoy/filters/<name>.yaml`.
pub fn snippet(root: &Path, filter: &Filter) -> Result<Value, Error> {
    let path = filter.snippet(root);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    match parse_yaml(&text, &path.display().to_string())? {
        Value::Array(mut items) if items.len() == 1 => Ok(items.remove(0)),
        _ => Err(format!(
            "{}: must hold exactly one http_filters entry",
            path.display()
        )),
    }
}

/// The snippet's plugin configuration (the JSON in `configuration.value`).
pub fn plugin_config(snippet: &Value) -> Result<Value, Error> {
    let text = snippet
        .pointer("/typed_config/config/configuration/value")
        .and_then(Value::as_str)
        .ok_or("no typed_config.config.configuration.value")?;
    serde_json::from_str(text).map_err(|e| format!("configuration.value: {e}"))
}

/// Every object in the document, depth first.
fn objects_mut(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            f(m);
            for child in m.values_mut() {
                objects_mut(child, f);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| objects_mut(i, f)),
        _ => {}
    }
}

pub struct Config(pub Value);

impl Config {
    pub fn load(root: &Path) -> Result<Self, Error> {
        let path = root.join("envoy/envoy.yaml");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self(parse_yaml(&text, "envoy/envoy.yaml")?))
    }

    /// The one HTTP connection manager's `http_filters` (the one that ends with the router).
    pub fn http_filters(&mut self) -> Result<&mut Vec<Value>, Error> {
        let listeners = self
            .0
            .pointer_mut("/static_resources/listeners")
            .and_then(Value::as_array_mut)
            .ok_or("no static_resources.listeners")?;
        let mut found = Vec::new();
        for listener in listeners {
            for chain in listener
                .get_mut("filter_chains")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                for filter in chain
                    .get_mut("filters")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if filter.get("name").and_then(Value::as_str) == Some(HCM)
                        && let Some(list) = filter
                            .pointer_mut("/typed_config/http_filters")
                            .and_then(Value::as_array_mut)
                        && list.last().and_then(|l| l.get("name")).and_then(Value::as_str) == Some(ROUTER)
                    {
                        found.push(list);
                    }
                }
            }
        }
        match found.len() {
            1 => found.pop().ok_or_else(|| "unreachable".into()),
            n => Err(format!(
                "envoy/envoy.yaml must have exactly one http_filters ending with {ROUTER}, has {n}"
            )),
        }
    }

    /// Inserts `entries` just before the router, in order.
    pub fn insert_before_router(&mut self, entries: Vec<Value>) -> Result<(), Error> {
        let list = self.http_filters()?;
        let at = list.len() - 1;
        list.splice(at..at, entries);
        Ok(())
    }

    /// Inserts the snippets of `filters` (in chain order) before the router.
    pub fn insert_filters(&mut self, root: &Path, filters: &[&Filter]) -> Result<(), Error> {
        let entries = filters
            .iter()
            .map(|f| snippet(root, f))
            .collect::<Result<Vec<_>, _>>()?;
        self.insert_before_router(entries)
    }

    /// Makes every module path `target/…` absolute under `root`.
    pub fn set_wasm_root(&mut self, root: &str) {
        let root = root.trim_end_matches('/');
        objects_mut(&mut self.0, &mut |m| {
            if let Some(Value::String(file)) = m.get_mut("filename")
                && file.starts_with("target/")
            {
                *file = format!("{root}/{file}");
            }
        });
    }

    /// Every module the document loads (`vm_config.code.local.filename`).
    pub fn wasm_files(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        objects_mut(&mut self.0, &mut |m| {
            if let Some(Value::String(file)) = m.get("filename")
                && file.ends_with(".wasm")
            {
                out.push(file.clone());
            }
        });
        out
    }

    /// Every `port_value` in `ports` (default → new) replaced in one pass, so a new port equal to
    /// another default is not moved again. A default that does not occur is an error.
    pub fn set_ports(&mut self, ports: &BTreeMap<u64, u64>) -> Result<(), Error> {
        let mut seen = BTreeMap::new();
        objects_mut(&mut self.0, &mut |m| {
            if let Some(port) = m.get_mut("port_value")
                && let Some(old) = port.as_u64()
                && let Some(new) = ports.get(&old)
            {
                *port = json!(new);
                seen.insert(old, ());
            }
        });
        match ports.keys().find(|p| !seen.contains_key(p)) {
            Some(p) => Err(format!("no port {p} in envoy/envoy.yaml")),
            None => Ok(()),
        }
    }

    fn clusters(&mut self) -> Result<&mut Vec<Value>, Error> {
        self.0
            .pointer_mut("/static_resources/clusters")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| "no static_resources.clusters".into())
    }

    /// docker-compose: the listener and admin listen on every interface of the container, and
    /// every upstream on loopback is the compose service that serves its port.
    pub fn compose(&mut self) -> Result<(), Error> {
        for at in [
            "/admin/address/socket_address",
            "/static_resources/listeners/0/address/socket_address",
        ] {
            let addr = self.0.pointer_mut(at).ok_or_else(|| format!("no {at}"))?;
            addr["address"] = json!("0.0.0.0");
        }
        for cluster in self.clusters()? {
            let name = cluster
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            let mut err = None;
            let mut moved = false;
            objects_mut(cluster, &mut |m| {
                if m.get("address").and_then(Value::as_str) == Some("127.0.0.1")
                    && let Some(port) = m.get("port_value").and_then(Value::as_u64)
                {
                    match COMPOSE_HOSTS.iter().find(|(p, _)| *p == port) {
                        Some((_, host)) => {
                            m.insert("address".into(), json!(host));
                            moved = true;
                        }
                        None => err = Some(format!("no compose service for port {port} in cluster {name}")),
                    }
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            if moved && cluster.get("type").and_then(Value::as_str) == Some("STATIC") {
                cluster["type"] = json!("STRICT_DNS");
            }
        }
        Ok(())
    }

    /// Sends every LLM cluster to a real provider over TLS (certificate checked against the
    /// provider's name) with the provider's key in place of the client's token, which jwt-auth
    /// has already verified and removed; the gateway's identity headers stay inside.
    pub fn provider(&mut self, url: &str, key: &str, ca_file: Option<&str>) -> Result<(), Error> {
        let p = Provider::parse(url)?;
        let ca = match ca_file {
            Some(ca) => Some(ca.to_owned()),
            None if p.tls => Some(
                CA_FILES
                    .iter()
                    .find(|f| Path::new(f).exists())
                    .ok_or_else(|| format!("no CA bundle found in {CA_FILES:?}; pass --ca-file"))?
                    .to_string(),
            ),
            None => None,
        };
        let host = p.host.clone();
        for cluster in self.clusters()? {
            let Some(name) = cluster.get("name").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            if !LLM_CLUSTERS.contains(&name.as_str()) {
                continue;
            }
            let mut c = json!({
                "name": name,
                "type": "LOGICAL_DNS",
                "dns_lookup_family": "V4_PREFERRED",
                "connect_timeout": "5s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": host, "port_value": p.port}}}}
                ]}]},
            });
            if let (true, Some(ca)) = (p.tls, &ca) {
                // The certificate must name the provider: without a SAN match Envoy would accept
                // any publicly trusted certificate, and hand the key to whoever presents one.
                c["transport_socket"] = json!({
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": host,
                        "common_tls_context": {"validation_context": {
                            "trusted_ca": {"filename": ca},
                            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}],
                        }},
                    },
                });
            }
            *cluster = c;
        }
        // Every route to an LLM cluster sends the provider's Host.
        let mut routes = 0;
        objects_mut(&mut self.0, &mut |m| {
            if m.get("cluster")
                .and_then(Value::as_str)
                .is_some_and(|c| LLM_CLUSTERS.contains(&c))
                && m.contains_key("timeout")
            {
                m.insert("host_rewrite_literal".into(), json!(host));
                routes += 1;
            }
        });
        if routes == 0 {
            return Err("no route to an LLM cluster".into());
        }
        let mut vhosts = 0;
        objects_mut(&mut self.0, &mut |m| {
            if m.get("domains") == Some(&json!(["*"])) && m.contains_key("routes") {
                m.insert(
                    "request_headers_to_add".into(),
                    json!([{"header": {"key": "authorization", "value": format!("Bearer {key}")},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]),
                );
                m.insert(
                    "request_headers_to_remove".into(),
                    json!(["x-tollgate-subject", "x-tollgate-tenant"]),
                );
                vhosts += 1;
            }
        });
        if vhosts != 1 {
            return Err(format!(
                "want one catch-all virtual host (domains [\"*\"]), found {vhosts}"
            ));
        }
        Ok(())
    }
}

struct Provider {
    host: String,
    port: u16,
    tls: bool,
}

impl Provider {
    /// `https://host[:port]` (or `http://` on loopback): a scheme and a host only, the API paths
    /// being the client's.
    fn parse(url: &str) -> Result<Self, Error> {
        let bad = || format!("--provider must be an http(s) URL with a host, got {url:?}");
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let tls = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "--provider takes a scheme and host only (the API paths are the client's), got {url:?}"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("--provider: bad port in {url:?}"))?,
            ),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        if !tls && !matches!(host, "127.0.0.1" | "localhost" | "::1") {
            return Err("--provider over plain http would send the API key in clear text; use https".into());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

/// What `cargo xtask chain-config` writes.
pub struct Options<'a> {
    pub filters: Vec<&'static Filter>,
    pub wasm_root: Option<&'a str>,
    pub ports: BTreeMap<u64, u64>,
    pub compose: bool,
    /// (URL, API key, CA file)
    pub provider: Option<(&'a str, &'a str, Option<&'a str>)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            filters: CHAIN.iter().collect(),
            wasm_root: None,
            ports: BTreeMap::new(),
            compose: false,
            provider: None,
        }
    }
}

/// The chain's config as the file to write (with its header).
pub fn generate(root: &Path, opts: &Options<'_>) -> Result<String, Error> {
    let mut c = Config::load(root)?;
    c.insert_filters(root, &opts.filters)?;
    if let Some(w) = opts.wasm_root {
        c.set_wasm_root(w);
    }
    c.set_ports(&opts.ports)?;
    if opts.compose {
        c.compose()?;
    }
    let mut header = String::new();
    if let Some((url, key, ca)) = opts.provider {
        c.provider(url, key, ca)?;
        header.push_str("# Generated with a provider key: do not commit or share.\n");
    } else {
        let mode = if opts.compose { " --compose" } else { "" };
        let _ = writeln!(
            header,
            "# Generated by `cargo xtask chain-config{mode}` from envoy/envoy.yaml and envoy/filters/: edit\n\
             # those, not this file (their comments explain each setting). The filters, in chain order:\n\
             # {}; then the router.",
            opts.filters.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(header + &to_yaml(&c.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::repo_root;

    fn names(c: &mut Config) -> Vec<String> {
        c.http_filters()
            .map(|l| {
                l.iter()
                    .filter_map(|f| f["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn every_snippet_states_the_facts_of_the_table() {
        let root = repo_root();
        for f in &CHAIN {
            let s = snippet(&root, f).unwrap_or_else(|e| panic!("{e}"));
            let c = &s["typed_config"]["config"];
            assert_eq!(s["name"], json!(f.envoy_name()), "{}", f.name);
            assert_eq!(c["name"], json!(f.envoy_name()), "{}", f.name);
            assert_eq!(c["root_id"], json!(f.root_id()), "{}", f.name);
            assert_eq!(c["vm_config"]["vm_id"], json!(f.envoy_name()), "{}", f.name);
            assert_eq!(
                c["vm_config"]["code"]["local"]["filename"],
                json!(f.wasm_file()),
                "{}",
                f.name
            );
            assert_eq!(
                c["allow_on_headers_stop_iteration"].as_bool().unwrap_or(false),
                f.reads_body_before_routing,
                "{}: allow_on_headers_stop_iteration",
                f.name
            );
            plugin_config(&s).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        }
    }

    #[test]
    fn the_snippets_go_before_the_router_in_chain_order() {
        let root = repo_root();
        let mut c = Config::load(&root).unwrap_or_else(|e| panic!("{e}"));
        let before = names(&mut c);
        let picked = crate::filters::parse_list("token-counter,jwt-auth").unwrap_or_default();
        c.insert_filters(&root, &picked).unwrap_or_else(|e| panic!("{e}"));
        let after = names(&mut c);
        let n = before.len();
        assert_eq!(after.len(), n + 2);
        assert_eq!(
            after[n - 1..],
            ["tollgate.jwt_auth", "tollgate.token_counter", ROUTER]
        );
        assert_eq!(after[..n - 1], before[..n - 1]);
    }

    #[test]
    fn ports_move_in_one_pass_and_a_missing_default_is_refused() {
        let root = repo_root();
        let mut c = Config::load(&root).unwrap_or_else(|e| panic!("{e}"));
        // 8081 → 8091 and 8091 → 9000: the moved 8081 must not move again.
        c.set_ports(&BTreeMap::from([(8081, 8091), (8091, 9000)]))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut ports = Vec::new();
        objects_mut(&mut c.0, &mut |m| {
            ports.extend(m.get("port_value").and_then(Value::as_u64))
        });
        assert!(
            ports.contains(&8091) && ports.contains(&9000) && !ports.contains(&8081),
            "{ports:?}"
        );
        let err = c
            .set_ports(&BTreeMap::from([(1234, 1)]))
            .err()
            .unwrap_or_default();
        assert_eq!(err, "no port 1234 in envoy/envoy.yaml");
    }

    #[test]
    fn compose_names_the_services_and_listens_on_every_interface() {
        let root = repo_root();
        let mut c = Config::load(&root).unwrap_or_else(|e| panic!("{e}"));
        c.compose().unwrap_or_else(|e| panic!("{e}"));
        let yaml = to_yaml(&c.0).unwrap_or_default();
        assert!(!yaml.contains("127.0.0.1"), "{yaml}");
        assert_eq!(c.0["admin"]["address"]["socket_address"]["address"], "0.0.0.0");
        let clusters = c.clusters().cloned().unwrap_or_default();
        let sidecar = clusters
            .iter()
            .find(|c| c["name"] == "inference_sidecar")
            .cloned()
            .unwrap_or_default();
        assert_eq!(sidecar["type"], "STRICT_DNS");
        assert!(
            sidecar.to_string().contains(r#""address":"sidecar""#),
            "{sidecar}"
        );
    }

    #[test]
    fn a_provider_gets_tls_checked_against_its_name_and_the_key_in_place_of_the_token() {
        let root = repo_root();
        let mut c = Config::load(&root).unwrap_or_else(|e| panic!("{e}"));
        c.provider("https://api.openai.com", "sk-\"quoted\"", Some("/ca.pem"))
            .unwrap_or_else(|e| panic!("{e}"));
        let clusters = c.clusters().cloned().unwrap_or_default();
        for name in LLM_CLUSTERS {
            let cl = clusters
                .iter()
                .find(|c| c["name"] == name)
                .cloned()
                .unwrap_or_default();
            let tls = &cl["transport_socket"]["typed_config"];
            assert_eq!(tls["sni"], "api.openai.com", "{name}");
            assert_eq!(
                tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]
                    ["exact"],
                "api.openai.com"
            );
            assert!(cl.to_string().contains(r#""port_value":443"#), "{cl}");
        }
        let text = to_yaml(&c.0).unwrap_or_default();
        assert!(text.contains("host_rewrite_literal: api.openai.com"));
        // The key survives YAML quoting as data.
        let back: Value = parse_yaml(&text, "out").unwrap_or_default();
        assert!(back.to_string().contains(r#""value":"Bearer sk-\"quoted\"""#));
    }

    #[test]
    fn provider_urls_are_checked() {
        for (url, err) in [
            ("ftp://x", "must be an http(s) URL"),
            ("https://api.openai.com/v1", "scheme and host only"),
            ("http://api.openai.com", "clear text"),
            ("https://host:notaport", "bad port"),
        ] {
            let got = Provider::parse(url).err().unwrap_or_default();
            assert!(got.contains(err), "{url}: {got}");
        }
        let p = Provider::parse("http://127.0.0.1:8080/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.host.as_str(), p.port, p.tls), ("127.0.0.1", 8080, false));
        let p = Provider::parse("https://[::1]:8443").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.host.as_str(), p.port), ("::1", 8443));
    }

    /// The committed compose config is what the generator writes now.
    #[test]
    fn the_compose_config_is_current() {
        let root = repo_root();
        let opts = Options {
            compose: true,
            ..Options::default()
        };
        let fresh = generate(&root, &opts).unwrap_or_else(|e| panic!("{e}"));
        let committed = std::fs::read_to_string(root.join("envoy/compose/envoy.yaml")).unwrap_or_default();
        assert!(
            fresh == committed,
            "envoy/compose/envoy.yaml is stale: run cargo xtask chain-config --compose --out envoy/compose/envoy.yaml"
        );
    }
}
