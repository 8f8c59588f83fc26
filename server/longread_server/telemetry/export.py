"""OTLP export of all three signals, over gRPC or HTTP (``http/protobuf``).

Where and how a signal is sent is resolved in one place, :meth:`OtlpSettings.resolve`, the way
the OpenTelemetry SDK's own exporters read it: each signal's variable first
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, used as it is), then the general one
(``OTEL_EXPORTER_OTLP_ENDPOINT``, plus ``/v1/traces`` over HTTP), then the configured
``telemetry.otlp_endpoint``; the protocol, headers, compression, timeout, TLS files and
``INSECURE`` the same way. Spans go through :class:`OtlpBatcher` (our batcher, sending the bytes
of ``telemetry.encode``: the SDK's exporter costs more CPU per span than the whole span);
metrics and logs through the SDK's exporters (:func:`metric_exporter`, :func:`log_exporter`),
which are given every setting rather than reading the variables their own way.
"""

from __future__ import annotations

import gzip
import logging
import os
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import urlsplit

import grpc
import httpx
from opentelemetry.util.re import parse_env_headers

from longread_server import __version__
from longread_server.backoff import Backoff
from longread_server.telemetry.encode import FinishedSpan, encode_flat, flatten
from longread_server.telemetry.tracing import FlatSpan

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter

# Waits between attempts at one batch (this runs in the exporter's own thread).
_EXPORT_BACKOFF = Backoff(0.5)
log = logging.getLogger(__name__)

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
T = TypeVar("T")

Signal = Literal["TRACES", "METRICS", "LOGS"]
Protocol = Literal["grpc", "http/protobuf"]
PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")
_PREFIX = "OTEL_EXPORTER_OTLP_"
# The SDK's defaults when nothing names an endpoint: a collector on this machine.
_DEFAULT_ENDPOINT: dict[Protocol, str] = {
    "grpc": "http://localhost:4317",
    "http/protobuf": "http://localhost:4318",
}
# OTLP/gRPC compresses with gzip only; OTLP/HTTP also with deflate (as the SDK's exporters).
_COMPRESSIONS: dict[Protocol, tuple[str, ...]] = {
    "grpc": ("gzip",),
    "http/protobuf": ("gzip", "deflate"),
}
# OTLP/HTTP responses worth another attempt (the OTLP specification's list, plus 408).
_HTTP_RETRYABLE = frozenset({408, 429, 502, 503, 504})
_GRPC_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


@dataclass(frozen=True)
class OtlpSettings:
    """Where and how one signal is sent over OTLP."""

    signal: Signal
    protocol: Protocol
    # gRPC: the endpoint as given (a URL or a bare ``host:port`` target); HTTP: the full URL,
    # the signal's path included.
    endpoint: str
    target: str  # the gRPC target: host:port
    secure: bool  # TLS
    headers: tuple[tuple[str, str], ...] = ()  # keys in lower case
    certificate_file: str | None = None  # PEM roots; None: the system's
    client_key_file: str | None = None  # mutual TLS: the client's key and certificate chain
    client_certificate_file: str | None = None
    root_certificates: bytes | None = None  # the files' bytes, read once (and checked) here
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    timeout_s: float = 10.0
    compression: str = ""  # "", "gzip" or (HTTP only) "deflate"

    @classmethod
    def resolve(
        cls,
        endpoint: str,
        signal: Signal,
        env: Mapping[str, str] | None = None,
        *,
        protocol: str = "grpc",
    ) -> OtlpSettings:
        """The settings of ``signal`` from ``env`` (the process's environment by default),
        ``endpoint`` and ``protocol`` (the configured ones) where no variable says otherwise.
        Raises ValueError naming the setting that is wrong: a protocol or compression the
        SDK does not know, a TLS file that cannot be read, half a client identity, a timeout
        that means nothing."""
        env = os.environ if env is None else env
        var, chosen = _variable(env, signal, "PROTOCOL")
        chosen = (chosen or protocol).strip()
        if chosen not in PROTOCOLS:
            where = var or "telemetry.otlp_protocol"
            raise ValueError(f"{where}: expected grpc or http/protobuf, got {chosen!r}")
        proto: Protocol = "grpc" if chosen == "grpc" else "http/protobuf"
        own = env.get(f"{_PREFIX}{signal}_ENDPOINT", "").strip()
        general = env.get(f"{_PREFIX}ENDPOINT", "").strip()
        if proto == "http/protobuf":
            if own:
                url = own  # a signal's own endpoint is the whole URL
            else:
                base = general or endpoint or _DEFAULT_ENDPOINT[proto]
                url = f"{base.removesuffix('/')}/v1/{signal.lower()}"
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                where = _endpoint_setting(signal, own, general)
                raise ValueError(f"{where}: expected an http:// or https:// URL, got {url!r}")
            secure = parts.scheme == "https"
            target = parts.netloc
        else:
            url = own or general or endpoint or _DEFAULT_ENDPOINT[proto]
            parts = urlsplit(url)
            if parts.scheme in ("http", "https", "grpc") and parts.netloc:
                target = parts.netloc
            else:
                target = url
            secure = _grpc_secure(env, signal, parts.scheme, from_env=bool(own or general))
        key_file = chain_file = roots_file = None
        key = chain = roots = None
        if secure:
            key_file, key = _file(env, signal, "CLIENT_KEY")
            chain_file, chain = _file(env, signal, "CLIENT_CERTIFICATE")
            if (key is None) != (chain is None):
                raise ValueError(
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY and OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE "
                    "go together (mutual TLS): set both or neither"
                )
            roots_file, roots = _file(env, signal, "CERTIFICATE")
        return cls(
            signal=signal,
            protocol=proto,
            endpoint=url,
            target=target,
            secure=secure,
            headers=_headers(env, signal),
            certificate_file=roots_file,
            client_key_file=key_file,
            client_certificate_file=chain_file,
            root_certificates=roots,
            private_key=key,
            certificate_chain=chain,
            timeout_s=_timeout(env, signal),
            compression=_compression(env, signal, proto),
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

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS of an https:// collector, for the HTTP transport."""
        context = ssl.create_default_context(cafile=self.certificate_file)
        if self.client_certificate_file and self.client_key_file:
            context.load_cert_chain(self.client_certificate_file, self.client_key_file)
        return context


def _endpoint_setting(signal: Signal, own: str, general: str) -> str:
    if own:
        return f"{_PREFIX}{signal}_ENDPOINT"
    return f"{_PREFIX}ENDPOINT" if general else "telemetry.otlp_endpoint"


def _grpc_secure(env: Mapping[str, str], signal: Signal, scheme: str, *, from_env: bool) -> bool:
    """TLS or not for a gRPC collector, by the SDK's rule: https:// always; otherwise
    ``OTEL_EXPORTER_OTLP_[<SIGNAL>_]INSECURE`` if set; otherwise plaintext for http://. An
    endpoint from the variables without a scheme is TLS, as for the SDK; a configured
    ``telemetry.otlp_endpoint`` given as ``grpc://`` or a bare target is plaintext, as it
    has always been documented."""
    if scheme == "https":
        return True
    _, insecure = _variable(env, signal, "INSECURE")
    if insecure:
        return insecure.strip().lower() != "true"
    return scheme != "http" if from_env else False


def _variable(env: Mapping[str, str], signal: Signal, name: str) -> tuple[str, str]:
    """The variable setting ``name`` for ``signal`` and its value: the signal's own
    (``OTEL_EXPORTER_OTLP_TRACES_HEADERS``) unless it is empty, else the general one
    (``OTEL_EXPORTER_OTLP_HEADERS``); ("", "") when neither is set."""
    for var in (f"{_PREFIX}{signal}_{name}", f"{_PREFIX}{name}"):
        value = env.get(var)
        if value:
            return var, value
    return "", ""


def _file(env: Mapping[str, str], signal: Signal, name: str) -> tuple[str | None, bytes | None]:
    var, path = _variable(env, signal, name)
    if not path:
        return None, None
    try:
        return path, Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{var}: cannot read {path!r}: {e}") from e


def _headers(env: Mapping[str, str], signal: Signal) -> tuple[tuple[str, str], ...]:
    """``key=value,key2=value2`` (values URL-encoded), keys in lower case."""
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


def _compression(env: Mapping[str, str], signal: Signal, protocol: Protocol) -> str:
    var, raw = _variable(env, signal, "COMPRESSION")
    value = raw.strip().lower()
    if value in ("", "none"):
        return ""
    if value not in _COMPRESSIONS[protocol]:
        known = " or ".join((*_COMPRESSIONS[protocol], "none"))
        raise ValueError(f"{var}: expected {known} over {protocol}, got {raw!r}")
    return value


def metric_exporter(s: OtlpSettings) -> MetricExporter:
    """The SDK's OTLP metric exporter (gRPC or HTTP) for ``s``."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
        OTLPMetricExporter as OverGrpc,
    )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as OverHttp,
    )

    return _sdk_exporter(s, OverGrpc, OverHttp)


def log_exporter(s: OtlpSettings) -> LogRecordExporter:
    """The SDK's OTLP log record exporter (gRPC or HTTP) for ``s``."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as OverGrpc
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as OverHttp

    return _sdk_exporter(s, OverGrpc, OverHttp)


def _sdk_exporter(s: OtlpSettings, over_grpc: Callable[..., T], over_http: Callable[..., T]) -> T:
    """One of the SDK's OTLP exporters, given every setting (so it reads no variable its own
    way)."""
    if s.protocol == "grpc":
        return over_grpc(
            endpoint=s.target,
            insecure=not s.secure,
            credentials=s.credentials() if s.secure else None,
            headers=s.headers,
            timeout=s.timeout_s,
            # Never None: the SDK would read the variables again.
            compression=grpc.Compression.Gzip if s.compression else grpc.Compression.NoCompression,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression

    return over_http(
        endpoint=s.endpoint,
        certificate_file=s.certificate_file,
        client_key_file=s.client_key_file,
        client_certificate_file=s.client_certificate_file,
        headers=dict(s.headers),
        timeout=s.timeout_s,
        compression=Compression(s.compression or "none"),
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
    SDK's variables set them: ``OTEL_BSP_SCHEDULE_DELAY`` (ms), ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``
    and ``OTEL_BSP_MAX_QUEUE_SIZE``; a call is bounded by ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT``
    (seconds), as the SDK's exporter bounds it.

    Where and how to send (gRPC or HTTP, headers, compression, TLS files) is
    :meth:`OtlpSettings.resolve`'s, for the traces signal, as it is for the other signals.
    """

    def __init__(
        self,
        endpoint: str = "",
        *,
        settings: OtlpSettings | None = None,
        interval_s: float | None = None,
        batch: int | None = None,
        max_queue: int | None = None,
        timeout_s: float | None = None,
        retries: int = 3,
        max_bytes: int = 3 << 20,
        env: Mapping[str, str] | None = None,
        protocol: str = "grpc",
    ) -> None:
        env = os.environ if env is None else env
        if interval_s is None:
            interval_s = _env_int(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        if batch is None:
            batch = _env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 2048)
        if max_queue is None:
            max_queue = _env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", max(8192, batch))
        batch = min(batch, max_queue)  # a batch never waits for more than the queue holds
        if settings is None:
            settings = OtlpSettings.resolve(endpoint, "TRACES", env, protocol=protocol)
        self.settings = settings
        if timeout_s is None:
            # Each call as the SDK's OTLP exporter bounds it (OTEL_EXPORTER_OTLP_TRACES_TIMEOUT).
            # Its batch processor reads OTEL_BSP_EXPORT_TIMEOUT but does not cut a call with
            # it, and the conformance suite holds us to what the SDK does.
            timeout_s = self.settings.timeout_s
        self._transport: _GrpcTransport | _HttpTransport
        if self.settings.protocol == "grpc":
            self._transport = _GrpcTransport(self.settings)
        else:
            self._transport = _HttpTransport(self.settings)
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
            failure = self._transport.send(payload, self._timeout)
            if failure is None:
                self.exported += count
                return
            why, retryable = failure
            if not retryable or attempt == self._retries or self._stop:
                log.warning("dropped %d spans: OTLP export failed (%s)", count, why)
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
        self._transport.close()


# A failed send: what went wrong (for the log line) and whether another attempt may succeed.
Failure = tuple[str, bool]


class _GrpcTransport:
    """``TraceService/Export`` over gRPC, the request already encoded."""

    def __init__(self, settings: OtlpSettings) -> None:
        self._channel = settings.channel()
        self._metadata = settings.headers
        self._compression = grpc.Compression.Gzip if settings.compression else None
        # Bytes in (already encoded), bytes out (the response is not needed).
        self._export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            _EXPORT, request_serializer=None, response_deserializer=None
        )

    def send(self, payload: bytes, timeout_s: float) -> Failure | None:
        try:
            self._export(
                payload, timeout=timeout_s, metadata=self._metadata, compression=self._compression
            )
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            return str(code), code in _GRPC_RETRYABLE
        return None

    def close(self) -> None:
        self._channel.close()


_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
}


class _HttpTransport:
    """``POST /v1/traces`` with the encoded request as ``application/x-protobuf`` (OTLP/HTTP
    binary), compressed as the settings ask."""

    def __init__(self, settings: OtlpSettings) -> None:
        headers = {
            "content-type": "application/x-protobuf",
            "user-agent": f"longread/{__version__}",
            **dict(settings.headers),
        }
        self._compress = _ENCODERS.get(settings.compression)
        if self._compress is not None:
            headers["content-encoding"] = settings.compression
        self._url = settings.endpoint
        verify: ssl.SSLContext | bool = settings.ssl_context() if settings.secure else True
        self._client = httpx.Client(headers=headers, verify=verify)

    def send(self, payload: bytes, timeout_s: float) -> Failure | None:
        body = payload if self._compress is None else self._compress(payload)
        try:
            response = self._client.post(self._url, content=body, timeout=timeout_s)
        except httpx.HTTPError as e:
            return type(e).__name__, True
        if response.is_success:
            return None
        return f"HTTP {response.status_code}", response.status_code in _HTTP_RETRYABLE

    def close(self) -> None:
        self._client.close()
