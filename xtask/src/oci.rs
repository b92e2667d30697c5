//! Each filter's module as an OCI image in the "wasm artifact" format that Istio's WasmPlugin
//! fetcher accepts (github.com/solo-io/wasm spec/spec.md, the *oci* variant): a manifest whose two
//! layers are the runtime config (`application/vnd.module.wasm.config.v1+json`: type envoy_proxy
//! and the filter's root_id) and the module (`application/vnd.module.wasm.content.layer.v1+wasm`).
//!
//! Per filter: an OCI image layout directory (oci-layout, index.json, blobs/sha256/…) and the same
//! as a tarball, `<out>/<filter>/` and `<out>/<filter>.tar`. Reproducible: no timestamps, so the
//! same module gives the same digests.

use crate::chain::Error;
use crate::filters::{CHAIN, Filter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// JSON with sorted keys and no spaces, so digests do not depend on how it was built.
fn canonical(v: &Value) -> Vec<u8> {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string().into_bytes()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .fold(String::from("sha256:"), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Writes `data` as a blob of `layout`; returns its descriptor's digest and size.
fn blob(layout: &Path, data: &[u8]) -> Result<(String, usize), Error> {
    let digest = sha256(data);
    let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    std::fs::write(&path, data).map_err(io(&path))?;
    Ok((digest, data.len()))
}

/// The proxy-wasm ABI versions a module exports (`proxy_abi_version_0_2_1` for the Rust SDK).
fn abi_versions(wasm: &[u8]) -> Vec<String> {
    const NEEDLE: &[u8] = b"proxy_abi_version_";
    let mut out: Vec<String> = Vec::new();
    let mut at = 0;
    while let Some(i) = wasm[at..].windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        let start = at + i;
        let end = wasm[start + NEEDLE.len()..]
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'_'))
            .map_or(wasm.len(), |n| start + NEEDLE.len() + n);
        let name = String::from_utf8_lossy(&wasm[start..end]).into_owned();
        if !out.contains(&name) {
            out.push(name);
        }
        at = end;
    }
    out.sort();
    out
}

/// Packages one filter; returns the manifest digest.
pub fn package(root: &Path, out: &Path, f: &Filter) -> Result<String, Error> {
    let version = env!("CARGO_PKG_VERSION");
    let wasm_path = root.join(f.wasm_file());
    let wasm = std::fs::read(&wasm_path)
        .map_err(|e| format!("{}: {e} (run `cargo wasm` first)", wasm_path.display()))?;
    let layout = out.join(f.name);
    let blobs = layout.join("blobs/sha256");
    if blobs.exists() {
        std::fs::remove_dir_all(&blobs).map_err(io(&blobs))?;
    }
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let marker = canonical(&json!({"imageLayoutVersion": "1.0.0"}));
    std::fs::write(layout.join("oci-layout"), &marker).map_err(io(&layout))?;

    let runtime = canonical(&json!({"type": "envoy_proxy", "abiVersions": abi_versions(&wasm),
                                    "config": {"root_ids": [f.root_id()]}}));
    let (config_digest, config_size) = blob(&layout, &runtime)?;
    let (wasm_digest, wasm_size) = blob(&layout, &wasm)?;
    let config_desc = json!({"mediaType": "application/vnd.module.wasm.config.v1+json",
                             "digest": config_digest, "size": config_size});
    let mut config_layer = config_desc.clone();
    config_layer["annotations"] = json!({"org.opencontainers.image.title": "runtime-config.json"});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [
            config_layer,
            {"mediaType": "application/vnd.module.wasm.content.layer.v1+wasm", "digest": wasm_digest, "size": wasm_size,
             "annotations": {"org.opencontainers.image.title": "plugin.wasm"}},
        ],
        "annotations": {"org.opencontainers.image.title": format!("tollgate-{}", f.name),
                        "org.opencontainers.image.version": version},
    });
    let (manifest_digest, manifest_size) = blob(&layout, &canonical(&manifest))?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                       "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": version}}],
    });
    let index = canonical(&index);
    std::fs::write(layout.join("index.json"), &index).map_err(io(&layout))?;

    let mut tar = Tar::default();
    tar.file("oci-layout", &marker);
    tar.file("index.json", &index);
    tar.dir("blobs/");
    tar.dir("blobs/sha256/");
    let mut names: Vec<_> = std::fs::read_dir(&blobs)
        .map_err(io(&blobs))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names {
        let path = blobs.join(&name);
        tar.file(
            &format!("blobs/sha256/{name}"),
            &std::fs::read(&path).map_err(io(&path))?,
        );
    }
    let tar_path = out.join(format!("{}.tar", f.name));
    std::fs::write(&tar_path, tar.finish()).map_err(io(&tar_path))?;
    Ok(manifest_digest)
}

/// Packages every filter of the table.
pub fn package_all(root: &Path, out: &Path) -> Result<Vec<String>, Error> {
    CHAIN.iter().map(|f| package(root, out, f)).collect()
}

/// A ustar archive (POSIX.1-1988) of short names, owned by root, dated 0: reproducible.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn entry(&mut self, name: &str, mode: u32, kind: u8, data: &[u8]) {
        let mut h = [0u8; 512];
        let field = |h: &mut [u8; 512], at: usize, text: &[u8]| h[at..at + text.len()].copy_from_slice(text);
        field(&mut h, 0, &name.as_bytes()[..name.len().min(100)]);
        field(&mut h, 100, format!("{mode:07o}\0").as_bytes());
        field(&mut h, 108, b"0000000\0");
        field(&mut h, 116, b"0000000\0");
        field(&mut h, 124, format!("{:011o}\0", data.len()).as_bytes());
        field(&mut h, 136, b"00000000000\0");
        field(&mut h, 148, b"        ");
        h[156] = kind;
        field(&mut h, 257, b"ustar\0");
        field(&mut h, 263, b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        field(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
    }

    fn file(&mut self, name: &str, data: &[u8]) {
        self.entry(name, 0o644, b'0', data);
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o755, b'5', &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.resize(self.0.len() + 1024, 0);
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_versions_are_read_from_the_module_bytes() {
        let bytes =
            b"\0\x17proxy_abi_version_0_2_1\x00\x02xxproxy_abi_version_0_2_1\0proxy_abi_version_0_1_0";
        assert_eq!(
            abi_versions(bytes),
            ["proxy_abi_version_0_1_0", "proxy_abi_version_0_2_1"]
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": "x"}});
        assert_eq!(
            String::from_utf8_lossy(&canonical(&v)),
            r#"{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn tar_headers_carry_a_valid_checksum_and_size() {
        let mut t = Tar::default();
        t.file("a.txt", b"hello");
        let out = t.finish();
        assert_eq!(out.len(), 512 + 512 + 1024);
        let h = &out[..512];
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap_or(""), 8).unwrap_or(0);
        let sum: u32 = h[..148]
            .iter()
            .chain([b' '; 8].iter())
            .chain(&h[156..])
            .map(|&b| u32::from(b))
            .sum();
        assert_eq!(stored, sum);
        assert_eq!(&h[124..135], b"00000000005");
        assert_eq!(&out[512..517], b"hello");
    }
}
