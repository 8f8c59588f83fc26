"""Span export over OTLP/gRPC with a protobuf encoder of our own.

The OpenTelemetry SDK's OTLP exporter builds a tree of protobuf objects for every span before
serializing it: about 40 µs of CPU per span on this machine, more than creating the span.
This module writes the same ``ExportTraceServiceRequest`` bytes directly from finished spans
(ours, ``tracing.LeanSpan``, or the SDK's ``ReadableSpan``) in about a fifth of the time
(``python -m bench.tracing_cost``; tests decode our bytes with the official classes and
compare them with the official encoder's message), and a sink that batches spans on a
background thread and sends one plain gRPC call per batch.

Wire format: https://protobuf.dev/programming-guides/encoding/ ; messages:
opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto (OTLP 1.x).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from opentelemetry.util.re import parse_env_headers

from longread_server.tracing import LeanSpan

FinishedSpan = ReadableSpan | LeanSpan

log = logging.getLogger(__name__)

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# SpanFlags: the span says whether its parent is remote (bit 8), and if it is (bit 9).
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack


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


def _kv(key: str, value: Any) -> bytes:
    """A KeyValue message."""
    k = _keys.get(key)
    if k is None:
        k = _len(0x0A, key.encode())
        if len(_keys) < 4096:
            _keys[key] = k
    return k + _len(0x12, _any(value))


# Whole encoded attributes by (field, key, value) for string and bool values: model names,
# tenants, operation names... repeat on every span; so do small ints (flags, attempts).
# Bounded: emptied when full, since unique values (a response id per call) would otherwise
# fill it for good and leave no room for the values that repeat. Other ints and floats are
# not cached.
_CACHE_MAX = 16384
_encoded: dict[tuple[int, str, type, Any], bytes] = {}


def _cached(tag: int, k: str, t: type, v: Any) -> bytes:
    ck = (tag, k, t, v)
    enc = _encoded.get(ck)
    if enc is None:
        enc = _len(tag, _kv(k, v))
        if len(_encoded) >= _CACHE_MAX:
            _encoded.clear()
        _encoded[ck] = enc
    return enc


def _attributes(tag: int, attrs: Mapping[str, Any] | None) -> bytes:
    if not attrs:
        return b""
    out = []
    # The SDK's BoundedAttributes wraps a plain dict; iterating that skips a lock per item.
    items = getattr(attrs, "_dict", attrs)
    for k, v in items.items():
        t = type(v)
        if t is str or t is bool or (t is int and 0 <= v < 64):
            enc = _cached(tag, k, t, v)
        elif t is int:  # token counts: a KeyValue with an int_value
            key = _keys.get(k) or _len(0x0A, k.encode())
            enc = _len(tag, key + _len(0x12, b"\x18" + _varint(v)))
        else:
            enc = _len(tag, _kv(k, v))
        out.append(enc)
    return b"".join(out)


def _flags(remote: bool) -> bytes:
    return b"\x85\x01" + _pack_i(_HAS_IS_REMOTE | (_IS_REMOTE if remote else 0))


_LOCAL_PARENT = _flags(False)
_REMOTE_PARENT = _flags(True)
_KINDS = {k: b"\x30" + bytes((k.value + 1,)) for k in SpanKind}
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


def encode_span(span: FinishedSpan) -> bytes:
    """One Span message."""
    ctx = span.context
    assert ctx is not None
    global _last_trace
    last = _last_trace  # one read: another batcher's thread may replace it meanwhile
    if last[0] != ctx.trace_id:  # a trace's spans are mostly encoded together
        last = _last_trace = (ctx.trace_id, b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"))
    parts = [last[1], b"\x12\x08" + ctx.span_id.to_bytes(8, "big")]
    if ctx.trace_state:
        parts.append(_str(0x1A, ",".join(f"{k}={v}" for k, v in ctx.trace_state.items())))
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts += [
        _name(span.name),
        _KINDS[span.kind],
        b"\x39" + _pack_q(span.start_time or 0),
        b"\x41" + _pack_q(span.end_time or 0),
        _attributes(0x4A, span.attributes),
    ]
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        body = b"\x09" + _pack_q(event.timestamp) + _str(0x12, event.name)
        body += _attributes(0x1A, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_len(0x5A, body))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += _attributes(0x22, link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += b"\x35" + _pack_i(_HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0))
        parts.append(_len(0x6A, body))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    code = status.status_code.value
    if code or status.description:
        detail = _str(0x12, status.description or "") + (b"\x18" + bytes((code,)) if code else b"")
        parts.append(_len(0x7A, detail))
    else:
        parts.append(_UNSET_STATUS)
    parts.append(_REMOTE_PARENT if parent is not None and parent.is_remote else _LOCAL_PARENT)
    return b"".join(parts)


class _Groups:
    """Encoded resources and scopes, computed once each (a gateway has a handful)."""

    def __init__(self) -> None:
        self._resources: dict[int, tuple[Any, bytes, bytes]] = {}
        self._scopes: dict[int, tuple[Any, bytes, bytes]] = {}

    def resource(self, span: FinishedSpan) -> tuple[bytes, bytes]:
        """ResourceSpans' ``resource`` field and its ``schema_url`` field."""
        r = span.resource
        hit = self._resources.get(id(r))
        if hit is None or hit[0] is not r:
            hit = (r, _len(0x0A, _attributes(0x0A, r.attributes)), _str(0x1A, r.schema_url))
            self._resources[id(r)] = hit
        return hit[1], hit[2]

    def scope(self, span: FinishedSpan) -> tuple[bytes, bytes]:
        """ScopeSpans' ``scope`` field and its ``schema_url`` field."""
        s = span.instrumentation_scope
        hit = self._scopes.get(id(s))
        if hit is None or hit[0] is not s:
            scope, url = b"", b""
            if s is not None:
                scope = _str(0x0A, s.name) + _str(0x12, s.version or "")
                scope += _attributes(0x1A, s.attributes)
                url = _str(0x1A, s.schema_url or "")
            hit = (s, _len(0x0A, scope), url)
            self._scopes[id(s)] = hit
        return hit[1], hit[2]


_groups = _Groups()


def encode_request(spans: Sequence[FinishedSpan]) -> bytes:
    """An ExportTraceServiceRequest holding ``spans``, grouped by resource, then scope."""
    tree: dict[int, tuple[FinishedSpan, dict[int, tuple[FinishedSpan, list[bytes]]]]] = {}
    for span in spans:
        scopes = tree.setdefault(id(span.resource), (span, {}))[1]
        scopes.setdefault(id(span.instrumentation_scope), (span, []))[1].append(
            _len(0x12, encode_span(span))
        )
    out = []
    for first, scopes in tree.values():
        resource, resource_url = _groups.resource(first)
        body = [resource]
        for sample, encoded in scopes.values():
            scope, scope_url = _groups.scope(sample)
            body.append(_len(0x12, scope + b"".join(encoded) + scope_url))
        body.append(resource_url)
        out.append(_len(0x0A, b"".join(body)))
    return b"".join(out)


def _env(env: Mapping[str, str], name: str) -> str | None:
    """The OTLP exporter setting ``name``: the traces-only variable, else the general one
    (``OTEL_EXPORTER_OTLP_TRACES_HEADERS``, then ``OTEL_EXPORTER_OTLP_HEADERS``), as the
    OpenTelemetry SDK's exporters read them."""
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}")


def _env_file(env: Mapping[str, str], name: str) -> bytes | None:
    path = _env(env, name)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"OTEL_EXPORTER_OTLP_{name}: cannot read {path!r}: {e}") from e


def _env_headers(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``key=value,key2=value2`` (values URL-encoded), gRPC metadata keys in lower case."""
    raw = _env(env, "HEADERS")
    if not raw:
        return ()
    return tuple((k.lower(), v) for k, v in parse_env_headers(raw, liberal=True).items())


class OtlpBatcher:
    """Batches finished spans and exports them from a background thread.

    ``on_end`` only appends to a bounded deque (the oldest spans are dropped, and counted,
    when the collector cannot keep up); the thread wakes every ``interval_s`` or once
    ``batch`` spans wait, encodes them with :func:`encode_request` and sends one
    ``TraceService/Export`` call, retrying a failed batch a few times with backoff.

    Headers and TLS files come from the OpenTelemetry exporter variables, as for the SDK's
    exporters (which send the metrics): ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`` and, for an
    ``https://`` endpoint, ``..._CERTIFICATE`` (roots to trust), ``..._CLIENT_KEY`` and
    ``..._CLIENT_CERTIFICATE`` (mutual TLS).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        interval_s: float = 1.0,
        batch: int = 512,
        max_queue: int = 8192,
        timeout_s: float = 10.0,
        retries: int = 3,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        if endpoint.startswith("https://"):
            key, chain = _env_file(env, "CLIENT_KEY"), _env_file(env, "CLIENT_CERTIFICATE")
            if (key is None) != (chain is None):
                raise ValueError(
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY and OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE "
                    "go together (mutual TLS): set both or neither"
                )
            creds = grpc.ssl_channel_credentials(
                root_certificates=_env_file(env, "CERTIFICATE"),
                private_key=key,
                certificate_chain=chain,
            )
            self._channel = grpc.secure_channel(endpoint.removeprefix("https://"), creds)
        else:
            target = endpoint.removeprefix("http://").removeprefix("grpc://")
            self._channel = grpc.insecure_channel(target)
        self._metadata = _env_headers(env)
        # Bytes in (already encoded), bytes out (the response is not needed).
        self._export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            _EXPORT, request_serializer=None, response_deserializer=None
        )
        self._interval = interval_s
        self._batch = batch
        self._timeout = timeout_s
        self._retries = retries
        self._queue: deque[FinishedSpan] = deque(maxlen=max_queue)
        self._max_queue = max_queue
        self.dropped = 0
        self.exported = 0
        self._wake = threading.Event()
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="longread-otlp", daemon=True)
        self._thread.start()

    def on_end(self, span: FinishedSpan) -> None:
        q = self._queue
        if len(q) == self._max_queue:
            self.dropped += 1
        q.append(span)
        if len(q) >= self._batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        """Exports the spans queued now, in full batches and one remainder. Spans that end
        meanwhile wait for the next wake: chasing them would send a trickle of tiny batches,
        an export call each (it was 50 calls of a few spans per full batch, under load)."""
        with self._lock:
            q = self._queue
            left = len(q)
            while left:
                # A full queue drops its oldest spans meanwhile: never pop more than it holds.
                n = min(self._batch, left, len(q))
                if not n:
                    break
                left -= n
                spans = [q.popleft() for _ in range(n)]
                self._send(encode_request(spans), n)

    def _send(self, payload: bytes, count: int) -> None:
        delay = 0.5
        for attempt in range(self._retries + 1):
            try:
                self._export(payload, timeout=self._timeout, metadata=self._metadata)
                self.exported += count
                return
            except grpc.RpcError as e:
                code = e.code() if isinstance(e, grpc.Call) else None
                retryable = code in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.ABORTED,
                )
                if not retryable or attempt == self._retries or self._stop:
                    log.warning("dropped %d spans: OTLP export failed (%s)", count, code)
                    self.dropped += count
                    return
                time.sleep(delay)
                delay *= 2

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._drain()
        return True

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(self._timeout * (self._retries + 1))
        self._channel.close()
