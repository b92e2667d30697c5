#!/usr/bin/env bash
# Runs every test tier: format, lints (native and wasm), unit tests, the same unit tests compiled to
# wasm under Node, `envoy --mode validate` on every Envoy config in envoy/, the docker-compose
# checks and the image build's steps, the integration tests against the real Envoy, and the demo's
# walkthrough end to end. One tier alone: see README.md ("Test tiers").
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n\033[1m[test]\033[0m %s\n' "$*"; }
results=$(mktemp)
trap 'rm -f "$results"' EXIT
# Runs a cargo test command, keeping its "test result:" lines for the summary at the end.
run_tests() { "$@" 2>&1 | tee -a "$results"; }

bash scripts/setup.sh

step "fmt"
cargo fmt --all --check

step "clippy (native, all targets)"
cargo clippy -q --workspace --all-targets -- -D warnings
step "clippy (wasm32-wasip1)"
cargo clippy -q --target wasm32-wasip1 --workspace --exclude integration-tests --exclude inference-sidecar -- -D warnings

step "unit tests (native)"
run_tests cargo unit

step "unit tests compiled to wasm (wasm-bindgen-test under Node)"
run_tests cargo wasm-test

step "envoy --mode validate on every Envoy config in envoy/"
n=0
while IFS= read -r cfg; do
  .venv/bin/envoy --mode validate -c "$cfg" -l error >/dev/null || { echo "invalid: $cfg" >&2; exit 1; }
  echo "valid: $cfg"
  n=$((n + 1))
done < <(grep -rl --include='*.yaml' '^static_resources:' envoy | sort)
[ "$n" -gt 0 ] || { echo "no Envoy config found in envoy/" >&2; exit 1; }

step "docker-compose demo without a Docker engine: Compose schema and references, the image build's steps"
.venv/bin/python scripts/check-compose.py
bash scripts/docker-build.sh .cache/docker-out

step "the demo's real-provider config (scripts/chain-config.py --provider) passes envoy --mode validate"
OPENAI_API_KEY=validate-only python3 scripts/chain-config.py --out .cache/provider-envoy.yaml \
  --wasm-root "$PWD" --provider https://api.openai.com
.venv/bin/envoy --mode validate -c .cache/provider-envoy.yaml -l error >/dev/null
echo "valid: scripts/chain-config.py --provider https://api.openai.com"

step "integration tests (real Envoy on loopback)"
run_tests cargo envoy

step "the demo, end to end: scripts/demo.sh --check runs its walkthrough and checks every answer"
bash scripts/demo.sh --check

passed=$(grep '^test result:' "$results" | awk '{for (i = 1; i < NF; i++) if ($(i + 1) ~ /^passed;?$/) s += $i} END {print s + 0}')
failed=$(grep '^test result:' "$results" | awk '{for (i = 1; i < NF; i++) if ($(i + 1) ~ /^failed;?$/) s += $i} END {print s + 0}')
step "all tiers passed"
echo "tests: $passed passed, $failed failed"
