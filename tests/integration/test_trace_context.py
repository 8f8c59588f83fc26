"""Trace context across the gateway, over the wire both ways: from a caller's gRPC metadata
into the server span, and from each model call's span into the request the vendor receives
(the emulator keeps the trace headers it was sent), with whichever propagators are
configured: W3C Trace Context and Baggage by default, B3 when asked for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from longread.client import AsyncClient, Options
from longread_sandbox import Sandbox
from longread_server.app import Gateway, start
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import gateway_config
from tests.unit.telemetry.support import FlushedMemory, setup_with_memory


@pytest.fixture(scope="module")
async def traced(sandbox: Sandbox) -> AsyncIterator[tuple[Gateway, InMemorySpanExporter]]:
    """Tracing on, and no client spans: the context the vendor sees is the gateway's own
    doing, not the httpx instrumentation's."""
    spans = FlushedMemory()
    cfg = gateway_config(sandbox)
    assert not cfg.telemetry.client_spans
    gw = await start(cfg, telemetry=setup_with_memory(cfg.telemetry, spans))
    yield gw, spans
    await gw.stop(0.5)


@pytest.fixture
def textmap(request: pytest.FixtureRequest) -> Iterator[TextMapPropagator]:
    """The global propagator (what OTEL_PROPAGATORS builds at import) set for one test."""
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(request.param)
    try:
        yield request.param
    finally:
        propagate.set_global_textmap(before)


def _caller() -> trace.Tracer:
    return TracerProvider().get_tracer("caller")


def _doc() -> str:
    return f"The tide turns at four. (call {time.monotonic_ns()})"  # never a cache hit


def _only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


async def _analyze_as_caller(gw: Gateway, **baggage_items: str) -> trace.SpanContext:
    """An Analyze sent from inside a caller's span (with ``baggage_items``)."""
    ctx = context.get_current()
    for key, value in baggage_items.items():
        ctx = baggage.set_baggage(key, value, ctx)
    token = context.attach(ctx)
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            with _caller().start_as_current_span("caller work") as span:
                await c.analyze(_doc(), "When?", options=Options(model="gpt-4o-mini"))
                return span.get_span_context()
    finally:
        context.detach(token)


async def test_the_vendor_receives_the_model_calls_trace_context_and_the_callers_baggage(
    traced: tuple[Gateway, InMemorySpanExporter], sandbox: Sandbox
) -> None:
    gw, spans = traced
    spans.clear()
    sandbox.trace_headers.clear()
    caller = await _analyze_as_caller(gw, experiment="e42")
    chat = _only(list(spans.get_finished_spans()), "chat gpt-4o-mini")
    (sent,) = sandbox.trace_headers
    # The vendor's parent is the attempt's client span, in the caller's trace.
    assert chat.context.trace_id == caller.trace_id
    assert sent["traceparent"] == f"00-{chat.context.trace_id:032x}-{chat.context.span_id:016x}-01"
    assert sent["baggage"] == "experiment=e42"
    assert not {"b3", "x-b3-traceid"} & set(sent)


async def test_a_trace_the_sampler_left_out_goes_upstream_as_not_sampled(
    sandbox: Sandbox,
) -> None:
    cfg = gateway_config(sandbox)
    cfg.telemetry.sampling_ratio = 0.0
    spans = FlushedMemory()
    gw = await start(cfg, telemetry=setup_with_memory(cfg.telemetry, spans))
    sandbox.trace_headers.clear()
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            await c.analyze(_doc(), "When?")
    finally:
        await gw.stop(0.5)
    assert not spans.get_finished_spans()
    (sent,) = sandbox.trace_headers
    version, trace_id, span_id, flags = sent["traceparent"].split("-")
    # So that the vendor, if it traces, leaves it out too.
    assert (version, flags) == ("00", "00") and int(trace_id, 16) and int(span_id, 16)


async def test_with_tracing_off_nothing_goes_upstream(gateway: Gateway, sandbox: Sandbox) -> None:
    assert not gateway.telemetry.tracing
    sandbox.trace_headers.clear()
    await _analyze_as_caller(gateway, experiment="e42")  # the caller does trace
    assert list(sandbox.trace_headers) == [{}]


@pytest.mark.parametrize(
    "textmap",
    [B3MultiFormat(), B3SingleFormat()],
    ids=["b3multi", "b3"],
    indirect=True,
)
async def test_b3_context_from_the_caller_to_the_vendor(
    traced: tuple[Gateway, InMemorySpanExporter], sandbox: Sandbox, textmap: TextMapPropagator
) -> None:
    """OTEL_PROPAGATORS=b3 (or b3multi): the caller's client writes B3 metadata, the server
    span continues it (no traceparent is sent), and the vendor gets B3 headers."""
    gw, spans = traced
    spans.clear()
    sandbox.trace_headers.clear()
    caller = await _analyze_as_caller(gw)
    finished = list(spans.get_finished_spans())
    server = _only(finished, "longread.v1.AnalysisService/Analyze")
    chat = _only(finished, "chat gpt-4o-mini")
    assert server.context.trace_id == caller.trace_id
    assert server.parent is not None and server.parent.span_id == caller.span_id
    (sent,) = sandbox.trace_headers
    trace_id, span_id = f"{chat.context.trace_id:032x}", f"{chat.context.span_id:016x}"
    if isinstance(textmap, B3SingleFormat):
        assert sent == {"b3": f"{trace_id}-{span_id}-1"}
    else:
        assert sent == {"x-b3-traceid": trace_id, "x-b3-spanid": span_id, "x-b3-sampled": "1"}


async def test_baggage_alone_is_taken_from_the_caller(
    traced: tuple[Gateway, InMemorySpanExporter], sandbox: Sandbox
) -> None:
    """A caller that sends baggage and no trace: the server starts a trace of its own and
    still carries the baggage on to the vendor (any field of the propagators counts)."""
    gw, spans = traced
    spans.clear()
    sandbox.trace_headers.clear()
    token = context.attach(baggage.set_baggage("team", "search"))
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            await c.analyze(_doc(), "When?")  # no current span: only baggage is sent
    finally:
        context.detach(token)
    server = _only(list(spans.get_finished_spans()), "longread.v1.AnalysisService/Analyze")
    assert server.parent is None
    (sent,) = sandbox.trace_headers
    assert sent["baggage"] == "team=search"
    assert sent["traceparent"].split("-")[1] == f"{server.context.trace_id:032x}"


@pytest.mark.parametrize(
    ("names", "fields"),
    [
        ("b3multi", {"x-b3-traceid", "x-b3-spanid", "x-b3-sampled"}),
        ("b3", {"b3"}),
        ("tracecontext,baggage", {"traceparent", "tracestate", "baggage"}),
    ],
)
def test_otel_propagators_decides_what_the_server_reads(names: str, fields: set[str]) -> None:
    """The variable as an operator sets it, read at import in a fresh process: the B3
    propagators are installed with the gateway, and their fields are what it extracts."""
    code = (
        "from longread_server.api.rpc_record import _trace_fields;"
        "print(','.join(sorted(_trace_fields())))"
    )
    env = {**os.environ, "OTEL_PROPAGATORS": names}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert set(out.stdout.strip().split(",")) == fields
