"""Reference token counts for the token-counter tests, computed independently of our code by OpenAI's
Python `tiktoken` and the OpenAI cookbook's chat formula (`num_tokens_from_messages`: 3 tokens per
message, 1 per `name`, 3 to prime the reply; `num_tokens_for_tools` for tool definitions).

Made offline with (tiktoken 0.14.0; the .tiktoken files are the ones tiktoken-rs 0.12 ships, which
have the hashes tiktoken expects, stored under the names tiktoken's cache uses):

    python3 -m venv /tmp/tk && /tmp/tk/bin/pip install tiktoken==0.14.0
    mkdir -p /tmp/tkcache
    for e in cl100k_base o200k_base; do
      cp ~/.cargo/registry/src/*/tiktoken-rs-0.12*/assets/$e.tiktoken /tmp/tkcache/$(python3 -c \
        "import hashlib; print(hashlib.sha1(b'https://openaipublic.blob.core.windows.net/encodings/$e.tiktoken').hexdigest())")
    done
    TIKTOKEN_CACHE_DIR=/tmp/tkcache /tmp/tk/bin/python integration/tests/data/make-token-counts.py \
      > integration/tests/data/token-counts.reference.json
"""
import json

import tiktoken

LONG = (
    "Distributed systems must tolerate partial failures, network partitions, clock skew and message "
    "reordering, so engineers design protocols with retries, idempotency and consensus. "
) * 48

CONVERSATIONS = {
    "ascii": [{"role": "user", "content": "Hello, gateway! How many tokens is this?"}],
    "multi_turn": [
        {"role": "system", "content": "You are a careful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Japan?"},
    ],
    "names": [
        {"role": "system", "name": "policy", "content": "Follow the house style."},
        {"role": "user", "name": "alice", "content": "Summarise the meeting notes."},
        {"role": "assistant", "name": "helper", "content": "Here is the summary."},
    ],
    "cjk": [
        {"role": "user", "content": "東京の天気はどうですか？明日は雨が降りますか。"},
        {"role": "assistant", "content": "明日は晴れのち曇りの予報です。"},
        {"role": "user", "content": "北京今天的空气质量怎么样？서울 날씨는 어때요?"},
    ],
    "emoji": [{"role": "user", "content": "I love this! 🎉🔥 Best day ever 😀👍🏽 🇯🇵 👩‍👩‍👧‍👦"}],
    "code": [
        {
            "role": "user",
            "content": "Why does this fail?\n```rust\nfn main() {\n    let v: Vec<u32> = vec![1, 2, 3];\n"
            "    let s: u32 = v.iter().map(|x| x * 2).sum();\n    println!(\"{s}\");\n}\n```",
        }
    ],
    "whitespace": [{"role": "user", "content": "  leading and trailing spaces  \n\n\ttabs\tand\r\nnewlines  "}],
    "long": [
        {"role": "system", "content": "You summarise engineering documents."},
        {"role": "user", "content": LONG},
    ],
}

WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by its id.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "description": "The order id."}},
            },
        },
    },
]

# Conversations sent with tool definitions (the cookbook's weather example plus one more tool).
TOOLS = {
    "tools": [
        {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
        {"role": "user", "content": "What's the weather like in San Francisco?"},
    ],
}

# A tool result: every string field of a message counts, tool_call_id included.
CONVERSATIONS["tool_result"] = [
    {"role": "user", "content": "Where is order 42?"},
    {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"status\": \"shipped\"}"},
]

MODELS = {"gpt-4o": "o200k_base", "gpt-4-0613": "cl100k_base"}
# The cookbook's per-family constants for tool definitions.
TOOL_SETTINGS = {
    "gpt-4o": dict(func_init=7, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12),
    "gpt-4-0613": dict(func_init=10, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12),
}


def count_tools(functions, enc, s):
    """The cookbook's num_tokens_for_tools, without the messages part."""
    n = 0
    for f in functions:
        n += s["func_init"]
        function = f["function"]
        desc = function["description"]
        if desc.endswith("."):
            desc = desc[:-1]
        n += len(enc.encode(function["name"] + ":" + desc))
        props = function["parameters"]["properties"]
        if len(props) > 0:
            n += s["prop_init"]
            for key, p in props.items():
                n += s["prop_key"]
                if "enum" in p:
                    n += s["enum_init"]
                    for item in p["enum"]:
                        n += s["enum_item"]
                        n += len(enc.encode(item))
                pdesc = p["description"]
                if pdesc.endswith("."):
                    pdesc = pdesc[:-1]
                n += len(enc.encode(f"{key}:{p['type']}:{pdesc}"))
    return n + s["func_end"]


def count(messages, enc):
    n = 0
    for m in messages:
        n += 3
        for key, value in m.items():
            n += len(enc.encode(value))
            if key == "name":
                n += 1
    return n + 3


out = {
    "produced_by": "tiktoken %s, OpenAI cookbook num_tokens_from_messages (3 per message, 1 per name, 3 reply priming) and num_tokens_for_tools; "
    "see integration/tests/data/make-token-counts.py" % tiktoken.__version__,
    "conversations": {},
}
for name, messages in CONVERSATIONS.items():
    out["conversations"][name] = {
        "messages": messages,
        "prompt_tokens": {model: count(messages, tiktoken.get_encoding(e)) for model, e in MODELS.items()},
        "content_tokens": {
            model: [len(tiktoken.get_encoding(e).encode(m["content"])) for m in messages] for model, e in MODELS.items()
        },
    }
for name, messages in TOOLS.items():
    out["conversations"][name] = {
        "messages": messages,
        "tools": WEATHER_TOOLS,
        "prompt_tokens": {
            model: count(messages, tiktoken.get_encoding(e)) + count_tools(WEATHER_TOOLS, tiktoken.get_encoding(e), TOOL_SETTINGS[model])
            for model, e in MODELS.items()
        },
        "content_tokens": {
            model: [len(tiktoken.get_encoding(e).encode(m["content"])) for m in messages] for model, e in MODELS.items()
        },
    }

# The Responses API publishes no formula, so these use the framing the token counter documents
# (filters/token-counter/src/count.rs, `responses`): chat's 3 tokens per input item plus its role,
# `instructions` as a developer message, 3 to prime the reply, the texts the model reads (message
# contents and parts, function-call arguments and outputs, reasoning summaries) and each function
# tool's name, description and compact JSON parameter schema.
RESPONSES = {
    "string_input": {"instructions": "Answer briefly.", "input": "What does a gateway do?"},
    "items": {
        "input": [
            {"role": "developer", "content": "You are a careful assistant."},
            {"role": "user", "content": [{"type": "input_text", "text": "Where is order 42?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "lookup_order", "arguments": "{\"order_id\":\"42\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "{\"status\": \"shipped\"}"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It has shipped."}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "The user asks for a status."}]},
            {"role": "user", "content": "東京へ送れますか？ 🎉"},
        ]
    },
    "tools": {
        "instructions": "Use the tools when they help.",
        "input": [{"role": "user", "content": "What's the weather like in San Francisco?"}],
        "tools": [
            {"type": "function", "name": f["function"]["name"], "description": f["function"]["description"],
             "parameters": f["function"]["parameters"]}
            for f in WEATHER_TOOLS
        ],
    },
    "long": {"instructions": "You summarise engineering documents.", "input": LONG},
}


def count_responses(req, enc):
    n = 3
    tok = lambda t: len(enc.encode(t))
    if "instructions" in req:
        n += 3 + tok("developer") + tok(req["instructions"])
    items = req["input"]
    if isinstance(items, str):
        n += 3 + tok("user") + tok(items)
        items = []
    for item in items:
        n += 3
        if "role" in item:
            n += tok(item["role"])
        content = item.get("content")
        if isinstance(content, str):
            n += tok(content)
        elif isinstance(content, list):
            n += sum(tok(p["text"]) for p in content if "text" in p)
        for field in ("arguments", "output"):
            if isinstance(item.get(field), str):
                n += tok(item[field])
        for part in item.get("summary", []):
            n += tok(part["text"])
    for tool in req.get("tools", []):
        n += tok(tool["name"]) + tok(tool["description"])
        n += tok(json.dumps(tool["parameters"], separators=(",", ":"), ensure_ascii=False))
    return n


out["responses"] = {
    name: {"request": req, "input_tokens": {model: count_responses(req, tiktoken.get_encoding(e)) for model, e in MODELS.items()}}
    for name, req in RESPONSES.items()
}
print(json.dumps(out, ensure_ascii=False, indent=1))
