"""The OTLP span encoder: finished spans as ``ExportTraceServiceRequest`` bytes.

The OpenTelemetry SDK's OTLP exporter builds a tree of protobuf objects for every span before
serializing it, which costs more CPU than creating the span. This module writes the same
``ExportTraceServiceRequest`` bytes directly from finished spans (ours,
``tracing.LeanSpan``, or the SDK's ``ReadableSpan``) at a fraction of that
(``python -m bench.tracing_cost`` measures both; tests decode our bytes with the official
classes and compare them with the official encoder's message). ``telemetry.export`` sends
them.

Wire format: https://protobuf.dev/programming-guides/encoding/ ; messages:
opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto (OTLP 1.x).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanKind

from longread_server.telemetry.tracing import FlatSpan, LeanSpan, scope_key, scope_of

FinishedSpan = ReadableSpan | LeanSpan

# SpanFlags: the span says whether its parent is remote (bit 8), and if it is (bit 9).
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
# span_id (field 2) then parent_span_id (field 4): tag, length 8, the id big-endian, twice.
_pack_ids = struct.Struct(">HQHQ").pack
_pack_id = struct.Struct(">HQ").pack
# start_time_unix_nano (field 7) and end_time_unix_nano (field 8), both fixed64.
_pack_times = struct.Struct("<BQBQ").pack


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64: two's complement in ten bytes
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (tag already shifted, wire type 2)."""
    n = len(payload)
    if n < 0x80:
        return bytes((tag, n)) + payload
    return bytes((tag,)) + _varint(n) + payload


def _str(tag: int, s: str) -> bytes:
    return _len(tag, s.encode()) if s else b""


def _any(value: Any) -> bytes:
    """An AnyValue message."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _len(0x0A, value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes):
        return _len(0x3A, value)
    if isinstance(value, Sequence):
        return _len(0x2A, b"".join(_len(0x0A, _any(v)) for v in value))
    if isinstance(value, Mapping):
        return _len(0x32, b"".join(_len(0x0A, _kv(str(k), v)) for k, v in value.items()))
    if value is None:
        return b""
    raise TypeError(f"cannot encode an attribute of type {type(value).__name__}")


_keys: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    """A KeyValue's ``key`` field."""
    k = _keys.get(key)
    if k is None:
        k = _len(0x0A, key.encode())
        if len(_keys) < 4096:
            _keys[key] = k
    return k


def _kv(key: str, value: Any) -> bytes:
    """A KeyValue message."""
    return _key(key) + _len(0x12, _any(value))


# Whole encoded attributes, with their field's tag: model names, tenants, operation names...
# repeat on every span; so do flags, small ints (attempts) and finish reasons. Keyed (tag, key,
# value) for a string or a tuple of strings, (tag, key, value, type) for a bool or a small int
# (True == 1). A key whose values keep changing (a response id per call) stops being cached
# after _KEY_VALUES of them: its values are encoded each time and the table stays small (and
# in the CPU's caches). Bounded all the same: emptied when full. Other ints and floats are
# encoded each time, without the general path's type tests.
_CACHE_MAX = 16384
_KEY_VALUES = 1024
_encoded: dict[tuple[Any, ...], bytes] = {}
_values_seen: dict[str, int] = {}  # by key: how many values were added to the table
_STRINGS = frozenset((str,))


def _int_kv(tag: int, key: str, value: int) -> bytes:
    """An attribute with an int value (token counts), with its field's tag."""
    if 0 <= value < 0x4000:  # two bytes at most
        val = bytes((value,)) if value < 0x80 else bytes(((value & 0x7F) | 0x80, value >> 7))
    else:
        val = _varint(value)
    body = (_keys.get(key) or _key(key)) + bytes((0x12, len(val) + 1, 0x18)) + val
    n = len(body)
    return bytes((tag, n)) + body if n < 0x80 else _len(tag, body)


def _str_kv(tag: int, key: str, value: str) -> bytes:
    """An attribute with a string value, with its field's tag."""
    val = value.encode()
    n = len(val)
    if n < 0x7E:  # the AnyValue and its field both fit a one-byte length
        body = (_keys.get(key) or _key(key)) + bytes((0x12, n + 2, 0x0A, n)) + val
    else:
        body = _kv(key, value)
    n = len(body)
    return bytes((tag, n)) + body if n < 0x80 else _len(tag, body)


def _attributes(tag: int, attrs: Mapping[str, Any] | None) -> bytes:
    if not attrs:
        return b""
    if type(attrs) is not dict:
        # The SDK's BoundedAttributes wraps a plain dict; iterating that skips a lock per item.
        attrs = getattr(attrs, "_dict", attrs)
    table = _encoded
    out = []
    for k, v in attrs.items():
        t = type(v)
        if t is str:
            ck: tuple[Any, ...] = (tag, k, v)
        elif t is int:
            if not 0 <= v < 64:
                out.append(_int_kv(tag, k, v))
                continue
            ck = (tag, k, v, t)
        elif t is bool:
            ck = (tag, k, v, t)
        elif t is float:
            out.append(_len(tag, _key(k) + b"\x12\x09\x21" + _pack_d(v)))
            continue
        elif t is tuple and _STRINGS.issuperset(map(type, v)):
            ck = (tag, k, v)
        else:
            out.append(_len(tag, _kv(k, v)))
            continue
        enc = table.get(ck)
        if enc is None:
            enc = _str_kv(tag, k, v) if t is str else _len(tag, _kv(k, v))
            seen = _values_seen.get(k, 0)
            if seen < _KEY_VALUES:
                _values_seen[k] = seen + 1
                if len(table) >= _CACHE_MAX:
                    table.clear()
                table[ck] = enc
        out.append(enc)
    return b"".join(out)


def _flags(remote: bool) -> bytes:
    return b"\x85\x01" + _pack_i(_HAS_IS_REMOTE | (_IS_REMOTE if remote else 0))


_LOCAL_PARENT = _flags(False)
_REMOTE_PARENT = _flags(True)
_KINDS = [b"\x30" + bytes((k.value + 1,)) for k in sorted(SpanKind, key=lambda k: k.value)]
_UNSET_STATUS = b"\x7a\x00"
_names: dict[str, bytes] = {}
_last_trace: tuple[int, bytes] = (0, b"")


def _name(name: str) -> bytes:
    enc = _names.get(name)
    if enc is None:
        enc = _str(0x2A, name)
        if len(_names) < 4096:
            _names[name] = enc
    return enc


def flatten(span: FinishedSpan) -> FlatSpan:
    """A finished span (ours or the SDK's) as the plain values the encoder reads."""
    if type(span) is LeanSpan:
        return span.flat()
    ctx, parent, status = span.context, span.parent, span.status
    assert ctx is not None
    return (
        ctx.trace_id,
        ctx.span_id,
        ctx.trace_state or None,
        0 if parent is None else parent.span_id,
        parent is not None and parent.is_remote,
        span.name,
        span.kind.value,
        span.start_time or 0,
        span.end_time or 0,
        span.attributes or {},
        span.dropped_attributes,
        span.events,
        span.dropped_events,
        span.links,
        span.dropped_links,
        status.status_code.value,
        status.description or "",
        scope_key(span.resource, span.instrumentation_scope),
    )


def _span(span: FlatSpan) -> bytes:
    """One Span message as a ``spans`` field of ScopeSpans (tag and length included)."""
    (tid, sid, state, pid, remote, name, kind, start, end) = span[:9]
    (attrs, n_attrs, events, n_events, links, n_links, code, description, _) = span[9:]
    global _last_trace
    last = _last_trace  # one read: another batcher's thread may replace it meanwhile
    if last[0] != tid:  # a trace's spans are mostly encoded together
        last = _last_trace = (tid, b"\x0a\x10" + tid.to_bytes(16, "big"))
    if state is None:
        ids = _pack_ids(0x1208, sid, 0x2208, pid) if pid else _pack_id(0x1208, sid)
    else:
        ids = _pack_id(0x1208, sid) + _str(0x1A, ",".join(f"{k}={v}" for k, v in state.items()))
        if pid:
            ids += _pack_id(0x2208, pid)
    body = b"".join(
        (
            last[1],
            ids,
            _names.get(name) or _name(name),
            _KINDS[kind],
            _pack_times(0x39, start, 0x41, end),
            _attributes(0x4A, attrs) if attrs else b"",
            # Dropped counts, events and links: rare.
            _extras(n_attrs, events, n_events, links, n_links)
            if n_attrs or events or n_events or links or n_links
            else b"",
            _UNSET_STATUS if not (code or description) else _status(code, description),
            _REMOTE_PARENT if remote else _LOCAL_PARENT,
        )
    )
    n = len(body)
    if n < 0x80:
        return bytes((0x12, n)) + body
    if n < 0x4000:
        return bytes((0x12, (n & 0x7F) | 0x80, n >> 7)) + body
    return b"\x12" + _varint(n) + body


def _status(code: int, description: str) -> bytes:
    return _len(0x7A, _str(0x12, description) + (b"\x18" + bytes((code,)) if code else b""))


def _extras(
    n_attrs: int,
    events: Sequence[Event],
    n_events: int,
    links: Sequence[Link],
    n_links: int,
) -> bytes:
    """A span's fields 10 to 14: dropped attributes, events, dropped events, links, dropped
    links."""
    parts = []
    if n_attrs:
        parts.append(b"\x50" + _varint(n_attrs))
    for event in events:
        body = b"\x09" + _pack_q(event.timestamp) + _str(0x12, event.name)
        body += _attributes(0x1A, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_len(0x5A, body))
    if n_events:
        parts.append(b"\x60" + _varint(n_events))
    for link in links:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += _attributes(0x22, link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += b"\x35" + _pack_i(_HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0))
        parts.append(_len(0x6A, body))
    if n_links:
        parts.append(b"\x70" + _varint(n_links))
    return b"".join(parts)


class _Groups:
    """Encoded resources and scopes by scope key, computed once each (a gateway has a handful):
    the resource's id, its ``resource`` and ``schema_url`` fields of ResourceSpans, and the
    scope's ``scope`` and ``schema_url`` fields of ScopeSpans."""

    def __init__(self) -> None:
        self._by_key: dict[int, tuple[int, bytes, bytes, bytes, bytes]] = {}

    def get(self, key: int) -> tuple[int, bytes, bytes, bytes, bytes]:
        hit = self._by_key.get(key)
        if hit is None:
            r, s = scope_of(key)
            scope, url = b"", b""
            if s is not None:
                scope = _str(0x0A, s.name) + _str(0x12, s.version or "")
                scope += _attributes(0x1A, s.attributes)
                url = _str(0x1A, s.schema_url or "")
            hit = (
                id(r),
                _len(0x0A, _attributes(0x0A, r.attributes)),
                _str(0x1A, r.schema_url),
                _len(0x0A, scope),
                url,
            )
            self._by_key[key] = hit
        return hit


_groups = _Groups()


def encode_flat(spans: Sequence[FlatSpan]) -> bytes:
    """An ExportTraceServiceRequest holding ``spans``, grouped by resource, then scope."""
    groups = _groups.get
    tree: dict[int, dict[int, list[bytes]]] = {}  # resource id -> scope key -> spans
    last, encoded = -1, []
    for span in spans:
        key = span[17]
        if key != last:
            encoded = tree.setdefault(groups(key)[0], {}).setdefault(key, [])
            last = key
        encoded.append(_span(span))
    out = []
    for scopes in tree.values():
        _, resource, resource_url, _, _ = groups(next(iter(scopes)))
        body = [resource]
        for key, spans_of in scopes.items():
            _, _, _, scope, scope_url = groups(key)
            body.append(_len(0x12, scope + b"".join(spans_of) + scope_url))
        body.append(resource_url)
        out.append(_len(0x0A, b"".join(body)))
    return b"".join(out)


def encode_request(spans: Sequence[FinishedSpan]) -> bytes:
    """An ExportTraceServiceRequest holding ``spans`` (ours or the SDK's)."""
    return encode_flat([flatten(s) for s in spans])
