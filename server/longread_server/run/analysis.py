"""The service behind the RPCs, in domain terms: estimate a request, or prepare and run it.

``api/`` authenticates and converts; everything a request needs between the two happens here:
the plan (``planning.py``), the request's own budget and the tenant's monthly one, the
vendor's exact count when asked for, and the job's run (``runner.py``). Estimate, Analyze
and Stream share ``prepare``; Analyze collects the events Stream forwards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field

from longread_server.calls.budget import BudgetLedger, Reservation
from longread_server.calls.pipeline import CallContext
from longread_server.calls.tasks import detach
from longread_server.domain import (
    FieldViolation,
    InvalidRequest,
    LlmRequest,
    Message,
    ModelCallFailed,
    Operation,
    OverRequestBudget,
    TokenCount,
    UpstreamError,
)
from longread_server.plan.planner import JobPlan, ModelFit
from longread_server.run.events import (
    JobResult,
    JobWarning,
    RunEvent,
    history_trimmed,
    tokens_estimated,
)
from longread_server.run.planning import Planning
from longread_server.run.request import JobRequest
from longread_server.run.runner import Job, JobRunner
from longread_server.run.semantic import Lookup, SemanticReuse, hit_events
from longread_server.telemetry import Telemetry, current_span, disabled


@dataclass(slots=True)
class PreparedJob:
    """A request planned and admitted, ready to run."""

    request: JobRequest
    tenant: str
    plan: JobPlan
    fits: list[ModelFit]
    deadline: float | None  # time.monotonic() seconds
    started: float
    planning_s: float
    warnings: list[JobWarning] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Estimate:
    plan: JobPlan
    fits: list[ModelFit]
    warnings: list[JobWarning]


class Analysis:
    def __init__(
        self,
        planning: Planning,
        runner: JobRunner,
        ledger: BudgetLedger,
        concurrency: Mapping[str, int],
        telemetry: Telemetry | None = None,
        semantic: SemanticReuse | None = None,
    ) -> None:
        """``concurrency``: upstream name -> its configured map fan-out; ``semantic``: reuse
        by the question's meaning, for the jobs that ask for it."""
        self.planning = planning
        self.semantic = semantic
        self._runner = runner
        self._ledger = ledger
        self._concurrency = dict(concurrency)
        self._tel = telemetry or disabled()

    async def estimate(
        self, request: JobRequest, tenant: str, *, started: float, deadline: float | None
    ) -> Estimate:
        """The plan, every served model's fit and what to know about the counts; no model
        call, unless the request asks for the vendor's exact count."""
        prep = await self.prepare(request, tenant, started=started, deadline=deadline, run=False)
        if request.exact_token_count and not prep.plan.tokens_exact:
            await self._count_exactly(prep)
        warnings = [
            w
            for w in (
                history_trimmed(prep.plan, len(request.spec.history)),
                tokens_estimated(prep.plan),
            )
            if w is not None
        ]
        return Estimate(prep.plan, prep.fits, warnings)

    async def prepare(
        self,
        request: JobRequest,
        tenant: str,
        *,
        started: float,
        deadline: float | None,
        run: bool = True,
    ) -> PreparedJob:
        """Plans ``request``; for a run (``run``), also admits it against the request's own
        budget (the tenant's monthly one is reserved when the job runs)."""
        with current_span(self._tel.tracer.start_span("plan"), current=False) as span:
            plan, fits = await self.planning.plan(request, with_fits=not run)
            if span.is_recording():
                span.set_attributes(
                    {
                        "longread.strategy": plan.strategy.value,
                        "longread.document_tokens": plan.document_tokens,
                        "longread.chunks": len(plan.chunks),
                        "gen_ai.request.model": plan.model.model,
                    }
                )
        self._check_sampling(request, plan.model.vendor)
        if run and not plan.within_budget:
            raise OverRequestBudget(plan.estimated_cost.total_usd, request.spec.max_cost_usd)
        return PreparedJob(
            request=request,
            tenant=tenant,
            plan=plan,
            fits=fits,
            deadline=deadline,
            started=started,
            planning_s=time.monotonic() - started,
        )

    def _check_sampling(self, request: JobRequest, vendor: str) -> None:
        """Ranges that depend on the vendor (the request's own were checked on arrival)."""
        temperature = request.sampling.temperature
        if temperature is None:
            return
        limit = self._runner.pipeline.adapter(vendor).max_temperature
        if temperature > limit:
            raise InvalidRequest(
                [
                    FieldViolation(
                        "generation.temperature",
                        f"must be in [0, {limit:g}] for {vendor}, got {temperature:g}",
                    )
                ]
            )

    async def run(self, prep: PreparedJob, *, streaming: bool) -> AsyncGenerator[RunEvent, None]:
        """The job's events: the plan first, the result last. The job's estimate is reserved
        of the tenant's budget before its first call (refused: BUDGET_EXCEEDED, nothing
        called) and settled to what its calls cost when it ends, however it ends. With
        semantic reuse, an answer to a question that means the same is replayed first, and
        the job's own answer is stored when it ends with one."""
        reuse = self.semantic
        ask = await reuse.ask(prep) if reuse is not None else None
        looked = await reuse.lookup(ask, prep) if reuse and ask else Lookup(None)
        if looked.answer is not None and looked.match is not None:
            hit = hit_events(prep, looked.answer, looked.match, streaming=streaming)
            async with contextlib.aclosing(hit) as events:
                async for ev in events:
                    yield ev
            return
        spend = await self._reserve(prep)
        job = self._job(prep, streaming, spend)
        ended = False
        try:
            async with contextlib.aclosing(self._runner.run(job)) as evs:
                async for ev in evs:
                    if isinstance(ev, JobResult) and reuse and ask and looked.vector is not None:
                        # Stored before the caller has the answer: whoever asks next finds it.
                        ttl = prep.request.cache_ttl_s or 0.0
                        await reuse.remember(ask, looked.vector, ev, ttl)
                    yield ev
            ended = True
        except UpstreamError as e:
            raise ModelCallFailed(e, prep.plan.model.vendor, prep.plan.model.model) from e
        finally:
            if spend is not None:
                if ended:
                    await spend.settle()
                else:
                    # Cancelled, cut by the drain or failed: settling must not wait on Redis
                    # in a task that is being cancelled (calls/tasks.py).
                    detach(spend.settle())

    def _job(self, prep: PreparedJob, streaming: bool, spend: Reservation | None) -> Job:
        request = prep.request
        vendor = prep.plan.model.vendor
        ctx = CallContext(
            tenant=prep.tenant,
            deadline=prep.deadline,
            cache_mode=request.cache_mode,
            cache_ttl_s=request.cache_ttl_s,
            labels=request.labels,
            budget=spend,
        )
        return Job(
            spec=request.spec,
            plan=prep.plan,
            vendor=vendor,
            ctx=ctx,
            sampling=request.sampling,
            concurrency=self._concurrency[vendor],
            started=prep.started,
            planning_s=prep.planning_s,
            warnings=prep.warnings,
            streaming=streaming,
        )

    async def _reserve(self, prep: PreparedJob) -> Reservation | None:
        """Reserves the job's estimate of what the tenant has left this month, or refuses it;
        warns when the job takes the tenant past 80 % of its budget."""
        needed = prep.plan.estimated_cost.total_usd
        within = None if prep.deadline is None else prep.deadline - time.monotonic()
        spend = await self._ledger.reserve(prep.tenant, needed, within)
        if spend is not None and spend.before.warns_after(needed):
            before = spend.before
            share = (before.spent_usd + needed) / before.cap_usd
            prep.warnings.append(
                JobWarning(
                    "BUDGET_80_PERCENT",
                    f"tenant {prep.tenant!r} will have used up to {share:.0%} of its monthly "
                    f"budget (${before.cap_usd:.2f}) after this job",
                )
            )
        return spend

    async def _count_exactly(self, prep: PreparedJob) -> None:
        """Re-plans with the vendor's own token count, where the upstream has a counting
        endpoint (Anthropic); elsewhere the estimate and its stated error stand. The count is
        a model call like any other: limits, breaker, retries, timeouts and telemetry apply."""
        model = prep.plan.model
        pipeline = self._runner.pipeline
        if not pipeline.serves(model.vendor, Operation.COUNT_TOKENS):
            return
        req = LlmRequest(
            model=model.model,
            messages=(Message("user", prep.request.spec.text),),
            max_output_tokens=0,
            operation=Operation.COUNT_TOKENS,
        )
        ctx = CallContext(tenant=prep.tenant, deadline=prep.deadline)
        exact: int | None = None
        try:
            async for ev in pipeline.call(model.vendor, req, ctx):
                if isinstance(ev, TokenCount):
                    exact = ev.input_tokens
        except UpstreamError as e:
            raise ModelCallFailed(e, model.vendor, model.model) from e
        if exact is None:
            raise RuntimeError(f"{model.vendor} ended a count_tokens call without a count")
        prep.plan = await self.planning.replan_exact(prep.request, prep.plan, exact)
