#!/usr/bin/env bash
# Packages each filter's .wasm as an OCI image in the "wasm artifact" format that Istio's WasmPlugin
# fetcher accepts (github.com/solo-io/wasm spec/spec.md, the *oci* variant): a manifest whose two
# layers are the runtime config (application/vnd.module.wasm.config.v1+json: type envoy_proxy and
# the filter's root_id) and the module (application/vnd.module.wasm.content.layer.v1+wasm).
#
# Writes, per filter, an OCI image layout directory (oci-layout, index.json, blobs/sha256/…) and the
# same as a tarball:  <out>/<filter>/  and  <out>/<filter>.tar   (default <out>: target/oci).
# The images are reproducible: no timestamps, so the same .wasm gives the same digests.
#
# Push one with any OCI tool, for example:
#   oras cp --from-oci-layout target/oci/jwt-auth:0.1.0 registry.example.com/tollgate/jwt-auth:0.1.0
#   skopeo copy oci:target/oci/jwt-auth:0.1.0 docker://registry.example.com/tollgate/jwt-auth:0.1.0
# and point a WasmPlugin's `url` at it (envoy/istio/wasmplugins.yaml).
#
# Usage: scripts/package-oci.sh [--out DIR] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

out=target/oci
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: scripts/package-oci.sh [--out DIR] [--no-build]" >&2; exit 2 ;;
  esac
done
[ "$build" = 0 ] || cargo wasm -q

python3 - "$out" <<'PY'
import hashlib, json, os, re, sys, tarfile

out = sys.argv[1]
version = re.search(r'^version = "([^"]+)"', open("Cargo.toml", encoding="utf-8").read(), re.M).group(1)
filters = ["jwt-auth", "prompt-templater", "content-moderator", "semantic-router", "response-cache", "token-counter"]


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


for name in filters:
    snippet = open(f"envoy/filters/{name}.yaml", encoding="utf-8").read()
    root_id = re.search(r"^\s*root_id:\s*(\S+)", snippet, re.M).group(1)
    wasm_file = re.search(r"filename:\s*(\S+)", snippet).group(1)
    if not os.path.exists(wasm_file):
        sys.exit(f"{wasm_file} not found: run `cargo wasm` (or drop --no-build)")
    layout = os.path.join(out, name)
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    for old in os.listdir(os.path.join(layout, "blobs", "sha256")):
        os.remove(os.path.join(layout, "blobs", "sha256", old))
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))

    # The ABI the proxy-wasm Rust SDK exports (`proxy_abi_version_0_2_1`, checked in the module).
    abi = re.findall(rb"proxy_abi_version_[0-9_]+", open(wasm_file, "rb").read())
    runtime = canonical({"type": "envoy_proxy", "abiVersions": sorted({a.decode() for a in abi}),
                         "config": {"root_ids": [root_id]}})
    config_digest, config_size = blob(layout, runtime)
    wasm_digest, wasm_size = blob(layout, open(wasm_file, "rb").read())
    config_desc = {"mediaType": "application/vnd.module.wasm.config.v1+json", "digest": config_digest, "size": config_size}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [
            dict(config_desc, annotations={"org.opencontainers.image.title": "runtime-config.json"}),
            {"mediaType": "application/vnd.module.wasm.content.layer.v1+wasm", "digest": wasm_digest, "size": wasm_size,
             "annotations": {"org.opencontainers.image.title": "plugin.wasm"}},
        ],
        "annotations": {"org.opencontainers.image.title": f"tollgate-{name}", "org.opencontainers.image.version": version},
    }
    manifest_digest, manifest_size = blob(layout, canonical(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                       "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": version}}],
    }
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical(index))
    with tarfile.open(os.path.join(out, f"{name}.tar"), "w") as tar:
        for entry in ["oci-layout", "index.json", "blobs"]:
            tar.add(os.path.join(layout, entry), arcname=entry)
    print(f"{name}: {layout} ({manifest_digest[:19]}…, {wasm_size} bytes of wasm), {out}/{name}.tar")
PY
