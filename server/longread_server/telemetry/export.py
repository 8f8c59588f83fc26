"""OTLP/gRPC export, for traces and metrics alike.

Where and how a signal is sent is resolved in one place, :meth:`OtlpSettings.resolve`: the
configured endpoint (``telemetry.otlp_endpoint``; TLS when it is ``https://``) and, from the
standard OpenTelemetry variables, the headers and the TLS files, each signal's own variable
first (``OTEL_EXPORTER_OTLP_TRACES_HEADERS``, then ``OTEL_EXPORTER_OTLP_HEADERS``). Both
exporters are built from it: spans go through :class:`OtlpBatcher` (our batcher, sending the
bytes of ``telemetry.encode``: the SDK's exporter costs more CPU per span than the whole
span), metrics through the SDK's ``OTLPMetricExporter`` (:func:`metric_exporter`), which is
given every setting rather than reading the variables its own way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import grpc
from opentelemetry.util.re import parse_env_headers

from longread_server.backoff import Backoff
from longread_server.telemetry.encode import FinishedSpan, encode_flat, flatten
from longread_server.telemetry.tracing import FlatSpan

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter

# Waits between attempts at one batch (this runs in the exporter's own thread).
_EXPORT_BACKOFF = Backoff(0.5)
log = logging.getLogger(__name__)

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

Signal = Literal["TRACES", "METRICS"]
_PREFIX = "OTEL_EXPORTER_OTLP_"
_COMPRESSION = {"": None, "none": None, "gzip": grpc.Compression.Gzip}


@dataclass(frozen=True)
class OtlpSettings:
    """Where and how one signal is sent over OTLP/gRPC.

    ``timeout_s`` and ``compression`` apply to the metrics only, as before this class: the
    span batcher bounds its calls with ``OTEL_BSP_EXPORT_TIMEOUT`` and sends uncompressed.
    ``OTEL_EXPORTER_OTLP_[<SIGNAL>_]INSECURE`` and ``..._ENDPOINT`` are not read: the
    configured endpoint decides both.
    """

    endpoint: str  # as configured: http://, grpc:// or https://host:port, or a gRPC target
    target: str  # the gRPC target: host:port
    secure: bool  # TLS, for an https:// endpoint
    headers: tuple[tuple[str, str], ...] = ()  # gRPC metadata: keys in lower case
    root_certificates: bytes | None = None  # PEM; None: the system's roots
    private_key: bytes | None = None  # mutual TLS: the client's key and certificate chain
    certificate_chain: bytes | None = None
    timeout_s: float = 10.0
    compression: grpc.Compression | None = None

    @classmethod
    def resolve(
        cls, endpoint: str, signal: Signal, env: Mapping[str, str] | None = None
    ) -> OtlpSettings:
        """The settings of ``signal`` for ``endpoint``, from ``env`` (the process's
        environment by default). Raises ValueError naming the variable that is wrong: a TLS
        file that cannot be read, half a client identity, a timeout or compression that
        means nothing."""
        env = os.environ if env is None else env
        parts = urlsplit(endpoint)
        secure = parts.scheme == "https"
        if parts.scheme in ("http", "https", "grpc") and parts.netloc:
            target = parts.netloc
        else:
            target = endpoint
        key = chain = roots = None
        if secure:
            key = _file(env, signal, "CLIENT_KEY")
            chain = _file(env, signal, "CLIENT_CERTIFICATE")
            if (key is None) != (chain is None):
                raise ValueError(
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY and OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE "
                    "go together (mutual TLS): set both or neither"
                )
            roots = _file(env, signal, "CERTIFICATE")
        return cls(
            endpoint=endpoint,
            target=target,
            secure=secure,
            headers=_headers(env, signal),
            root_certificates=roots,
            private_key=key,
            certificate_chain=chain,
            timeout_s=_timeout(env, signal),
            compression=_compression(env, signal),
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def channel(self) -> grpc.Channel:
        """A channel to the collector, as the span batcher uses it."""
        if self.secure:
            return grpc.secure_channel(self.target, self.credentials())
        return grpc.insecure_channel(self.target)


def _variable(env: Mapping[str, str], signal: Signal, name: str) -> tuple[str, str]:
    """The variable setting ``name`` for ``signal`` and its value: the signal's own
    (``OTEL_EXPORTER_OTLP_TRACES_HEADERS``) unless it is empty, else the general one
    (``OTEL_EXPORTER_OTLP_HEADERS``); ("", "") when neither is set."""
    for var in (f"{_PREFIX}{signal}_{name}", f"{_PREFIX}{name}"):
        value = env.get(var)
        if value:
            return var, value
    return "", ""


def _file(env: Mapping[str, str], signal: Signal, name: str) -> bytes | None:
    var, path = _variable(env, signal, name)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{var}: cannot read {path!r}: {e}") from e


def _headers(env: Mapping[str, str], signal: Signal) -> tuple[tuple[str, str], ...]:
    """``key=value,key2=value2`` (values URL-encoded), gRPC metadata keys in lower case."""
    _, raw = _variable(env, signal, "HEADERS")
    if not raw:
        return ()
    return tuple((k.lower(), v) for k, v in parse_env_headers(raw, liberal=True).items())


def _timeout(env: Mapping[str, str], signal: Signal) -> float:
    """Seconds, as the OpenTelemetry Python SDK reads ``OTEL_EXPORTER_OTLP_TIMEOUT``."""
    var, raw = _variable(env, signal, "TIMEOUT")
    if not raw:
        return 10.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{var}: expected a positive number of seconds, got {raw!r}")
    return seconds


def _compression(env: Mapping[str, str], signal: Signal) -> grpc.Compression | None:
    var, raw = _variable(env, signal, "COMPRESSION")
    try:
        return _COMPRESSION[raw.strip().lower()]
    except KeyError:
        raise ValueError(f"{var}: expected gzip or none, got {raw!r}") from None


def metric_exporter(endpoint: str, env: Mapping[str, str] | None = None) -> MetricExporter:
    """The SDK's OTLP/gRPC metric exporter, set up from :meth:`OtlpSettings.resolve`."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    s = OtlpSettings.resolve(endpoint, "METRICS", env)
    return OTLPMetricExporter(
        endpoint=s.target,
        insecure=not s.secure,
        credentials=s.credentials() if s.secure else None,
        headers=s.headers,  # none: the SDK looks in the same variables, and finds none
        timeout=s.timeout_s,
        # None would have the SDK read the variables again.
        compression=s.compression or grpc.Compression.NoCompression,
    )


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

    Where and how to send (headers, TLS files) is :meth:`OtlpSettings.resolve`'s, for the
    traces signal, as it is for the metrics.
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
        self.settings = OtlpSettings.resolve(endpoint, "TRACES", env)
        self._channel = self.settings.channel()
        self._metadata = self.settings.headers
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
                time.sleep(_EXPORT_BACKOFF.delay(attempt + 1))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._drain()
        return True

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(self._timeout * (self._retries + 1))
        self._channel.close()
