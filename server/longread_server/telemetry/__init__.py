"""OpenTelemetry for one gateway: traces, metrics and logs.

Each gateway owns its providers (nothing is installed globally), so two gateways in one
process — replicas in a test, or a benchmark's on/off pair — never mix their telemetry.
Everything that costs is off by default: with traces off the tracer is a no-op, with metrics
off the instruments are no-ops. Content (documents, prompts, answers) is recorded only when an
operator opts in; API keys and authorization metadata never are.

The package: ``settings`` (what the ``[telemetry]`` settings and the standard ``OTEL_*``
variables ask for, resolved once), ``tracing`` (the lean tracer), ``encode`` (the OTLP span
encoder), ``export`` (OTLP export of every signal, over gRPC or HTTP), ``metrics`` (the
instruments), ``logs`` (JSON lines, and OTLP log records). This module builds a gateway's
:class:`Telemetry` from them.
"""

from __future__ import annotations

import logging
import os
import pkgutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

from longread_server import __version__
from longread_server.config import ConfigError, TelemetryConfig
from longread_server.telemetry import settings as telemetry_settings
from longread_server.telemetry.export import OtlpBatcher, log_exporter, metric_exporter
from longread_server.telemetry.logs import JsonFormatter, configure_logging
from longread_server.telemetry.metrics import Instruments, MeasurementBatch
from longread_server.telemetry.settings import OTLP_NAMES, PROMETHEUS, TelemetrySettings
from longread_server.telemetry.tracing import LeanTracerProvider, current_span

__all__ = [
    "Instruments",
    "JsonFormatter",
    "MeasurementBatch",
    "Telemetry",
    "configure_logging",
    "current_span",
    "disabled",
    "setup",
]


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
    logger_provider: Any = None  # the SDK's LoggerProvider, when log records go over OTLP
    prometheus_port: int = 0
    _prometheus_server: Any = None
    _log_handler: logging.Handler | None = None

    @property
    def tracing(self) -> bool:
        return self.tracer_provider is not None

    def force_flush(self) -> None:
        """Everything recorded so far handed to the exporters (tests read them after)."""
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush()
        if self.meter_provider is not None:
            self.meter_provider.force_flush()
        if self.logger_provider is not None:
            self.logger_provider.force_flush()

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
        if self.logger_provider is not None:
            self.logger_provider.shutdown()
        if self._prometheus_server is not None:
            self._prometheus_server.shutdown()
            self._prometheus_server.server_close()


def disabled() -> Telemetry:
    # NoOpMeter imported by itself: in this package ``metrics`` is the submodule.
    return Telemetry(trace.NoOpTracer(), Instruments(NoOpMeter("longread")))


def setup(
    cfg: TelemetryConfig,
    *,
    span_exporters: Sequence[SpanExporter] = (),
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Builds what ``cfg`` and the ``OTEL_*`` variables ask for (``telemetry.settings``),
    plus the given span processors, span exporters (each behind a ``SimpleSpanProcessor``,
    which runs off the event loop: tests read them after ``force_flush``) and metric
    readers."""
    s = telemetry_settings.resolve(cfg)
    tel = disabled()
    tel.record_content = cfg.record_content
    if s.disabled:
        return tel
    processors = [
        *(_span_processor(name) for name in cfg.span_processors),
        *span_processors,
        *(SimpleSpanProcessor(exporter) for exporter in span_exporters),
    ]
    if s.exporters["traces"] or processors:
        tp = LeanTracerProvider(
            s.resource, s.sampler, s.span_limits, record_content=cfg.record_content
        )
        for name in s.exporters["traces"]:
            if name in OTLP_NAMES:
                # Our batcher and encoder: the same bytes as the SDK's OTLP exporter, for less
                # CPU than the spans themselves (telemetry.export).
                otlp = s.otlp["traces"]
                tp.add_sink(OtlpBatcher(settings=otlp))
            else:
                exporter = telemetry_settings.exporter_class("traces", name)()
                tp.add_span_processor(BatchSpanProcessor(exporter))
        for processor in processors:
            tp.add_span_processor(processor)
        tel.tracer_provider = tp
        tel.client_spans = cfg.client_spans
        tel.tracer = tp.get_tracer("longread", __version__)
    readers = [*metric_readers, *_metric_readers(s, tel)]
    if readers:
        mp = MeterProvider(
            metric_readers=readers, resource=s.resource, exemplar_filter=s.exemplar_filter
        )
        tel.meter_provider = mp
        # Exemplars need each recording's own context: then recordings go one by one.
        off = isinstance(s.exemplar_filter, AlwaysOffExemplarFilter)
        batch = MeasurementBatch() if off else None
        tel.instruments = Instruments(mp.get_meter("longread", __version__), batch)
    if s.exporters["logs"]:
        with _extra("otlp", "exporting log records"):
            _log_records(s, tel)
    return tel


@contextmanager
def _extra(extra: str, feature: str) -> Iterator[None]:
    """Turns the ImportError of a package an optional feature needs (the distribution's extras
    leave them out of a plain install) into a ConfigError naming the extra to install."""
    try:
        yield
    except ImportError as e:
        why = f"{feature} needs the {extra!r} extra ({e})"
        raise ConfigError(why, hint=f"pip install 'longread[{extra}]'") from None


def _span_processor(name: str) -> SpanProcessor:
    """``telemetry.span_processors``' entry: a SpanProcessor, its class or a factory."""
    try:
        found = pkgutil.resolve_name(name)
        made = found if isinstance(found, SpanProcessor) else found()
    except Exception as e:
        raise ConfigError(
            f"cannot make {name!r}: {e}", setting="telemetry.span_processors"
        ) from None
    if not isinstance(made, SpanProcessor):
        why = f"{name!r} is not a SpanProcessor, its class or a function making one"
        raise ConfigError(why, setting="telemetry.span_processors")
    return made


def _metric_readers(s: TelemetrySettings, tel: Telemetry) -> list[MetricReader]:
    readers: list[MetricReader] = []
    for name in s.exporters["metrics"]:
        exporter: MetricExporter
        if name in OTLP_NAMES:
            with _extra("otlp", "metrics over OTLP"):
                exporter = metric_exporter(s.otlp["metrics"])
        elif name == PROMETHEUS:
            with _extra("prometheus", "the Prometheus exporter"):
                readers.append(_prometheus(s, tel))
            continue
        else:
            found = telemetry_settings.exporter_class("metrics", name)
            if issubclass(found, MetricReader):  # a pull exporter
                readers.append(found())
                continue
            exporter = found()
        readers.append(
            PeriodicExportingMetricReader(
                exporter,
                export_interval_millis=s.metrics_interval_ms,
                export_timeout_millis=s.metrics_timeout_ms,
            )
        )
    return readers


def _prometheus(s: TelemetrySettings, tel: Telemetry) -> MetricReader:
    """A Prometheus reader on a registry of this gateway's own, served on its own port."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    try:
        server, _ = start_http_server(s.prometheus_port, addr=s.prometheus_host, registry=registry)
    except OSError as e:  # in use, or a host that is not this machine's
        where = f"{s.prometheus_host}:{s.prometheus_port}"
        why = f"cannot listen on {where}: {os.strerror(e.errno) if e.errno else e}"
        raise ConfigError(why, setting="telemetry.prometheus_port") from None
    tel._prometheus_server = server
    tel.prometheus_port = server.server_port
    return reader


def _log_records(s: TelemetrySettings, tel: Telemetry) -> None:
    """Log records over OTLP (or any log exporter) beside the JSON lines: a handler on the
    root logger, exporting from the SDK's batch processor thread."""
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=s.resource)
    for name in s.exporters["logs"]:
        if name in OTLP_NAMES:
            exporter = log_exporter(s.otlp["logs"])
        else:
            exporter = telemetry_settings.exporter_class("logs", name)()
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    logging.getLogger().addHandler(handler)
    tel.logger_provider = provider
    tel._log_handler = handler
