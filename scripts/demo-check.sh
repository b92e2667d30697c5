#!/usr/bin/env bash
# Runs the demo walkthrough's requests against a running demo and checks each answer: what
# `scripts/demo.sh --check` does after start-up. Usage: demo-check.sh GATEWAY_URL ADMIN_URL RUN_DIR
set -euo pipefail
GW=$1 ADMIN=$2 RUN=$3
# shellcheck disable=SC1091
source "$RUN/tokens.env"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0 passed=0
# Requests sent through the gateway: each ends in one access-log line, in order (they run one at a time).
sent=$(wc -l <"$RUN/access.log")

# request EXPECTED_STATUS DESCRIPTION curl-args... — the answer is in $tmp/body and $tmp/headers.
request() {
  local want=$1 desc=$2 got
  shift 2
  sent=$((sent + 1))
  got=$(curl -s --max-time 30 -D "$tmp/headers" -o "$tmp/body" -w '%{http_code}' "$@") || got="curl failed"
  if [ "$got" = "$want" ]; then
    return 0
  fi
  echo "FAIL  $desc: status $got, wanted $want; body: $(head -c 300 "$tmp/body")"
  failed=$((failed + 1))
  return 1
}
ok() { echo "ok    $1"; passed=$((passed + 1)); }
bad() { echo "FAIL  $1"; echo "      $(head -c 300 "$tmp/body")"; failed=$((failed + 1)); }
header() { tr -d '\r' <"$tmp/headers" | awk -v h="$1" 'tolower($1) == tolower(h) ":" { $1 = ""; sub(/^ /, ""); print; exit }'; }
has() { grep -qF -- "$1" "$tmp/body"; }
chat() { printf '{"model":"%s","messages":[{"role":"user","content":"%s"}]%s}' "$1" "$2" "${3:-}"; }
as_alice=(-H "authorization: Bearer $ALICE" -H 'content-type: application/json')
as_bob=(-H "authorization: Bearer $BOB" -H 'content-type: application/json')
# The access-log lines of the last two requests sent, once Envoy has written a line for every
# request so far (a line is written as a request ends, so two back-to-back requests may swap).
last_log() {
  for _ in $(seq 1 100); do
    [ "$(wc -l <"$RUN/access.log")" -ge "$sent" ] && break
    sleep 0.1
  done
  tail -n 2 "$RUN/access.log"
}

request 401 "no token" "$GW/v1/chat/completions" -H 'content-type: application/json' -d "$(chat gpt-4o-mini Hello)" \
  && { has '"error"' && ok "no token: 401 with an OpenAI-shaped error" || bad "401 without an error body"; }

request 200 "alice's token" "$GW/v1/chat/completions" "${as_alice[@]}" -d "$(chat gpt-4o-mini 'Hello, gateway')" \
  && { [ -n "$(header x-tollgate-prompt-tokens)" ] && ok "alice's JWT accepted; prompt tokens counted ($(header x-tollgate-prompt-tokens))" \
       || bad "no x-tollgate-prompt-tokens"; }

request 200 "templated request" "$GW/v1/chat/completions" "${as_alice[@]}" -H 'x-mock-echo: 1' \
  -d '{"model":"gpt-4o-mini","tollgate_template":{"id":"support-answer","variables":{"product":"widgets","question":"How do I reset it?"}}}' \
  && { [ -n "$(header x-tollgate-template)" ] && has widgets && ok "template rendered ($(header x-tollgate-template))" \
       || bad "template not rendered"; }

request 400 "template rule" "$GW/v1/chat/completions" "${as_alice[@]}" \
  -d '{"model":"gpt-4o-mini","tollgate_template":{"id":"support-answer","variables":{"product":"toasters","question":"hi"}}}' \
  && { has product && ok "a variable breaking its rule: 400 naming it" || bad "400 does not name the variable"; }

request 400 "secret blocked" "$GW/v1/chat/completions" "${as_alice[@]}" -d "$(chat gpt-4o-mini 'deploy with AKIAIOSFODNN7EXAMPLE')" \
  && { ! has AKIAIOSFODNN7EXAMPLE && ok "a secret in the prompt is blocked; the error does not repeat it" || bad "error repeats the secret"; }

request 200 "masking" "$GW/v1/chat/completions" "${as_alice[@]}" -H 'x-mock-echo: 1' \
  -d "$(chat gpt-4o-mini 'My card is 4111 1111 1111 1111, mail me at jane@example.com')" \
  && { ! has '4111 1111 1111 1111' && ! has jane@example.com && has 'My card is' && ok "card number and e-mail masked before the provider" \
       || bad "the provider saw personal data"; }

request 200 "routed" "$GW/v1/chat/completions" "${as_alice[@]}" -d "$(chat gpt-4o-mini 'What is the integral of x squared from 0 to 3?')" \
  && { line=$(last_log)
       grep -q '"route":"math".*"upstream":"llm_math"' <<<"$line" \
         && ok "routed by meaning to llm_math" || { echo "      log: $line"; bad "not routed to math"; }; }

q='{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"What is the capital of France?"}]}'
p='{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Quick question: what'"'"'s the capital of France?"}]}'
cache=()
for body in "$q" "$q" "$p"; do
  request 200 "cache" "$GW/v1/chat/completions" "${as_alice[@]}" -d "$body" && cache+=("$(header x-tollgate-cache)")
  sleep 0.3 # the store goes out after the answer
done
[ "${cache[*]:-}" = "miss hit semantic-hit" ] && ok "cache: miss, hit, semantic hit for a paraphrase" || bad "cache answers: ${cache[*]:-none}"
request 200 "cache, other tenant" "$GW/v1/chat/completions" "${as_bob[@]}" -d "$q" \
  && { [ "$(header x-tollgate-cache)" = miss ] && ok "bob (another tenant) misses alice's entry" || bad "cache crossed tenants: $(header x-tollgate-cache)"; }

request 429 "budget" "$GW/v1/chat/completions" "${as_alice[@]}" \
  -d '{"model":"gpt-4.1","max_tokens":250000,"messages":[{"role":"user","content":"Write a very long story"}]}' \
  && { has budget_exceeded && [ -n "$(header retry-after)" ] && ok "over the per-minute budget: 429 budget_exceeded, retry-after $(header retry-after)" \
       || bad "429 without budget_exceeded or retry-after"; }

request 400 "context" "$GW/v1/chat/completions" "${as_alice[@]}" -d "$(chat gpt-4o Hello ',"max_tokens":130000')" \
  && { has context_length_exceeded && ok "prompt + max_tokens over the context window: 400 context_length_exceeded" \
       || bad "400 for another reason"; }

request 200 "openai stream" "$GW/v1/chat/completions" "${as_alice[@]}" \
  -d '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Stream please"}]}' \
  && { has '"usage"' && has 'data: [DONE]' && ok "OpenAI stream with usage" || bad "stream without usage or [DONE]"; }

request 200 "anthropic stream" "$GW/v1/messages" "${as_alice[@]}" -H 'anthropic-version: 2023-06-01' \
  -d '{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi Claude"}]}' \
  && { has message_stop && ok "Anthropic stream" || bad "no message_stop"; }

head -c 1200000 /dev/zero | tr '\0' x | sed 's/^/{"model":"gpt-4o","messages":[{"role":"user","content":"/; s/$/"}]}/' >"$tmp/big.json"
request 413 "body limit" "$GW/v1/chat/completions" "${as_alice[@]}" --data-binary @"$tmp/big.json" \
  && { has '"error"' && ok "a body over 1 MiB: 413 in the OpenAI error shape" || bad "413 without an error body"; }

curl -s --max-time 30 "$ADMIN/stats/prometheus" >"$tmp/body"
missing=()
while read -r f; do
  grep -q "^tollgate_${f}_" "$tmp/body" || missing+=("$f")
done < <(cargo xtask filters --field wasm)
[ ${#missing[@]} -eq 0 ] && ok "/stats/prometheus has every filter's metrics" || bad "no metrics from: ${missing[*]}"

# The OpenAI stream above: who, which model, the tokens and cost, the route and the cache verdict.
last_log >/dev/null
line=$(grep -F '"model":"gpt-4o-mini"' "$RUN/access.log" | grep -F '"subject":"alice"' | grep -F '"completion_tokens":"' | tail -n 1 || true)
[ -n "$line" ] && grep -q '"cost_usd":"[0-9]' <<<"$line" && grep -q '"route":"[a-z]' <<<"$line" && grep -q '"cache":"[a-z]' <<<"$line" \
  && ok "access log has the per-request AI fields (subject, model, tokens, cost, route, cache)" \
  || { echo "      log: ${line:-none}"; bad "access log lacks the AI fields"; }

echo "demo check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
