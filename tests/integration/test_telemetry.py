"""Traces, metrics and logs of real RPCs: the span tree of a chunked Analyze, trace context
from the caller, OTLP export over the wire, a Prometheus scrape, and redaction."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent import futures
from typing import Any

import grpc
import httpx
import pytest
from longread.client import AsyncClient, Options
from longread.v1 import types_pb2 as pb
from longread_sandbox import Sandbox
from longread_sandbox.sample import DEMO_QUESTION, generate_report
from longread_server.app import Gateway, start
from longread_server.config import ConfigError, TelemetryConfig, TenantConfig
from longread_server.telemetry import JsonFormatter, setup
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import gateway_config
from tests.metric_points import data_points
from tests.unit.telemetry.support import FlushedMemory, setup_with_memory

SECRET_TEXT = "ZEBRA-MARKER-7781 is the codeword of the night shift."
SECRET_KEY = "sk-MARKER-KEY-0042"


class Traced:
    def __init__(self) -> None:
        self.spans = FlushedMemory()
        self.metrics = InMemoryMetricReader()


@pytest.fixture(scope="module")
async def traced(sandbox: Sandbox) -> AsyncIterator[tuple[Gateway, Traced]]:
    t = Traced()
    tenants = [TenantConfig(name="acme", api_keys=[SECRET_KEY])]
    cfg = gateway_config(sandbox, tenants=tenants)
    cfg.telemetry.client_spans = True  # httpx spans under each model call
    tel = setup_with_memory(cfg.telemetry, t.spans, metric_readers=[t.metrics])
    gw = await start(cfg, telemetry=tel)
    yield gw, t
    await gw.stop(0.5)


def by_id(spans: Sequence[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans}


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_span_tree_of_a_chunked_analyze(
    traced: tuple[Gateway, Traced], sandbox: Sandbox
) -> None:
    gw, t = traced
    t.spans.clear()
    sandbox.trace_headers.clear()
    doc = generate_report(60_000)
    opts = Options(model="gpt-4o-mini", strategy="map_reduce", max_chunk_tokens=4000)
    async with AsyncClient(f"127.0.0.1:{gw.port}", api_key=SECRET_KEY) as c:
        r = await c.analyze(doc, DEMO_QUESTION, options=opts)
    spans = t.spans.get_finished_spans()
    (root,) = [s for s in spans if s.name == "longread.v1.AnalysisService/Analyze"]
    assert root.kind == trace.SpanKind.SERVER and root.parent is None
    assert dict(root.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "longread.v1.AnalysisService",
        "rpc.method": "Analyze",
        "rpc.grpc.status_code": 0,
        "longread.tenant": "acme",
    }
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    top = {s.name for s in children(spans, root)}
    assert top == {"plan", "analyze map_reduce"}
    (plan,) = [s for s in spans if s.name == "plan"]
    # What planning decided on the plan span, what the run did on the strategy span; who
    # asked is on the root span (and each model call): no span repeats another's.
    assert dict(plan.attributes or {}) == {
        "longread.strategy": "map_reduce",
        "longread.document_tokens": r.plan.document_tokens,
        "longread.chunks": len(r.plan.chunks),
        "gen_ai.request.model": "gpt-4o-mini",
    }
    (job,) = [s for s in spans if s.name == "analyze map_reduce"]
    assert dict(job.attributes or {}) == {
        "longread.calls": r.usage.calls,
        "longread.cost_usd": pytest.approx(r.cost.total_usd),
        "longread.cache.status": "miss",
    }
    steps = children(spans, job)
    assert sorted(s.name for s in steps) == sorted(
        [f"map {i}" for i in range(r.plan.map_calls)] + ["reduce 0"]
    )
    chats = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(chats) == r.usage.calls
    for chat in chats:
        assert chat.kind == trace.SpanKind.CLIENT
        assert by_id(spans)[chat.parent.span_id].name in {s.name for s in steps}  # type: ignore[union-attr]
        a: dict[str, Any] = dict(chat.attributes or {})
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "gpt-4o-mini"
        assert (a["server.address"], a["server.port"]) == ("127.0.0.1", sandbox.port)
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["longread.tenant"] == "acme" and a["longread.attempt"] == 0
        assert a["gen_ai.response.finish_reasons"] == ("stop",)
        http_spans = children(spans, chat)
        assert [s.name for s in http_spans] == ["POST"]  # httpx instrumentation below
    # With client spans, the vendor's parent is the httpx span: its instrumentation writes
    # the request's trace context over the one the gateway wrote for the model call.
    posts = {f"{s.context.span_id:016x}" for s in spans if s.name == "POST"}
    sent = [h["traceparent"].split("-")[2] for h in sandbox.trace_headers]
    assert len(sent) == len(posts) == r.usage.calls and set(sent) == posts
    tokens: list[Any] = [(s.attributes or {})["gen_ai.usage.input_tokens"] for s in chats]
    assert sum(tokens) == r.usage.input_tokens


async def test_caller_trace_continues_into_the_server(traced: tuple[Gateway, Traced]) -> None:
    gw, t = traced
    t.spans.clear()
    provider = TracerProvider()
    mine = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(mine))
    tracer = provider.get_tracer("caller")
    async with AsyncClient(f"127.0.0.1:{gw.port}", api_key=SECRET_KEY) as c:
        with tracer.start_as_current_span("caller work") as span:
            await c.estimate("A short note.", "What is it?")
            caller = span.get_span_context()
    (server,) = [s for s in t.spans.get_finished_spans() if s.name.endswith("/Estimate")]
    assert server.context.trace_id == caller.trace_id
    assert server.parent is not None and server.parent.span_id == caller.span_id


async def test_metrics_recorded(traced: tuple[Gateway, Traced]) -> None:
    gw, t = traced
    async with AsyncClient(f"127.0.0.1:{gw.port}", api_key=SECRET_KEY) as c:
        await c.analyze("The tide turns at four.", "When does the tide turn?")
    data = t.metrics.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "longread.rpc.duration",
        "longread.cost.usd",
    } <= names


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_otlp_export_to_a_real_receiver(sandbox: Sandbox) -> None:
    collector = _Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        collector, receiver
    )
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    try:
        cfg = gateway_config(sandbox)
        cfg.telemetry = TelemetryConfig(traces=True, otlp_endpoint=f"http://127.0.0.1:{port}")
        gw = await start(cfg)
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            await c.analyze("The tide turns at four.", "When does the tide turn?")
        await gw.stop(0.5)  # flushes the batch processor
        names = {
            span.name
            for req in collector.requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        }
        assert "longread.v1.AnalysisService/Analyze" in names
        assert "chat gpt-4.1-mini" in names
    finally:
        receiver.stop(0)


async def test_prometheus_scrape(sandbox: Sandbox) -> None:
    cfg = gateway_config(sandbox)
    cfg.telemetry = TelemetryConfig(metrics=True, prometheus=True, prometheus_port=0)
    gw = await start(cfg)
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            await c.analyze("The tide turns at four.", "When does the tide turn?")
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"http://127.0.0.1:{gw.telemetry.prometheus_port}/metrics")
        assert resp.status_code == 200
        body = resp.text
        assert "gen_ai_client_token_usage" in body
        assert 'rpc_method="Analyze"' in body and "longread_rpc_duration" in body
    finally:
        await gw.stop(0.5)


async def test_content_and_keys_are_never_recorded(
    traced: tuple[Gateway, Traced], caplog: pytest.LogCaptureFixture
) -> None:
    gw, t = traced
    t.spans.clear()
    handler_records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(JsonFormatter().format(record))

    capture = Capture()
    caplog.set_level(logging.INFO)
    logging.getLogger().addHandler(capture)
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}", api_key=SECRET_KEY) as c:
            r = await c.analyze(SECRET_TEXT * 3, "What is the codeword?")
            async for _ in c.stream(SECRET_TEXT, "What is the codeword?"):
                pass
            with pytest.raises(grpc.aio.AioRpcError):
                await c.analyze(SECRET_TEXT, "What?", options=Options(temperature=5))
        assert "ZEBRA-MARKER-7781" in r.text  # the answer does carry it, to the caller
    finally:
        logging.getLogger().removeHandler(capture)
    spans = t.spans.get_finished_spans()
    dumped = [s.to_json() for s in spans]
    metrics = t.metrics.get_metrics_data()
    dumped.append(metrics.to_json() if metrics is not None else "")
    dumped.extend(handler_records)
    access = [json.loads(x) for x in handler_records if '"rpc"' in x]
    assert {a["rpc"] for a in access} >= {"Analyze", "Stream"}
    assert any(a["code"] == "INVALID_ARGUMENT" for a in access)
    # Each access line carries the trace and span of its RPC's server span.
    servers = {
        (format(s.context.trace_id, "032x"), format(s.context.span_id, "016x"))
        for s in spans
        if s.kind == trace.SpanKind.SERVER
    }
    assert {(a["trace_id"], a["span_id"]) for a in access} == servers
    for text in dumped:
        assert "ZEBRA-MARKER" not in text
        assert "MARKER-KEY" not in text


async def test_spans_of_a_retry_then_a_cache_hit(traced: tuple[Gateway, Traced]) -> None:
    gw, t = traced
    t.spans.clear()
    doc = f"The pier was rebuilt in 1911. [[sandbox-fault:503*1]] {time.monotonic_ns()}"
    async with AsyncClient(f"127.0.0.1:{gw.port}", api_key=SECRET_KEY) as c:
        first = await c.analyze(doc, "When was the pier rebuilt?")
        assert "1911" in first.text and first.usage.calls == 1
        chats = [s for s in t.spans.get_finished_spans() if s.name.startswith("chat ")]
        attrs: list[dict[str, Any]] = [dict(s.attributes or {}) for s in chats]
        attempts = sorted(attrs, key=lambda a: int(a["longread.attempt"]))
        assert [a["longread.attempt"] for a in attempts] == [0, 1]
        assert attempts[0]["error.type"] == "overloaded"
        assert attempts[0]["http.response.status_code"] == 503
        assert "error.type" not in attempts[1]
        t.spans.clear()
        second = await c.analyze(doc, "When was the pier rebuilt?")
    assert second.text == first.text and second.cache_status == pb.CACHE_STATUS_HIT
    spans = t.spans.get_finished_spans()
    assert not [s for s in spans if s.name.startswith("chat ")]  # no upstream attempt
    (lookup,) = [s for s in spans if s.name == "cache lookup"]
    assert dict(lookup.attributes or {})["longread.cache.hit"] is True
    # A single-pass job has no step span: the lookup is a child of the strategy span.
    (job,) = [s for s in spans if s.name == "analyze single_pass"]
    assert dict(job.attributes or {})["longread.cache.status"] == "hit"
    assert lookup.parent is not None and lookup.parent.span_id == job.context.span_id
    assert not [s for s in spans if s.name == "single 0"]


async def test_server_spans_of_a_stream_and_a_rejected_request(
    traced: tuple[Gateway, Traced],
) -> None:
    gw, t = traced
    t.spans.clear()
    async with AsyncClient(f"127.0.0.1:{gw.port}", api_key=SECRET_KEY) as c:
        async for _ in c.stream("The tide turns at four.", "When?"):
            pass
        with pytest.raises(grpc.aio.AioRpcError):
            await c.analyze("The tide turns at four.", "When?", options=Options(temperature=5))
    spans = t.spans.get_finished_spans()
    (stream,) = [s for s in spans if s.name == "longread.v1.AnalysisService/Stream"]
    (bad,) = [s for s in spans if s.name == "longread.v1.AnalysisService/Analyze"]
    assert stream.kind == trace.SpanKind.SERVER
    assert dict(stream.attributes or {})["rpc.grpc.status_code"] == 0
    assert {s.name for s in children(spans, stream)} == {"plan", "analyze single_pass"}
    a = dict(bad.attributes or {})
    assert a["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert a["error.type"] == "INVALID_FIELD"  # the ErrorInfo reason
    # A caller's mistake is not a server error (RPC semantic conventions).
    assert bad.status.status_code == trace.StatusCode.UNSET


async def test_time_to_first_token_is_a_stream_metric(sandbox: Sandbox) -> None:
    reader = InMemoryMetricReader()
    cfg = gateway_config(sandbox)
    gw = await start(cfg, telemetry=setup(cfg.telemetry, metric_readers=[reader]))

    def ttft_points() -> int:
        return sum(int(p.count) for p in data_points(reader, "longread.time_to_first_token"))

    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            await c.analyze("The tide turns at four.", "When does the tide turn?")
            assert ttft_points() == 0  # Analyze's first token is its whole answer
            async for _ in c.stream("The tide turns at four.", "When does the tide turn?"):
                pass
        assert ttft_points() == 1
    finally:
        await gw.stop(0.5)


async def test_a_stream_cancelled_by_its_client_ends_its_spans_quietly(
    traced: tuple[Gateway, Traced], caplog: pytest.LogCaptureFixture
) -> None:
    """The client goes away after the first token: the server span ends CANCELLED, the job's
    spans end too, and nothing is logged about contexts that could not be detached."""
    gw, t = traced
    t.spans.clear()
    caplog.set_level(logging.WARNING)
    # The upstream streams a few deltas, then goes silent: the cancel lands mid-stream.
    doc = f"The tide turns at four. {time.monotonic_ns()} [[sandbox-fault:stall]]"
    opts = Options(model="gpt-4.1-mini")
    async with AsyncClient(f"127.0.0.1:{gw.port}", api_key=SECRET_KEY) as c:
        stream = c.stream(doc, "When does the tide turn?", options=opts)
        async for ev in stream:
            if ev.WhichOneof("event") == "delta":
                break
        await stream.aclose()  # cancels the call
    deadline = time.monotonic() + 5
    names: set[str] = set()
    while time.monotonic() < deadline:
        names = {s.name for s in t.spans.get_finished_spans()}
        if "longread.v1.AnalysisService/Stream" in names and "analyze single_pass" in names:
            break
        await asyncio.sleep(0.02)
    (server,) = [s for s in t.spans.get_finished_spans() if s.name.endswith("/Stream")]
    assert dict(server.attributes or {})["rpc.grpc.status_code"] == 1  # CANCELLED
    assert "analyze single_pass" in names
    assert not [r for r in caplog.records if "detach" in r.getMessage()]


async def test_server_spans_from_the_grpc_instrumentation_when_asked(sandbox: Sandbox) -> None:
    """``grpc_instrumentation = true``: the OpenTelemetry gRPC aio interceptor makes the
    server span (on our tracer provider), continues the caller's trace, and the job's spans
    sit under it."""
    memory = InMemorySpanExporter()
    cfg = gateway_config(sandbox)
    cfg.telemetry.grpc_instrumentation = True
    gw = await start(cfg, telemetry=setup(cfg.telemetry, span_exporters=[memory]))
    provider = TracerProvider()
    tracer = provider.get_tracer("caller")
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            with tracer.start_as_current_span("caller work") as span:
                opts = Options(labels={"team": "search"})
                await c.analyze("The tide turns at four.", "When?", options=opts)
                caller = span.get_span_context()
    finally:
        await gw.stop(0.5)
    spans = memory.get_finished_spans()
    (server,) = [s for s in spans if s.kind == trace.SpanKind.SERVER]
    assert server.name == "/longread.v1.AnalysisService/Analyze"  # the interceptor's name
    assert dict(server.attributes or {})["longread.label.team"] == "search"
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "opentelemetry.instrumentation.grpc"
    assert server.context.trace_id == caller.trace_id
    assert server.parent is not None and server.parent.span_id == caller.span_id
    assert {s.name for s in children(spans, server)} == {"plan", "analyze single_pass"}


async def test_the_exact_count_is_traced_as_a_model_call(traced: tuple[Gateway, Traced]) -> None:
    from longread.client import build_request
    from longread.v1 import analysis_service_pb2 as svc

    gw, t = traced
    t.spans.clear()
    req = build_request(
        svc.EstimateRequest,
        generate_report(6_000) + f"(traced count {time.monotonic_ns()})",
        DEMO_QUESTION,
        Options(model="claude-haiku-4-5"),
    )
    req.exact_token_count = True
    async with AsyncClient(f"127.0.0.1:{gw.port}", api_key=SECRET_KEY) as c:
        est = await c.estimate(request=req)
    (count,) = [s for s in t.spans.get_finished_spans() if s.name.startswith("count_tokens ")]
    attrs = dict(count.attributes or {})
    assert count.name == "count_tokens claude-haiku-4-5" and count.kind == trace.SpanKind.CLIENT
    assert attrs["gen_ai.operation.name"] == "count_tokens"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.usage.input_tokens"] == est.plan.document_tokens


class SlowExporter(InMemorySpanExporter):
    """An exporter that takes 50 ms a call, remembering the threads it was called on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.threads.add(threading.get_ident())
        time.sleep(0.05)
        return super().export(spans)


SLOW = SlowExporter()


def slow_processor() -> SimpleSpanProcessor:
    """``telemetry.span_processors`` names this function (a factory of a processor)."""
    return SimpleSpanProcessor(SLOW)


async def test_span_processors_from_the_settings_run_off_the_event_loop(sandbox: Sandbox) -> None:
    """A processor named in ``telemetry.span_processors`` gets every span of an RPC as an SDK
    ReadableSpan; its exporter (synchronous, slow) never runs on the event loop's thread."""
    cfg = gateway_config(sandbox)
    cfg.telemetry.span_processors = [f"{__name__}:slow_processor"]
    gw = await start(cfg)
    try:
        assert gw.telemetry.tracing  # a processor alone turns tracing on
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            await c.analyze("The tide turns at four.", "When does the tide turn?")
        loop_thread = threading.get_ident()
    finally:
        await gw.stop(0.5)  # flushes the processors
    names = {s.name for s in SLOW.get_finished_spans()}
    assert "longread.v1.AnalysisService/Analyze" in names
    assert any(n.startswith("chat ") for n in names)
    assert SLOW.threads and loop_thread not in SLOW.threads


async def test_a_span_processor_that_is_not_one_stops_the_start(sandbox: Sandbox) -> None:
    cfg = gateway_config(sandbox)
    cfg.telemetry.span_processors = ["json:dumps"]
    with pytest.raises(ConfigError, match=r"telemetry\.span_processors"):
        await start(cfg)
