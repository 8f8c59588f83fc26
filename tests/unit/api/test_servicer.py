"""The AnalysisServicer in process, without a network: the real Analysis, planning and runner
over a Pipeline whose vendor adapter is scripted, and a fake servicer context."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import types_pb2 as pb
from longread_server.api.auth import Authenticator
from longread_server.api.rpcs import COALESCE_MAX_CHARS, AnalysisRpcs, _ahead, _Waiting
from longread_server.api.servicer import AnalysisServicer
from longread_server.app import build_analysis, build_catalog
from longread_server.calls.budget import BudgetLedger
from longread_server.calls.pipeline import Pipeline
from longread_server.config import Config, TenantConfig, UpstreamConfig
from longread_server.domain import ErrorKind, VendorKind
from longread_server.run.events import AnswerDelta, JobStage, JobWarning, RunEvent
from longread_server.run.runner import JobRunner

from tests.unit.api.support import FakeContext, decode
from tests.unit.calls.support import Attempt, err
from tests.unit.run.support import Recorder, ScriptedAdapter, answer

DOC = (
    "The lighthouse on Gull Rock was built in 1871 from granite quarried nearby. "
    "Its lamp was converted to electricity in 1926."
)
Q = "When was the lamp converted to electricity?"
KEY = "key-acme"
AUTH = [("authorization", f"Bearer {KEY}")]


class Service:
    """A servicer wired as the gateway wires it (``app.build_analysis``), upstream scripted."""

    def __init__(self, adapter: ScriptedAdapter | None = None, budget_usd: float = 0.0) -> None:
        self.adapter = adapter or ScriptedAdapter(
            "openai", reply=lambda req: answer("In ", "1926.", input_tokens=60, output_tokens=4)
        )
        self.recorder = Recorder()
        cfg = Config(
            upstreams=[UpstreamConfig("openai", VendorKind.OPENAI, "http://upstream.invalid")],
            tenants=[TenantConfig("acme", api_keys=[KEY], monthly_budget_usd=budget_usd)],
        )
        cfg.telemetry.access_log = False
        self.ledger = BudgetLedger({t.name: t.monthly_budget_usd for t in cfg.tenants})
        runner = JobRunner(Pipeline({"openai": self.adapter}, [self.recorder]))
        analysis = build_analysis(cfg, build_catalog(cfg), runner, self.ledger)
        self.servicer = AnalysisServicer(AnalysisRpcs(cfg, analysis, Authenticator(cfg.tenants)))

    async def stream(self, req: svc.StreamRequest, ctx: FakeContext) -> list[svc.StreamResponse]:
        gen = self.servicer.Stream(req, ctx)  # type: ignore[arg-type]
        async with contextlib.aclosing(gen):  # type: ignore[type-var]
            return [ev async for ev in gen]


def request(cls: type[Any] = svc.AnalyzeRequest, **fields: Any) -> Any:
    fields.setdefault("document", pb.Document(text=DOC))
    fields.setdefault("instruction", Q)
    return cls(**fields)


async def rpc(s: Service, method: str, req: Any, ctx: FakeContext) -> Any:
    if method == "Stream":
        return await s.stream(req, ctx)
    return await getattr(s.servicer, method)(req, ctx)


async def aborted(s: Service, method: str, req: Any, ctx: FakeContext) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AbortError):
        await rpc(s, method, req, ctx)
    assert ctx.status is not None
    return decode(ctx.status)


REQUESTS = {
    "Estimate": svc.EstimateRequest,
    "Analyze": svc.AnalyzeRequest,
    "Stream": svc.StreamRequest,
}


# ---- happy paths ----


async def test_estimate_plans_and_prices_without_a_model_call() -> None:
    s = Service()
    r = await s.servicer.Estimate(request(svc.EstimateRequest), FakeContext(AUTH))  # type: ignore[arg-type]
    assert r.plan.strategy == pb.STRATEGY_SINGLE_PASS and r.plan.document_tokens > 0
    assert r.plan.model.model == "gpt-4.1-mini"  # the configured default
    assert r.plan.estimated_cost.total_usd > 0
    assert r.candidates and {c.model.vendor for c in r.candidates} == {"openai"}
    # gpt-4.1-mini counts with o200k_base, offline and exactly: nothing to warn about.
    assert r.plan.tokens_exact and r.plan.token_error == 0.0
    assert [w.code for w in r.warnings] == []
    assert s.adapter.requests == []


async def test_analyze_answers_with_one_unstreamed_call_for_the_tenant() -> None:
    s = Service()
    ctx = FakeContext(AUTH, time_remaining=30.0)
    r = await s.servicer.Analyze(request(labels={"team": "docs"}), ctx)  # type: ignore[arg-type]
    assert ctx.status is None
    assert r.text == "In 1926." and r.finish_reason == "stop"
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.calls) == (60, 4, 1)
    assert r.cost.total_usd > 0 and r.cache_status == pb.CACHE_STATUS_MISS
    assert r.plan.strategy == pb.STRATEGY_SINGLE_PASS
    (call,) = s.recorder.calls
    assert call.ctx.tenant == "acme" and dict(call.ctx.labels) == {"team": "docs"}
    assert not call.req.stream and DOC in call.req.messages[0].content
    # The RPC's deadline bounds the upstream call.
    (timeout,) = s.adapter.timeouts
    assert timeout is not None and 0 < timeout <= 30.0


async def test_without_a_deadline_the_call_has_none() -> None:
    s = Service()
    await s.servicer.Analyze(request(), FakeContext(AUTH))  # type: ignore[arg-type]
    assert s.adapter.timeouts == [None]


async def test_stream_sends_the_plan_first_the_result_last_and_equals_analyze() -> None:
    s = Service()
    events = await s.stream(request(svc.StreamRequest), FakeContext(AUTH))
    kinds = [ev.WhichOneof("event") for ev in events]
    # The upstream's two deltas arrive at once: one message or two (a Stream that is behind
    # coalesces what waits), the same text either way.
    assert kinds[:2] == ["plan", "chunk_started"] and kinds[-2:] == ["chunk_done", "result"]
    assert set(kinds[2:-2]) == {"delta"}
    result = events[-1].result
    assert "".join(ev.delta.text for ev in events if ev.HasField("delta")) == result.text
    assert events[0].plan == result.plan
    assert s.recorder.calls[0].req.stream  # Stream asks the vendor for a stream

    analyzed = await s.servicer.Analyze(request(), FakeContext(AUTH))  # type: ignore[arg-type]
    for name in (
        "text",
        "plan",
        "chunk_results",
        "usage",
        "cost",
        "cache_status",
        "model",
        "warnings",
        "finish_reason",
    ):
        assert getattr(result, name) == getattr(analyzed, name), name


# ---- refusals ----


@pytest.mark.parametrize("method", list(REQUESTS))
@pytest.mark.parametrize(
    "metadata",
    [(), [("authorization", "Bearer wrong")], [("authorization", f"Basic {KEY}")]],
    ids=["no key", "unknown key", "not bearer"],
)
async def test_a_caller_without_a_valid_key_is_unauthenticated(
    method: str, metadata: list[tuple[str, str]]
) -> None:
    s = Service()
    ctx = FakeContext(metadata)
    details = await aborted(s, method, request(REQUESTS[method]), ctx)
    assert ctx.status is not None and ctx.status.code == grpc.StatusCode.UNAUTHENTICATED
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("UNAUTHENTICATED", "longread.dev")
    assert s.adapter.requests == []


@pytest.mark.parametrize("method", list(REQUESTS))
async def test_invalid_input_lists_every_bad_field(method: str) -> None:
    s = Service()
    req = request(
        REQUESTS[method],
        instruction=" ",
        generation=pb.GenerationOptions(temperature=9.0),
        budget=pb.Budget(max_cost_usd=-1),
    )
    ctx = FakeContext(AUTH)
    details = await aborted(s, method, req, ctx)
    assert ctx.status is not None and ctx.status.code == grpc.StatusCode.INVALID_ARGUMENT
    bad = details["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == [
        "instruction",
        "generation.temperature",
        "budget.max_cost_usd",
    ]
    assert details["ErrorInfo"].reason == "INVALID_FIELD"


async def test_an_unknown_model_is_invalid_argument_on_the_model_field() -> None:
    s = Service()
    ctx = FakeContext(AUTH)
    req = request(model=pb.ModelSelection(model="gpt-9"))
    details = await aborted(s, "Analyze", req, ctx)
    assert ctx.status is not None and ctx.status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details["ErrorInfo"].reason == "UNKNOWN_MODEL"
    fields = [v.field for v in details["BadRequest"].field_violations]
    assert fields == ["model.model"]


@pytest.mark.parametrize("method", ["Analyze", "Stream"])
async def test_a_request_over_its_own_budget_fails_its_precondition(method: str) -> None:
    s = Service()
    req = request(REQUESTS[method], budget=pb.Budget(max_cost_usd=1e-9))
    ctx = FakeContext(AUTH)
    details = await aborted(s, method, req, ctx)
    assert ctx.status is not None and ctx.status.code == grpc.StatusCode.FAILED_PRECONDITION
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "BUDGET_EXCEEDED"
    assert info.metadata["max_cost_usd"] == "0.000000"
    assert float(info.metadata["estimated_cost_usd"]) > 0
    assert s.adapter.requests == []  # refused before any call


async def test_a_tenant_over_its_monthly_budget_is_resource_exhausted() -> None:
    s = Service(budget_usd=1.0)
    await s.ledger.charge("acme", 1.0)
    ctx = FakeContext(AUTH)
    details = await aborted(s, "Analyze", request(), ctx)
    assert ctx.status is not None and ctx.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details["ErrorInfo"].reason == "BUDGET_EXCEEDED"
    quota = details["QuotaFailure"]
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == "tenant:acme/monthly_budget_usd"


# ---- failures while running ----


@pytest.mark.parametrize("method", ["Analyze", "Stream"])
@pytest.mark.parametrize(
    ("kind", "code", "reason", "retry"),
    [
        (ErrorKind.OVERLOADED, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", True),
        (ErrorKind.BAD_REQUEST, grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_REJECTED", False),
        (ErrorKind.AUTH, grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED", False),
    ],
)
async def test_an_upstream_failure_names_vendor_and_model(
    method: str, kind: ErrorKind, code: grpc.StatusCode, reason: str, retry: bool
) -> None:
    failing = ScriptedAdapter(
        "openai", reply=lambda req: Attempt(error=err(kind, status=503, request_id="req-7"))
    )
    s = Service(failing)
    ctx = FakeContext(AUTH)
    details = await aborted(s, method, request(REQUESTS[method]), ctx)
    assert ctx.status is not None and ctx.status.code == code
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == reason
    # A refused key names the upstream whose credentials to fix.
    named = {"upstream": "openai"} if kind is ErrorKind.AUTH else {}
    assert dict(info.metadata) == {
        "vendor": "openai",
        "model": "gpt-4.1-mini",
        "upstream_error": kind.value,
        "upstream_status": "503",
        "upstream_request_id": "req-7",
        **named,
    }
    assert ("RetryInfo" in details) == retry


async def test_a_stream_that_fails_after_the_plan_ends_with_the_status() -> None:
    failing = ScriptedAdapter("openai", reply=lambda req: Attempt(error=err(ErrorKind.SERVER)))
    s = Service(failing)
    ctx = FakeContext(AUTH)
    received: list[svc.StreamResponse] = []
    gen = s.servicer.Stream(request(svc.StreamRequest), ctx)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AbortError):
        async for ev in gen:
            received.append(ev)
    assert [ev.WhichOneof("event") for ev in received] == ["plan", "chunk_started"]
    assert ctx.status is not None and ctx.status.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("method", ["Analyze", "Stream"])
async def test_an_unexpected_exception_is_internal_and_tells_nothing(method: str) -> None:
    secret = "db-password=hunter2"
    broken = ScriptedAdapter("openai", reply=lambda req: Attempt(error=RuntimeError(secret)))
    s = Service(broken)
    ctx = FakeContext(AUTH)
    details = await aborted(s, method, request(REQUESTS[method]), ctx)
    assert ctx.status is not None and ctx.status.code == grpc.StatusCode.INTERNAL
    assert details["ErrorInfo"].reason == "INTERNAL"
    assert secret not in ctx.status.details
    for _, value in ctx.status.trailing_metadata:  # the details travel in the trailers
        raw = value if isinstance(value, bytes) else value.encode()
        assert secret.encode() not in raw
    assert "RuntimeError" in ctx.status.details  # the kind of failure, for the server log


# ---- cancellation ----


async def started_stream(s: Service, ctx: FakeContext) -> tuple[AsyncIterator[Any], list[Any]]:
    gen = s.servicer.Stream(request(svc.StreamRequest), ctx)  # type: ignore[arg-type]
    first = [await anext(gen), await anext(gen)]
    assert [ev.WhichOneof("event") for ev in first] == ["plan", "chunk_started"]
    await asyncio.sleep(0)  # the producer reaches the upstream call, which hangs
    assert s.adapter.in_flight == 1
    return gen, first


async def test_cancelling_a_stream_closes_its_job() -> None:
    s = Service(ScriptedAdapter("openai", reply=lambda req: None))
    ctx = FakeContext(AUTH)
    gen, _ = await started_stream(s, ctx)
    waiting = asyncio.ensure_future(anext(gen))
    await asyncio.sleep(0)
    waiting.cancel()  # as grpc cancels the RPC's task when the client cancels
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert s.adapter.in_flight == 0 and s.adapter.cancelled == 1
    assert ctx.status is None  # a cancelled RPC is not aborted with a status


async def test_closing_a_stream_closes_its_job_at_once() -> None:
    s = Service(ScriptedAdapter("openai", reply=lambda req: None))
    gen, _ = await started_stream(s, FakeContext(AUTH))
    await gen.aclose()  # type: ignore[attr-defined]
    assert s.adapter.in_flight == 0 and s.adapter.cancelled == 1


async def test_a_streams_job_starts_its_upstream_work_before_the_first_message_goes_out() -> None:
    """The plan is the first message, but work the job started meanwhile in a task of its own
    (single-flight's call) gets the loop before that message is handed to the transport."""
    order: list[str] = []

    async def upstream_call() -> None:
        order.append("upstream call")

    async def events() -> AsyncGenerator[RunEvent, None]:
        yield JobWarning("FIRST", "the plan, say")
        await asyncio.create_task(upstream_call())
        yield JobWarning("SECOND", "an answer delta, say")

    gen = _ahead(events(), COALESCE_AFTER)
    async with contextlib.aclosing(gen):
        first = await anext(gen)
        order.append("first message")
        assert isinstance(first, JobWarning) and first.code == "FIRST"
        assert [ev.code async for ev in gen if isinstance(ev, JobWarning)] == ["SECOND"]
    assert order == ["upstream call", "first message"]


COALESCE_AFTER = 0.005  # seconds


async def test_the_stream_s_waiting_events_come_out_in_order_and_a_cancelled_get_loses_none() -> (
    None
):
    waiting = _Waiting()
    getter = asyncio.create_task(waiting.get())
    await asyncio.sleep(0)
    assert not getter.done()  # nothing yet: the sender waits
    first = JobWarning("A", "a")
    waiting.put_nowait((first, 1.0))
    assert await getter == (first, 1.0)

    cancelled = asyncio.create_task(waiting.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    items = [(JobWarning(code, code), float(i)) for i, code in enumerate("BCD")]
    for item in items:
        waiting.put_nowait(item)  # (no waiter left behind by the cancelled get to wake)
    assert [await waiting.get() for _ in items] == items


async def test_a_stream_that_falls_behind_sends_its_waiting_deltas_as_one() -> None:
    """Deltas of one call that wait behind the one being sent go out as one message, in
    order; other events, and another call's deltas, are never merged into them."""
    produced: list[RunEvent] = [
        JobWarning("PLAN", "first"),
        *(AnswerDelta(JobStage.MAP, 0, f"a{i} ") for i in range(5)),
        AnswerDelta(JobStage.MAP, 1, "b0 "),
        AnswerDelta(JobStage.MAP, 1, "b1 "),
        JobWarning("MID", "between"),
        *(AnswerDelta(JobStage.REDUCE, 0, f"r{i} ") for i in range(3)),
    ]

    async def events() -> AsyncGenerator[RunEvent, None]:
        for ev in produced:
            yield ev  # all at once: the consumer below has fallen behind

    gen = _ahead(events(), COALESCE_AFTER)
    async with contextlib.aclosing(gen):
        first = await anext(gen)
        await asyncio.sleep(0.01)  # the producer runs to its end meanwhile
        sent = [first, *[ev async for ev in gen]]
    texts = [(ev.stage, ev.index, ev.text) for ev in sent if isinstance(ev, AnswerDelta)]
    assert texts == [
        (JobStage.MAP, 0, "a0 a1 a2 a3 a4 "),
        (JobStage.MAP, 1, "b0 b1 "),
        (JobStage.REDUCE, 0, "r0 r1 r2 "),
    ]
    kinds = [ev.code if isinstance(ev, JobWarning) else "delta" for ev in sent]
    assert kinds == ["PLAN", "delta", "delta", "MID", "delta"]


async def test_a_stream_that_keeps_up_sends_each_delta_as_it_comes() -> None:
    taken = asyncio.Event()

    async def events() -> AsyncGenerator[RunEvent, None]:
        for i in range(4):
            yield AnswerDelta(JobStage.SINGLE, 0, f"{i}")
            await taken.wait()  # the next delta only once this one was sent
            taken.clear()

    gen = _ahead(events(), COALESCE_AFTER)
    sent = []
    async with contextlib.aclosing(gen):
        async for ev in gen:
            assert isinstance(ev, AnswerDelta)
            await asyncio.sleep(2 * COALESCE_AFTER)  # a slow transport, but nothing waits
            sent.append(ev.text)
            taken.set()
    assert sent == ["0", "1", "2", "3"]


async def test_coalescing_off_sends_every_delta() -> None:
    async def events() -> AsyncGenerator[RunEvent, None]:
        for i in range(4):
            yield AnswerDelta(JobStage.SINGLE, 0, f"{i}")

    gen = _ahead(events(), 0.0)
    async with contextlib.aclosing(gen):
        first = await anext(gen)
        await asyncio.sleep(0.01)
        sent = [first, *[ev async for ev in gen]]
    assert [ev.text for ev in sent if isinstance(ev, AnswerDelta)] == ["0", "1", "2", "3"]


async def test_a_coalesced_delta_is_bounded() -> None:
    big = "x" * 10_000

    async def events() -> AsyncGenerator[RunEvent, None]:
        for _ in range(5):
            yield AnswerDelta(JobStage.SINGLE, 0, big)

    gen = _ahead(events(), COALESCE_AFTER)
    async with contextlib.aclosing(gen):
        first = await anext(gen)
        await asyncio.sleep(0.01)
        sent = [first, *[ev async for ev in gen]]
    sizes = [len(ev.text) for ev in sent if isinstance(ev, AnswerDelta)]
    assert sum(sizes) == 50_000
    assert max(sizes) <= COALESCE_MAX_CHARS + len(big)
    assert len(sizes) > 1
