#!/usr/bin/env bash
# Runs every test tier: format, lints, the wasm filters' build, the native build, the unit tests
# compiled to wasm and run in V8 under Node, `envoy --mode validate` on every Envoy config in
# envoy/, the docker-compose checks and the image build's steps, the native tests (unit, and the
# integration tests against the real Envoy, sidecar, model and Redis) and the demo's walkthrough
# end to end. Prints the seconds each tier took; fails when any tier fails. One tier alone: see
# README.md ("Test tiers").
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

times=()
current=
final_line=
native_log=$(mktemp)
wasm_log=$(mktemp)
summary() {
  local rc=$?
  trap - EXIT
  rm -f "$native_log" "$wasm_log"
  printf '\n\033[1m[test]\033[0m seconds per tier\n'
  printf '%s\n' "${times[@]}"
  printf '%6d  total\n' "$SECONDS"
  if [ "$rc" -ne 0 ]; then
    printf '\033[1m[test]\033[0m FAILED in tier "%s" (exit %d)\n' "$current" "$rc"
  fi
  [ -z "$final_line" ] || echo "$final_line"
  exit "$rc"
}
trap summary EXIT
# tier NAME COMMAND...: runs one tier, announcing it and recording its wall time.
tier() {
  current=$1
  shift
  printf '\n\033[1m[test]\033[0m %s\n' "$current"
  local start=$SECONDS
  "$@"
  times+=("$(printf '%6d  %s' $((SECONDS - start)) "$current")")
}

validate_configs() {
  local n=0 cfg
  while IFS= read -r cfg; do
    .venv/bin/envoy --mode validate -c "$cfg" -l error >/dev/null || { echo "invalid: $cfg" >&2; return 1; }
    echo "valid: $cfg"
    n=$((n + 1))
  done < <(grep -rl --include='*.yaml' '^static_resources:' envoy | sort)
  [ "$n" -gt 0 ] || { echo "no Envoy config found in envoy/" >&2; return 1; }
  # The demo's real-provider config (cargo xtask chain-config --provider).
  OPENAI_API_KEY=validate-only cargo xtask chain-config --out .cache/provider-envoy.yaml \
    --wasm-root "$PWD" --provider https://api.openai.com
  .venv/bin/envoy --mode validate -c .cache/provider-envoy.yaml -l error >/dev/null
  echo "valid: cargo xtask chain-config --provider https://api.openai.com"
}

compose_checks() {
  .venv/bin/python scripts/check-compose.py
  bash scripts/docker-build.sh .cache/docker-out
}

# Every native test, unit and integration, in one nextest run over one build: the scheduler fills
# both cores across tiers (see .config/nextest.toml for the Envoy test group and priorities).
native_tests() {
  cargo nextest run --release --workspace 2>&1 | tee "$native_log"
}

wasm_tests() {
  cargo wasm-test --no-fail-fast 2>&1 | tee "$wasm_log"
}

tier "setup (scripts/setup.sh: installs what is missing)" bash scripts/setup.sh
tier "fmt" cargo fmt --all --check
# One clippy pass: no code in the workspace is compiled only for wasm32 (the filters' cfg(wasm32)
# lines were the wasm test attribute), so a second pass for wasm32-wasip1 lints nothing new; the
# wasm build below still compiles every filter for that target.
tier "clippy (all targets, -D warnings)" cargo clippy -q --release --workspace --all-targets -- -D warnings
tier "build: the wasm filters (cargo wasm)" cargo wasm -q
tier "build: native tests and binaries (one release build)" \
  cargo nextest run --release --workspace --no-run --cargo-quiet
tier "unit tests compiled to wasm32-wasip1, run in V8 under Node (cargo wasm-test)" wasm_tests
tier "envoy --mode validate on every Envoy config in envoy/ and the real-provider config" validate_configs
tier "docker-compose without a Docker engine: Compose schema and references, the image build's steps" compose_checks
tier "native tests: unit, and integration against the real Envoy, sidecar and Redis (cargo nextest)" native_tests
tier "the demo, end to end (scripts/demo.sh --check)" bash scripts/demo.sh --check

# Counts: nextest's "N tests run: N passed" line and libtest's "test result:" lines.
native=$(sed -n 's/.* \([0-9]*\) tests run: \([0-9]*\) passed.*/\2/p' "$native_log" | tail -1)
wasm=$(grep '^test result:' "$wasm_log" | awk '{for (i = 1; i < NF; i++) if ($(i + 1) ~ /^passed;?$/) s += $i} END {print s + 0}')
current="all tiers passed"
printf '\n\033[1m[test]\033[0m all tiers passed: %d native tests, %d wasm tests\n' "${native:-0}" "$wasm"
final_line="tests: $((${native:-0} + wasm)) passed, 0 failed"
