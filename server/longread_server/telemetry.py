"""OpenTelemetry for one gateway: traces, metrics and structured logs.

Each gateway owns its providers (nothing is installed globally), so two gateways in one
process — replicas in a test, or a benchmark's on/off pair — never mix their telemetry.
Everything that costs is off by default: with traces off the tracer is a no-op, with metrics
off the instruments are no-ops. Content (documents, prompts, answers) is recorded only when an
operator opts in; API keys and authorization metadata never are.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.util.types import Attributes

from longread_server import __version__
from longread_server.config import ConfigError, TelemetryConfig
from longread_server.otlp import OtlpBatcher
from longread_server.tracing import CurrentSpan, ExporterSink, LeanTracerProvider

log = logging.getLogger(__name__)

# Buckets for seconds (operation duration, time to first token) and token counts, as the
# GenAI semantic conventions advise.
_SECONDS = [
    0.005,
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
]
_TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]


Record = Callable[[float, Attributes], None]


class MeasurementBatch:
    """Measurements held and handed to the SDK's instruments in batches.

    The OpenTelemetry SDK spends about 8 µs on a recording (a frozenset of the attributes,
    locks, the aggregation), and an Analyze makes about six. Done one by one amid each
    request's work, that cost +6 % server CPU per short-document Analyze; done a few hundred
    at a time, the same code runs with its data in the CPU's caches. A recording here is one
    deque append; the batch goes to the SDK every ``size`` recordings (in the request that
    fills it) and at each collection (the gauge ``longread.telemetry.batched``, whose callback
    the SDK runs before it reads the instruments), so what readers export is complete. The
    attributes are read when the batch goes: a caller must not change a dict it recorded with
    (each call site builds its own).
    """

    def __init__(self, size: int = 256) -> None:
        self._items: deque[tuple[Record, float, Attributes]] = deque()
        self._size = size
        self._lock = threading.Lock()

    def add(self, to: Record, value: float, attributes: Attributes) -> None:
        items = self._items
        items.append((to, value, attributes))
        if len(items) >= self._size:
            self.flush(wait=False)  # a collection flushing meanwhile takes these too

    def flush(self, wait: bool = True) -> int:
        """Hands every held measurement to its instrument; returns how many."""
        if not self._lock.acquire(blocking=wait):
            return 0
        try:
            n, items = 0, self._items
            while items:
                to, value, attributes = items.popleft()
                to(value, attributes)
                n += 1
            return n
        finally:
            self._lock.release()


class _BatchedHistogram(metrics.Histogram):
    def __init__(self, inner: metrics.Histogram, batch: MeasurementBatch) -> None:
        self._record = inner.record
        self._batch = batch

    def record(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        self._batch.add(self._record, amount, attributes)


class _BatchedCounter(metrics.Counter):
    def __init__(self, inner: metrics.Counter, batch: MeasurementBatch) -> None:
        self._add = inner.add
        self._batch = batch

    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        self._batch.add(self._add, amount, attributes)


class Instruments:
    """Every metric the gateway records, created once per gateway. With ``batch``, the
    synchronous instruments record through it (see MeasurementBatch)."""

    def __init__(self, meter: metrics.Meter, batch: MeasurementBatch | None = None) -> None:
        self.meter = meter
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per model call, by gen_ai.token.type",
            explicit_bucket_boundaries_advisory=_TOKENS,
        )
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of one upstream model call attempt",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.time_to_first_token = meter.create_histogram(
            "longread.time_to_first_token",
            unit="s",
            description="From receiving a request to the first answer token sent",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.rpc_duration = meter.create_histogram(
            "longread.rpc.duration",
            unit="s",
            description="gRPC request duration by outcome",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.cost = meter.create_counter(
            "longread.cost", unit="USD", description="Cost of upstream calls by tenant and model"
        )
        self.upstream_errors = meter.create_counter(
            "longread.upstream.errors",
            unit="{error}",
            description="Failed upstream attempts by error kind",
        )
        self.limiter_wait = meter.create_histogram(
            "longread.limiter.wait",
            unit="s",
            description="Time spent waiting for rate limits",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.cache_requests = meter.create_counter(
            "longread.cache.requests",
            unit="{request}",
            description="Cache lookups by result (hit, miss, error)",
        )

        if batch is not None:
            self.token_usage = _BatchedHistogram(self.token_usage, batch)
            self.operation_duration = _BatchedHistogram(self.operation_duration, batch)
            self.time_to_first_token = _BatchedHistogram(self.time_to_first_token, batch)
            self.rpc_duration = _BatchedHistogram(self.rpc_duration, batch)
            self.limiter_wait = _BatchedHistogram(self.limiter_wait, batch)
            self.cost = _BatchedCounter(self.cost, batch)
            self.upstream_errors = _BatchedCounter(self.upstream_errors, batch)
            self.cache_requests = _BatchedCounter(self.cache_requests, batch)

            def flush(_: CallbackOptions) -> Iterable[Observation]:
                return [Observation(batch.flush())]

            meter.create_observable_gauge(
                "longread.telemetry.batched",
                [flush],
                unit="{measurement}",
                description="Measurements handed to the SDK at this collection",
            )

    def observe(
        self,
        name: str,
        callback: Callable[[], Iterable[tuple[float, dict[str, str]]]],
        unit: str = "1",
        description: str = "",
    ) -> None:
        """Registers an observable gauge read at collection time (breaker state, cache
        bytes...). ``callback`` yields (value, attributes) pairs."""

        def read(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(v, attrs) for v, attrs in callback()]

        self.meter.create_observable_gauge(name, [read], unit=unit, description=description)


def current_span(
    span: trace.Span,
    *,
    end_on_exit: bool = True,
    record_exception: bool = True,
    current: bool = True,
) -> CurrentSpan:
    """``trace.use_span`` for code that yields while the span is current (async
    generators): the same status and exception rules, detached quietly wherever it ends
    (``tracing.detach``). ``current=False`` for a leaf span: ended and given its status the
    same way, without making it the parent of anything (a context switch less)."""
    return CurrentSpan(span, end_on_exit, record_exception, True, current)


@dataclass
class Telemetry:
    """A gateway's tracer, instruments and the providers to flush at shutdown."""

    tracer: trace.Tracer
    instruments: Instruments
    record_content: bool = False
    # Spans from client instrumentations (httpx, Redis) hang under ours: those must then
    # be current while the clients run.
    client_spans: bool = False
    tracer_provider: LeanTracerProvider | None = None
    meter_provider: MeterProvider | None = None
    prometheus_port: int = 0
    _prometheus_server: Any = None

    @property
    def tracing(self) -> bool:
        return self.tracer_provider is not None

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self._prometheus_server is not None:
            self._prometheus_server.shutdown()
            self._prometheus_server.server_close()


def disabled() -> Telemetry:
    return Telemetry(trace.NoOpTracer(), Instruments(metrics.NoOpMeter("longread")))


def setup(
    cfg: TelemetryConfig,
    *,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Builds the providers ``cfg`` asks for (plus test exporters/readers)."""
    resource = Resource.create({"service.name": cfg.service_name, "service.version": __version__})
    tel = disabled()
    tel.record_content = cfg.record_content
    if cfg.traces or span_exporters:
        # ParentBased(TraceIdRatioBased(ratio)), on lean spans (tracing.py).
        tp = LeanTracerProvider(resource, cfg.sampling_ratio)
        if cfg.traces and cfg.otlp_endpoint:
            # Our batcher and encoder: the same bytes as the SDK's OTLP exporter, at a
            # fraction of its CPU (otlp.py).
            try:
                tp.add_sink(OtlpBatcher(cfg.otlp_endpoint))
            except ValueError as e:  # an OTEL_EXPORTER_OTLP_* file missing or half a pair
                raise ConfigError(f"telemetry.otlp_endpoint: {e}") from e
        for exporter in span_exporters:
            tp.add_sink(ExporterSink(exporter))
        tel.tracer_provider = tp
        tel.client_spans = cfg.client_spans
        tel.tracer = tp.get_tracer("longread", __version__)
    readers = list(metric_readers)
    if cfg.metrics:
        if cfg.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(
                PeriodicExportingMetricReader(
                    # Plaintext unless https://; TLS files and headers from OTEL_EXPORTER_OTLP_*.
                    OTLPMetricExporter(
                        endpoint=cfg.otlp_endpoint,
                        insecure=not cfg.otlp_endpoint.startswith("https://"),
                    ),
                    export_interval_millis=cfg.metrics_interval_ms,
                )
            )
        if cfg.prometheus_port >= 0 and cfg.prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry, start_http_server

            registry = CollectorRegistry()
            readers.append(PrometheusMetricReader(registry=registry))
            server, _ = start_http_server(
                cfg.prometheus_port, addr=cfg.prometheus_host, registry=registry
            )
            tel._prometheus_server = server
            tel.prometheus_port = server.server_port
    if readers:
        mp = MeterProvider(
            metric_readers=readers,
            resource=resource,
            exemplar_filter=TraceBasedExemplarFilter()
            if cfg.exemplars
            else AlwaysOffExemplarFilter(),
        )
        tel.meter_provider = mp
        # Exemplars need each recording's own context: then recordings go one by one.
        batch = None if cfg.exemplars else MeasurementBatch()
        tel.instruments = Instruments(mp.get_meter("longread", __version__), batch)
    return tel


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the trace and span of the record's context."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(json_logs: bool, level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO: one line per upstream call on the hot path, and the
    # access log already has what matters.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
