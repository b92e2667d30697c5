//! `cargo xtask oci` (xtask/src/oci.rs) against the OCI image layout spec (image-spec layout.md, manifest.md)
//! and the Wasm artifact variant Istio's WasmPlugin fetcher reads: every descriptor's digest and
//! size match its blob, the index points at the manifest, the manifest's two layers are the
//! runtime config (naming the filter's root_id) and the module, byte for byte the built .wasm,
//! and the tarball holds the same layout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use xtask::filters::CHAIN;

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
    for f in &CHAIN {
        tollgate_it::envoy::check_fresh(&root.join(f.wasm_file())).unwrap();
    }
    let out = std::env::temp_dir().join(format!("tollgate-oci-{}", std::process::id()));
    let digests = xtask::oci::package_all(&root, &out).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    for (f, digest) in CHAIN.iter().zip(&digests) {
        let (name, root_id) = (f.name, f.root_id());
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
        assert_eq!(module, std::fs::read(root.join(f.wasm_file())).unwrap(), "{name}");
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
        // GNU tar reads it back (headers and checksums) to the same bytes.
        let unpacked = out.join(format!("{name}-unpacked"));
        std::fs::create_dir_all(&unpacked).unwrap();
        let status = Command::new("tar")
            .arg("-xf")
            .arg(out.join(format!("{name}.tar")))
            .arg("-C")
            .arg(&unpacked)
            .status()
            .unwrap();
        assert!(status.success(), "tar -xf {name}.tar");
        for file in ["oci-layout", "index.json"] {
            assert_eq!(
                std::fs::read(unpacked.join(file)).unwrap(),
                std::fs::read(layout.join(file)).unwrap()
            );
        }
        let hex = digest.strip_prefix("sha256:").unwrap();
        assert_eq!(entries[0]["digest"], *digest);
        assert_eq!(
            std::fs::read(unpacked.join("blobs/sha256").join(hex)).unwrap(),
            std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
        );
    }
    // Reproducible: packaging again gives the same manifest digests and the same tarballs.
    let tar = std::fs::read(out.join("jwt-auth.tar")).unwrap();
    assert_eq!(xtask::oci::package_all(&root, &out).unwrap(), digests);
    assert_eq!(std::fs::read(out.join("jwt-auth.tar")).unwrap(), tar);
    let _ = std::fs::remove_dir_all(&out);
}
