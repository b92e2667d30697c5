//! `scripts/package-oci.sh` against the OCI image layout spec (image-spec layout.md, manifest.md)
//! and the Wasm artifact variant Istio's WasmPlugin fetcher reads: every descriptor's digest and
//! size match its blob, the index points at the manifest, the manifest's two layers are the
//! runtime config (naming the filter's root_id) and the module, byte for byte the built .wasm,
//! and the tarball holds the same layout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

const FILTERS: [(&str, &str, &str); 6] = [
    ("jwt-auth", "jwt_auth", "jwt_auth.wasm"),
    ("prompt-templater", "prompt_templater", "prompt_templater.wasm"),
    ("content-moderator", "content_moderator", "content_moderator.wasm"),
    ("semantic-router", "semantic_router", "semantic_router.wasm"),
    ("response-cache", "response_cache", "response_cache.wasm"),
    ("token-counter", "token_counter", "token_counter.wasm"),
];

fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The blob a descriptor names, after checking its digest and size.
fn blob(layout: &Path, desc: &Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").expect("sha256 digests");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(sha256(&bytes), digest, "blob content matches its digest");
    assert_eq!(
        desc["size"].as_u64().unwrap(),
        bytes.len() as u64,
        "descriptor size"
    );
    bytes
}

#[test]
fn images_follow_the_oci_layout_and_the_wasm_artifact_format() {
    let root = tollgate_it::repo_root();
    for (_, _, wasm) in FILTERS {
        tollgate_it::envoy::check_fresh(&tollgate_it::envoy::wasm_path(wasm)).unwrap();
    }
    let out = std::env::temp_dir().join(format!("tollgate-oci-{}", std::process::id()));
    let status = Command::new("bash")
        .arg(root.join("scripts/package-oci.sh"))
        .args(["--no-build", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "package-oci.sh failed (run `cargo wasm` first)");
    let version = env!("CARGO_PKG_VERSION");
    for (name, root_id, wasm) in FILTERS {
        let layout = out.join(name);
        let marker: Value =
            serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
        assert_eq!(marker["imageLayoutVersion"], "1.0.0");
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            entries[0]["annotations"]["org.opencontainers.image.ref.name"],
            version
        );

        let manifest: Value = serde_json::from_slice(&blob(&layout, &entries[0])).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.module.wasm.config.v1+json"
        );
        let config: Value = serde_json::from_slice(&blob(&layout, &manifest["config"])).unwrap();
        assert_eq!(config["type"], "envoy_proxy");
        assert_eq!(config["config"]["root_ids"][0], root_id);
        assert_eq!(config["abiVersions"][0], "proxy_abi_version_0_2_1");

        // Istio's OCI-artifact path: two layers, the runtime config then the module.
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.module.wasm.config.v1+json"
        );
        assert_eq!(blob(&layout, &layers[0]), blob(&layout, &manifest["config"]));
        assert_eq!(
            layers[1]["mediaType"],
            "application/vnd.module.wasm.content.layer.v1+wasm"
        );
        let module = blob(&layout, &layers[1]);
        assert_eq!(
            module,
            std::fs::read(tollgate_it::envoy::wasm_path(wasm)).unwrap(),
            "{name}"
        );
        assert_eq!(module.get(..4), Some(b"\0asm".as_slice()));

        // Nothing in blobs/ that no descriptor names.
        let blobs = std::fs::read_dir(layout.join("blobs/sha256")).unwrap().count();
        assert_eq!(blobs, 3, "{name}: manifest, config, module");

        // The tarball is the same layout.
        let listing = Command::new("tar")
            .arg("-tf")
            .arg(out.join(format!("{name}.tar")))
            .output()
            .unwrap();
        let listing = String::from_utf8(listing.stdout).unwrap();
        for entry in ["oci-layout", "index.json", "blobs/sha256/"] {
            assert!(
                listing.lines().any(|l| l == entry),
                "{name}.tar lacks {entry}: {listing}"
            );
        }
    }
    // Reproducible: packaging again gives the same manifest digests.
    let first = std::fs::read(out.join("jwt-auth/index.json")).unwrap();
    let again = Command::new("bash")
        .arg(root.join("scripts/package-oci.sh"))
        .args(["--no-build", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(again.success());
    assert_eq!(std::fs::read(out.join("jwt-auth/index.json")).unwrap(), first);
    let _ = std::fs::remove_dir_all(&out);
}

/// The Istio manifests are generated from the snippets; the committed file must be what the
/// generator writes now (a snippet changed without rerunning it fails here).
#[test]
fn istio_manifests_are_generated_from_the_snippets() {
    let root = tollgate_it::repo_root();
    let out = std::env::temp_dir().join(format!("tollgate-istio-{}.yaml", std::process::id()));
    let status = Command::new("bash")
        .arg(root.join("scripts/istio-manifests.sh"))
        .arg(&out)
        .env("TOLLGATE_REGISTRY", "registry.example.com/tollgate")
        .status()
        .unwrap();
    assert!(status.success());
    let fresh = std::fs::read_to_string(&out).unwrap();
    let committed = std::fs::read_to_string(root.join("envoy/istio/wasmplugins.yaml")).unwrap();
    assert!(
        fresh == committed,
        "envoy/istio/wasmplugins.yaml is stale: run scripts/istio-manifests.sh"
    );
    for (name, root_id, _) in FILTERS {
        assert!(
            committed.contains(&format!("  name: tollgate-{name}\n")),
            "{name}"
        );
        assert!(
            committed.contains(&format!("  pluginName: {root_id}\n")),
            "{name}"
        );
    }
    let order: Vec<usize> = FILTERS
        .iter()
        .map(|(name, _, _)| committed.find(&format!("  name: tollgate-{name}\n")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in the chain's order");
    let _ = std::fs::remove_file(&out);
}
