"""Fuzz target: the cache-key canonicalizer (``vendors/canonical.py``).

Input: a JSON document, read as a payload for both vendors. A payload that is not a JSON object
must be refused with TypeError; one holding NaN or an infinity (``json.loads`` accepts them) may
be refused with ValueError; nothing else may raise. For every other payload: the canonical
form is a fixed point with the same key, survives a JSON round trip, and the key is the same
for every rewrite the module docstring calls equivalent (key order, integral floats, ignored
fields, top-level nulls, defaults, text spellings and surrounding whitespace, stop sets, tool
order, ``max_tokens``, cache-control markers...), and different in another namespace.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from typing import Any

from longread_server.domain import VendorKind
from longread_server.vendors.canonical import KeyParts, cache_key, canonical_json, canonicalize

from tests.unit.vendors.payloads import OPENAI_DEFAULTS, shuffled_keys

OPENAI, ANTHROPIC = VendorKind.OPENAI, VendorKind.ANTHROPIC
# Payloads are built by the adapters and are shallow; deeper documents only measure Python's
# recursion limit.
MAX_DEPTH = 64
Payload = dict[str, Any]
Rewrite = Callable[[Payload], Payload]


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(map(_non_finite, value.values()))
    if isinstance(value, list):
        return any(map(_non_finite, value))
    return False


def _floats(value: Any) -> Any:
    """Integral numbers written as floats (``1`` -> ``1.0``): the same JSON number."""
    if type(value) is int and abs(value) < 2**53:
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def _messages(p: Payload) -> list[dict[str, Any]]:
    messages = p.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _padded(p: Payload) -> Payload:
    for m in _messages(p):
        if isinstance(m.get("content"), str):
            m["content"] = " \n" + m["content"] + "\t "
    return p


def _as_text_block(p: Payload) -> Payload:
    for m in _messages(p):
        if isinstance(m.get("content"), str):
            m["content"] = [{"type": "text", "text": m["content"]}]
    return p


def _stop_set(name: str) -> Rewrite:
    def rewrite(p: Payload) -> Payload:
        stop = p.get(name)
        if isinstance(stop, str):
            p[name] = [stop, stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            p[name] = stop[::-1] + stop[:1]
        return p

    return rewrite


def _reversed(*names: str) -> Rewrite:
    def rewrite(p: Payload) -> Payload:
        for name in names:
            if isinstance(p.get(name), list):
                p[name] = p[name][::-1]
        return p

    return rewrite


def _absent_null(p: Payload) -> Payload:
    name = "seed"
    while name in p:
        name += "_"
    p[name] = None
    return p


def _set(values: Payload) -> Rewrite:
    def rewrite(p: Payload) -> Payload:
        p.update(copy.deepcopy(values))
        return p

    return rewrite


def _defaults(values: Payload) -> Rewrite:
    def rewrite(p: Payload) -> Payload:
        for k, v in values.items():
            if p.get(k) is None:
                p[k] = copy.deepcopy(v)
        return p

    return rewrite


def _legacy_max_tokens(p: Payload) -> Payload:
    if p.get("max_tokens") is None and p.get("max_completion_tokens") is not None:
        p["max_tokens"] = p.pop("max_completion_tokens")
    return p


def _tool_arguments_respelled(p: Payload) -> Payload:
    for m in _messages(p):
        calls = m.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                try:
                    canonical_json(json.loads(fn["arguments"]))
                except (ValueError, TypeError, RecursionError):
                    continue  # not JSON: kept verbatim, so any respelling is a change
                parsed = json.loads(fn["arguments"])
                fn["arguments"] = json.dumps(_floats(parsed), indent=1, ensure_ascii=False)
    return p


def _openai_tool_defaults(c: Payload) -> Rewrite:
    """``tool_choice``/``parallel_tool_calls`` spelled out as their defaults (with tools), or
    as the values that mean nothing without them."""

    def rewrite(p: Payload) -> Payload:
        if "tools" in c or "functions" in c:
            if p.get("tool_choice") is None:
                p["tool_choice"] = "auto"
            if "tools" in c and p.get("parallel_tool_calls") is None:
                p["parallel_tool_calls"] = True
        else:
            if p.get("tool_choice") is None:
                p["tool_choice"] = "none"
            p["parallel_tool_calls"] = False
        return p

    return rewrite


def _cache_control(p: Payload) -> Payload:
    mark = {"type": "ephemeral"}
    lists = [m.get("content") for m in _messages(p)] + [p.get("tools"), p.get("system")]
    for items in lists:
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                item["cache_control"] = dict(mark)
    return p


def _system_block(p: Payload) -> Payload:
    if isinstance(p.get("system"), str):
        p["system"] = [{"type": "text", "text": " " + p["system"] + "\n"}]
    return p


def _thinking_disabled(p: Payload) -> Payload:
    if p.get("thinking") is None:
        p["thinking"] = {"type": "disabled"}
    return p


def _openai_rewrites(c: Payload) -> list[Rewrite]:
    return [
        _floats,
        _absent_null,
        _set(
            {
                "stream": True,
                "stream_options": {"include_usage": True},
                "user": "u",
                "metadata": {"a": "b"},
                "store": True,
                "prompt_cache_key": "k",
                "prompt_cache_retention": "24h",
                "safety_identifier": "s",
            }
        ),
        _defaults(OPENAI_DEFAULTS),
        _padded,
        _as_text_block,
        _stop_set("stop"),
        _reversed("tools", "functions"),
        _legacy_max_tokens,
        _tool_arguments_respelled,
        _openai_tool_defaults(c),
    ]


def _anthropic_rewrites(c: Payload) -> list[Rewrite]:
    return [
        _floats,
        _absent_null,
        _set({"stream": False, "metadata": {"user_id": "u"}}),
        _defaults({"temperature": 1.0}),
        _padded,
        _as_text_block,
        _system_block,
        _cache_control,
        _stop_set("stop_sequences"),
        _reversed("tools"),
        _thinking_disabled,
    ]


def check(kind: VendorKind, payload: Payload, rng: random.Random) -> None:
    try:
        key = cache_key(kind, payload)
    except ValueError:
        assert _non_finite(payload), "ValueError only for NaN or an infinity"
        return
    c = key.canonical
    again = canonicalize(kind, c)
    assert canonical_json(again) == key.canonical_json, "the canonical form is a fixed point"
    assert cache_key(kind, c).key == key.key
    assert cache_key(kind, json.loads(key.canonical_json)).key == key.key, "JSON round trip"
    assert cache_key(kind, shuffled_keys(payload, rng)).key == key.key, "key order"
    assert cache_key(kind, payload, KeyParts(namespace="other")).key != key.key
    cache_key(kind, payload, KeyParts(strict_whitespace=True))
    rewrites = _openai_rewrites(c) if kind is OPENAI else _anthropic_rewrites(c)
    for rewrite in rewrites:
        other = rewrite(copy.deepcopy(payload))
        other_key = cache_key(kind, other)
        assert other_key.key == key.key, (
            getattr(rewrite, "__qualname__", rewrite),
            key.canonical_json,
            other_key.canonical_json,
        )


def fuzz(data: bytes) -> None:
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: nothing the canonicalizer is given
    if _depth(payload) > MAX_DEPTH:
        return
    rng = random.Random(data)
    for kind in (OPENAI, ANTHROPIC):
        if not isinstance(payload, dict):
            try:
                canonicalize(kind, payload)
            except TypeError:
                continue
            raise AssertionError("a payload that is not an object must be refused")
        check(kind, payload, rng)
