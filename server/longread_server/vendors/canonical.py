"""Canonical cache keys: one key per *answer*, however the vendor request happens to be spelled.

The key is computed from the vendor payload the gateway is about to send (what the adapter's
``build_payload`` returns), canonicalized by that vendor's own semantics, then hashed together
with everything else that decides the answer or who may see it::

    key = sha256(len-prefixed: "longread-cache", KEY_FORMAT, key_version, namespace,
                 vendor kind, upstream, endpoint, resolved model, canonical JSON)

Each part is length-prefixed, so no two different tuples encode to the same bytes. Different
vendors, upstreams, models, tenants (namespaces) and key versions therefore never share a key.

Canonical JSON: object keys sorted, no insignificant whitespace, integral floats written as
integers (``1.0`` == ``1``), other floats in Python's shortest round-trip form, NaN and infinities
rejected, non-ASCII kept as is. Unknown fields are kept (an exclude-list, not an allow-list:
a field we do not know about may change the answer, so it splits the key).

OpenAI Chat Completions (also every OpenAI-compatible server):

* dropped (transport and accounting): ``stream``, ``stream_options``, ``user``, ``metadata``,
  ``store``, ``prompt_cache_key``, ``prompt_cache_retention``, ``safety_identifier``; and any
  top-level ``null`` (the API reads it as "unset");
* message order kept; content as a string and as ``[{"type": "text", "text": ...}]`` are the
  same; leading/trailing whitespace of a message's text is ignored (unless strict);
* assistant ``tool_calls[].function.arguments`` (a JSON string) parsed and re-serialized
  canonically (kept verbatim when it is not JSON); empty content next to tool calls is null;
* ``tools`` (and legacy ``functions``) order-insensitive, their JSON-schema ``parameters``
  canonical (``required`` and ``type`` lists as sets), omitted ``parameters`` is the documented
  empty object schema, ``strict`` defaults to false;
* ``stop`` as a string or a list, order-insensitive, duplicates ignored;
* defaults filled: temperature 1, top_p 1, n 1, presence/frequency penalty 0, logprobs false,
  response_format text; with tools, tool_choice ``auto`` and parallel_tool_calls true; without
  tools, tool_choice ``auto``/``none`` and parallel_tool_calls are dropped (no tool can be
  called either way); empty ``logit_bias``/``stop``/``tools`` dropped;
* ``max_tokens`` and ``max_completion_tokens`` are one (``max_completion_tokens``).

Anthropic Messages:

* dropped: ``stream``, ``metadata``, and every block's ``cache_control`` marker;
* ``system`` as a string or as one text block is the same; so is message content as a string or
  one text block (also inside ``tool_result``); leading/trailing whitespace ignored (unless
  strict);
* ``tools`` order-insensitive with canonical ``input_schema``; ``tool_use.input`` canonical;
* ``stop_sequences`` order-insensitive; defaults filled: temperature 1, ``tool_choice``
  ``{"type": "auto"}`` with tools (dropped without), ``thinking`` disabled == absent,
  ``disable_parallel_tool_use: false`` and ``is_error: false`` == absent.

Bump ``KEY_FORMAT`` whenever a rule here changes what maps to what.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from longread_server.domain import VendorKind
from longread_server.memo import Memo

KEY_FORMAT = 1
_DOMAIN = "longread-cache"

ENDPOINTS = {
    VendorKind.OPENAI: "POST /v1/chat/completions",
    VendorKind.OPENAI_COMPATIBLE: "POST /v1/chat/completions",
    VendorKind.ANTHROPIC: "POST /v1/messages",
}

_OPENAI_IGNORED = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
    }
)
_OPENAI_DEFAULTS: dict[str, Any] = {
    "temperature": 1,
    "top_p": 1,
    "n": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "response_format": {"type": "text"},
}
_ANTHROPIC_IGNORED = frozenset({"stream", "metadata"})
_ANTHROPIC_DEFAULTS: dict[str, Any] = {"temperature": 1}

# JSON-schema keywords whose value is a map of name -> schema, a schema (or a list of them),
# or a list of schemas in a meaningful order.
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_SCHEMA_ONE = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "contains",
        "if",
        "then",
        "else",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "additionalItems",
    }
)
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})


@dataclass(frozen=True, slots=True)
class KeyParts:
    """Everything besides the payload that goes into a key."""

    namespace: str = ""  # "tenant:<name>", or "shared" when tenants share the cache
    upstream: str = ""  # the configured upstream name (e.g. "openai", "deepseek")
    key_version: int = 1  # operator-controlled: bump to start from an empty cache
    strict_whitespace: bool = False


@dataclass(frozen=True, slots=True)
class CacheKey:
    key: str  # 64 hex characters
    canonical: dict[str, Any]
    canonical_json: str


def canonicalize(
    kind: VendorKind | str, payload: Mapping[str, Any], *, strict_whitespace: bool = False
) -> dict[str, Any]:
    """The canonical form of a vendor payload (itself a valid payload of that vendor)."""
    if not isinstance(payload, Mapping):
        raise TypeError("a payload is a JSON object")
    vendor = VendorKind(kind)
    if vendor is VendorKind.ANTHROPIC:
        return _Anthropic(strict_whitespace).payload(payload)
    return _OpenAI(strict_whitespace).payload(payload)


def canonical_json(value: Any) -> str:
    """Deterministic JSON text of ``value`` (sorted keys, canonical numbers, no spaces)."""
    return _json_text_of(_norm(value))


# The JSON of a value already normalized (``_norm``): one encoder, made once.
_json_text_of = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def cache_key(
    kind: VendorKind | str, payload: Mapping[str, Any], parts: KeyParts = KeyParts()
) -> CacheKey:
    """The cache key of ``payload`` as sent by an upstream of protocol ``kind``."""
    vendor = VendorKind(kind)
    canonical = canonicalize(vendor, payload, strict_whitespace=parts.strict_whitespace)
    text = _json_text_of(canonical)  # (canonicalize normalizes every value it keeps)
    model = canonical.get("model")
    head = (
        _DOMAIN,
        str(KEY_FORMAT),
        str(parts.key_version),
        parts.namespace,
        vendor.value,
        parts.upstream,
        ENDPOINTS[vendor],
        model if isinstance(model, str) else canonical_json(model),
        "strict" if parts.strict_whitespace else "trim",
    )
    return CacheKey(_digest(head, text), canonical, text)


def _digest(head: tuple[str, ...], last: str) -> str:
    """SHA-256 of the fields ``head`` then ``last``, each prefixed by its length: no two
    field lists share a key. The hash of a ``head`` is remembered: an upstream's calls repeat
    the same few."""
    prefix = _HEADS.get_or_make(head, lambda: _hashed(hashlib.sha256(), head))
    return _hashed(prefix.copy(), (last,)).hexdigest()


def _hashed(digest: hashlib._Hash, fields: tuple[str, ...]) -> hashlib._Hash:
    for f in fields:
        data = f.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest


_HEADS: Memo[tuple[str, ...], hashlib._Hash] = Memo(256)


def embedding_key(payload: Mapping[str, Any], parts: KeyParts = KeyParts()) -> str:
    """The cache key of an OpenAI-compatible embeddings payload: its JSON as sent (model,
    input, encoding format; whitespace counts, since it is embedded)."""
    head = (
        _DOMAIN,
        str(KEY_FORMAT),
        str(parts.key_version),
        parts.namespace,
        parts.upstream,
        "POST /v1/embeddings",
    )
    return _digest(head, canonical_json(payload))


@dataclass(frozen=True, slots=True)
class Difference:
    """One place where two canonical payloads differ (``path`` in JSONPath-like notation)."""

    path: str
    a: Any
    b: Any


_MISSING: Any = object()


def differences(a: Any, b: Any, path: str = "$") -> list[Difference]:
    """Where two canonical values differ: the deepest differing paths, in document order."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[Difference] = []
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{k}" if k.isidentifier() else f"{path}[{json.dumps(k)}]"
            va, vb = a.get(k, _MISSING), b.get(k, _MISSING)
            if va is _MISSING or vb is _MISSING:
                out.append(Difference(sub, _show(va), _show(vb)))
            else:
                out.extend(differences(va, vb, sub))
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = []
        for i in range(max(len(a), len(b))):
            va = a[i] if i < len(a) else _MISSING
            vb = b[i] if i < len(b) else _MISSING
            if va is _MISSING or vb is _MISSING:
                out.append(Difference(f"{path}[{i}]", _show(va), _show(vb)))
            else:
                out.extend(differences(va, vb, f"{path}[{i}]"))
        return out
    if canonical_json(a) == canonical_json(b):
        return []
    return [Difference(path, a, b)]


def _show(value: Any) -> Any:
    return "<absent>" if value is _MISSING else value


# ---- generic normalization ------------------------------------------------------------------


def _norm(value: Any) -> Any:
    """JSON value with canonical numbers; dict keys must be strings."""
    t = type(value)  # exact types first: payloads are plain dicts, lists, str and int
    if t is str or t is int or value is None or t is bool:
        return value
    if t is dict:
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str and not isinstance(k, str):
                raise TypeError(f"object keys must be strings, got {k!r}")
            out[k] = _norm(v)
        return out
    if t is list:
        return [_norm(v) for v in value]
    return _norm_other(value)


def _norm_other(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no JSON form")
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, Mapping):
        mapped: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"object keys must be strings, got {k!r}")
            mapped[k] = _norm(v)
        return mapped
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _schema(value: Any) -> Any:
    """A JSON schema with set-like keyword values sorted (``required``, a ``type`` list)."""
    if not isinstance(value, Mapping):
        return _norm(value)
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k in _SCHEMA_MAPS and isinstance(v, Mapping):
            out[k] = {name: _schema(sub) for name, sub in v.items()}
        elif k in _SCHEMA_ONE:
            out[k] = [_schema(s) for s in v] if isinstance(v, list) else _schema(v)
        elif k in _SCHEMA_LISTS and isinstance(v, list):
            out[k] = [_schema(s) for s in v]
        elif k in ("required", "type") and isinstance(v, list) and _all_str(v):
            out[k] = sorted(set(v))
        else:
            out[k] = _norm(v)
    return out


def _is_plain_text(parts: list[dict[str, Any]]) -> bool:
    """One text part with nothing else: the same as its string."""
    return (
        len(parts) == 1
        and set(parts[0]) == {"type", "text"}
        and parts[0]["type"] == "text"
        and isinstance(parts[0]["text"], str)
    )


def _all_str(values: list[Any]) -> bool:
    return all(isinstance(v, str) for v in values)


def _string_set(value: Any) -> Any:
    """A stop-sequence parameter as a sorted list of distinct strings (None when empty)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and _all_str(value):
        return sorted(set(value)) or None
    return _norm(value)


def _as_multiset(items: list[Any]) -> list[Any]:
    """A list whose order means nothing (tool definitions): sorted by canonical JSON text."""
    return [v for _, v in sorted(((canonical_json(v), v) for v in items), key=lambda p: p[0])]


def _json_text(text: Any) -> Any:
    """A JSON document in a string, re-serialized canonically (verbatim if it is not JSON)."""
    if not isinstance(text, str):
        return _norm(text)
    try:
        parsed = json.loads(text)
        return canonical_json(parsed)
    except (ValueError, TypeError, RecursionError):  # nested deeper than we can read: as text
        return text


def _fill(out: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    for k, v in defaults.items():
        out.setdefault(k, _norm(v))


class _Text:
    """Whitespace policy for text the model reads."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict

    def __call__(self, value: Any) -> Any:
        return value if self.strict or not isinstance(value, str) else value.strip()

    def ends(self, parts: list[dict[str, Any]], field: str, is_text: str) -> None:
        """Strip the leading whitespace of the first part and the trailing of the last, when
        those are text parts (whitespace between parts is kept)."""
        if self.strict or not parts:
            return
        first, last = parts[0], parts[-1]
        if first.get("type") == is_text and isinstance(first.get(field), str):
            first[field] = first[field].lstrip()
        if last.get("type") == is_text and isinstance(last.get(field), str):
            last[field] = last[field].rstrip()


# ---- OpenAI Chat Completions ----------------------------------------------------------------


class _OpenAI:
    def __init__(self, strict: bool) -> None:
        self.text = _Text(strict)

    def payload(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        src = {k: v for k, v in payload.items() if k not in _OPENAI_IGNORED and v is not None}
        out: dict[str, Any] = {}
        for k, v in src.items():
            if k == "messages" and isinstance(v, list):
                out[k] = [self.message(m) for m in v]
            elif k in ("tools", "functions") and isinstance(v, list):
                if v:
                    out[k] = _as_multiset([self.tool(t) for t in v])
            elif k == "stop":
                stop = _string_set(v)
                if stop is not None:
                    out[k] = stop
            elif k == "response_format":
                out[k] = self.response_format(v)
            elif k == "logit_bias" and isinstance(v, Mapping):
                if v:
                    out[k] = {_token_id(t): _norm(b) for t, b in v.items()}
            elif k == "max_tokens":
                continue
            else:
                out[k] = _norm(v)
        limit = src.get("max_completion_tokens", src.get("max_tokens"))
        if limit is not None:
            out["max_completion_tokens"] = _norm(limit)
            legacy = src.get("max_tokens")
            if legacy is not None and _norm(legacy) != out["max_completion_tokens"]:
                out["max_tokens"] = _norm(legacy)  # contradictory: keep both, never merge
        _fill(out, _OPENAI_DEFAULTS)
        has_tools = "tools" in out or "functions" in out
        if has_tools:
            out.setdefault("tool_choice", "auto")
            if "tools" in out:
                out.setdefault("parallel_tool_calls", True)
            if "functions" in out:
                out.setdefault("function_call", "auto")
        else:  # without tools, "auto" and "none" both mean: no tool calls
            if out.get("tool_choice") in ("none", "auto"):
                del out["tool_choice"]
            if out.get("function_call") in ("none", "auto"):
                del out["function_call"]
            out.pop("parallel_tool_calls", None)
        return out

    def message(self, message: Any) -> Any:
        if not isinstance(message, Mapping):
            return _norm(message)
        out: dict[str, Any] = {}
        for k, v in message.items():
            if v is None and k != "content":
                continue
            if k == "content":
                out[k] = self.content(v)
            elif k == "tool_calls" and isinstance(v, list):
                if v:
                    out[k] = [self.tool_call(c) for c in v]
            elif k == "function_call" and isinstance(v, Mapping):
                out[k] = self.function(v)
            else:
                out[k] = _norm(v)
        if ("tool_calls" in out or "function_call" in out) and out.get("content") in ("", [], None):
            out["content"] = None
        return out

    def content(self, content: Any) -> Any:
        if isinstance(content, str):
            return self.text(content)
        if not isinstance(content, list):
            return _norm(content)
        parts = [_norm(p) for p in content]
        if all(isinstance(p, dict) for p in parts):
            self.text.ends(parts, "text", "text")
            if _is_plain_text(parts):
                return self.text(parts[0]["text"])
        return parts

    def tool_call(self, call: Any) -> Any:
        if not isinstance(call, Mapping):
            return _norm(call)
        out = {k: _norm(v) for k, v in call.items() if k != "function"}
        if isinstance(call.get("function"), Mapping):
            out["function"] = self.function(call["function"])
        out.setdefault("type", "function")
        return out

    @staticmethod
    def function(fn: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: _norm(v) for k, v in fn.items() if k != "arguments"}
        if "arguments" in fn:
            out["arguments"] = _json_text(fn["arguments"])
        return out

    @staticmethod
    def tool(tool: Any) -> Any:
        if not isinstance(tool, Mapping):
            return _norm(tool)
        if "function" in tool and isinstance(tool["function"], Mapping):
            out = {k: _norm(v) for k, v in tool.items() if k != "function"}
            out.setdefault("type", "function")
            out["function"] = _OpenAI.function_def(tool["function"])
            return out
        if "name" in tool:  # a legacy `functions` entry
            return _OpenAI.function_def(tool)
        return _norm(tool)

    @staticmethod
    def function_def(fn: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in fn.items():
            if v is None:
                continue
            out[k] = _schema(v) if k == "parameters" else _norm(v)
        out.setdefault("parameters", {"type": "object", "properties": {}})
        out.setdefault("strict", False)
        return out

    @staticmethod
    def response_format(value: Any) -> Any:
        if not isinstance(value, Mapping):
            return _norm(value)
        out = {k: _norm(v) for k, v in value.items() if k != "json_schema"}
        js = value.get("json_schema")
        if isinstance(js, Mapping):
            inner = {k: _norm(v) for k, v in js.items() if k != "schema" and v is not None}
            if "schema" in js:
                inner["schema"] = _schema(js["schema"])
            inner.setdefault("strict", False)
            out["json_schema"] = inner
        elif js is not None:
            out["json_schema"] = _norm(js)
        return out


def _token_id(token: str) -> str:
    try:
        return str(int(token))
    except ValueError:
        return token


# ---- Anthropic Messages ---------------------------------------------------------------------


class _Anthropic:
    def __init__(self, strict: bool) -> None:
        self.text = _Text(strict)

    def payload(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        src = {k: v for k, v in payload.items() if k not in _ANTHROPIC_IGNORED and v is not None}
        out: dict[str, Any] = {}
        for k, v in src.items():
            if k == "system":
                system = self.blocks(v)
                if system not in ("", []):
                    out[k] = system
            elif k == "messages" and isinstance(v, list):
                out[k] = [self.message(m) for m in v]
            elif k == "tools" and isinstance(v, list):
                if v:
                    out[k] = _as_multiset([self.tool(t) for t in v])
            elif k == "stop_sequences":
                stop = _string_set(v)
                if stop is not None:
                    out[k] = stop
            elif k == "tool_choice" and isinstance(v, Mapping):
                out[k] = {
                    n: _norm(x)
                    for n, x in v.items()
                    if not (n == "disable_parallel_tool_use" and x is False)
                }
            elif k == "thinking" and isinstance(v, Mapping) and v.get("type") == "disabled":
                continue
            else:
                out[k] = _norm(v)
        _fill(out, _ANTHROPIC_DEFAULTS)
        if "tools" in out:
            out.setdefault("tool_choice", {"type": "auto"})
        elif isinstance(out.get("tool_choice"), dict) and out["tool_choice"].get("type") in (
            "auto",
            "none",
        ):
            del out["tool_choice"]
        return out

    def message(self, message: Any) -> Any:
        if not isinstance(message, Mapping):
            return _norm(message)
        out = {k: _norm(v) for k, v in message.items() if k != "content"}
        if "content" in message:
            out["content"] = self.blocks(message["content"])
        return out

    def blocks(self, content: Any) -> Any:
        """A string, or a list of content blocks (one plain text block == its string)."""
        if isinstance(content, str):
            return self.text(content)
        if not isinstance(content, list):
            return _norm(content)
        blocks = [self.block(b) for b in content]
        if all(isinstance(b, dict) for b in blocks):
            self.text.ends(blocks, "text", "text")
            if _is_plain_text(blocks):
                return self.text(blocks[0]["text"])
        return blocks

    def block(self, block: Any) -> Any:
        if not isinstance(block, Mapping):
            return _norm(block)
        out: dict[str, Any] = {}
        for k, v in block.items():
            if k == "cache_control":
                continue
            if k == "input" and block.get("type") in ("tool_use", "server_tool_use"):
                out[k] = _norm(v)
            elif k == "content" and block.get("type") == "tool_result":
                out[k] = self.blocks(v)
            elif k == "is_error" and v is False:
                continue
            else:
                out[k] = _norm(v)
        return out

    @staticmethod
    def tool(tool: Any) -> Any:
        if not isinstance(tool, Mapping):
            return _norm(tool)
        out: dict[str, Any] = {}
        for k, v in tool.items():
            if k == "cache_control" or v is None:
                continue
            out[k] = _schema(v) if k == "input_schema" else _norm(v)
        if "input_schema" in out:
            out.setdefault("type", "custom")
        return out
