"""Names in telemetry, over the real server and the emulator: the GenAI semantic conventions
on model calls (provider, operation, server address and port, on spans and on metrics), the
gateway's own metrics as Prometheus scrapes them, and the request's labels on the server
span only."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from longread.client import AsyncClient, Options
from longread_sandbox import Sandbox
from longread_server.api.rpc_record import MAX_LABEL_ATTRIBUTE_CHARS, MAX_LABEL_ATTRIBUTES
from longread_server.app import Gateway, start
from longread_server.config import TelemetryConfig
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes, server_attributes

from tests.conftest import gateway_config
from tests.unit.telemetry.support import FlushedMemory, setup_with_memory
from tests.waiting import until

ANALYZE = "longread.v1.AnalysisService/Analyze"


class Recorded:
    def __init__(self) -> None:
        self.spans = FlushedMemory()
        self.metrics = InMemoryMetricReader()

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        return [
            p
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for p in m.data.data_points
        ]

    def all_points(self) -> list[Any]:
        data = self.metrics.get_metrics_data()
        return [
            p
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for m in sm.metrics
            for p in m.data.data_points
        ]


@pytest.fixture(scope="module")
async def recorded(sandbox: Sandbox) -> AsyncIterator[tuple[Gateway, Recorded]]:
    r = Recorded()
    cfg = gateway_config(sandbox)
    # The emulator's "gemini" upstream, named as the operator would for Google's endpoint.
    (gemini,) = [up for up in cfg.upstreams if up.name == "gemini"]
    gemini.provider = gen_ai.GenAiProviderNameValues.GCP_GEMINI.value
    tel = setup_with_memory(cfg.telemetry, r.spans, metric_readers=[r.metrics])
    gw = await start(cfg, telemetry=tel)
    yield gw, r
    await gw.stop(0.5)


def _doc() -> str:
    return f"The tide turns at four. (call {time.monotonic_ns()})"  # never a cache hit


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini", "openai"),  # the openai upstream, at the emulator's address
        ("claude-haiku-4-5", "anthropic"),
        ("deepseek-chat", "openai"),  # OpenAI-compatible at an unknown host: the protocol's
        ("gemini-2.5-flash", "gcp.gemini"),  # the upstream's provider setting
    ],
)
async def test_model_calls_carry_the_genai_conventions(
    recorded: tuple[Gateway, Recorded], sandbox: Sandbox, model: str, provider: str
) -> None:
    gw, r = recorded
    r.spans.clear()
    async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
        await c.analyze(_doc(), "When?", options=Options(model=model))
    (span,) = [s for s in r.spans.get_finished_spans() if s.name.startswith("chat ")]
    peer = {
        gen_ai.GEN_AI_PROVIDER_NAME: provider,
        gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.CHAT.value,
        gen_ai.GEN_AI_REQUEST_MODEL: model,
        server_attributes.SERVER_ADDRESS: "127.0.0.1",
        server_attributes.SERVER_PORT: sandbox.port,
    }
    assert span.name == f"chat {model}"
    attrs = dict(span.attributes or {})
    assert {k: attrs.get(k) for k in peer} == peer
    assert attrs[gen_ai.GEN_AI_REQUEST_STREAM] is False
    # The same attributes on the call's metrics, with the token type on token usage.
    durations = [
        p
        for p in r.points(gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION)
        if dict(p.attributes) == peer
    ]
    assert len(durations) == 1 and durations[0].count >= 1
    usage = {
        dict(p.attributes).pop(gen_ai.GEN_AI_TOKEN_TYPE)
        for p in r.points(gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE)
        if {k: v for k, v in p.attributes.items() if k != gen_ai.GEN_AI_TOKEN_TYPE} == peer
    }
    assert usage == {"input", "output"}


async def test_a_streamed_call_has_its_first_chunk_on_its_span(
    recorded: tuple[Gateway, Recorded],
) -> None:
    gw, r = recorded
    r.spans.clear()
    model = "claude-sonnet-4-5"
    async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
        await c.analyze(_doc(), "When?", options=Options(model=model))  # not streamed
        async for _ in c.stream(_doc(), "When?", options=Options(model=model)):
            pass
    spans = r.spans.get_finished_spans()
    chats: list[dict[str, Any]] = [
        dict(s.attributes or {}) for s in spans if s.name.startswith("chat ")
    ]
    (streamed,) = [a for a in chats if a[gen_ai.GEN_AI_REQUEST_STREAM]]
    (whole,) = [a for a in chats if not a[gen_ai.GEN_AI_REQUEST_STREAM]]
    assert 0 < streamed[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] < 10
    assert gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in whole


async def test_a_failed_attempt_has_its_error_type_on_its_duration(
    recorded: tuple[Gateway, Recorded],
) -> None:
    gw, r = recorded
    doc = f"The pier was rebuilt in 1911. [[sandbox-fault:503*1]] {time.monotonic_ns()}"
    async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
        await c.analyze(doc, "When?", options=Options(model="gpt-4.1-mini"))
    failed = [
        dict(p.attributes)
        for p in r.points(gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION)
        if dict(p.attributes).get(gen_ai.GEN_AI_REQUEST_MODEL) == "gpt-4.1-mini"
    ]
    assert {a.get(error_attributes.ERROR_TYPE) for a in failed} == {None, "overloaded"}


async def test_labels_are_on_the_server_span_bounded_and_on_no_metric(
    recorded: tuple[Gateway, Recorded],
) -> None:
    gw, r = recorded
    r.spans.clear()
    labels = {f"k{i:02d}": f"v{i}" for i in range(MAX_LABEL_ATTRIBUTES + 8)}
    labels["k00"] = "x" * 1000  # within the request's bound, over the attribute's
    async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
        await c.analyze(_doc(), "When?", options=Options(labels=labels))
        async for _ in c.stream(_doc(), "When?", options=Options(labels={"team": "search"})):
            pass

    # A server span ends once its response is sent, which may be after the client has it (and
    # the previous test's after the clear above): wait for these calls' own spans.
    def ours() -> list[ReadableSpan]:
        spans = r.spans.get_finished_spans()
        return [
            s
            for s in spans
            if (s.name == ANALYZE and "longread.labels.dropped" in (s.attributes or {}))
            or (s.name.endswith("/Stream") and "longread.label.team" in (s.attributes or {}))
        ]

    await until(lambda: len(ours()) == 2)
    spans = r.spans.get_finished_spans()
    (analyze,) = [s for s in ours() if s.name == ANALYZE]
    attrs = dict(analyze.attributes or {})
    echoed = {k: v for k, v in attrs.items() if k.startswith("longread.label.")}
    kept = sorted(labels)[:MAX_LABEL_ATTRIBUTES]  # the first in key order
    assert echoed == {f"longread.label.{k}": labels[k][:MAX_LABEL_ATTRIBUTE_CHARS] for k in kept}
    assert attrs["longread.labels.dropped"] == 8
    (stream,) = [s for s in ours() if s.name.endswith("/Stream")]
    assert dict(stream.attributes or {})["longread.label.team"] == "search"
    # Only the server span: the job's spans do not repeat them.
    assert not [
        s for s in spans if s.kind.name != "SERVER" and "longread.label.team" in str(s.attributes)
    ]
    # And no metric: each caller-chosen value would be a time series of its own.
    keys = {k for p in r.all_points() for k in p.attributes}
    assert keys and not {k for k in keys if "label" in k}


async def test_prometheus_names_and_types(sandbox: Sandbox) -> None:
    cfg = gateway_config(sandbox)
    cfg.telemetry = TelemetryConfig(metrics=True, prometheus=True, prometheus_port=0)
    gw = await start(cfg)
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            await c.analyze(_doc(), "When does the tide turn?")
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"http://127.0.0.1:{gw.telemetry.prometheus_port}/metrics")
    finally:
        await gw.stop(0.5)
    body = resp.text
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
    assert types["longread_cost_usd_total"] == "counter"
    assert re.search(r"^longread_cost_usd_total\{.*\} [0-9.e-]+$", body, re.M)
    assert "longread_cost_USD" not in body
    # Totals that only grow are counters, so a rate can be taken of them.
    assert types["longread_cache_evictions_total"] == "counter"
    assert re.search(
        r'^longread_cache_evictions_total\{[^}]*store="memory"[^}]*\} 0\.0$', body, re.M
    )
    assert types["longread_cache_redis_errors_total"] == "counter"
    assert types["longread_cache_bytes"] == "gauge"
    assert types["gen_ai_client_operation_duration_seconds"] == "histogram"
    assert types["gen_ai_client_token_usage"] == "histogram"
