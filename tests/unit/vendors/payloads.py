"""Hypothesis strategies: vendor payloads as a client or the gateway would send them, and
helpers that rewrite a payload into an equivalent spelling."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import strategies as st

# Text the model reads: no surrogates; starts and ends with a non-space (so that adding
# whitespace around it is a real change in strict mode).
_chars = st.characters(exclude_categories=["Cs"], max_codepoint=0x2FFF)
text = st.text(_chars, min_size=1, max_size=24).map(str.strip).filter(bool)
names = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=10)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=5,
)
json_objects = st.dictionaries(names, json_values, max_size=4)


def decimals(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Sampling values as clients write them (two decimals)."""
    return st.integers(round(lo * 100), round(hi * 100)).map(lambda i: i / 100)


schemas = st.builds(
    lambda props, required: {
        "type": "object",
        "properties": props,
        **({"required": sorted(set(required) & set(props))} if required else {}),
    },
    st.dictionaries(
        names,
        st.fixed_dictionaries(
            {"type": st.sampled_from(["string", "integer", "number", "boolean"])},
            optional={"description": text},
        ),
        max_size=4,
    ),
    st.lists(names, max_size=3),
)

# ---- OpenAI Chat Completions ----

openai_tools = st.lists(
    st.builds(
        lambda name, desc, params: {
            "type": "function",
            "function": {"name": name, "description": desc, "parameters": params},
        },
        names,
        text,
        schemas,
    ),
    max_size=3,
    unique_by=lambda t: str(t["function"]["name"]),  # type: ignore[index]
)


def _tool_call(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


openai_messages = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": text}
    ),
    st.builds(
        lambda calls: {"role": "assistant", "content": None, "tool_calls": calls},
        st.lists(st.builds(_tool_call, names, names, json_objects), min_size=1, max_size=2),
    ),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": names, "content": text}),
)

openai_payloads = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-4.1-mini", "gpt-4o-mini", "deepseek-chat"]),
        "messages": st.lists(openai_messages, min_size=1, max_size=4),
    },
    optional={
        "temperature": decimals(0, 2),
        "top_p": decimals(0.01, 1),
        "n": st.integers(1, 4),
        "presence_penalty": decimals(-2, 2),
        "frequency_penalty": decimals(-2, 2),
        "seed": st.integers(0, 2**31),
        "stop": st.lists(text, min_size=1, max_size=3, unique=True),
        "max_completion_tokens": st.integers(1, 100_000),
        "tools": openai_tools.filter(bool),
        "logit_bias": st.dictionaries(
            st.integers(0, 200_000).map(str), st.integers(-100, 100), min_size=1, max_size=3
        ),
        "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
        "logprobs": st.booleans(),
        "user": text,
        "metadata": st.dictionaries(names, text, max_size=2),
        "stream": st.booleans(),
        "x_vendor_extension": json_values,
    },
)

# ---- Anthropic Messages ----

anthropic_tools = st.lists(
    st.builds(
        lambda name, desc, schema: {"name": name, "description": desc, "input_schema": schema},
        names,
        text,
        schemas,
    ),
    max_size=3,
    unique_by=lambda t: t["name"],
)
anthropic_blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, text),
    st.builds(
        lambda i, n, inp: {"type": "tool_use", "id": i, "name": n, "input": inp},
        names,
        names,
        json_objects,
    ),
    st.builds(lambda i, t: {"type": "tool_result", "tool_use_id": i, "content": t}, names, text),
)
anthropic_messages = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["user", "assistant"]),
    text | st.lists(anthropic_blocks, min_size=1, max_size=3),
)
anthropic_payloads = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["claude-haiku-4-5", "claude-sonnet-4-5"]),
        "max_tokens": st.integers(1, 64_000),
        "messages": st.lists(anthropic_messages, min_size=1, max_size=4),
    },
    optional={
        "system": text,
        "temperature": decimals(0, 1),
        "top_p": decimals(0.01, 1),
        "top_k": st.integers(1, 500),
        "stop_sequences": st.lists(text, min_size=1, max_size=3, unique=True),
        "tools": anthropic_tools.filter(bool),
        "metadata": st.fixed_dictionaries({"user_id": names}),
        "stream": st.booleans(),
    },
)


def shuffled_keys(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled_keys(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled_keys(v, rng) for v in value]
    return value


# Request fields OpenAI documents with these defaults: sent or not, the same request.
OPENAI_DEFAULTS = {
    "temperature": 1.0,
    "top_p": 1,
    "n": 1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0,
    "logprobs": False,
    "response_format": {"type": "text"},
}
