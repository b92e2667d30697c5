#!/usr/bin/env bash
# Measures the wasm profile's opt-level for the wasm filters: builds filter-core's per-request
# benchmark (examples/core_bench.rs) for wasm32-wasip1 at opt-level 3 and "s", runs each 3 times
# under Node's WASI (V8) and prints size and timings. Numbers go into the foundation issue note.
set -euo pipefail
cd "$(dirname "$0")/.."
for level in 3 s; do
  dir="target/opt-$level"
  CARGO_PROFILE_WASM_OPT_LEVEL=$level cargo build -q --profile wasm --target wasm32-wasip1 \
    -p filter-core --example core_bench --target-dir "$dir"
  wasm="$dir/wasm32-wasip1/wasm/examples/core_bench.wasm"
  echo "opt-level=$level size=$(stat -c %s "$wasm") bytes"
  for _ in 1 2 3; do node --no-warnings scripts/run-wasi.mjs "$wasm"; done
done
