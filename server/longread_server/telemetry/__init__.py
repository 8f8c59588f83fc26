"""OpenTelemetry for one gateway: traces, metrics and structured logs.

Each gateway owns its providers (nothing is installed globally), so two gateways in one
process — replicas in a test, or a benchmark's on/off pair — never mix their telemetry.
Everything that costs is off by default: with traces off the tracer is a no-op, with metrics
off the instruments are no-ops. Content (documents, prompts, answers) is recorded only when an
operator opts in; API keys and authorization metadata never are.

The package: ``tracing`` (the lean tracer), ``encode`` (the OTLP span encoder), ``export``
(OTLP export of both signals, from one resolution of its settings), ``metrics`` (the
instruments), ``logs`` (JSON lines). This module builds a gateway's :class:`Telemetry`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter

from longread_server import __version__
from longread_server.config import ConfigError, TelemetryConfig
from longread_server.telemetry.export import OtlpBatcher, metric_exporter
from longread_server.telemetry.logs import JsonFormatter, configure_logging
from longread_server.telemetry.metrics import Instruments, MeasurementBatch
from longread_server.telemetry.tracing import ExporterSink, LeanTracerProvider, current_span

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
    # NoOpMeter imported by itself: in this package ``metrics`` is the submodule.
    return Telemetry(trace.NoOpTracer(), Instruments(NoOpMeter("longread")))


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
        # ParentBased(TraceIdRatioBased(ratio)), on lean spans (telemetry.tracing).
        tp = LeanTracerProvider(resource, cfg.sampling_ratio)
        if cfg.traces and cfg.otlp_endpoint:
            # Our batcher and encoder: the same bytes as the SDK's OTLP exporter, for less
            # CPU than the spans themselves (telemetry.export).
            with _otlp_settings():
                tp.add_sink(OtlpBatcher(cfg.otlp_endpoint))
        for exporter in span_exporters:
            tp.add_sink(ExporterSink(exporter))
        tel.tracer_provider = tp
        tel.client_spans = cfg.client_spans
        tel.tracer = tp.get_tracer("longread", __version__)
    readers = list(metric_readers)
    if cfg.metrics:
        if cfg.otlp_endpoint:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            with _otlp_settings():
                otlp_metrics = metric_exporter(cfg.otlp_endpoint)
            readers.append(
                PeriodicExportingMetricReader(
                    otlp_metrics, export_interval_millis=cfg.metrics_interval_ms
                )
            )
        if cfg.prometheus_port >= 0 and cfg.prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry, start_http_server

            registry = CollectorRegistry()
            readers.append(PrometheusMetricReader(registry=registry))
            try:
                server, _ = start_http_server(
                    cfg.prometheus_port, addr=cfg.prometheus_host, registry=registry
                )
            except OSError as e:  # in use, or a host that is not this machine's
                where = f"{cfg.prometheus_host}:{cfg.prometheus_port}"
                why = f"cannot listen on {where}: {os.strerror(e.errno) if e.errno else e}"
                raise ConfigError(why, setting="telemetry.prometheus_port") from None
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


@contextmanager
def _otlp_settings() -> Iterator[None]:
    """An OTEL_EXPORTER_OTLP_* setting that is wrong (a file missing, half a client
    identity) as a configuration error, reported in one line at startup."""
    try:
        yield
    except ValueError as e:
        raise ConfigError(f"telemetry.otlp_endpoint: {e}") from e
