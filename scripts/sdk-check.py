#!/usr/bin/env python3
"""The official `openai` and `anthropic` Python SDKs (pinned, installed into .venv by
scripts/setup.sh, nothing patched) against the running demo chain: what `scripts/demo.sh --check`
runs after demo-check.sh. Each SDK is configured as a user would point it at a gateway — a base URL
and, as its API key, the JWT the demo's issuer signed — and every call must come back as the SDK's
own type: replies parsed, streams assembled, and each error the chain answers raised as the SDK's
exception class with a readable message.

Usage: sdk-check.py GATEWAY_URL RUN_DIR   (RUN_DIR/tokens.env holds ALICE and BOB)
"""
import re
import sys
import threading
import time
from pathlib import Path

import anthropic
import openai

GW, RUN = sys.argv[1], Path(sys.argv[2])
TOKENS = dict(re.findall(r"^(\w+)='?([^'\n]*)'?$", (RUN / "tokens.env").read_text(), re.M))
failed = 0
passed = 0


def check(desc, fn):
    global failed, passed
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - a failed check names what went wrong
        failed += 1
        print(f"FAIL  sdk: {desc}: {type(e).__name__}: {e}")
        return
    passed += 1
    print(f"ok    sdk: {desc}")


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def raises(exc, fn, status, code=None):
    """fn() must raise `exc` with that status (and our `code`), and a readable message."""
    try:
        fn()
    except exc as e:
        expect(e.status_code == status, f"status {e.status_code}, wanted {status}")
        body = e.body if isinstance(e.body, dict) else {}
        err = body.get("error", body)
        if code is not None:
            expect(err.get("code") == code, f"code {err.get('code')!r}, wanted {code!r} in {e.body}")
        expect(isinstance(e.message, str) and len(e.message) > 10, f"message {e.message!r}")
        return e
    raise AssertionError(f"no {exc.__name__} raised")


def clear_of_minute_edge(secs):
    """The demo's token budget is per minute: two requests meant to meet in one window wait
    for a window with `secs` left."""
    left = 60 - time.time() % 60
    if left < secs:
        time.sleep(left + 1)


oa = openai.OpenAI(base_url=f"{GW}/v1", api_key=TOKENS["ALICE"], max_retries=0, timeout=30)
an = anthropic.Anthropic(base_url=GW, api_key=TOKENS["ALICE"], max_retries=0, timeout=30)
secret = "the key is AKIA" + "QX7Z" * 4


def openai_chat():
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello from the SDK"}])
    expect(r.choices[0].message.content, "no content")
    expect(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, f"usage {r.usage}")


def openai_stream():
    stream = oa.chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "Stream a short answer"}]
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    expect(len(text) > 10, f"streamed text {text!r}")


def openai_embeddings():
    r = oa.embeddings.create(model="text-embedding-3-small", input=["a gateway", "an embedding"])
    expect(len(r.data) == 2 and len(r.data[0].embedding) > 0, f"{len(r.data)} embeddings")


def anthropic_message():
    m = an.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hello from the SDK"}]
    )
    expect(m.content and m.content[0].type == "text" and m.content[0].text, f"content {m.content}")
    expect(m.usage.input_tokens > 0 and m.usage.output_tokens > 0, f"usage {m.usage}")


def anthropic_stream():
    with an.messages.stream(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "Stream a short answer"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    expect(len(text) > 10, f"streamed text {text!r}")
    expect(final.stop_reason in ("end_turn", "max_tokens"), f"stop_reason {final.stop_reason}")


def anthropic_count_tokens():
    msgs = [{"role": "user", "content": "How many tokens is this?"}]
    c = an.messages.count_tokens(model="claude-sonnet-4-5", messages=msgs)
    m = an.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=msgs)
    expect(c.input_tokens == m.usage.input_tokens, f"count {c.input_tokens}, billed {m.usage.input_tokens}")


OA_TOOLS = [{"type": "function", "function": {"name": "send_mail", "description": "Send an e-mail",
             "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}}]
AN_TOOLS = [{"name": "send_mail", "description": "Send an e-mail",
             "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}}}]
# The mock calls the first tool with these arguments when asked (x-mock-tool-call).
CALL = {"x-mock-tool-call": '{"to":"finance team"}'}


def openai_tools():
    msgs = [{"role": "user", "content": "Mail the report"}]
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, tools=OA_TOOLS, extra_headers=CALL)
    call = r.choices[0].message.tool_calls[0]
    expect(r.choices[0].finish_reason == "tool_calls", r.choices[0].finish_reason)
    expect((call.function.name, call.function.arguments) == ("send_mail", '{"to":"finance team"}'), f"{call}")
    with oa.chat.completions.stream(model="gpt-4o-mini", messages=msgs, tools=OA_TOOLS, extra_headers=CALL) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    args = final.choices[0].message.tool_calls[0].function.arguments
    expect(args == '{"to":"finance team"}', f"streamed arguments {args!r}")


def anthropic_tools():
    msgs = [{"role": "user", "content": "Mail the report"}]
    h = dict(CALL, **{"x-mock-thinking": "1"})
    m = an.messages.create(model="claude-sonnet-4-5", max_tokens=200, messages=msgs, tools=AN_TOOLS, extra_headers=h)
    expect(m.stop_reason == "tool_use", m.stop_reason)
    expect([b.type for b in m.content] == ["thinking", "tool_use"], f"{m.content}")
    expect(m.content[1].input == {"to": "finance team"}, f"{m.content[1]}")
    with an.messages.stream(model="claude-sonnet-4-5", max_tokens=200, messages=msgs, tools=AN_TOOLS,
                            extra_headers=h) as s:
        final = s.get_final_message()
    tool = [b for b in final.content if b.type == "tool_use"]
    expect(tool and tool[0].input == {"to": "finance team"}, f"streamed {final.content}")
    expect(final.content[0].type == "thinking" and final.content[0].signature, f"{final.content[0]}")


RS_TOOLS = [{"type": "function", "name": "send_mail", "description": "Send an e-mail",
             "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}]


def openai_responses():
    r = oa.responses.create(model="gpt-4o-mini", instructions="Answer briefly.", input="Hello from the SDK")
    expect(r.status == "completed" and r.output_text, f"response {r}")
    expect(r.usage.input_tokens > 0 and r.usage.output_tokens > 0, f"usage {r.usage}")
    with oa.responses.stream(model="gpt-4o-mini", input=[{"role": "user", "content": "Stream a short answer"}]) as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    expect(len(text) > 10 and final.output_text == text, f"streamed {text!r}, final {final.output_text!r}")
    c = oa.responses.input_tokens.count(model="gpt-4o-mini", instructions="Answer briefly.", input="Hello from the SDK")
    expect(c.input_tokens == r.usage.input_tokens, f"count {c.input_tokens}, billed {r.usage.input_tokens}")
    k = oa.responses.compact(model="gpt-4o-mini", input=[{"role": "user", "content": "Hello from the SDK"},
                                                           {"role": "assistant", "content": r.output_text}])
    expect(k.object == "response.compaction" and k.output and k.output[-1].type == "compaction",
           f"compaction {k}")


def openai_responses_tools():
    msgs = [{"role": "user", "content": "Mail the report"}]
    r = oa.responses.create(model="gpt-4o-mini", input=msgs, tools=RS_TOOLS, extra_headers=CALL)
    call = r.output[0]
    expect(call.type == "function_call" and (call.name, call.arguments) == ("send_mail", '{"to":"finance team"}'),
           f"{r.output}")
    with oa.responses.stream(model="gpt-4o-mini", input=msgs, tools=RS_TOOLS, extra_headers=CALL) as s:
        args = "".join(e.delta for e in s if e.type == "response.function_call_arguments.delta")
        final = s.get_final_response()
    expect(args == '{"to":"finance team"}' and final.output[0].arguments == args, f"streamed arguments {args!r}")
    raises(openai.BadRequestError, lambda: oa.responses.create(model="gpt-4o-mini", input=secret), 400,
           "content_blocked")


def errors_401():
    bad_oa = openai.OpenAI(base_url=f"{GW}/v1", api_key="not-a-jwt", max_retries=0, timeout=30)
    raises(openai.AuthenticationError, lambda: bad_oa.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]), 401)
    bad_an = anthropic.Anthropic(base_url=GW, api_key="not-a-jwt", max_retries=0, timeout=30)
    raises(anthropic.AuthenticationError, lambda: bad_an.messages.create(
        model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]), 401)


def errors_400():
    raises(openai.BadRequestError, lambda: oa.chat.completions.create(
        model="gpt-4o-mini", max_tokens=200_000, messages=[{"role": "user", "content": "hi"}]),
        400, "context_length_exceeded")
    raises(anthropic.BadRequestError, lambda: an.messages.create(
        model="claude-sonnet-4-5", max_tokens=250_000, messages=[{"role": "user", "content": "hi"}]),
        400, "context_length_exceeded")
    raises(openai.BadRequestError, lambda: oa.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": secret}]), 400, "content_blocked")
    raises(anthropic.BadRequestError, lambda: an.messages.create(
        model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": secret}]),
        400, "content_blocked")
    raises(anthropic.BadRequestError, lambda: an.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": secret}]), 400, "content_blocked")


def errors_413():
    big = "x" * 1_200_000
    raises(openai.APIStatusError, lambda: oa.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": big}]), 413)
    raises(anthropic.APIStatusError, lambda: an.messages.create(
        model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": big}]), 413)


def errors_429():
    """Bob's budget (200,000 tokens a minute) held by one request in flight: the next is 429."""
    for kind, client, exc, call in [
        ("openai", openai.OpenAI(base_url=f"{GW}/v1", api_key=TOKENS["BOB"], max_retries=0, timeout=30),
         openai.RateLimitError,
         lambda c, h: c.chat.completions.create(model="gpt-4.1", max_tokens=150_000, extra_headers=h,
                                                messages=[{"role": "user", "content": "hold"}])),
        ("anthropic", anthropic.Anthropic(base_url=GW, api_key=TOKENS["BOB"], max_retries=0, timeout=30),
         anthropic.RateLimitError,
         lambda c, h: c.messages.create(model="claude-sonnet-4-5", max_tokens=150_000, extra_headers=h,
                                        messages=[{"role": "user", "content": "hold"}])),
    ]:
        clear_of_minute_edge(10)
        held = {}
        t = threading.Thread(target=lambda: held.setdefault("r", call(client, {"x-mock-latency-ms": "1500"})))
        t.start()
        time.sleep(0.5)
        e = raises(exc, lambda: call(client, None), 429, "budget_exceeded")
        retry = e.response.headers.get("retry-after")
        expect(retry is not None and 1 <= int(retry) <= 60, f"{kind}: retry-after {retry!r}")
        t.join()
        expect("r" in held, f"{kind}: the held request did not complete")
        time.sleep(1.1)


check("openai chat.completions.create", openai_chat)
check("openai chat.completions.create(stream=True)", openai_stream)
check("openai embeddings.create", openai_embeddings)
check("openai responses.create, responses.stream, responses.input_tokens.count, responses.compact", openai_responses)
check("openai responses: function calls, JSON and streamed; blocked input -> BadRequestError", openai_responses_tools)
check("anthropic messages.create", anthropic_message)
check("anthropic messages.stream", anthropic_stream)
check("anthropic messages.count_tokens equals the billed input tokens", anthropic_count_tokens)
check("openai tool calls, JSON and streamed (tool_calls deltas assembled by the SDK)", openai_tools)
check("anthropic tool_use and thinking, JSON and streamed (input_json_delta assembled by the SDK)", anthropic_tools)
check("401 -> AuthenticationError (both SDKs)", errors_401)
check("400 context_length_exceeded and content_blocked -> BadRequestError (both SDKs)", errors_400)
check("413 -> APIStatusError 413 (both SDKs)", errors_413)
check("429 budget_exceeded -> RateLimitError with retry-after (both SDKs)", errors_429)
print(f"sdk-check: {passed} passed, {failed} failed (openai {openai.__version__}, anthropic {anthropic.__version__})")
sys.exit(1 if failed else 0)
