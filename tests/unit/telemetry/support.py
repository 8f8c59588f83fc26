"""What the telemetry tests share."""

from __future__ import annotations

from typing import Any

from longread_server.config import TelemetryConfig
from longread_server.telemetry import Telemetry, setup
from longread_server.telemetry.tracing import LeanTracerProvider
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState


def sample_spans() -> list[ReadableSpan]:
    """Spans with every feature the encoder handles: kinds, all attribute types, events,
    links, statuses, remote parents, trace state, two scopes and two resources."""
    out: list[ReadableSpan] = []
    for service in ("a", "b"):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service, "n": 3}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        gw = provider.get_tracer("longread", "1.2.3")
        other = provider.get_tracer("other", schema_url="https://opentelemetry.io/schemas/1.2")
        remote = SpanContext(
            0x0AF7651916CD43DD8448EB211C80319C,
            0xB7AD6B7169203331,
            is_remote=True,
            trace_flags=TraceFlags(1),
            trace_state=TraceState([("vendor", "x1"), ("other", "y")]),
        )
        parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        with gw.start_as_current_span(
            "longread.v1.AnalysisService/Analyze", context=parent, kind=SpanKind.SERVER
        ) as root:
            root.set_attributes(
                {
                    "s": "text ünïcode 中文",
                    "empty": "",
                    "t": True,
                    "f": False,
                    "i": 0,
                    "neg": -42,
                    "big": 2**62,
                    "x": 1.5,
                    "strs": ["stop", "length"],
                    "ints": (1, 2, 300),
                    "long": "y" * 300,
                }
            )
            root.add_event("retry", {"attempt": 2}, timestamp=123)
            with gw.start_as_current_span("plan"):
                pass
            link = Link(remote, {"why": "batch"})
            with other.start_as_current_span("chat gpt", kind=SpanKind.CLIENT, links=[link]) as c:
                c.set_status(Status(StatusCode.ERROR, "overloaded"))
            with gw.start_as_current_span("ok") as ok:
                ok.set_status(Status(StatusCode.OK))
        out += memory.get_finished_spans()
    return out


class FlushedMemory(InMemorySpanExporter):
    """An in-memory exporter behind the gateway's span processors: they run on a thread of
    their own, so the provider is flushed before the spans are read."""

    provider: LeanTracerProvider | None = None

    def get_finished_spans(self) -> tuple[ReadableSpan, ...]:
        if self.provider is not None:
            assert self.provider.force_flush(5_000)
        return super().get_finished_spans()


def setup_with_memory(cfg: TelemetryConfig, memory: FlushedMemory, **more: Any) -> Telemetry:
    """``telemetry.setup`` with ``memory`` as a span exporter that flushes when read."""
    tel = setup(cfg, span_exporters=[memory], **more)
    memory.provider = tel.tracer_provider
    return tel
