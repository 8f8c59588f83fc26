"""Our OTLP span encoder against the official one."""

from __future__ import annotations

import gc

from longread_server.telemetry import encode
from longread_server.telemetry.encode import encode_request, flatten
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.unit.telemetry.support import sample_spans
from tests.unit.telemetry.test_tracing import provider


def test_encoder_stays_exact_and_bounded_past_its_tables() -> None:
    """A key whose values keep changing (a response id per call) stops filling the table of
    encoded attributes; many keys with a few values each fill it and it is emptied, never
    left full; a value first seen after all that is still kept; and what comes out stays the
    official encoding."""
    memory = InMemorySpanExporter()
    sdk = TracerProvider(resource=Resource.create({"service.name": "a"}))
    sdk.add_span_processor(SimpleSpanProcessor(memory))
    tracer = sdk.get_tracer("longread")
    for i in range(encode._KEY_VALUES * 3):
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes({"test.response.id": f"chatcmpl-{i}", "longread.tenant": "t"})
    spans = memory.get_finished_spans()
    ours = trace_service_pb2.ExportTraceServiceRequest.FromString(encode_request(spans))
    assert ours == encode_spans(spans)
    assert 0 < sum(k[1] == "test.response.id" for k in encode._encoded) <= encode._KEY_VALUES
    lean, sink = provider()
    kept = sink.spans
    for i in range(encode._CACHE_MAX + 1000):  # 200 keys, 100 values each
        lean.get_tracer("t").start_span("s", attributes={f"test.k{i % 200}": f"v{i}"}).end()
    encode_request(kept)
    assert 0 < len(encode._encoded) <= encode._CACHE_MAX
    # A value first seen after the table filled up is still kept for the next span.
    with tracer.start_as_current_span("chat") as span:
        span.set_attribute("longread.tenant", "late")
    last = memory.get_finished_spans()[-1:]
    ours = trace_service_pb2.ExportTraceServiceRequest.FromString(encode_request(last))
    assert ours == encode_spans(last)
    assert (0x4A, "longread.tenant", "late") in encode._encoded


def test_encoder_matches_the_official_encoder() -> None:
    spans = sample_spans()
    ours = trace_service_pb2.ExportTraceServiceRequest.FromString(encode_request(spans))
    official = encode_spans(spans)
    assert ours == official
    assert len(ours.resource_spans) == 2
    assert sum(len(ss.spans) for rs in ours.resource_spans for ss in rs.scope_spans) == 8


def test_equal_values_of_other_types_stay_apart_in_the_tables() -> None:
    """True == 1 == 1.0 and ("x",) is not "x": each keeps its own encoding under one key."""
    tp, sink = provider()
    kept = sink.spans
    tracer = tp.get_tracer("longread")
    for value in (True, 1, 1.0, "x", ("x",), ("x", 1), 0, False, -1, 2**40):
        tracer.start_span("s", attributes={"v": value}).end()
    ours = trace_service_pb2.ExportTraceServiceRequest.FromString(encode_request(kept))
    assert ours == encode_spans([s.readable() for s in kept])


def test_lengths_and_varints_at_their_boundaries_match_the_official_encoder() -> None:
    tp, sink = provider()
    kept = sink.spans
    tracer = tp.get_tracer("longread")
    ints = (63, 64, 127, 128, 300, 16383, 16384, 2**21, 2**63 - 1, -(2**63))
    strings = ("é" * 62, "x" * 124, "x" * 125, "x" * 126, "x" * 127, "x" * 128, "x" * 20_000)
    for value in (*ints, *strings):
        tracer.start_span("s", attributes={"v": value, "k" * 200: value}).end()
    ours = trace_service_pb2.ExportTraceServiceRequest.FromString(encode_request(kept))
    assert ours == encode_spans([s.readable() for s in kept])


def test_queued_spans_hold_nothing_the_garbage_collector_keeps_scanning() -> None:
    """A lean span waits for export as one tuple of plain values: no span object, context,
    lists or tuples inside it for every collection to scan again while spans queue under
    load (after one full collection, when its dict of attributes is untracked)."""
    tp, sink = provider()
    kept = sink.spans
    tracer = tp.get_tracer("longread")
    with tracer.start_as_current_span("parent"):
        span = tracer.start_span("chat", kind=SpanKind.CLIENT, attributes={"model": "m", "n": 7})
        span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
        span.end()
    flat = flatten(kept[0])
    del kept[:]
    gc.collect()
    assert [x for x in flat if gc.is_tracked(x)] == []


def test_encoder_handles_one_span_and_none() -> None:
    (span, *_) = sample_spans()
    assert trace_service_pb2.ExportTraceServiceRequest.FromString(
        encode_request([span])
    ) == encode_spans([span])
    assert encode_request([]) == b""
