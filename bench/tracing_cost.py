"""What one span costs: the OpenTelemetry SDK's provider and OTLP encoder vs ours, in one run.

Creates and ends spans shaped like the gateway's (`chat {model}`: CLIENT kind, eight
attributes, inside a parent span) with each provider, then encodes the finished spans into an
``ExportTraceServiceRequest`` with each encoder. CPU microseconds per span, and the ratios.
Prints one JSON object. Run: python -m bench.tracing_cost
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from longread_server.telemetry.encode import encode_request
from longread_server.telemetry.tracing import LeanSpan, LeanTracerProvider
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind

SPANS = 20_000
ROUNDS = 5
RESOURCE = Resource.create({"service.name": "longread"})


def _attributes(i: int) -> dict[str, Any]:
    return {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4.1-mini",
        "server.address": "api.openai.com",
        "server.port": 443,
        "gen_ai.request.max_tokens": 1024,
        "gen_ai.request.stream": False,
        "longread.upstream": "openai",
        "longread.tenant": "acme",
        "longread.attempt": 0,
        "gen_ai.usage.input_tokens": 100 + i % 50,
    }


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class _LeanKeep:
    def __init__(self) -> None:
        self.spans: list[LeanSpan] = []

    def on_end(self, span: LeanSpan) -> None:
        self.spans.append(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def _make(tracer: trace.Tracer) -> float:
    """CPU µs per child span (the parent's cost is spread over the children)."""
    started = time.process_time()
    with tracer.start_as_current_span("analyze single_pass"):
        for i in range(SPANS):
            span = tracer.start_span("chat gpt-4.1-mini", kind=SpanKind.CLIENT)
            span.set_attributes(_attributes(i))
            span.end()
    return (time.process_time() - started) / SPANS * 1e6


def _timed(fn: Any) -> float:
    started = time.process_time()
    fn()
    return (time.process_time() - started) / SPANS * 1e6


def main() -> dict[str, object]:
    sdk_make, lean_make, sdk_encode, lean_encode = [], [], [], []
    for _ in range(ROUNDS):
        keep = _Keep()
        sdk = TracerProvider(resource=RESOURCE, sampler=ParentBased(ALWAYS_ON))
        sdk.add_span_processor(BatchSpanProcessor(keep, max_queue_size=SPANS * 2))
        sdk_make.append(_make(sdk.get_tracer("longread")))
        sdk.force_flush()
        lean_keep = _LeanKeep()
        lean = LeanTracerProvider(RESOURCE)
        lean.add_sink(lean_keep)
        lean_make.append(_make(lean.get_tracer("longread")))
        spans = keep.spans[:SPANS]
        sdk_encode.append(_timed(lambda s=spans: encode_spans(s).SerializeToString()))
        lean_encode.append(_timed(lambda s=lean_keep.spans[:SPANS]: encode_request(s)))
        sdk.shutdown()

    def best(xs: list[float]) -> float:
        return round(min(xs), 2)

    return {
        "spans_per_round": SPANS,
        "rounds": ROUNDS,
        "make_us_per_span": {"sdk": best(sdk_make), "lean": best(lean_make)},
        "encode_us_per_span": {"sdk_otlp": best(sdk_encode), "ours": best(lean_encode)},
        "total_us_per_span": {
            "sdk": round(min(sdk_make) + min(sdk_encode), 2),
            "ours": round(min(lean_make) + min(lean_encode), 2),
        },
        "ratio_sdk_to_ours": round(
            (min(sdk_make) + min(sdk_encode)) / (min(lean_make) + min(lean_encode)), 2
        ),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
