"""The conformance check engine: resolves paths in a step's outcome and applies one operator.

Every language runner implements these same few rules (see README.md); this is the Python one.
A step's outcome is plain JSON::

    {"code": "OK", "attempts": 1, "elapsed_ms": 12.5,
     "response": {...},            # unary RPCs that succeeded: proto JSON, proto field names
     "events": [{...}, ...],       # Stream: every event received, in order (even on error)
     "error": {"message", "reason", "domain", "metadata", "field_violations": [{field,
               description}], "retry_delay_s", "quota_violations": [{subject, description}]}}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_INDEX = re.compile(r"-?\d+")
_MISSING = object()


def resolve(value: Any, path: str) -> Any:
    """The value at ``path`` ("a.b.0.c", "-1" counts from the end, "*" maps over a list), or
    ``_MISSING``."""
    return _resolve(value, path.split(".") if path else [])


def _resolve(value: Any, segments: list[str]) -> Any:
    if not segments:
        return value
    head, rest = segments[0], segments[1:]
    if head == "*":
        if not isinstance(value, list):
            return _MISSING
        found = [_resolve(v, rest) for v in value]
        return [v for v in found if v is not _MISSING]
    if isinstance(value, list) and _INDEX.fullmatch(head):
        i = int(head)
        if -len(value) <= i < len(value):
            return _resolve(value[i], rest)
        return _MISSING
    if isinstance(value, Mapping) and head in value:
        return _resolve(value[head], rest)
    return _MISSING


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def equal(a: Any, b: Any) -> bool:
    """JSON equality where a number equals a numeric string (proto JSON writes int64 as text)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) or isinstance(b, int | float):
        x, y = _number(a), _number(b)
        return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=0)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _length(v: Any) -> int | None:
    if v is _MISSING:
        return 0  # proto JSON omits empty repeated fields
    if isinstance(v, list | str | Mapping):
        return len(v)
    return None


def check(outcome: Mapping[str, Any], spec: Mapping[str, Any], steps: Mapping[str, Any]) -> str:
    """Applies one check; returns "" when it holds, else a readable failure."""
    path, op = str(spec["path"]), str(spec["op"])
    actual = resolve(outcome, path)
    if "ref" in spec:
        ref = str(spec["ref"])
        step_id, _, rest = ref.partition(".")
        expected = resolve(steps[step_id], rest) if step_id in steps else _MISSING
        if expected is _MISSING:
            return f"{path} {op} ref {ref}: the reference is missing"
    else:
        expected = spec.get("value")
    shown = "<missing>" if actual is _MISSING else _short(actual)
    ok: bool
    if op == "present":
        ok = actual is not _MISSING and actual is not None
    elif op == "absent":
        ok = actual is _MISSING
    elif op == "eq":
        ok = actual is not _MISSING and equal(actual, expected)
    elif op in ("gt", "ge", "lt"):
        x, y = _number(actual), _number(expected)
        ok = (
            x is not None
            and y is not None
            and (x > y if op == "gt" else x >= y if op == "ge" else x < y)
        )
    elif op in ("len_eq", "len_ge"):
        n, limit = _length(actual), _number(expected)
        ok = n is not None and limit is not None and (n == limit if op == "len_eq" else n >= limit)
    elif op == "contains":
        if isinstance(actual, list):
            ok = any(equal(v, expected) for v in actual)
        else:
            ok = isinstance(actual, str) and isinstance(expected, str) and expected in actual
    else:
        return f"{path}: unknown op {op!r}"
    if ok:
        return ""
    want = f"ref {spec['ref']}" if "ref" in spec else _short(expected)
    return f"{path} {op} {want}: got {shown}"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 160 else text[:157] + "..."
