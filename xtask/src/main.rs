//! `cargo xtask <command>` — the project's tools, all reading the one filter table:
//!
//!   filters [--field name|wasm|root-id|snippet|wasm-file] [--json]
//!       the table (one filter per line, in chain order), for scripts
//!   chain-config --out FILE [--filters a,b] [--wasm-root DIR] [--port DEFAULT=PORT]...
//!                [--compose] [--provider URL [--provider-key-env VAR] [--ca-file FILE]]
//!       the whole chain's Envoy config: the local demo, docker-compose, or a real provider
//!       (every LLM cluster to that host over TLS, the provider key from $VAR, default
//!       OPENAI_API_KEY, in place of the client's token; the file is written mode 0600)
//!   istio [--out FILE] [--registry R]
//!       envoy/istio/wasmplugins.yaml (default registry registry.example.com/tollgate)
//!   oci [--out DIR]
//!       each built filter as an OCI image layout and tarball (default target/oci); run
//!       `cargo wasm` first. Push one with e.g.
//!       `oras cp --from-oci-layout target/oci/jwt-auth:0.1.0 registry.example.com/tollgate/jwt-auth:0.1.0`

use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xtask::{chain, filters, istio, oci};

fn usage() -> String {
    let doc = include_str!("main.rs");
    doc.lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

struct Args(Vec<String>);

impl Args {
    /// The value of `--name`, removed from the arguments.
    fn value(&mut self, name: &str) -> Result<Option<String>, String> {
        match self.0.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) if i + 1 < self.0.len() => {
                let v = self.0.remove(i + 1);
                self.0.remove(i);
                Ok(Some(v))
            }
            Some(_) => Err(format!("{name} needs a value")),
        }
    }

    fn values(&mut self, name: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        while let Some(v) = self.value(name)? {
            out.push(v);
        }
        Ok(out)
    }

    fn flag(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|a| a != name);
        self.0.len() != before
    }

    fn done(self) -> Result<(), String> {
        match self.0.first() {
            Some(a) => Err(format!("unexpected argument `{a}`")),
            None => Ok(()),
        }
    }
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if private {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        use std::os::unix::fs::PermissionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))
    } else {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn run(command: &str, mut a: Args) -> Result<(), String> {
    let root = filters::repo_root();
    match command {
        "filters" => {
            let field = a.value("--field")?;
            let as_json = a.flag("--json");
            a.done()?;
            for f in &filters::CHAIN {
                if as_json {
                    let row = json!({"name": f.name, "wasm": f.wasm, "root_id": f.root_id(),
                                     "envoy_name": f.envoy_name(), "wasm_file": f.wasm_file(),
                                     "reads_body_before_routing": f.reads_body_before_routing,
                                     "phase": f.phase.as_str(), "priority": f.priority, "fail": f.fail.as_str()});
                    println!("{row}");
                    continue;
                }
                let value = match field.as_deref().unwrap_or("name") {
                    "name" => f.name.to_owned(),
                    "wasm" => f.wasm.to_owned(),
                    "root-id" => f.root_id().to_owned(),
                    "snippet" => format!("envoy/filters/{}.yaml", f.name),
                    "wasm-file" => f.wasm_file(),
                    other => return Err(format!("unknown --field `{other}`")),
                };
                println!("{value}");
            }
            Ok(())
        }
        "chain-config" => {
            let out = PathBuf::from(a.value("--out")?.ok_or("--out FILE is required")?);
            let list = a.value("--filters")?;
            let wasm_root = a.value("--wasm-root")?;
            let mut ports = BTreeMap::new();
            for p in a.values("--port")? {
                let parsed = p
                    .split_once('=')
                    .and_then(|(o, n)| Some((o.parse().ok()?, n.parse().ok()?)));
                let (old, new) = parsed.ok_or_else(|| format!("--port wants DEFAULT=PORT, got {p:?}"))?;
                ports.insert(old, new);
            }
            let compose = a.flag("--compose");
            let provider = a.value("--provider")?;
            let key_env = a
                .value("--provider-key-env")?
                .unwrap_or_else(|| "OPENAI_API_KEY".into());
            let ca = a.value("--ca-file")?;
            a.done()?;
            let key = match &provider {
                Some(_) => std::env::var(&key_env)
                    .ok()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| format!("--provider needs the API key in ${key_env}"))?,
                None => String::new(),
            };
            let opts = chain::Options {
                filters: match list {
                    Some(l) => filters::parse_list(&l)?,
                    None => filters::CHAIN.iter().collect(),
                },
                wasm_root: wasm_root.as_deref(),
                ports,
                compose,
                provider: provider.as_deref().map(|u| (u, key.as_str(), ca.as_deref())),
            };
            let text = chain::generate(&root, &opts)?;
            write(&out, &text, provider.is_some())
        }
        "istio" => {
            let out = a
                .value("--out")?
                .map_or_else(|| root.join("envoy/istio/wasmplugins.yaml"), PathBuf::from);
            let registry = a
                .value("--registry")?
                .unwrap_or_else(|| istio::DEFAULT_REGISTRY.into());
            a.done()?;
            write(&out, &istio::manifests(&root, &registry)?, false)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        "oci" => {
            let out = a
                .value("--out")?
                .map_or_else(|| root.join("target/oci"), PathBuf::from);
            a.done()?;
            for (f, digest) in filters::CHAIN.iter().zip(oci::package_all(&root, &out)?) {
                println!(
                    "{}: {} ({}…), {}.tar",
                    f.name,
                    out.join(f.name).display(),
                    &digest[..19],
                    f.name
                );
            }
            Ok(())
        }
        "help" | "--help" | "-h" => {
            println!("{}", usage());
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{}", usage())),
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    }
    let command = args.remove(0);
    match run(&command, Args(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {command}: {e}");
            ExitCode::FAILURE
        }
    }
}
