"""What telemetry a gateway builds: the ``[telemetry]`` settings and the standard OpenTelemetry
environment variables, resolved in one place.

For an operator who already runs OpenTelemetry, every variable the OpenTelemetry SDK reads
means the same here, and wins over the ``[telemetry]`` setting it overlaps:

- a signal is on when its switch is (``traces``, ``metrics``, ``logs``), when its
  ``OTEL_<SIGNAL>_EXPORTER`` names an exporter, or when an OTLP endpoint variable points it
  somewhere (``OTEL_EXPORTER_OTLP_ENDPOINT``: all three); ``OTEL_<SIGNAL>_EXPORTER=none`` stops
  its export and ``OTEL_SDK_DISABLED=true`` everything;
- exporters are found by name through the SDK's entry points (``opentelemetry_traces_exporter``
  and the like), so ``console`` or any installed exporter package works; ``otlp`` is ours for
  spans (``telemetry.export``) and the SDK's for metrics and logs, over the protocol
  ``OTEL_EXPORTER_OTLP_[<SIGNAL>_]PROTOCOL`` names; ``prometheus`` serves ``/metrics`` on
  ``OTEL_EXPORTER_PROMETHEUS_HOST``/``_PORT``;
- ``OTEL_TRACES_SAMPLER`` (and ``_ARG``) is any sampler of the ``opentelemetry_traces_sampler``
  entry points; ``OTEL_SPAN_*_LIMIT`` and ``OTEL_ATTRIBUTE_*_LIMIT`` are read by the SDK's
  ``SpanLimits``; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` by its ``Resource``;
  ``OTEL_METRIC_EXPORT_INTERVAL``/``_TIMEOUT`` and ``OTEL_METRICS_EXEMPLAR_FILTER`` as the SDK
  reads them; ``OTEL_PROPAGATORS`` by the API itself, when it is imported.

Where this is stricter than the SDK, on purpose: a name that matches no installed sampler or
exporter, a sampler argument that is not a ratio, a protocol or compression the exporters do
not know stop the start with one line naming the variable, where the SDK logs a warning and
goes on with its default (sampling everything, or exporting nothing).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal

from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

from longread_server import __version__
from longread_server.config import ConfigError, TelemetryConfig
from longread_server.telemetry.export import OtlpSettings, Signal

SignalName = Literal["traces", "metrics", "logs"]
SIGNALS: tuple[SignalName, ...] = ("traces", "metrics", "logs")
# The names that mean OTLP, as the SDK's configuration reads them: ``otlp`` over the configured
# protocol, the other two over their own.
OTLP_NAMES = {"otlp": "", "otlp_proto_grpc": "grpc", "otlp_proto_http": "http/protobuf"}
PROMETHEUS = "prometheus"
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_EXEMPLAR_FILTERS: dict[str, type[ExemplarFilter]] = {
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
    "trace_based": TraceBasedExemplarFilter,
}


@dataclass(frozen=True)
class TelemetrySettings:
    disabled: bool
    resource: Resource
    exporters: Mapping[SignalName, tuple[str, ...]]  # by name, as configured
    otlp: Mapping[SignalName, OtlpSettings]  # the signals that export over OTLP
    sampler: Sampler
    span_limits: SpanLimits
    metrics_interval_ms: float
    metrics_timeout_ms: float | None  # None: the SDK's default
    exemplar_filter: ExemplarFilter
    prometheus_host: str
    prometheus_port: int


def resolve(cfg: TelemetryConfig, env: Mapping[str, str] | None = None) -> TelemetrySettings:
    """The telemetry ``cfg`` and ``env`` (the process's environment by default) ask for.
    Raises ConfigError naming the setting or variable that cannot be used."""
    env = os.environ if env is None else env
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    switches = {"traces": cfg.traces, "metrics": cfg.metrics, "logs": cfg.logs}
    exporters = {
        signal: () if disabled else _exporter_names(signal, switches[signal], cfg, env)
        for signal in SIGNALS
    }
    otlp: dict[SignalName, OtlpSettings] = {}
    for signal, names in exporters.items():
        for name in names:
            if name in OTLP_NAMES:
                otlp[signal] = otlp_settings(cfg, signal, name, env)
            elif name != PROMETHEUS or signal != "metrics":
                exporter_class(signal, name)  # found, or a one-line error now
    try:
        limits = SpanLimits()
    except ValueError as e:  # the SDK names the variable
        raise ConfigError(str(e)) from None
    return TelemetrySettings(
        disabled=disabled,
        resource=_resource(cfg),
        exporters=exporters,
        otlp=otlp,
        sampler=_sampler(cfg, env),
        span_limits=limits,
        metrics_interval_ms=_milliseconds(env, "OTEL_METRIC_EXPORT_INTERVAL")
        or cfg.metrics_interval_ms,
        metrics_timeout_ms=_milliseconds(env, "OTEL_METRIC_EXPORT_TIMEOUT"),
        exemplar_filter=_exemplar_filter(cfg, env),
        prometheus_host=env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "").strip() or cfg.prometheus_host,
        prometheus_port=_port(env)
        if env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "").strip()
        else cfg.prometheus_port,
    )


def _exporter_names(
    signal: SignalName, switch: bool, cfg: TelemetryConfig, env: Mapping[str, str]
) -> tuple[str, ...]:
    raw = env.get(f"OTEL_{signal.upper()}_EXPORTER", "")
    if raw.strip():
        names = (n.strip() for n in raw.split(","))
        return tuple(dict.fromkeys(n for n in names if n and n != "none"))
    out: list[str] = []
    pointed = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if pointed or (switch and cfg.otlp_endpoint):
        out.append("otlp")
    if signal == "metrics" and switch and cfg.prometheus:
        out.append(PROMETHEUS)
    return tuple(out)


def otlp_settings(
    cfg: TelemetryConfig, signal: SignalName, name: str, env: Mapping[str, str]
) -> OtlpSettings:
    """``signal``'s OTLP settings; ``otlp_proto_http`` and ``otlp_proto_grpc`` keep their own
    protocol whatever the variables say, as with the SDK."""
    forced = OTLP_NAMES[name]
    if forced:
        env = {k: v for k, v in env.items() if not k.endswith("_PROTOCOL")}
    sig: Signal = "TRACES" if signal == "traces" else "METRICS" if signal == "metrics" else "LOGS"
    try:
        return OtlpSettings.resolve(
            cfg.otlp_endpoint, sig, env, protocol=forced or cfg.otlp_protocol
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


def exporter_class(signal: SignalName, name: str) -> Any:
    """The exporter class ``name`` stands for, from the SDK's entry points."""
    group = f"opentelemetry_{signal}_exporter"
    found = entry_points(group=group, name=name)
    if not found:
        known = sorted({ep.name for ep in entry_points(group=group)} | {"otlp", "none"})
        raise ConfigError(
            f"OTEL_{signal.upper()}_EXPORTER: no {signal} exporter named {name!r} is "
            f"installed (found: {', '.join(known)})"
        )
    try:
        return next(iter(found)).load()
    except Exception as e:  # a broken package: say which
        raise ConfigError(f"OTEL_{signal.upper()}_EXPORTER: cannot load {name!r}: {e}") from None


def _resource(cfg: TelemetryConfig) -> Resource:
    """The SDK's resource (``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``, the detectors
    of ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS``), with ``service.name`` and
    ``service.version`` from here only where the SDK found none (its name for an unnamed
    service starts with ``unknown_service``)."""
    detected = Resource.create()
    ours: dict[str, str] = {}
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        ours["service.name"] = cfg.service_name
    if "service.version" not in detected.attributes:
        ours["service.version"] = __version__
    return detected.merge(Resource(ours))


def _sampler(cfg: TelemetryConfig, env: Mapping[str, str]) -> Sampler:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip()
    if not name:
        return ParentBased(TraceIdRatioBased(cfg.sampling_ratio))
    found = entry_points(group="opentelemetry_traces_sampler", name=name)
    if not found:
        known = sorted({ep.name for ep in entry_points(group="opentelemetry_traces_sampler")})
        raise ConfigError(
            f"OTEL_TRACES_SAMPLER: no sampler named {name!r} (found: {', '.join(known)})"
        )
    raw = env.get("OTEL_TRACES_SAMPLER_ARG")
    arg: float | str | None = raw
    if name in _RATIO_SAMPLERS:
        try:
            # Unset: 1.0, as the SDK.
            arg = 1.0 if raw is None or not raw.strip() else float(raw)
        except ValueError:
            arg = -1.0
        if not 0.0 <= arg <= 1.0:
            raise ConfigError(
                f"OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1 for {name}, got {raw!r}"
            )
    try:
        sampler = next(iter(found)).load()(arg)
    except Exception as e:
        raise ConfigError(f"OTEL_TRACES_SAMPLER: cannot make {name!r}: {e}") from None
    if not isinstance(sampler, Sampler):
        raise ConfigError(f"OTEL_TRACES_SAMPLER: {name!r} did not make a Sampler")
    return sampler


def _exemplar_filter(cfg: TelemetryConfig, env: Mapping[str, str]) -> ExemplarFilter:
    raw = env.get("OTEL_METRICS_EXEMPLAR_FILTER", "").strip().lower()
    if not raw:
        # Off unless asked for: the SDK's default (trace_based) offers every recording inside
        # a sampled span to a reservoir, one by one.
        return TraceBasedExemplarFilter() if cfg.exemplars else AlwaysOffExemplarFilter()
    try:
        return _EXEMPLAR_FILTERS[raw]()
    except KeyError:
        raise ConfigError(
            f"OTEL_METRICS_EXEMPLAR_FILTER: expected always_on, always_off or trace_based, "
            f"got {raw!r}"
        ) from None


def _milliseconds(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{name}: expected a positive number of milliseconds, got {raw!r}")
    return value


def _port(env: Mapping[str, str]) -> int:
    raw = env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "").strip()
    if raw.isdigit() and int(raw) < 65536:
        return int(raw)
    raise ConfigError(f"OTEL_EXPORTER_PROMETHEUS_PORT: expected a port number, got {raw!r}")
