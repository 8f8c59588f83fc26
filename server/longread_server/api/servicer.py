"""The AnalysisService servicer: authenticate, validate, plan, run, convert.

Estimate, Analyze and Stream share one path; Analyze collects the events Stream forwards, so
a Stream's final result equals what Analyze returns for the same request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc
from longread.v1 import types_pb2 as pb

from longread_server.api import convert
from longread_server.api.auth import Authenticator
from longread_server.api.errors import (
    FieldViolation,
    ServiceError,
    code_name,
    from_rejection,
    from_upstream,
    internal,
    invalid,
)
from longread_server.api.rpc_record import RpcRecord
from longread_server.calls.budget import BudgetLedger, exceeded
from longread_server.calls.pipeline import CallContext
from longread_server.config import Config, UpstreamConfig
from longread_server.domain import CallRejected, LlmRequest, Message, ModelInfo, UpstreamError
from longread_server.memo import Memo
from longread_server.plan.catalog import Catalog
from longread_server.plan.chunker import token_lengths
from longread_server.plan.encodings import EncodingMemo
from longread_server.plan.planner import (
    JobPlan,
    ModelFit,
    PlanDefaults,
    PlanError,
    overhead_tokens,
    plan_job,
    quick_fit,
)
from longread_server.plan.tokenizers import Tokenizer, get_tokenizer
from longread_server.run.events import JobResult, JobWarning, RunEvent
from longread_server.run.runner import Job, JobRunner
from longread_server.telemetry import Telemetry, current_span, disabled

log = logging.getLogger(__name__)
T = TypeVar("T")

# Documents longer than this are tokenized and planned in a worker thread, so one large
# request does not stall every other RPC on the event loop (tiktoken releases the GIL).
_OFFLOAD_CHARS = 200_000
# Plans of recent requests up to this size are remembered by the request's digest: an
# identical request (a cache hit, a retry, a client asking again) skips tokenizing and
# planning, the largest part of a cache hit's CPU. Plans hold offsets, never text.
_MEMO_CHARS = 64 * 1024
_MEMO_PLANS = 1024
# Longer documents have their encoding remembered instead (plan/encodings.py): Estimate, then
# Analyze of the same document with any options, tokenizes it once.
MEMO_ENCODINGS = 8


@dataclass(slots=True)
class _End:
    """The end of a Stream's events: how they ended (None: normally)."""

    error: Exception | None


@dataclass(slots=True)
class _Prepared:
    parsed: convert.ParsedRequest
    tenant: str
    plan: JobPlan
    fits: list[ModelFit]
    deadline: float | None
    started: float
    planning_s: float
    warnings: list[JobWarning]


class AnalysisServicer(svc_grpc.AnalysisServiceServicer):
    def __init__(
        self,
        cfg: Config,
        catalog: Catalog,
        runner: JobRunner,
        auth: Authenticator,
        ledger: BudgetLedger | None = None,
        telemetry: Telemetry | None = None,
        encodings: EncodingMemo | None = None,
    ) -> None:
        self._cfg = cfg
        self._tel = telemetry or disabled()
        self._ledger = ledger or BudgetLedger({})
        self._catalog = catalog
        self._runner = runner
        self._auth = auth
        self._upstreams: dict[str, UpstreamConfig] = {u.name: u for u in cfg.upstreams}
        self._models = [m for m in catalog.models() if self._serves(m)]
        self._plans: Memo[bytes, tuple[JobPlan, list[ModelFit]]] = Memo(_MEMO_PLANS)
        self._encodings = encodings if encodings is not None else EncodingMemo(MEMO_ENCODINGS)
        self._defaults = PlanDefaults(
            output_tokens=cfg.limits.default_output_tokens,
            map_output_tokens=cfg.limits.map_output_tokens,
            chunk_tokens=cfg.limits.default_chunk_tokens,
            max_chunks=cfg.limits.max_chunks,
        )

    def _serves(self, m: ModelInfo) -> bool:
        up = self._upstreams.get(m.vendor)
        return up is not None and (not up.models or m.model in up.models)

    # ---- RPCs ----

    async def Estimate(
        self, request: svc.EstimateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> svc.EstimateResponse:
        rec = self._record("Estimate", context)
        return await self._guarded(context, rec, self._estimate(request, context, rec))

    async def Analyze(
        self, request: svc.AnalyzeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> svc.AnalyzeResponse:
        rec = self._record("Analyze", context)
        return await self._guarded(context, rec, self._analyze(request, context, rec))

    async def Stream(
        self, request: svc.StreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[svc.StreamResponse]:
        rec = self._record("Stream", context)
        try:
            prep = await self._prepare(request, context, rec, with_fits=False)
            plan_pb = convert.plan(prep.plan)
            async for ev in self._ahead(self._run(prep, rec, streaming=True)):
                yield convert.stream_event(ev, plan_pb)
            rec.finish("OK")
        except asyncio.CancelledError:
            rec.finish("CANCELLED")
            raise
        except Exception as e:
            await self._abort(context, rec, e)
        finally:
            rec.finish("CANCELLED")  # closed early by grpc; no-op once finished

    @staticmethod
    async def _ahead(events: AsyncGenerator[RunEvent, None]) -> AsyncIterator[RunEvent]:
        """``events``, produced by a task of their own: grpc sends each Stream message before
        it asks for the next, and the plan and progress messages would otherwise hold back
        the upstream call (about 0.9 ms before the first token). Ends, or fails, as
        ``events`` does; closing it cancels the task, which closes ``events`` there."""
        queue: asyncio.Queue[RunEvent | _End] = asyncio.Queue()

        async def produce() -> None:
            try:
                async with contextlib.aclosing(events) as evs:
                    async for ev in evs:
                        queue.put_nowait(ev)
                queue.put_nowait(_End(None))
            except Exception as e:
                queue.put_nowait(_End(e))
            except BaseException:  # cancelled: by the consumer below, which is gone by then
                queue.put_nowait(_End(RuntimeError("the stream's job was stopped")))
                raise

        task = asyncio.create_task(produce(), name="stream-job")
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _record(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> RpcRecord:
        # Read once (grpc.aio converts the metadata anew on each call, 1.6 µs): the API key
        # and the caller's traceparent both come from it.
        rec = RpcRecord(
            method, self._tel, self._cfg.telemetry.access_log, context.invocation_metadata()
        )
        if self._tel.tracing and not self._cfg.telemetry.grpc_instrumentation:
            rec.open_span()
        return rec

    async def _guarded(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        rec: RpcRecord,
        work: Awaitable[T],
    ) -> T:
        try:
            out = await work
        except asyncio.CancelledError:
            rec.finish("CANCELLED")
            raise
        except Exception as e:
            await self._abort(context, rec, e)
            raise AssertionError("unreachable") from None
        rec.finish("OK")
        return out

    async def _abort(
        self, context: grpc.aio.ServicerContext[Any, Any], rec: RpcRecord, e: Exception
    ) -> None:
        """Ends the RPC with the status for ``e``. Re-raises grpc's own abort exception."""
        if isinstance(e, grpc.aio.AbortError):
            raise e
        err = to_service_error(e)
        rec.finish(code_name(err.code), err.reason)
        await context.abort_with_status(err.to_status())

    # ---- implementation ----

    async def _estimate(
        self,
        request: svc.EstimateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        rec: RpcRecord,
    ) -> svc.EstimateResponse:
        prep = await self._prepare(request, context, rec, with_fits=True)
        if prep.parsed.exact_token_count and not prep.plan.tokens_exact:
            await self._count_exactly(prep)
        warnings = []
        if prep.plan.history_kept < len(prep.parsed.spec.history):
            warnings.append(
                pb.Warning(
                    code="HISTORY_TRIMMED",
                    message=f"only the {prep.plan.history_kept} most recent turns fit",
                )
            )
        if not prep.plan.tokens_exact:
            warnings.append(
                pb.Warning(
                    code="TOKENS_ESTIMATED",
                    message=(
                        f"{prep.plan.model.model} has no offline tokenizer here: counts use "
                        f"cl100k_base and may be off by up to {prep.plan.token_error:.0%}"
                    ),
                )
            )
        return svc.EstimateResponse(
            plan=convert.plan(prep.plan),
            candidates=[convert.model_fit(f) for f in prep.fits],
            warnings=warnings,
        )

    async def _analyze(
        self,
        request: svc.AnalyzeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        rec: RpcRecord,
    ) -> svc.AnalyzeResponse:
        prep = await self._prepare(request, context, rec, with_fits=False)
        result: JobResult | None = None
        async with contextlib.aclosing(self._run(prep, rec, streaming=False)) as events:
            async for ev in events:
                if isinstance(ev, JobResult):
                    result = ev
        assert result is not None
        return convert.result(result)

    async def _run(
        self, prep: _Prepared, rec: RpcRecord, *, streaming: bool
    ) -> AsyncGenerator[RunEvent, None]:
        """Runs the job, naming the upstream in any upstream failure."""
        try:
            async with contextlib.aclosing(self._runner.run(self._job(prep, streaming))) as evs:
                async for ev in evs:
                    if isinstance(ev, JobResult):
                        rec.result = ev
                    yield ev
        except UpstreamError as e:
            raise from_upstream(e, prep.plan.model.vendor, prep.plan.model.model) from e

    async def _count_exactly(self, prep: _Prepared) -> None:
        """Re-plans with the vendor's own token count, where the upstream has a counting
        endpoint (Anthropic); elsewhere the estimate and its stated error stand."""
        model = prep.plan.model
        adapter = self._runner.pipeline.adapter(model.vendor)
        count_tokens = getattr(adapter, "count_tokens", None)
        if count_tokens is None:
            return
        req = LlmRequest(
            model=model.model,
            messages=(Message("user", prep.parsed.spec.text),),
            max_output_tokens=1,
        )
        remaining = None if prep.deadline is None else prep.deadline - time.monotonic()
        try:
            exact: int = await count_tokens(req, timeout=remaining)
        except UpstreamError as e:
            raise from_upstream(e, model.vendor, model.model) from e
        tokenizer = get_tokenizer("cl100k_base")
        spec = prep.parsed.spec

        def replan() -> JobPlan:  # the cuts from the remembered encoding, the vendor's count
            lens = self._token_lengths(tokenizer, spec.text)
            return plan_job(spec, model, tokenizer, self._defaults, exact, lens)

        prep.plan = await asyncio.to_thread(replan)
        prep.plan.tokens_exact = True
        prep.plan.token_error = 0.0

    def _job(self, prep: _Prepared, streaming: bool) -> Job:
        upstream = self._upstreams[prep.plan.model.vendor]
        ctx = CallContext(
            tenant=prep.tenant,
            deadline=prep.deadline,
            cache_mode=prep.parsed.cache_mode,
            cache_ttl_s=prep.parsed.cache_ttl_s,
            labels=prep.parsed.labels,
        )
        return Job(
            spec=prep.parsed.spec,
            plan=prep.plan,
            vendor=upstream.name,
            ctx=ctx,
            sampling=prep.parsed.sampling,
            concurrency=upstream.max_concurrency,
            started=prep.started,
            planning_s=prep.planning_s,
            warnings=prep.warnings,
            streaming=streaming,
        )

    async def _prepare(
        self,
        request: convert.AnyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        rec: RpcRecord,
        *,
        with_fits: bool,
    ) -> _Prepared:
        started = time.monotonic()
        tenant = self._auth.tenant(rec.metadata)
        rec.tenant = tenant
        remaining = context.time_remaining()
        deadline = None if remaining is None else started + remaining
        parsed = convert.parse_request(request, self._cfg.limits)
        with current_span(self._tel.tracer.start_span("plan"), current=False) as span:
            if len(parsed.spec.text) > _OFFLOAD_CHARS:
                plan, fits = await asyncio.to_thread(self._plan, parsed, with_fits)
            elif len(parsed.spec.text) > _MEMO_CHARS:
                plan, fits = self._plan(parsed, with_fits)
            else:
                plan, fits = self._remembered_plan(request, parsed, with_fits)
            rec.vendor, rec.model = plan.model.vendor, plan.model.model
            rec.document_tokens = plan.document_tokens
            if span.is_recording():
                span.set_attributes(
                    {
                        "longread.strategy": plan.strategy.value,
                        "longread.document_tokens": plan.document_tokens,
                        "longread.chunks": len(plan.chunks),
                        "gen_ai.request.model": plan.model.model,
                    }
                )
        if not isinstance(request, svc.EstimateRequest) and not plan.within_budget:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "BUDGET_EXCEEDED",
                f"estimated cost ${plan.estimated_cost.total_usd:.6f} exceeds the request's "
                f"budget of ${parsed.spec.max_cost_usd:.6f}",
                metadata={
                    "estimated_cost_usd": f"{plan.estimated_cost.total_usd:.6f}",
                    "max_cost_usd": f"{parsed.spec.max_cost_usd:.6f}",
                },
            )
        warnings: list[JobWarning] = []
        if not isinstance(request, svc.EstimateRequest):
            warnings = await self._check_tenant_budget(tenant, plan)
        return _Prepared(
            parsed=parsed,
            tenant=tenant,
            plan=plan,
            fits=fits,
            deadline=deadline,
            started=started,
            planning_s=time.monotonic() - started,
            warnings=warnings,
        )

    async def _check_tenant_budget(self, tenant: str, plan: JobPlan) -> list[JobWarning]:
        """Refuses a job whose estimate exceeds what the tenant has left this month; warns
        when the job takes the tenant past 80 % of its budget."""
        state = await self._ledger.state(tenant)
        if not state.cap_usd:
            return []
        needed = plan.estimated_cost.total_usd
        if needed > state.remaining_usd:
            raise exceeded(tenant, state, needed)
        if state.warns_after(needed):
            share = (state.spent_usd + needed) / state.cap_usd
            return [
                JobWarning(
                    "BUDGET_80_PERCENT",
                    f"tenant {tenant!r} will have used up to {share:.0%} of its monthly budget "
                    f"(${state.cap_usd:.2f}) after this job",
                )
            ]
        return []

    def _remembered_plan(
        self, request: convert.AnyRequest, parsed: convert.ParsedRequest, with_fits: bool
    ) -> tuple[JobPlan, list[ModelFit]]:
        """``_plan``, remembered by the digest of the whole request (plans are never changed
        after planning, so one can serve many requests)."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(b"fits:" if with_fits else b"plan:")
        digest.update(request.DESCRIPTOR.full_name.encode())
        digest.update(request.SerializeToString(deterministic=True))
        return self._plans.get_or_make(digest.digest(), lambda: self._plan(parsed, with_fits))

    def _plan(
        self, parsed: convert.ParsedRequest, with_fits: bool
    ) -> tuple[JobPlan, list[ModelFit]]:
        """Counts tokens once, resolves the model, plans the job (may run in a thread)."""
        tokenizer = get_tokenizer("cl100k_base")
        lens = self._token_lengths(tokenizer, parsed.spec.text)
        doc_tokens = len(lens)
        limit = self._cfg.limits.max_document_tokens
        if doc_tokens > limit:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "DOCUMENT_TOO_LARGE",
                f"the document has {doc_tokens} tokens; the limit is {limit}",
                violations=[
                    FieldViolation(
                        "document.text",
                        f"has {doc_tokens} tokens; the limit is {limit}",
                        "DOCUMENT_TOO_LARGE",
                    )
                ],
                metadata={"document_tokens": str(doc_tokens), "limit": str(limit)},
            )
        overhead = overhead_tokens(parsed.spec, tokenizer)
        fits: list[ModelFit] = []
        if with_fits or (not parsed.model and parsed.preference != pb.MODEL_PREFERENCE_UNSPECIFIED):
            fits = sorted(
                (
                    quick_fit(parsed.spec, m, doc_tokens, overhead, self._defaults)
                    for m in self._models
                ),
                key=lambda f: (f.calls == 0, f.estimated_cost.total_usd, f.model.model),
            )
        model = self._resolve(parsed, fits)
        try:
            plan = plan_job(parsed.spec, model, tokenizer, self._defaults, lens=lens)
        except PlanError as e:
            raise invalid([FieldViolation(e.field, str(e), e.reason)], e.reason) from e
        return plan, fits

    def _token_lengths(self, tokenizer: Tokenizer, text: str) -> Sequence[int]:
        """The byte length of each of the document's tokens: remembered for long documents
        (Estimate, then Analyze, tokenizes once); short ones are planned from scratch."""
        if len(text) > _MEMO_CHARS:
            return self._encodings.token_lengths(tokenizer, text)
        return token_lengths(tokenizer, tokenizer.encode(text))

    def _resolve(self, parsed: convert.ParsedRequest, fits: list[ModelFit]) -> ModelInfo:
        vendor, model = parsed.vendor, parsed.model
        if vendor and vendor not in self._upstreams:
            known = ", ".join(sorted(self._upstreams)) or "none"
            raise invalid(
                [FieldViolation("model.vendor", f"unknown vendor {vendor!r}; configured: {known}")],
                "UNKNOWN_MODEL",
            )
        if not model:
            if parsed.preference == pb.MODEL_PREFERENCE_CHEAPEST:
                for f in fits:
                    if f.fits_single_pass and (not vendor or f.model.vendor == vendor):
                        return f.model
                largest = max((m.context_window for m in self._models), default=0)
                raise invalid(
                    [
                        FieldViolation(
                            "model.preference",
                            "no configured model fits the whole document in one call "
                            f"(largest context: {largest} tokens); name a model to use "
                            "map-reduce",
                            "DOES_NOT_FIT",
                        )
                    ],
                    "DOES_NOT_FIT",
                )
            if parsed.preference == pb.MODEL_PREFERENCE_LARGEST_CONTEXT:
                pool = [m for m in self._models if not vendor or m.vendor == vendor]
                if pool:
                    return max(pool, key=lambda m: (m.context_window, -m.input_per_mtok))
            model = self._cfg.default_model
            vendor = vendor or self._cfg.default_vendor
        vendors = [vendor] if vendor else [v for v in self._catalog.vendors_of(model)]
        served = [
            m for v in vendors if (m := self._catalog.get(v, model)) is not None and self._serves(m)
        ]
        if len(served) == 1:
            return served[0]
        if not served:
            known = ", ".join(sorted({m.model for m in self._models})) or "none"
            where = f" from vendor {vendor!r}" if vendor else ""
            raise invalid(
                [FieldViolation("model.model", f"unknown model {model!r}{where}; known: {known}")],
                "UNKNOWN_MODEL",
            )
        names = ", ".join(m.vendor for m in served)
        raise invalid(
            [FieldViolation("model.vendor", f"{model!r} is served by {names}: name one")],
            "UNKNOWN_MODEL",
        )


def to_service_error(e: Exception) -> ServiceError:
    """The status for any failure; unexpected ones are logged and become INTERNAL."""
    if isinstance(e, ServiceError):
        return e
    if isinstance(e, UpstreamError):
        return from_upstream(e, "upstream", "")
    if isinstance(e, CallRejected):
        return from_rejection(e)
    if isinstance(e, PlanError):
        return invalid([FieldViolation(e.field, str(e), e.reason)], e.reason)
    log.exception("unexpected error")
    return internal(e)
