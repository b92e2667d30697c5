#!/usr/bin/env bash
# Bounded-time fuzzing of the parsers that read untrusted bytes, with cargo-fuzz (libFuzzer + ASan):
#   sse           filters/core/src/sse.rs: SSE stream parser (chunked parse == whole parse)
#   json_extract  filters/core: request/response bodies, prompt text, usage (OpenAI, Anthropic)
#   jwt           filters/jwt-auth: token split/decode, claims, JWKS documents, the auth decision
#   template      filters/prompt-templater: template text, variable checks, rendering into bodies
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# Targets run one after another, each in one libFuzzer process (no -jobs/-fork), for a bounded
# time (-max_total_time). Installs cargo-fuzz if missing. Stable Rust runs it with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Zsanitizer=address). New corpus entries go to
# .cache/fuzz-corpus/TARGET (ignored by git); fuzz/corpus/TARGET holds the committed seeds only.
# Exits nonzero if any target crashed, after printing the crash files.
#
# Not part of CI (scripts/test.sh): building the targets with sanitizers takes minutes on 2 cores,
# and a fuzzing run is only worth its time when it is long.
#
# Reproduce a crash (runs the one input, prints the panic and backtrace):
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# Shrink it first if it is large:
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1

seconds=${1:-60}
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(sse json_extract jwt template)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

failed=()
for t in "${targets[@]}"; do
  printf '\n\033[1m[fuzz]\033[0m %s for %ss\n' "$t" "$seconds"
  scratch=".cache/fuzz-corpus/$t"
  mkdir -p "$scratch" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | sort)
  status=0
  # The scratch dir first: libFuzzer writes new inputs into the first corpus dir only.
  cargo fuzz run "$t" "$scratch" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 || status=$?
  after=$(find "fuzz/artifacts/$t" -type f | sort)
  new=$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | sed '/^$/d')
  if [[ $status -ne 0 || -n "$new" ]]; then
    failed+=("$t")
    printf '\033[1;31m[fuzz] %s failed (exit %s: a crash, or the build failed); artifacts:\033[0m\n' "$t" "$status"
    if [[ -n "$new" ]]; then printf '  %s\n' $new; else echo "  (none written)"; fi
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  printf '\n[fuzz] crashed: %s\n' "${failed[*]}"
  exit 1
fi
printf '\n[fuzz] no crash in: %s\n' "${targets[*]}"
