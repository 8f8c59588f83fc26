"""The lean tracer against the OpenTelemetry API's contract and the SDK's behaviour."""

from __future__ import annotations

import io
import json
import random
import threading
from collections.abc import Sequence
from typing import Any
from unittest.mock import patch

import pytest
from longread_server.telemetry import tracing
from longread_server.telemetry.encode import encode_request
from longread_server.telemetry.tracing import LeanSpan, LeanTracerProvider
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ReadableSpan,
    Span,
    SpanLimits,
    SpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags


class Sink:
    def __init__(self) -> None:
        self.spans: list[LeanSpan] = []

    def on_end(self, span: LeanSpan) -> None:
        self.spans.append(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def provider(ratio: float = 1.0) -> tuple[LeanTracerProvider, Sink]:
    tp = LeanTracerProvider(Resource.create({"service.name": "test"}), ratio)
    sink = Sink()
    tp.add_sink(sink)
    return tp, sink


def remote(sampled: bool) -> Any:
    ctx = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1 if sampled else 0),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(ctx))


def test_spans_nest_through_the_api_context() -> None:
    tp, sink = provider()
    tracer = tp.get_tracer("t", "1")
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        child = tracer.start_span("child", attributes={"n": 1})
        with trace.use_span(child, end_on_exit=True):
            assert trace.get_current_span() is child
            grandchild = tracer.start_span("grandchild")
            grandchild.end()
    names = [s.name for s in sink.spans]
    assert names == ["grandchild", "child", "root"]
    g, c, r = sink.spans
    assert r.parent is None and r.kind is SpanKind.SERVER
    assert c.parent == root.get_span_context() and g.parent == c.get_span_context()
    assert len({s.context.trace_id for s in sink.spans}) == 1
    assert len({s.context.span_id for s in sink.spans}) == 3
    assert all(s.end_time and s.start_time and s.end_time >= s.start_time for s in sink.spans)
    assert tp.get_tracer("t", "1") is tracer  # one tracer per scope


def test_a_remote_parent_is_continued_and_its_sampling_decision_kept() -> None:
    tp, sink = provider(ratio=0.0)
    tracer = tp.get_tracer("t")
    with tracer.start_as_current_span("sampled by the caller", context=remote(True)) as s:
        assert s.is_recording()
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    assert carrier["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert carrier["traceparent"].endswith("-01")
    (span,) = sink.spans
    assert span.parent is not None and span.parent.is_remote
    not_sampled = tracer.start_span("dropped by the caller", context=remote(False))
    assert not not_sampled.is_recording()
    assert not_sampled.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    not_sampled.end()
    assert len(sink.spans) == 1


def test_children_of_an_unsampled_span_are_left_out_with_contexts_of_their_own() -> None:
    tp, sink = provider(ratio=0.0)
    tracer = tp.get_tracer("t")
    carrier: dict[str, str] = {}
    with (
        tracer.start_as_current_span("root") as root,
        tracer.start_as_current_span("child") as child,
    ):
        leaf = tracer.start_span("leaf")
        propagate.inject(carrier)
    ctxs = [s.get_span_context() for s in (root, child, leaf)]
    assert not any(s.is_recording() for s in (root, child, leaf))
    assert len({c.trace_id for c in ctxs}) == 1 and len({c.span_id for c in ctxs}) == 3
    assert all(c.is_valid and not c.trace_flags.sampled for c in ctxs)
    assert carrier["traceparent"] == f"00-{ctxs[1].trace_id:032x}-{ctxs[1].span_id:016x}-00"
    # A caller that did not sample: its trace goes on, unsampled, below it.
    below = tracer.start_span("below", context=remote(False))
    assert below.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert not below.is_recording() and sink.spans == []


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
def test_new_traces_are_sampled_at_the_ratio(ratio: float) -> None:
    tp, sink = provider(ratio)
    tracer = tp.get_tracer("t")
    for _ in range(4000):
        tracer.start_span("s").end()
    assert len(sink.spans) == pytest.approx(4000 * ratio, abs=200)


def test_status_rules_and_exceptions_as_the_sdk() -> None:
    tp, sink = provider()
    tp.record_content = True  # the SDK records every exception's message (telemetry.redact)
    tracer = tp.get_tracer("t")
    with pytest.raises(ValueError), tracer.start_as_current_span("fails"):
        raise ValueError("bad value")
    s = tracer.start_span("ok is final")
    s.set_status(Status(StatusCode.OK))
    s.set_status(StatusCode.ERROR, "too late")
    s.end()
    u = tracer.start_span("unset never overrides")
    u.set_status(StatusCode.ERROR, "boom")
    u.set_status(StatusCode.UNSET)
    u.end()
    fails, ok, unset = sink.spans
    assert fails.status.status_code is StatusCode.ERROR
    assert fails.status.description == "ValueError: bad value"
    (event,) = fails.events
    assert event.name == "exception"
    attrs: Any = event.attributes
    assert attrs["exception.type"] == "ValueError"
    assert attrs["exception.message"] == "bad value"
    assert "Traceback" in attrs["exception.stacktrace"]
    assert ok.status.status_code is StatusCode.OK
    assert unset.status.status_code is StatusCode.ERROR and unset.status.description == "boom"


def test_attributes_are_cleaned_and_frozen_at_end() -> None:
    tp, sink = provider()
    s = tp.get_tracer("t").start_span("s", attributes={"list": ["a", "b"], "none": None})
    s.set_attribute("obj", StatusCode.OK)  # type: ignore[arg-type]  # kept as its str
    s.set_attributes({"n": 3, "x": 0.5, "flag": True})
    s.end()
    s.set_attribute("late", 1)
    s.update_name("renamed late")
    (span,) = sink.spans
    assert dict(span.attributes) == {
        "list": ("a", "b"),
        "obj": str(StatusCode.OK),
        "n": 3,
        "x": 0.5,
        "flag": True,
    }
    assert span.name == "s" and not span.is_recording()


def test_sdk_processors_get_readable_spans_off_the_calling_thread() -> None:
    """The SDK's own processors accept our spans (the batch processor and the console
    exporter's ``to_json`` need a real ReadableSpan), and their exporters run on a thread
    of their own, never the one that ended the span (the event loop's, in the gateway)."""
    threads: list[int] = []

    class Recording(InMemorySpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            threads.append(threading.get_ident())
            return super().export(spans)

    tp = LeanTracerProvider(Resource.create({"service.name": "test"}))
    simple, batched = Recording(), InMemorySpanExporter()
    console = io.StringIO()
    tp.add_span_processor(SimpleSpanProcessor(simple))
    tp.add_span_processor(BatchSpanProcessor(batched, schedule_delay_millis=10))
    tp.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=console)))
    tracer = tp.get_tracer("t", "2.0")
    with tracer.start_as_current_span("root", attributes={"a": 1}) as root:
        root.add_event("note", {"k": "v"})
    assert tp.force_flush()
    for memory in (simple, batched):
        (span,) = memory.get_finished_spans()
        assert span.name == "root" and dict(span.attributes or {}) == {"a": 1}
        assert span.resource.attributes["service.name"] == "test"
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.version == "2.0"
        assert [e.name for e in span.events] == ["note"]
    assert json.loads(console.getvalue())["name"] == "root"
    assert threads and threading.get_ident() not in threads
    tp.shutdown()


def test_a_processor_sees_each_span_start_and_may_add_to_it() -> None:
    class Stamp(SpanProcessor):
        def on_start(self, span: Span, parent_context: Context | None = None) -> None:
            span.set_attribute("stamped", True)

    tp = LeanTracerProvider(Resource.create({"service.name": "test"}))
    memory = InMemorySpanExporter()
    tp.add_span_processor(Stamp())
    tp.add_span_processor(SimpleSpanProcessor(memory))
    with tp.get_tracer("t").start_as_current_span("root"):
        pass
    tp.force_flush()
    (span,) = memory.get_finished_spans()
    assert (span.attributes or {})["stamped"] is True


@pytest.mark.parametrize(
    "sampler",
    [
        ALWAYS_ON,
        ALWAYS_OFF,
        TraceIdRatioBased(0.5),
        ParentBased(ALWAYS_OFF),
        ParentBased(TraceIdRatioBased(0.5)),
        ParentBased(ALWAYS_ON, remote_parent_sampled=ALWAYS_OFF),  # delegates of its own
    ],
    ids=str,
)
def test_sampling_decides_as_the_sdk_provider_with_the_same_sampler(sampler: Sampler) -> None:
    """The same trace ids through the SDK's provider and ours: the same spans kept, for new
    traces and for remote parents sampled or not."""
    sink = Sink()
    ours = LeanTracerProvider(Resource.create({}), sampler)
    ours.add_sink(sink)
    memory = InMemorySpanExporter()
    sdk = TracerProvider(sampler=sampler)
    sdk.add_span_processor(SimpleSpanProcessor(memory))
    rng = random.Random(7)
    for _ in range(200):
        trace_id = rng.getrandbits(128) or 1
        for flags in (None, 0, 1):
            context = None
            if flags is not None:
                remote = SpanContext(trace_id, 99, True, TraceFlags(flags))
                context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
            for tp in (ours, sdk):
                # The SDK's provider takes a new trace's id from ``random``: both get the same.
                tracer = tp.get_tracer("t")
                ids = patch("random.getrandbits", lambda n, t=trace_id: t if n == 128 else 5)
                ours_ids = patch.object(
                    tracing, "_getrandbits", lambda n, t=trace_id: t if n == 128 else 5
                )
                with ids, ours_ids, tracer.start_as_current_span("s", context=context):
                    tracer.start_span("child").end()
    kept_sdk = sorted((s.context.trace_id, s.name) for s in memory.get_finished_spans())
    kept_ours = sorted((s.trace_id, s.name) for s in sink.spans)
    assert kept_ours == kept_sdk
    assert 0 < len(kept_ours) < 1200 or sampler in (ALWAYS_ON, ALWAYS_OFF)


def test_span_limits_as_the_sdk_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "5")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "2")
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "1")
    monkeypatch.setenv("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "1")
    tp = LeanTracerProvider(Resource.create({}), 1.0, SpanLimits())
    sink = Sink()
    tp.add_sink(sink)
    link = Link(SpanContext(1, 2, True, TraceFlags(1)))
    with tp.get_tracer("t").start_as_current_span("s", links=[link, link]) as span:
        span.set_attributes({"a": "abcdefgh", "b": ("long value", 1), "c": 3})
        span.set_attribute("d", "x")
        for n in range(3):
            span.add_event("e", {"k": n, "j": n})
    (ended,) = sink.spans
    assert dict(ended.attributes) == {"a": "abcde", "b": ("long ", 1), "c": 3}
    assert ended.dropped_attributes == 1
    assert len(ended.events) == 2 and ended.dropped_events == 1
    assert all(len(e.attributes or {}) == 1 for e in ended.events)
    assert len(ended.links) == 1 and ended.dropped_links == 1


def test_lean_spans_encode_as_the_official_encoder_encodes_their_sdk_form() -> None:
    tp, sink = provider()
    tracer = tp.get_tracer("longread", "1.0", schema_url="https://opentelemetry.io/schemas/1")
    other = tp.get_tracer("other")
    link = Link(trace.get_current_span(remote(True)).get_span_context(), {"why": "batch"})
    with tracer.start_as_current_span("server", context=remote(True), kind=SpanKind.SERVER) as r:
        r.set_attributes({"s": "x", "i": -1, "f": 2.5, "b": False, "l": ("stop",)})
        r.add_event("e", {"k": 1}, timestamp=5)
        with other.start_as_current_span("chat", kind=SpanKind.CLIENT, links=[link]) as c:
            c.set_status(StatusCode.ERROR, "overloaded")
    ours = trace_service_pb2.ExportTraceServiceRequest.FromString(encode_request(sink.spans))
    assert ours == encode_spans([s.readable() for s in sink.spans])
