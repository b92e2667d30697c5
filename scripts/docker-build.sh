#!/usr/bin/env bash
# The build steps of envoy/compose/Dockerfile, as one script so that they also run where no Docker
# engine does (scripts/test.sh runs it on the CI machine): unpack the model, build the release
# sidecar, the demo's mock provider and issuer, and the wasm filters, and copy them to OUT_DIR.
# Usage: scripts/docker-build.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
out=${1:?usage: scripts/docker-build.sh OUT_DIR}

bash scripts/fetch-model.sh
# The demo's build (scripts/demo.sh): one release build whose dependencies the tests share.
cargo bins --locked -q
cargo wasm --locked -q
rm -rf "$out"
mkdir -p "$out/bin" "$out/wasm" "$out/models"
cp target/release/tollgate-sidecar target/release/mock-llm target/release/demo-issuer "$out/bin/"
# The modules of the filter table (xtask/src/filters.rs).
cargo xtask filters --field wasm-file | while read -r f; do cp "$f" "$out/wasm/"; done
cp -r models/all-MiniLM-L6-v2 "$out/models/"
echo "docker-build: $(ls "$out/bin" | wc -l) binaries, $(ls "$out/wasm" | wc -l) filters, model in $out"
