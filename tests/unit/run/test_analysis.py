"""Analysis: the request's own budget, the tenant's monthly one, the vendor's exact count (a
model call through the pipeline) and the run's upstream failures named by vendor and model."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from longread_server.calls import tasks
from longread_server.calls.budget import BudgetLedger, BudgetStage
from longread_server.calls.pipeline import Pipeline
from longread_server.domain import (
    CallRejected,
    ErrorKind,
    Message,
    ModelCallFailed,
    ModelInfo,
    Operation,
    OverRequestBudget,
    Usage,
)
from longread_server.plan.catalog import Catalog, price
from longread_server.plan.planner import JobSpec, PlanDefaults
from longread_server.run.analysis import Analysis, PreparedJob
from longread_server.run.events import JobResult, RunEvent
from longread_server.run.models import ModelResolver
from longread_server.run.planning import Planning
from longread_server.run.request import JobRequest
from longread_server.run.runner import JobRunner

from tests.unit.calls.support import Attempt, err
from tests.unit.run.support import CountingAdapter, Recorder, ScriptedAdapter, numbered_words

DOC = numbered_words(300)
CAP = 1.0
EXACT_CLAUDE = ModelInfo(
    vendor="anthropic",
    model="claude-exact",
    context_window=200_000,
    max_output_tokens=8000,
    input_per_mtok=1.0,
    output_per_mtok=5.0,
    cached_input_per_mtok=0.1,
    tokens_exact=True,
)


class Setup:
    def __init__(self) -> None:
        self.openai = ScriptedAdapter("openai")
        self.anthropic = CountingAdapter("anthropic", count=4321)
        self.recorder = Recorder()
        self.catalog = Catalog.builtin([EXACT_CLAUDE])
        self.ledger = BudgetLedger({"acme": CAP})
        pipeline = Pipeline(
            {"openai": self.openai, "anthropic": self.anthropic},
            [self.recorder, BudgetStage(self.ledger, self.catalog)],
        )
        models = ModelResolver(self.catalog, {"openai": (), "anthropic": ()}, "gpt-4.1-mini")
        self.analysis = Analysis(
            Planning(models, PlanDefaults(), 2_000_000),
            JobRunner(pipeline),
            self.ledger,
            {"openai": 4, "anthropic": 4},
        )

    async def estimate(self, req: JobRequest, tenant: str = "acme") -> Any:
        return await self.analysis.estimate(req, tenant, started=time.monotonic(), deadline=None)

    async def prepare(self, req: JobRequest, tenant: str = "acme") -> PreparedJob:
        return await self.analysis.prepare(req, tenant, started=time.monotonic(), deadline=None)

    async def run(self, prep: PreparedJob) -> list[RunEvent]:
        async with contextlib.aclosing(self.analysis.run(prep, streaming=True)) as evs:
            return [ev async for ev in evs]

    async def spent(self, tenant: str = "acme") -> float:
        return (await self.ledger.state(tenant)).spent_usd


def request(**kw: Any) -> JobRequest:
    max_cost = kw.pop("max_cost_usd", 0.0)
    return JobRequest(spec=JobSpec(text=DOC, instruction="Q?", max_cost_usd=max_cost), **kw)


# ---- the request's own budget ----


async def test_a_job_over_its_own_budget_is_refused_before_any_call() -> None:
    s = Setup()
    plan = (await s.estimate(request())).plan
    needed = plan.estimated_cost.total_usd
    with pytest.raises(OverRequestBudget) as info:
        await s.prepare(request(max_cost_usd=needed / 2))
    assert info.value.estimated_usd == pytest.approx(needed)
    assert info.value.max_usd == needed / 2
    prep = await s.prepare(request(max_cost_usd=needed * 2))
    assert prep.plan.within_budget
    assert s.recorder.calls == []


# ---- the tenant's monthly budget ----


async def test_a_job_the_tenant_cannot_afford_this_month_is_refused_before_any_call() -> None:
    s = Setup()
    await s.ledger.charge("acme", CAP - 1e-6)
    prep = await s.prepare(request())
    with pytest.raises(CallRejected) as info:
        await s.run(prep)
    e = info.value
    assert e.reason == "BUDGET_EXCEEDED" and e.quota_subject == "tenant:acme/monthly_budget_usd"
    assert float(e.metadata["spent_usd"]) == pytest.approx(CAP - 1e-6)
    assert s.openai.requests == []
    # An estimate spends nothing, so it is answered anyway.
    assert (await s.estimate(request())).plan is not None


@pytest.mark.parametrize(("spent", "warned"), [(0.0, False), (0.5, False), (0.8, True)])
async def test_a_job_taking_the_tenant_past_80_percent_is_warned_about(
    spent: float, warned: bool
) -> None:
    s = Setup()
    await s.ledger.charge("acme", spent * CAP)
    prep = await s.prepare(request())
    assert prep.plan.estimated_cost.total_usd < 0.1 * CAP  # the premise: a cheap job
    events = await s.run(prep)
    codes = [w.code for w in prep.warnings]
    assert codes == (["BUDGET_80_PERCENT"] if warned else [])
    result = events[-1]
    assert isinstance(result, JobResult)
    assert [w.code for w in result.warnings] == codes
    if warned:
        assert "'acme'" in prep.warnings[0].message and "80%" in prep.warnings[0].message


async def test_a_tenant_without_a_cap_is_never_refused_or_warned() -> None:
    s = Setup()
    await s.ledger.charge("globex", 1e9)
    prep = await s.prepare(request(), tenant="globex")
    await s.run(prep)
    assert prep.warnings == []


def call_usd(s: Setup, input_tokens: int, output_tokens: int = 0) -> float:
    model = s.catalog.get("openai", "gpt-4.1-mini")
    assert model is not None
    return price(model, Usage(input_tokens, output_tokens, calls=1)).total_usd


async def test_a_finished_job_is_settled_to_what_its_calls_cost() -> None:
    s = Setup()
    prep = await s.prepare(request())
    estimate = prep.plan.estimated_cost.total_usd
    assert estimate != pytest.approx(call_usd(s, 100, 20))  # the premise: they differ
    await s.run(prep)
    # answer()'s usage: 100 prompt tokens, 20 output tokens.
    assert await s.spent() == pytest.approx(call_usd(s, 100, 20))


async def test_a_job_the_vendor_refused_costs_nothing() -> None:
    s = Setup()
    s.openai.reply = lambda req: Attempt(error=err(ErrorKind.SERVER, status=500))
    prep = await s.prepare(request())
    with pytest.raises(ModelCallFailed):
        await s.run(prep)
    await tasks.drain()
    assert len(s.openai.requests) == 1
    assert await s.spent() == 0.0


async def test_concurrent_jobs_reserve_their_estimates_and_cancelled_ones_pay_their_prompts() -> (
    None
):
    """Three jobs, room for two estimates: the third is refused before any call, although no
    call has been charged yet; the two are cancelled while the vendor works on their prompts,
    and are charged those prompts, not their whole estimates."""
    s = Setup()
    s.openai.reply = lambda req: None  # the vendor never answers
    preps = [await s.prepare(request()) for _ in range(3)]
    estimate = preps[0].plan.estimated_cost.total_usd
    await s.ledger.charge("acme", CAP - 2.5 * estimate)
    runs = [asyncio.ensure_future(s.run(p)) for p in preps]
    for _ in range(50):  # loop turns for the jobs to plan, reserve and call
        await asyncio.sleep(0)
    assert len(s.openai.requests) == 2
    refused = [r for r in runs if r.done()]
    assert len(refused) == 1
    assert isinstance(refused[0].exception(), CallRejected)
    assert await s.spent() == pytest.approx(CAP - 0.5 * estimate)  # two reserved
    for r in runs:
        r.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    await tasks.drain()
    assert len(s.openai.requests) == 2
    prompt = s.openai.requests[0].estimated_prompt_tokens
    assert prompt > 0
    assert await s.spent() == pytest.approx(CAP - 2.5 * estimate + 2 * call_usd(s, prompt))


# ---- the exact count ----


async def test_the_exact_count_is_a_count_tokens_call_through_the_pipeline() -> None:
    s = Setup()
    req = request(vendor="anthropic", model="claude-haiku-4-5", exact_token_count=True)
    est = await s.estimate(req)
    (call,) = s.recorder.calls
    assert call.vendor == "anthropic" and call.ctx.tenant == "acme"
    assert call.req.operation is Operation.COUNT_TOKENS
    assert call.req.model == "claude-haiku-4-5" and call.req.messages == (Message("user", DOC),)
    assert s.anthropic.counted == [call.req]
    # Re-planned on the vendor's count: exact, and no warning that counts are estimates.
    assert est.plan.document_tokens == 4321 and est.plan.tokens_exact
    assert est.plan.token_error == 0.0
    assert "TOKENS_ESTIMATED" not in [w.code for w in est.warnings]


async def test_without_asking_the_estimate_makes_no_call_and_says_counts_are_estimates() -> None:
    s = Setup()
    est = await s.estimate(request(vendor="anthropic", model="claude-haiku-4-5"))
    assert s.recorder.calls == [] and not est.plan.tokens_exact
    assert [w.code for w in est.warnings] == ["TOKENS_ESTIMATED"]


@pytest.mark.parametrize(
    ("vendor", "name"),
    [("openai", "gpt-4.1-mini"), ("anthropic", "claude-exact")],
    ids=["no counting endpoint", "already exact"],
)
async def test_no_count_call_where_it_cannot_or_need_not_help(vendor: str, name: str) -> None:
    s = Setup()
    est = await s.estimate(request(vendor=vendor, model=name, exact_token_count=True))
    assert s.recorder.calls == []
    assert est.plan.model.model == name


async def test_a_failed_count_names_the_vendor_and_model() -> None:
    s = Setup()
    s.anthropic.count_error = err(ErrorKind.OVERLOADED, status=529)
    req = request(vendor="anthropic", model="claude-haiku-4-5", exact_token_count=True)
    with pytest.raises(ModelCallFailed) as info:
        await s.estimate(req)
    assert (info.value.vendor, info.value.model) == ("anthropic", "claude-haiku-4-5")
    assert info.value.error.kind is ErrorKind.OVERLOADED


# ---- the run ----


async def test_the_run_carries_the_requests_call_context_and_ends_with_the_result() -> None:
    s = Setup()
    req = request(cache_mode="no_store", cache_ttl_s=60.0, labels={"team": "docs"})
    prep = await s.prepare(req)
    async with contextlib.aclosing(s.analysis.run(prep, streaming=False)) as evs:
        events = [ev async for ev in evs]
    assert isinstance(events[-1], JobResult)
    (call,) = s.recorder.calls
    ctx = call.ctx
    assert (ctx.tenant, ctx.cache_mode, ctx.cache_ttl_s) == ("acme", "no_store", 60.0)
    assert dict(ctx.labels) == {"team": "docs"}
    assert not call.req.stream


async def test_an_upstream_failure_in_the_run_names_the_vendor_and_model() -> None:
    s = Setup()
    s.openai.reply = lambda req: Attempt(error=err(ErrorKind.RATE_LIMITED, status=429))
    prep = await s.prepare(request())
    with pytest.raises(ModelCallFailed) as info:
        async with contextlib.aclosing(s.analysis.run(prep, streaming=True)) as evs:
            async for _ in evs:
                pass
    assert (info.value.vendor, info.value.model) == ("openai", "gpt-4.1-mini")
    assert info.value.error.status == 429
