"""Canonical cache keys: properties over generated vendor payloads.

Idempotent, insensitive to key order and to every equivalence the issue lists, and sensitive to
every field that changes the answer: one mutation per field must change the key.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from longread_server.domain import LlmRequest, Message, VendorKind
from longread_server.vendors.anthropic import AnthropicAdapter
from longread_server.vendors.canonical import (
    KeyParts,
    cache_key,
    canonical_json,
    canonicalize,
    differences,
    embedding_key,
)
from longread_server.vendors.openai import OpenAIAdapter

from .payloads import (
    OPENAI_DEFAULTS,
    anthropic_payloads,
    anthropic_tools,
    json_objects,
    json_values,
    openai_payloads,
    openai_tools,
    shuffled_keys,
    text,
)

OPENAI, ANTHROPIC = VendorKind.OPENAI, VendorKind.ANTHROPIC
Payload = dict[str, Any]


def key(kind: VendorKind, payload: Payload, **parts: Any) -> str:
    return cache_key(kind, payload, KeyParts(**parts)).key


# ---- determinism, idempotence, key order ----


def test_keys_are_the_keys_earlier_versions_stored() -> None:
    """Replicas of different versions share one Redis: the same KEY_FORMAT must give the same
    key, byte for byte (these were computed before the field hashing was last reworked)."""
    p = {
        "model": "gpt-4.1-mini",
        "messages": [
            {"role": "system", "content": " Be brief. "},
            {"role": "user", "content": [{"type": "text", "text": "Quand ferme le port ? 1.0"}]},
        ],
        "temperature": 0.5,
        "max_tokens": 64,
        "stop": ["b", "a"],
        "stream": True,
    }
    assert key(OPENAI, p, namespace="tenant:acme", upstream="openai", key_version=3) == (
        "049e233cdbef90c079badc7d83b5f0575359f536fb62bb01496b9567eca08e99"
    )
    a = {
        "model": "claude-haiku-4-5",
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": "Wann schließt der Hafen?"}],
        "max_tokens": 64,
        "temperature": 1.0,
    }
    assert key(ANTHROPIC, a, namespace="shared", upstream="claude", strict_whitespace=True) == (
        "26c84213de4fbef52541ef974fa3eb1a9c56969efcf00a9f3a9d3a2fa1800639"
    )
    e = {"model": "text-embedding-3-small", "input": ["a b"], "encoding_format": "float"}
    assert embedding_key(e, KeyParts(namespace="shared", upstream="openai")) == (
        "6e9d4ab2d1cc8e980829260eb6f0758cfed73912e7b4090de74a7d05b558fa13"
    )


@settings(max_examples=100)
@given(openai_payloads | anthropic_payloads)
def test_the_canonical_form_needs_no_further_normalizing(p: Payload) -> None:
    """The key hashes the canonical form's JSON as it is: every value in it is normalized."""
    kind = ANTHROPIC if "max_tokens" in p and "claude" in p["model"] else OPENAI
    k = cache_key(kind, p)
    assert k.canonical_json == canonical_json(k.canonical)


@settings(max_examples=100)
@given(openai_payloads)
def test_openai_canonical_form_is_idempotent(p: Payload) -> None:
    c = canonicalize(OPENAI, p)
    assert canonicalize(OPENAI, c) == c
    assert key(OPENAI, c) == key(OPENAI, p)


@settings(max_examples=100)
@given(anthropic_payloads)
def test_anthropic_canonical_form_is_idempotent(p: Payload) -> None:
    c = canonicalize(ANTHROPIC, p)
    assert canonicalize(ANTHROPIC, c) == c
    assert key(ANTHROPIC, c) == key(ANTHROPIC, p)


@given(openai_payloads | anthropic_payloads, st.randoms(use_true_random=False))
def test_key_ignores_object_key_order(p: Payload, rng: random.Random) -> None:
    kind = ANTHROPIC if "max_tokens" in p and "claude" in p["model"] else OPENAI
    assert key(kind, shuffled_keys(p, rng)) == key(kind, p)


@given(openai_payloads)
def test_key_survives_a_json_round_trip(p: Payload) -> None:
    assert key(OPENAI, json.loads(json.dumps(p))) == key(OPENAI, p)


@given(json_values)
def test_integral_floats_and_ints_are_one_number(v: Any) -> None:
    def floats(x: Any) -> Any:
        if isinstance(x, bool):
            return x
        if isinstance(x, int) and abs(x) < 2**53:
            return float(x)
        if isinstance(x, dict):
            return {k: floats(y) for k, y in x.items()}
        if isinstance(x, list):
            return [floats(y) for y in x]
        return x

    assert canonical_json(floats(v)) == canonical_json(v)


def test_canonical_json_is_compact_sorted_and_rejects_nan() -> None:
    assert canonical_json({"b": 1.0, "a": [0.1, -0.0, True, None, "é"]}) == (
        '{"a":[0.1,0,true,null,"é"],"b":1}'
    )
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


# ---- the listed equivalences ----


def openai_equivalent(p: Payload, rng: random.Random) -> Payload:
    """Another spelling of the same Chat Completions request."""
    q = copy.deepcopy(p)
    for m in q["messages"]:
        c = m.get("content")
        if isinstance(c, str):
            m["content"] = rng.choice(
                [
                    c,
                    [{"type": "text", "text": c}],
                    "  \n" + c + " \t",
                    [{"type": "text", "text": "\n" + c + "  "}],
                ]
            )
        for call in m.get("tool_calls") or []:
            args = json.loads(call["function"]["arguments"])
            call["function"]["arguments"] = json.dumps(
                shuffled_keys(args, rng), indent=rng.choice([None, 2]), ensure_ascii=False
            )
        if m.get("tool_calls") and rng.random() < 0.5:
            if rng.random() < 0.5:
                m["content"] = ""
            else:
                m.pop("content", None)
    if "stop" in q:
        stop = q["stop"]
        if len(stop) == 1 and rng.random() < 0.5:
            q["stop"] = stop[0]
        else:
            q["stop"] = rng.sample(stop, len(stop)) + stop[:1]
    if "tools" in q:
        rng.shuffle(q["tools"])
        for t in q["tools"]:
            params = t["function"]["parameters"]
            if "required" in params:
                rng.shuffle(params["required"])
        if rng.random() < 0.5:
            q["tool_choice"] = "auto"
        if rng.random() < 0.5:
            q["parallel_tool_calls"] = True
    elif rng.random() < 0.5:
        q["tool_choice"] = rng.choice(["none", "auto"])
    for name, value in OPENAI_DEFAULTS.items():
        if name not in q and rng.random() < 0.5:
            q[name] = value
    if rng.random() < 0.3:
        q["seed" if "seed" not in q else "top_logprobs_unused"] = None
        q.pop("top_logprobs_unused", None)
    if "max_completion_tokens" in q and rng.random() < 0.5:
        q["max_tokens"] = q.pop("max_completion_tokens")
    for name, value in [
        ("stream", rng.choice([True, False])),
        ("stream_options", {"include_usage": True}),
        ("user", "someone-else"),
        ("metadata", {"run": str(rng.random())}),
        ("store", True),
        ("prompt_cache_key", "doc-" + str(rng.random())),
        ("safety_identifier", "abc"),
    ]:
        if rng.random() < 0.5:
            q[name] = value
        elif rng.random() < 0.3:
            q.pop(name, None)
    return shuffled_keys(q, rng)  # type: ignore[no-any-return]


@settings(max_examples=100)
@given(openai_payloads, st.randoms(use_true_random=False))
def test_openai_equivalent_spellings_share_a_key(p: Payload, rng: random.Random) -> None:
    q = openai_equivalent(p, rng)
    assert key(OPENAI, q) == key(OPENAI, p), differences(
        canonicalize(OPENAI, p), canonicalize(OPENAI, q)
    )


def anthropic_equivalent(p: Payload, rng: random.Random) -> Payload:
    """Another spelling of the same Messages request."""
    q = copy.deepcopy(p)
    mark = {"type": "ephemeral"}
    if "system" in q:
        s = q["system"]
        block = {"type": "text", "text": s}
        q["system"] = rng.choice([s, " " + s + "\n", [block], [{**block, "cache_control": mark}]])
    for m in q["messages"]:
        c = m["content"]
        if isinstance(c, str):
            m["content"] = rng.choice(
                [c, "\n" + c + " ", [{"type": "text", "text": c, "cache_control": mark}]]
            )
            continue
        for block in c:
            if rng.random() < 0.3:
                block["cache_control"] = mark
            if block["type"] == "tool_result" and rng.random() < 0.5:
                block["content"] = [{"type": "text", "text": block["content"]}]
            if block["type"] == "tool_result" and rng.random() < 0.3:
                block["is_error"] = False
        if c[0]["type"] == "text" and rng.random() < 0.5:
            c[0]["text"] = "  " + c[0]["text"]
        if c[-1]["type"] == "text" and rng.random() < 0.5:
            c[-1]["text"] += "\n\n"
    if "tools" in q:
        rng.shuffle(q["tools"])
        q["tools"][-1]["cache_control"] = mark
        if rng.random() < 0.5:
            q["tool_choice"] = rng.choice(
                [{"type": "auto"}, {"type": "auto", "disable_parallel_tool_use": False}]
            )
    if "stop_sequences" in q:
        stop = q["stop_sequences"]
        q["stop_sequences"] = rng.sample(stop, len(stop)) + stop[-1:]
    if "temperature" not in q and rng.random() < 0.5:
        q["temperature"] = 1.0
    if rng.random() < 0.5:
        q["metadata"] = {"user_id": "u-" + str(rng.random())}
    if rng.random() < 0.5:
        q["stream"] = rng.choice([True, False])
    if rng.random() < 0.3:
        q["thinking"] = {"type": "disabled"}
    return shuffled_keys(q, rng)  # type: ignore[no-any-return]


@settings(max_examples=100)
@given(anthropic_payloads, st.randoms(use_true_random=False))
def test_anthropic_equivalent_spellings_share_a_key(p: Payload, rng: random.Random) -> None:
    q = anthropic_equivalent(p, rng)
    assert key(ANTHROPIC, q) == key(ANTHROPIC, p), differences(
        canonicalize(ANTHROPIC, p), canonicalize(ANTHROPIC, q)
    )


def test_strict_whitespace_keeps_the_bytes() -> None:
    a = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    b = {"model": "m", "messages": [{"role": "user", "content": " hi\n"}]}
    assert key(OPENAI, a) == key(OPENAI, b)
    assert key(OPENAI, a, strict_whitespace=True) != key(OPENAI, b, strict_whitespace=True)
    # one text part is still the string in strict mode
    c = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert key(OPENAI, a, strict_whitespace=True) == key(OPENAI, c, strict_whitespace=True)


def test_non_json_tool_arguments_are_kept_verbatim() -> None:
    def with_args(args: str) -> Payload:
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}
        return {"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]}

    assert key(OPENAI, with_args('{"a": 1, "b": [1, 2]}')) == key(
        OPENAI, with_args('{"b":[1,2],"a":1.0}')
    )
    assert key(OPENAI, with_args("not json")) != key(OPENAI, with_args('"not json"'))
    # Arguments nested deeper than json (or the canonical form) can recurse: kept verbatim.
    for deep in ("[" * 100_000, "[" * 900 + "]" * 900):
        assert (
            canonicalize(OPENAI, with_args(deep))["messages"][0]["tool_calls"][0]["function"][
                "arguments"
            ]
            == deep
        )


def test_adapter_payloads_key_like_plain_ones() -> None:
    """What the gateway sends: Anthropic cache_control marks and OpenAI prompt_cache_key do
    not change the key (the same answer with or without vendor prompt caching)."""
    import httpx

    http = httpx.AsyncClient()
    req = LlmRequest(
        model="claude-haiku-4-5",
        messages=(Message("user", "task"), Message("user", "chunk")),
        max_output_tokens=100,
        system="sys",
        stream=False,
    )
    cached = LlmRequest(**{**_fields(req), "cache_prefix_messages": 1, "stream": True})
    a = AnthropicAdapter(http, name="anthropic", base_url="http://x", api_key="k")
    assert "cache_control" in json.dumps(a.build_payload(cached))
    assert key(ANTHROPIC, a.build_payload(req)) == key(ANTHROPIC, a.build_payload(cached))
    o = OpenAIAdapter(http, name="openai", base_url="http://x/v1", api_key="k")
    keyed = LlmRequest(**{**_fields(req), "prompt_cache_key": "doc-1"})
    assert key(OPENAI, o.build_payload(req)) == key(OPENAI, o.build_payload(keyed))
    c = OpenAIAdapter(http, name="deepseek", base_url="http://x/v1", api_key="k", compatible=True)
    # max_tokens (compatible) and max_completion_tokens (OpenAI): one parameter
    assert canonicalize(OPENAI, c.build_payload(req)) == canonicalize(OPENAI, o.build_payload(req))


def _fields(req: LlmRequest) -> dict[str, Any]:
    return {name: getattr(req, name) for name in req.__slots__}


# ---- sensitivity: one mutation per output-changing field ----

Mutation = Callable[[Payload, Payload], Payload | None]


def _text_messages(p: Payload) -> list[dict[str, Any]]:
    return [m for m in p["messages"] if isinstance(m.get("content"), str)]


def _bump(value: float, step: float, hi: float) -> float:
    return value + step if value + step <= hi else value - step


def o_model(p: Payload, c: Payload) -> Payload:
    return {**p, "model": p["model"] + "-2"}


def o_edit_text(p: Payload, c: Payload) -> Payload | None:
    msgs = _text_messages(p)
    if not msgs:
        return None
    msgs[0]["content"] += " and more"
    return p


def o_add_message(p: Payload, c: Payload) -> Payload:
    p["messages"].append({"role": "user", "content": "one more thing"})
    return p


def o_role(p: Payload, c: Payload) -> Payload | None:
    for m in p["messages"]:
        if m["role"] in ("user", "assistant", "system") and isinstance(m.get("content"), str):
            m["role"] = {"user": "assistant", "assistant": "system", "system": "user"}[m["role"]]
            return p
    return None


def o_swap(p: Payload, c: Payload) -> Payload | None:
    msgs = c["messages"]
    if len(msgs) < 2 or msgs[0] == msgs[1]:
        return None
    p["messages"][0], p["messages"][1] = p["messages"][1], p["messages"][0]
    return p


def _set(name: str, make: Callable[[Any], Any]) -> Mutation:
    def mutate(p: Payload, c: Payload) -> Payload:
        p[name] = make(c.get(name))
        return p

    mutate.__name__ = f"set_{name}"
    return mutate


def o_stop(p: Payload, c: Payload) -> Payload:
    p["stop"] = [*c.get("stop", []), "ZZ-new-stop"]
    return p


def o_max_tokens(p: Payload, c: Payload) -> Payload:
    p.pop("max_tokens", None)
    p["max_completion_tokens"] = c.get("max_completion_tokens", 77) + 1
    return p


def o_add_tool(p: Payload, c: Payload) -> Payload:
    tool = {"type": "function", "function": {"name": "zz_added", "parameters": {}}}
    p["tools"] = [*p.get("tools", []), tool]
    return p


def o_tool_description(p: Payload, c: Payload) -> Payload | None:
    if not p.get("tools"):
        return None
    p["tools"][0]["function"]["description"] += " (changed)"
    return p


def o_tool_schema(p: Payload, c: Payload) -> Payload | None:
    if not p.get("tools"):
        return None
    p["tools"][0]["function"]["parameters"]["properties"]["zz_new"] = {"type": "string"}
    return p


def o_parallel(p: Payload, c: Payload) -> Payload | None:
    if "tools" not in c:
        return None
    p["parallel_tool_calls"] = not c["parallel_tool_calls"]
    return p


def o_tool_args(p: Payload, c: Payload) -> Payload | None:
    for m in p["messages"]:
        for call in m.get("tool_calls") or []:
            args = json.loads(call["function"]["arguments"])
            args["zz_arg"] = [1, 2]
            call["function"]["arguments"] = json.dumps(args)
            return p
    return None


def o_tool_call_id(p: Payload, c: Payload) -> Payload | None:
    for m in p["messages"]:
        if m["role"] == "tool":
            m["tool_call_id"] += "x"
            return p
    return None


def o_name(p: Payload, c: Payload) -> Payload:
    p["messages"][0]["name"] = "alice"
    return p


OPENAI_MUTATIONS: list[Mutation] = [
    o_model,
    o_edit_text,
    o_add_message,
    o_role,
    o_swap,
    _set("temperature", lambda v: _bump(v, 0.25, 2)),
    _set("top_p", lambda v: v / 2),
    _set("n", lambda v: v + 1),
    _set("presence_penalty", lambda v: _bump(v, 0.5, 2)),
    _set("frequency_penalty", lambda v: _bump(v, 0.5, 2)),
    _set("seed", lambda v: 1 if v is None else v + 1),
    o_stop,
    o_max_tokens,
    o_add_tool,
    o_tool_description,
    o_tool_schema,
    _set("tool_choice", lambda v: "required"),
    o_parallel,
    _set(
        "response_format",
        lambda v: {"type": "json_object"} if v == {"type": "text"} else {"type": "text"},
    ),
    _set("logit_bias", lambda v: {**(v or {}), "99999999": 7}),
    _set("logprobs", lambda v: not v),
    _set("top_logprobs", lambda v: 3),
    _set("reasoning_effort", lambda v: "high"),
    _set("x_unknown_field", lambda v: 1),
    o_tool_args,
    o_tool_call_id,
    o_name,
]


@settings(max_examples=60)
@given(p=openai_payloads, tools=openai_tools.filter(bool), args=json_objects, said=text)
def test_openai_key_changes_with_every_output_field(
    p: Payload, tools: list[Any], args: dict[str, Any], said: str
) -> None:
    """Each mutation changes one output-changing field of a base payload that has every
    feature (tools, a tool call, a tool result, text), so every mutation applies."""
    p.setdefault("tools", tools)
    fn = {"name": "f", "arguments": json.dumps(args)}
    call = {"id": "call_1", "type": "function", "function": fn}
    p["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": said},
        {"role": "user", "content": said},
    ]
    c, base = canonicalize(OPENAI, p), key(OPENAI, p)
    applied = 0
    for mutate in OPENAI_MUTATIONS:
        q = mutate(copy.deepcopy(p), c)
        if q is None:
            continue
        applied += 1
        assert key(OPENAI, q) != base, mutate.__name__
    assert applied >= len(OPENAI_MUTATIONS) - 1  # all but, rarely, the swap of equal turns


def a_system(p: Payload, c: Payload) -> Payload:
    p["system"] = p.get("system", "") + " Be terse."
    return p


def a_edit_text(p: Payload, c: Payload) -> Payload | None:
    for m in p["messages"]:
        if isinstance(m["content"], str):
            m["content"] += " really"
            return p
        for block in m["content"]:
            if block["type"] == "text":
                block["text"] += " really"
                return p
    return None


def a_role(p: Payload, c: Payload) -> Payload:
    m = p["messages"][0]
    m["role"] = "assistant" if m["role"] == "user" else "user"
    return p


def a_tool_input(p: Payload, c: Payload) -> Payload | None:
    for m in p["messages"]:
        if isinstance(m["content"], list):
            for block in m["content"]:
                if block["type"] == "tool_use":
                    block["input"]["zz_in"] = True
                    return p
    return None


def a_tool_result(p: Payload, c: Payload) -> Payload | None:
    for m in p["messages"]:
        if isinstance(m["content"], list):
            for block in m["content"]:
                if block["type"] == "tool_result":
                    block["is_error"] = True
                    return p
    return None


def a_add_tool(p: Payload, c: Payload) -> Payload:
    tool = {"name": "zz_added", "input_schema": {"type": "object", "properties": {}}}
    p["tools"] = [*p.get("tools", []), tool]
    return p


def a_tool_schema(p: Payload, c: Payload) -> Payload | None:
    if not p.get("tools"):
        return None
    p["tools"][0]["input_schema"]["properties"]["zz_new"] = {"type": "integer"}
    return p


def a_stop(p: Payload, c: Payload) -> Payload:
    p["stop_sequences"] = [*c.get("stop_sequences", []), "ZZ-stop"]
    return p


ANTHROPIC_MUTATIONS: list[Mutation] = [
    o_model,
    a_system,
    a_edit_text,
    o_add_message,
    a_role,
    o_swap,
    _set("max_tokens", lambda v: v + 1),
    _set("temperature", lambda v: _bump(v, 0.25, 1)),
    _set("top_p", lambda v: 0.5 if v is None else v / 2),
    _set("top_k", lambda v: 1 if v is None else v + 1),
    a_stop,
    a_add_tool,
    a_tool_schema,
    _set("tool_choice", lambda v: {"type": "any"}),
    _set("thinking", lambda v: {"type": "enabled", "budget_tokens": 1024}),
    a_tool_input,
    a_tool_result,
    _set("x_unknown_field", lambda v: [1]),
]


@settings(max_examples=60)
@given(p=anthropic_payloads, tools=anthropic_tools.filter(bool), inp=json_objects, said=text)
def test_anthropic_key_changes_with_every_output_field(
    p: Payload, tools: list[Any], inp: dict[str, Any], said: str
) -> None:
    """As for OpenAI: a base payload with every feature, one mutation per field."""
    p.setdefault("tools", tools)
    p["messages"] += [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": inp}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": said}],
        },
        {"role": "user", "content": [{"type": "text", "text": said}]},
    ]
    c, base = canonicalize(ANTHROPIC, p), key(ANTHROPIC, p)
    applied = 0
    for mutate in ANTHROPIC_MUTATIONS:
        q = mutate(copy.deepcopy(p), c)
        if q is None:
            continue
        applied += 1
        assert key(ANTHROPIC, q) != base, mutate.__name__
    assert applied >= len(ANTHROPIC_MUTATIONS) - 1


# ---- what else goes into the key ----


@given(openai_payloads)
def test_vendors_upstreams_tenants_and_versions_never_share_a_key(p: Payload) -> None:
    variants = {
        key(OPENAI, p),
        key(VendorKind.OPENAI_COMPATIBLE, p),
        key(ANTHROPIC, {**p, "max_tokens": 100}),
        key(OPENAI, p, upstream="deepseek"),
        key(OPENAI, p, namespace="tenant:acme"),
        key(OPENAI, p, namespace="tenant:globex"),
        key(OPENAI, p, namespace="shared"),
        key(OPENAI, p, key_version=2),
        key(OPENAI, p, strict_whitespace=True),
    }
    assert len(variants) == 9


def test_key_fields_are_length_prefixed() -> None:
    """("ab", "c") and ("a", "bc") must not collide."""
    p = {"model": "m", "messages": []}
    assert key(OPENAI, p, namespace="ab", upstream="c") != key(
        OPENAI, p, namespace="a", upstream="bc"
    )


def test_differences_name_the_paths() -> None:
    a = canonicalize(OPENAI, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    b = canonicalize(
        OPENAI,
        {"model": "m", "messages": [{"role": "user", "content": "y"}], "temperature": 0},
    )
    assert [(d.path, d.a, d.b) for d in differences(a, b)] == [
        ("$.messages[0].content", "x", "y"),
        ("$.temperature", 1, 0),
    ]
