#!/usr/bin/env bash
# Runs the Tollgate demo in the foreground: installs and builds what is missing, then starts the
# whole chain — Envoy with envoy/envoy.yaml and all six filters in the documented order (jwt-auth,
# prompt-templater, content-moderator, semantic-router, response-cache, token-counter; the config
# is written by `cargo xtask chain-config`), the inference sidecar with the real model, the mock LLM
# provider and the demo's identity provider (a fresh signing key per run) — and prints requests to
# paste. Ctrl-C stops everything.
#
#   scripts/demo.sh            run until Ctrl-C
#   scripts/demo.sh --check    run the walkthrough's requests itself, check each answer, stop
#                              (scripts/test.sh runs this)
#
# A real provider instead of the mock (OpenAI-compatible; not testable on this machine):
#   OPENAI_API_KEY=sk-... TOLLGATE_PROVIDER_URL=https://api.openai.com scripts/demo.sh
# Every LLM route then goes to that host over TLS with the key (written into
# .cache/demo/envoy.yaml, mode 0600); the client's JWT never leaves the gateway.
#
# Ports: TOLLGATE_PORT (10000), TOLLGATE_ADMIN_PORT (9901), TOLLGATE_UPSTREAM_PORT (8081),
# TOLLGATE_ROUTED_PORTS ("8091 8092 8093 8094": the providers of the code, math and support routes;
# one mock process serves them all), TOLLGATE_SIDECAR_PORT (50051), TOLLGATE_SIDECAR_METRICS_PORT
# (9464), TOLLGATE_JWKS_PORT (8083).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

CHECK=
case "${1:-}" in
  --check) CHECK=1 ;;
  "") ;;
  *) echo "usage: scripts/demo.sh [--check]" >&2; exit 2 ;;
esac

PORT=${TOLLGATE_PORT:-10000}
ADMIN_PORT=${TOLLGATE_ADMIN_PORT:-9901}
UPSTREAM_PORT=${TOLLGATE_UPSTREAM_PORT:-8081}
read -r -a ROUTED_PORTS <<<"${TOLLGATE_ROUTED_PORTS:-8091 8092 8093 8094}"
[ ${#ROUTED_PORTS[@]} -eq 4 ] || { echo "[demo] TOLLGATE_ROUTED_PORTS needs 4 ports" >&2; exit 2; }
SIDECAR_PORT=${TOLLGATE_SIDECAR_PORT:-50051}
SIDECAR_METRICS_PORT=${TOLLGATE_SIDECAR_METRICS_PORT:-9464}
JWKS_PORT=${TOLLGATE_JWKS_PORT:-8083}
PROVIDER=${TOLLGATE_PROVIDER_URL:-}

bash scripts/setup.sh
echo "[demo] building the filters and the sidecar, mock provider and issuer (the first build takes several minutes)"
cargo wasm -q
# The same build as the Docker image's (scripts/docker-build.sh) and the tests' dependencies.
cargo bins -q --locked

run=.cache/demo
mkdir -p "$run"
provider_args=()
if [ -n "$PROVIDER" ]; then
  [ -n "$CHECK" ] && { echo "[demo] --check runs against the mock; unset TOLLGATE_PROVIDER_URL" >&2; exit 2; }
  provider_args=(--provider "$PROVIDER" --provider-key-env OPENAI_API_KEY)
fi
cargo xtask chain-config --out "$run/envoy.yaml" --wasm-root "$PWD" \
  --port "10000=$PORT" --port "9901=$ADMIN_PORT" --port "8081=$UPSTREAM_PORT" \
  --port "8091=${ROUTED_PORTS[0]}" --port "8092=${ROUTED_PORTS[1]}" --port "8093=${ROUTED_PORTS[2]}" \
  --port "8094=${ROUTED_PORTS[3]}" --port "50051=$SIDECAR_PORT" --port "8083=$JWKS_PORT" \
  "${provider_args[@]}"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "[demo] stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

listen=(--listen "127.0.0.1:$UPSTREAM_PORT")
for p in "${ROUTED_PORTS[@]}"; do listen+=(--listen "127.0.0.1:$p"); done
target/release/mock-llm "${listen[@]}" 2>"$run/mock-llm.log" &
pids+=($!)
rm -f "$run/tokens.env"
target/release/demo-issuer --listen "127.0.0.1:$JWKS_PORT" --tokens "$run/tokens.env" 2>"$run/issuer.log" &
pids+=($!)
target/release/tollgate-sidecar --listen "127.0.0.1:$SIDECAR_PORT" \
  --metrics-addr "127.0.0.1:$SIDECAR_METRICS_PORT" --label-sets sidecar/label-sets.json \
  2>"$run/sidecar.log" &
pids+=($!)
.venv/bin/envoy -c "$run/envoy.yaml" --use-dynamic-base-id --concurrency 2 -l warning \
  --file-flush-interval-msec 100 --log-path "$run/envoy.log" >"$run/access.log" &
pids+=($!)

for _ in $(seq 1 100); do
  # Our own processes must be the ones answering (not a demo left running on these ports).
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "[demo] a process exited at start; see $run/*.log (ports in use?)" >&2; exit 1; }
  done
  if curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 \
     && curl -fs "http://127.0.0.1:$UPSTREAM_PORT/healthz" >/dev/null 2>&1 \
     && curl -fs "http://127.0.0.1:$SIDECAR_METRICS_PORT/metrics" >/dev/null 2>&1 \
     && [ -s "$run/tokens.env" ]; then ready=1; break; fi
  sleep 0.2
done
[ "${ready:-}" = 1 ] || { echo "[demo] Envoy, the mock, the issuer or the sidecar did not start; see $run/*.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$run/tokens.env" # ALICE (tenant acme) and BOB (tenant globex): JWTs the demo's issuer signed
# The router loads its examples from the sidecar just after start; wait until every VM has them.
for _ in $(seq 1 150); do
  # Envoy runs one VM per worker (--concurrency 2) plus one on the main thread.
  curl -s "http://127.0.0.1:$ADMIN_PORT/stats/prometheus" \
    | awk '/^tollgate_semantic_router_ready_vms[ {]/ { ok = $NF >= 3 } END { exit !ok }' && break
  sleep 0.2
done

GW="http://127.0.0.1:$PORT"
if [ -n "$CHECK" ]; then
  rc=0
  bash scripts/demo-check.sh "$GW" "http://127.0.0.1:$ADMIN_PORT" "$run" || rc=$?
  # The same chain through the official openai and anthropic SDKs.
  .venv/bin/python scripts/sdk-check.py "$GW" "$run" || rc=$?
  exit "$rc"
fi

upstream_line="http://127.0.0.1:$UPSTREAM_PORT  (mock OpenAI/Anthropic provider; the routed providers on ${ROUTED_PORTS[*]})"
[ -n "$PROVIDER" ] && upstream_line="$PROVIDER (every LLM route; key from OPENAI_API_KEY)"
cat <<TXT

Tollgate demo is up: Envoy with jwt-auth, prompt-templater, content-moderator, semantic-router,
response-cache and token-counter, in that order ($run/envoy.yaml, from `cargo xtask chain-config`).
  gateway  $GW
  admin    http://127.0.0.1:$ADMIN_PORT   (stats: /stats/prometheus)
  upstream $upstream_line
  sidecar  127.0.0.1:$SIDECAR_PORT (gRPC, tollgate.inference.v1; metrics http://127.0.0.1:$SIDECAR_METRICS_PORT/metrics)
  issuer   http://127.0.0.1:$JWKS_PORT/.well-known/jwks.json (a key made for this run)
  logs     $run/envoy.log, access log: $run/access.log

Try, in another terminal:

  # The demo's issuer signed a JWT for alice (tenant acme) and bob (tenant globex)
  source $run/tokens.env; echo "\$ALICE" | cut -d. -f2 | base64 -d 2>/dev/null; echo

  # No token: 401 from jwt-auth, before anything else runs
  curl -si $GW/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'

  # With alice's token; token-counter adds x-tollgate-prompt-tokens and the budget left
  curl -si $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, gateway"}]}'

  # A templated request: the app sends variables, the gateway renders the admin's prompt
  # (x-mock-echo makes the mock answer with the body it received; the version is in x-tollgate-template)
  curl -si $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' -H 'x-mock-echo: 1' \\
    -d '{"model":"gpt-4o-mini","tollgate_template":{"id":"support-answer","variables":{"product":"widgets","question":"How do I reset it?"}}}'

  # A variable that breaks its rule: 400 naming the variable
  curl -s $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","tollgate_template":{"id":"support-answer","variables":{"product":"toasters","question":"hi"}}}'

  # A secret in a prompt is blocked (the error names the category, never the text)
  curl -s $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"deploy with AKIAIOSFODNN7EXAMPLE"}]}'

  # Personal data is masked before the provider sees it (the echo shows what it received)
  curl -s $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' -H 'x-mock-echo: 1' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"My card is 4111 1111 1111 1111, mail me at jane@example.com"}]}'

  # Routed by meaning: the semantic router embeds the prompt through the sidecar and sets
  # x-tollgate-route; Envoy's route table sends it to llm_math (the access log shows route and cluster)
  curl -s $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the integral of x squared from 0 to 3?"}]}' >/dev/null
  sleep 0.5; tail -n 1 $run/access.log | python3 -c 'import json,sys; e=json.load(sys.stdin); print({k: e[k] for k in ("route","route_method","route_score","upstream")})'

  # A cache hit: the same deterministic (temperature 0) question twice; the second answer comes
  # from the gateway (x-tollgate-cache: hit, age), a paraphrase from the semantic cache. The cache
  # is scoped by the tenant and the semantic matches by the subject, both from the token.
  for q in 'What is the capital of France?' 'What is the capital of France?' "Quick question: what's the capital of France?"; do
    curl -si $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' \\
      -d "{\\"model\\":\\"gpt-4o-mini\\",\\"temperature\\":0,\\"messages\\":[{\\"role\\":\\"user\\",\\"content\\":\\"\$q\\"}]}" \\
      | grep -i '^x-tollgate-cache'; sleep 0.2
  done
  # bob is in another tenant: the same question is a miss for him
  curl -si $GW/v1/chat/completions -H "authorization: Bearer \$BOB" -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"What is the capital of France?"}]}' | grep -i '^x-tollgate-cache'

  # A budget: the per-minute rule allows 200000 tokens per subject, and a request reserves its
  # prompt plus max_tokens up front, so this one gets 429 budget_exceeded with retry-after
  curl -si $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' \\
    -d '{"model":"gpt-4.1","max_tokens":250000,"messages":[{"role":"user","content":"Write a very long story"}]}'

  # Prompt + max_tokens over gpt-4o's 128000-token context: 400 before the provider is called
  curl -s $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o","max_tokens":130000,"messages":[{"role":"user","content":"Hello"}]}'

  # OpenAI streaming, with usage in the last chunk
  curl -sN $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Stream please"}]}'

  # Anthropic messages, streaming
  curl -sN $GW/v1/messages -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \\
    -d '{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi Claude"}]}'

  # A body over the 1 MiB limit: 413 in the OpenAI error shape
  head -c 1200000 /dev/zero | tr '\\0' x | sed 's/^/{"model":"gpt-4o","messages":[{"role":"user","content":"/; s/\$/"}]}/' \\
    | curl -s $GW/v1/chat/completions -H "authorization: Bearer \$ALICE" -H 'content-type: application/json' --data-binary @-

  # Gateway metrics: requests, auth, tokens and cost per model, moderation, routing, cache
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep 'downstream_rq_xx{.*prefix="tollgate"'
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep '^tollgate_'

  # The access log has the per-request AI fields (subject, model, tokens, cost, moderation verdict,
  # route, cache)
  tail -n 3 $run/access.log

  # Envoy's gRPC health checks of the inference sidecar, and the sidecar's own metrics
  curl -s http://127.0.0.1:$ADMIN_PORT/stats | grep 'inference_sidecar.health_check.success'
  curl -s http://127.0.0.1:$SIDECAR_METRICS_PORT/metrics | grep -v '^#' | head -20

Ctrl-C stops the demo.
TXT
wait -n "${pids[@]}"
echo "[demo] a process exited; see $run/*.log" >&2
