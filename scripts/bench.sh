#!/usr/bin/env bash
# Benchmarks on loopback, release builds. Sections: `sidecar` (gRPC embed latency, throughput, LRU,
# semantic cache over Redis, RSS); `token-counter` (Envoy with the filter vs bare Envoy in the same
# run: requests/s and latency for 200 B / 8 KB / 100 KB prompts, start-up, RSS at --concurrency 2,
# the count cache on a 20-turn conversation; JSON in .cache/bench/token-counter.json);
# `prompt-templater` (templated requests vs bare Envoy given the rendered messages, same run);
# `jwt-auth` (bare Envoy vs Envoy's native jwt_authn vs the filter, same key and token, RS256 and
# ES256, verified-token caches off and on); `content-moderator` (1 KB / 32 KB prompts and a
# streamed reply with every detector on, vs bare Envoy); `semantic-router` (keyword, repeated and
# distinct prompts through the shipped snippet and the release sidecar, vs bare Envoy, with the
# filter's sidecar time shown apart); `response-cache` (an exact hit, and misses with and without
# the semantic lookup, vs bare Envoy); `chain` (bare Envoy, each filter alone, the tiers auth + token
# counting, + moderation, + the response cache hit and miss, + semantic routing, and the full chain
# of six, in one run: start-up, RSS, c1 added latency, c16 throughput, a fixed-rate open-loop run,
# streaming time to first token and chunk gaps; Envoy pinned to CPU 0, the load generator, the mock
# and the sidecar to CPU 1; JSON and Markdown in .cache/bench/chain.{json,md}).
# Run all: scripts/bench.sh; one: scripts/bench.sh token-counter.
# Results print as Markdown; they are measurements of this machine, not assertions.
# TOLLGATE_BENCH_SIDECAR_ARGS adds flags to the benchmarked sidecar (e.g. "--workers 1").
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(sidecar token-counter prompt-templater jwt-auth content-moderator semantic-router response-cache chain)
step() { printf '\n\033[1m[bench]\033[0m %s\n' "$*"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

bash scripts/setup.sh >/dev/null
run=.cache/bench
mkdir -p "$run"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

bench_sidecar() {
  step "build: release sidecar and its benchmark client"
  cargo build -q --release --workspace --bin tollgate-sidecar --example sidecar_bench
  local port redis_port redis_sidecar_port
  port=$(free_port); redis_port=$(free_port); redis_sidecar_port=$(free_port)
  # shellcheck disable=SC2086 # word splitting of the extra flags is intended
  target/release/tollgate-sidecar --listen "127.0.0.1:$port" --metrics-addr off \
    --label-sets sidecar/label-sets.json ${TOLLGATE_BENCH_SIDECAR_ARGS:-} 2>"$run/sidecar.log" &
  local pid=$!; pids+=("$pid")
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$run/redis.log" &
  pids+=($!)
  wait_port "$redis_port"
  target/release/tollgate-sidecar --listen "127.0.0.1:$redis_sidecar_port" --metrics-addr off \
    --redis-url "redis://127.0.0.1:$redis_port/" --workers 1 2>"$run/sidecar-redis.log" &
  pids+=($!)
  wait_port "$port"; wait_port "$redis_sidecar_port"
  step "sidecar: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  target/release/examples/sidecar_bench --addr "127.0.0.1:$port" --pid "$pid" \
    --redis-addr "127.0.0.1:$redis_sidecar_port"
}

need_wrk() {
  if ! command -v wrk >/dev/null; then
    step "install wrk (HTTP load generator, Debian package)"
    if [ "$(id -u)" -eq 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi
  fi
}

bench_prompt_templater() {
  need_wrk
  step "build: wasm filters and the benchmark driver (release)"
  cargo wasm -q
  cargo build -q --release --workspace --bin bench-prompt-templater
  step "prompt-templater: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  target/release/bench-prompt-templater --seconds "${TOLLGATE_BENCH_SECONDS:-5}" --json "$run/prompt-templater.json"
}

bench_jwt_auth() {
  need_wrk
  step "build: wasm filters and the benchmark driver (release)"
  cargo wasm -q
  cargo build -q --release --workspace --bin bench-jwt-auth
  step "jwt-auth: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  target/release/bench-jwt-auth --seconds "${TOLLGATE_BENCH_SECONDS:-5}" --json "$run/jwt-auth.json"
}

bench_content_moderator() {
  need_wrk
  step "build: wasm filters and the benchmark driver (release)"
  cargo wasm -q
  cargo build -q --release --workspace --bin bench-content-moderator
  step "content-moderator: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  target/release/bench-content-moderator --seconds "${TOLLGATE_BENCH_SECONDS:-5}" --json "$run/content-moderator.json"
}

bench_token_counter() {
  need_wrk
  step "build: wasm filters and the benchmark driver (release)"
  cargo wasm -q
  cargo build -q --release --workspace --bin bench-token-counter
  step "token-counter: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  target/release/bench-token-counter --seconds "${TOLLGATE_BENCH_SECONDS:-5}" --json "$run/token-counter.json"
}

# Runs bench-<name> against a fresh release sidecar (filters that call it: semantic-router,
# response-cache).
bench_with_sidecar() {
  local name=$1
  need_wrk
  step "build: wasm filters, the release sidecar and the benchmark driver"
  cargo wasm -q
  cargo build -q --release --workspace --bin tollgate-sidecar
  cargo build -q --release --workspace --bin "bench-$name"
  local port
  port=$(free_port)
  target/release/tollgate-sidecar --listen "127.0.0.1:$port" --metrics-addr off \
    --label-sets sidecar/label-sets.json 2>"$run/sidecar-$name.log" &
  local pid=$!; pids+=("$pid")
  wait_port "$port"
  step "$name: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  "target/release/bench-$name" --sidecar "127.0.0.1:$port" \
    --seconds "${TOLLGATE_BENCH_SECONDS:-5}" --json "$run/$name.json"
  kill "$pid" 2>/dev/null || true
}

# The whole chain, tier by tier. With two or more CPUs, Envoy (one worker) runs on CPU 0 and
# everything that loads or serves it (the driver with wrk, the open-loop generator and the mock, and
# the sidecar) on CPU 1, so the gateway's numbers are not its load generator's.
bench_chain() {
  need_wrk
  step "build: wasm filters, the release sidecar and the benchmark driver"
  cargo wasm -q
  cargo build -q --release --workspace --bin tollgate-sidecar
  cargo build -q --release --workspace --bin bench-chain
  local pin_envoy=() pin_load=()
  if [ "$(nproc)" -ge 2 ]; then
    pin_envoy=(taskset -c 0); pin_load=(taskset -c 1)
  fi
  local wrapper="$run/envoy-pinned"
  printf '#!/bin/sh\nexec %s %q "$@"\n' "${pin_envoy[*]}" "$PWD/.venv/bin/envoy" >"$wrapper"
  chmod +x "$wrapper"
  local port
  port=$(free_port)
  "${pin_load[@]}" target/release/tollgate-sidecar --listen "127.0.0.1:$port" --metrics-addr off \
    --label-sets sidecar/label-sets.json 2>"$run/sidecar-chain.log" &
  local pid=$!; pids+=("$pid")
  wait_port "$port"
  step "chain: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); sidecar on CPUs $(grep Cpus_allowed_list "/proc/$pid/status" | cut -f2)"
  ENVOY_BIN="$wrapper" "${pin_load[@]}" target/release/bench-chain --sidecar "127.0.0.1:$port" \
    --seconds "${TOLLGATE_BENCH_SECONDS:-5}" --rate "${TOLLGATE_BENCH_RATE:-20}" \
    --json "$run/chain.json" --markdown "$run/chain.md"
  kill "$pid" 2>/dev/null || true
}

for s in "${sections[@]}"; do
  case "$s" in
    sidecar) bench_sidecar ;;
    token-counter) bench_token_counter ;;
    prompt-templater) bench_prompt_templater ;;
    jwt-auth) bench_jwt_auth ;;
    content-moderator) bench_content_moderator ;;
    semantic-router) bench_with_sidecar semantic-router ;;
    response-cache) bench_with_sidecar response-cache ;;
    chain) bench_chain ;;
    *) echo "unknown section: $s (known: sidecar, token-counter, prompt-templater, jwt-auth, content-moderator, semantic-router, response-cache, chain)" >&2; exit 2 ;;
  esac
done
