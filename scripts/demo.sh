#!/usr/bin/env bash
# Runs the Tollgate demo in the foreground: installs and builds what is missing, starts the mock
# LLM upstream, the inference sidecar and Envoy with envoy/envoy.yaml plus the landed filters
# (envoy/filters/*.yaml: prompt-templater, content-moderator, semantic-router, response-cache,
# token-counter), prints
# requests to paste. Ctrl-C stops everything. Ports: TOLLGATE_PORT (10000), TOLLGATE_ADMIN_PORT
# (9901), TOLLGATE_UPSTREAM_PORT (8081), TOLLGATE_ROUTED_PORTS ("8091 8092 8093 8094": the providers
# of the code, math and support routes; one mock process serves them all), TOLLGATE_SIDECAR_PORT
# (50051), TOLLGATE_SIDECAR_METRICS_PORT (9464).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

PORT=${TOLLGATE_PORT:-10000}
ADMIN_PORT=${TOLLGATE_ADMIN_PORT:-9901}
UPSTREAM_PORT=${TOLLGATE_UPSTREAM_PORT:-8081}
read -r -a ROUTED_PORTS <<<"${TOLLGATE_ROUTED_PORTS:-8091 8092 8093 8094}"
[ ${#ROUTED_PORTS[@]} -eq 4 ] || { echo "[demo] TOLLGATE_ROUTED_PORTS needs 4 ports" >&2; exit 2; }
SIDECAR_PORT=${TOLLGATE_SIDECAR_PORT:-50051}
SIDECAR_METRICS_PORT=${TOLLGATE_SIDECAR_METRICS_PORT:-9464}

bash scripts/setup.sh
cargo build -q -p integration-tests --bin mock-llm
echo "[demo] building the inference sidecar (release; the first build takes several minutes)"
cargo build -q --release -p inference-sidecar --bin tollgate-sidecar

run=.cache/demo
mkdir -p "$run"
sed -e "s/port_value: 10000\$/port_value: $PORT/" \
    -e "s/port_value: 9901\$/port_value: $ADMIN_PORT/" \
    -e "s/port_value: 8081\$/port_value: $UPSTREAM_PORT/" \
    -e "s/port_value: 8091\$/port_value: ${ROUTED_PORTS[0]}/" \
    -e "s/port_value: 8092\$/port_value: ${ROUTED_PORTS[1]}/" \
    -e "s/port_value: 8093\$/port_value: ${ROUTED_PORTS[2]}/" \
    -e "s/port_value: 8094\$/port_value: ${ROUTED_PORTS[3]}/" \
    -e "s/port_value: 50051\$/port_value: $SIDECAR_PORT/" envoy/envoy.yaml >"$run/envoy.yaml"
# The filters that have landed, from their snippets in envoy/filters/, in the chain's order, just
# before the router.
python3 - "$run/envoy.yaml" "$PWD" envoy/filters/prompt-templater.yaml envoy/filters/content-moderator.yaml envoy/filters/semantic-router.yaml envoy/filters/response-cache.yaml envoy/filters/token-counter.yaml <<'PY'
import sys
path, root, snippets = sys.argv[1], sys.argv[2], sys.argv[3:]
router = "                  - name: envoy.filters.http.router\n"
config = open(path).read()
filters = "".join(
    line.replace("filename: target/", f"filename: {root}/target/")
    for s in snippets for line in open(s, encoding="utf-8") if not line.startswith("#")
)
assert router in config, "no router in envoy.yaml"
open(path, "w").write(config.replace(router, filters + router))
PY

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
target/debug/mock-llm "${listen[@]}" 2>"$run/mock-llm.log" &
pids+=($!)
target/release/tollgate-sidecar --listen "127.0.0.1:$SIDECAR_PORT" \
  --metrics-addr "127.0.0.1:$SIDECAR_METRICS_PORT" --label-sets sidecar/label-sets.json \
  2>"$run/sidecar.log" &
pids+=($!)
.venv/bin/envoy -c "$run/envoy.yaml" --use-dynamic-base-id --concurrency 2 -l warning \
  --log-path "$run/envoy.log" >"$run/access.log" &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 \
     && curl -fs "http://127.0.0.1:$UPSTREAM_PORT/healthz" >/dev/null 2>&1 \
     && curl -fs "http://127.0.0.1:$SIDECAR_METRICS_PORT/metrics" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ "${ready:-}" = 1 ] || { echo "[demo] Envoy, the mock or the sidecar did not start; see $run/*.log" >&2; exit 1; }

GW="http://127.0.0.1:$PORT"
cat <<TXT

Tollgate demo is up.
  gateway  $GW            (Envoy, envoy/envoy.yaml)
  admin    http://127.0.0.1:$ADMIN_PORT   (stats: /stats/prometheus)
  upstream http://127.0.0.1:$UPSTREAM_PORT  (mock OpenAI/Anthropic provider; the routed providers on ${ROUTED_PORTS[*]})
  sidecar  127.0.0.1:$SIDECAR_PORT (gRPC, tollgate.inference.v1; metrics http://127.0.0.1:$SIDECAR_METRICS_PORT/metrics)
  logs     $run/envoy.log, access log: $run/access.log

Try, in another terminal:

  # OpenAI chat completion; token-counter adds x-tollgate-prompt-tokens and the budget left
  curl -si $GW/v1/chat/completions -H 'content-type: application/json' -H 'x-tollgate-subject: alice' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, gateway"}]}'

  # A templated request: the app sends variables, the gateway renders the admin's prompt
  # (x-mock-echo makes the mock answer with the body it received; the version is in x-tollgate-template)
  curl -si $GW/v1/chat/completions -H 'content-type: application/json' -H 'x-mock-echo: 1' \\
    -d '{"model":"gpt-4o-mini","tollgate_template":{"id":"support-answer","variables":{"product":"widgets","question":"How do I reset it?"}}}'

  # A variable that breaks its rule: 400 naming the variable
  curl -s $GW/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","tollgate_template":{"id":"support-answer","variables":{"product":"toasters","question":"hi"}}}'

  # A secret in a prompt is blocked (the error names the category, never the text)
  curl -s $GW/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"deploy with AKIAIOSFODNN7EXAMPLE"}]}'

  # Personal data is masked before the provider sees it (the echo shows what it received)
  curl -s $GW/v1/chat/completions -H 'content-type: application/json' -H 'x-mock-echo: 1' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"My card is 4111 1111 1111 1111, mail me at jane@example.com"}]}'

  # Routed by meaning: the semantic router embeds the prompt through the sidecar and sets
  # x-tollgate-route; Envoy's route table sends it to llm_math (the access log shows route and cluster)
  curl -s $GW/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the integral of x squared from 0 to 3?"}]}' >/dev/null
  tail -n 1 $run/access.log | python3 -c 'import json,sys; e=json.load(sys.stdin); print({k: e[k] for k in ("route","route_method","route_score","upstream")})'

  # A cache hit: the same deterministic (temperature 0) question twice; the second answer comes
  # from the gateway (x-tollgate-cache: hit, age), a paraphrase from the semantic cache. The tenant
  # header scopes the cache, the subject the semantic matches; in production jwt-auth sets both.
  for q in 'What is the capital of France?' 'What is the capital of France?' "What's the capital city of France?"; do
    curl -si $GW/v1/chat/completions -H 'content-type: application/json' -H 'x-tollgate-tenant: acme' -H 'x-tollgate-subject: alice' \
      -d "{\"model\":\"gpt-4o-mini\",\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"\$q\"}]}" \
      | grep -i '^x-tollgate-cache'; sleep 0.2
  done

  # Prompt + max_tokens over gpt-4o's 128000-token context: 400 before the provider is called
  curl -s $GW/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o","max_tokens":130000,"messages":[{"role":"user","content":"Hello"}]}'

  # OpenAI streaming, with usage in the last chunk
  curl -sN $GW/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Stream please"}]}'

  # Anthropic messages, streaming
  curl -sN $GW/v1/messages -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \\
    -d '{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi Claude"}]}'

  # A body over the 1 MiB limit: 413 in the OpenAI error shape
  head -c 1200000 /dev/zero | tr '\\0' x | sed 's/^/{"model":"gpt-4o","messages":[{"role":"user","content":"/; s/\$/"}]}/' \\
    | curl -s $GW/v1/chat/completions -H 'content-type: application/json' --data-binary @-

  # Gateway metrics: requests, and tokens and cost per model
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep 'downstream_rq_xx{.*prefix="tollgate"'
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep '^tollgate_token_counter'
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep '^tollgate_content_moderator'
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep '^tollgate_semantic_router'
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep '^tollgate_response_cache'

  # The access log has the per-request AI fields (model, tokens, cost, moderation verdict, route)
  tail -n 3 $run/access.log

  # Envoy's gRPC health checks of the inference sidecar, and the sidecar's own metrics
  curl -s http://127.0.0.1:$ADMIN_PORT/stats | grep 'inference_sidecar.health_check.success'
  curl -s http://127.0.0.1:$SIDECAR_METRICS_PORT/metrics | grep -v '^#' | head -20

Ctrl-C stops the demo.
TXT
wait -n "${pids[@]}"
echo "[demo] a process exited; see $run/*.log" >&2
