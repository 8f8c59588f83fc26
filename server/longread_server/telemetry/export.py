"""Span export over OTLP/gRPC: a sink that batches finished spans on a background thread and
sends one plain gRPC call per batch, of the bytes ``telemetry.encode`` writes (the SDK's
exporter costs more CPU per span than the whole span).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import grpc
from opentelemetry.util.re import parse_env_headers

from longread_server.telemetry.encode import FinishedSpan, encode_flat, flatten
from longread_server.telemetry.tracing import FlatSpan

log = logging.getLogger(__name__)

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


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


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive integer setting from the environment."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {raw!r}")
    return value


class OtlpBatcher:
    """Batches finished spans and exports them from a background thread.

    ``on_end`` only appends to a bounded deque (the oldest spans are dropped, and counted,
    when the collector cannot keep up); the thread wakes every ``interval_s`` or once
    ``batch`` spans wait, encodes them with :func:`encode_flat` and sends one
    ``TraceService/Export`` call, retrying a failed batch a few times with backoff. A batch
    whose request would pass ``max_bytes`` (collectors refuse over 4 MiB by default; spans
    can carry documents when content is recorded) is sent in halves.

    An export call costs the process about the same CPU whatever its size, so the defaults
    favour large, infrequent batches: every 5 s (the SDK's default delay) or 2048 spans. The
    SDK's variables set them: ``OTEL_BSP_SCHEDULE_DELAY`` and ``OTEL_BSP_EXPORT_TIMEOUT``
    (ms), ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` and ``OTEL_BSP_MAX_QUEUE_SIZE``.

    Headers and TLS files come from the OpenTelemetry exporter variables, as for the SDK's
    exporters (which send the metrics): ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`` and, for an
    ``https://`` endpoint, ``..._CERTIFICATE`` (roots to trust), ``..._CLIENT_KEY`` and
    ``..._CLIENT_CERTIFICATE`` (mutual TLS).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        interval_s: float | None = None,
        batch: int | None = None,
        max_queue: int | None = None,
        timeout_s: float | None = None,
        retries: int = 3,
        max_bytes: int = 3 << 20,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        if interval_s is None:
            interval_s = _env_int(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        if timeout_s is None:
            timeout_s = _env_int(env, "OTEL_BSP_EXPORT_TIMEOUT", 10_000) / 1000
        if batch is None:
            batch = _env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 2048)
        if max_queue is None:
            max_queue = _env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", max(8192, batch))
        batch = min(batch, max_queue)  # a batch never waits for more than the queue holds
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
        self._max_bytes = max_bytes
        self._timeout = timeout_s
        self._retries = retries
        # Spans wait flattened (``tracing.FlatSpan``): one tuple for the garbage collector
        # to scan, where a span object came with its context and lists.
        self._queue: deque[FlatSpan] = deque(maxlen=max_queue)
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
        q.append(flatten(span))
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
                self._export_spans([q.popleft() for _ in range(n)])

    def _export_spans(self, spans: list[FlatSpan]) -> None:
        payload = encode_flat(spans)
        if len(payload) > self._max_bytes and len(spans) > 1:
            half = len(spans) // 2
            self._export_spans(spans[:half])
            self._export_spans(spans[half:])
            return
        self._send(payload, len(spans))

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
