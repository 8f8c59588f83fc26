"""Runs a planned job: single pass, or map-reduce with collapse levels.

Map calls run concurrently (bounded) inside one TaskGroup, so cancelling the RPC cancels every
call of the job. The final call (single pass or reduce) streams its answer as deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

from opentelemetry import trace

from longread_server.calls.concurrency import AdaptiveConcurrency
from longread_server.calls.pipeline import CallContext, Pipeline
from longread_server.domain import (
    ErrorKind,
    FallbackNote,
    Finish,
    Message,
    TextDelta,
    UpstreamError,
    Usage,
)
from longread_server.domain import LlmRequest as Request
from longread_server.plan import prompts
from longread_server.plan.catalog import Price, price
from longread_server.plan.planner import JobPlan, JobSpec, Strategy
from longread_server.run.events import (
    AnswerDelta,
    CacheStatus,
    CallDone,
    CallOutput,
    CallStarted,
    JobResult,
    JobStage,
    JobWarning,
    PlanReady,
    RunEvent,
    Timings,
    fallback_kind,
    fallbacks_taken,
    history_trimmed,
)
from longread_server.telemetry import Telemetry, current_span, disabled


@dataclass(frozen=True, slots=True)
class Sampling:
    """Generation options that every call of the job shares."""

    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class PromptCaching:
    """How calls ask for vendor prompt caching (``[cache]`` ``vendor_ttl``,
    ``vendor_extended_retention``)."""

    ttl: str = "5m"  # Anthropic breakpoint lifetime: "5m", "1h", or "off" (no breakpoints)
    extended_retention: bool = True  # OpenAI prompt_cache_retention where the model has it


@dataclass(slots=True)
class Job:
    spec: JobSpec
    plan: JobPlan
    vendor: str
    ctx: CallContext
    sampling: Sampling = field(default_factory=Sampling)
    concurrency: int = 8
    started: float = field(default_factory=time.monotonic)
    planning_s: float = 0.0
    # Known before the first call (e.g. a tenant budget nearly spent): sent right after the plan.
    warnings: list[JobWarning] = field(default_factory=list)
    prompt_cache_key: str = ""  # per document, set on the first call (vendor prompt caching)
    # The caller gets answer deltas (Stream). Analyze does not: its calls ask the vendor for
    # one JSON answer, which spares parsing and passing on every streamed event.
    streaming: bool = True


@dataclass(slots=True)
class _Tally:
    usage: Usage = field(default_factory=Usage)
    outputs: list[CallOutput] = field(default_factory=list)
    hits: int = 0
    calls: int = 0
    first_token_at: float = 0.0
    # Each call priced at the rates of the model that answered it (a fallback's, if one did).
    cost: Price = field(default_factory=Price)
    fallbacks: list[FallbackNote] = field(default_factory=list)


class JobRunner:
    """Turns a Job into RunEvents: the plan first, the result last."""

    def __init__(
        self,
        pipeline: Pipeline,
        telemetry: Telemetry | None = None,
        concurrency: AdaptiveConcurrency | None = None,
        prompt_caching: PromptCaching | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._caching = prompt_caching or PromptCaching()
        # Map fan-out per upstream adapts to 429s and latency (calls/concurrency.py).
        self._concurrency = concurrency or AdaptiveConcurrency()
        self._tel = telemetry or disabled()

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    def run(self, job: Job) -> AsyncGenerator[RunEvent, None]:
        if not self._tel.tracing:
            return self._run(job)  # no span to fill: the events need no layer around them
        return self._traced(job)

    async def _traced(self, job: Job) -> AsyncGenerator[RunEvent, None]:
        # The plan is on the plan span and the tenant on the server span: this one says what
        # the run did.
        span = self._tel.tracer.start_span(f"analyze {job.plan.strategy.value}")
        # Closed explicitly (aclosing): a Stream the client cancels must end its spans and
        # calls here and now, not when the event loop finalizes the abandoned generators.
        with current_span(span):
            async with contextlib.aclosing(self._run(job)) as events:
                async for ev in events:
                    if isinstance(ev, JobResult) and span.is_recording():
                        span.set_attributes(
                            {
                                "longread.calls": ev.usage.calls,
                                "longread.cost_usd": ev.cost.total_usd,
                                "longread.cache.status": ev.cache_status.value,
                            }
                        )
                    yield ev

    async def _run(self, job: Job) -> AsyncGenerator[RunEvent, None]:
        yield PlanReady(job.plan)
        for w in job.warnings:
            yield w
        tally = _Tally()
        warnings: list[JobWarning] = []
        plan = job.plan
        history = _history(job)
        trimmed = history_trimmed(plan, len(job.spec.history))
        if trimmed is not None:
            warnings.append(trimmed)
        final: CallOutput | None = None
        if plan.strategy is Strategy.SINGLE_PASS:
            messages = prompts.single(job.spec.text, job.spec.instruction, history)
            async with contextlib.aclosing(
                self._call(
                    job,
                    tally,
                    JobStage.SINGLE,
                    0,
                    1,
                    messages,
                    plan.output_tokens,
                    prompt_tokens=plan.document_tokens + plan.overhead_tokens,
                    cache_prefix=prompts.SINGLE_CACHE_PREFIX,
                    cache_prefix_tokens=plan.document_tokens,
                )
            ) as evs:
                async for ev in evs:
                    if isinstance(ev, CallDone):
                        final = ev.output
                    yield ev
        elif plan.strategy is Strategy.SELECT:
            chosen = [plan.chunks[i] for i in plan.selected]
            passages = [c.sent(job.spec.text) for c in chosen]
            messages = prompts.select_step(passages, job.spec.instruction, history)
            read = (chosen[0].start, chosen[-1].end) if chosen else (0, len(job.spec.text))
            async with contextlib.aclosing(
                self._call(
                    job, tally, JobStage.SINGLE, 0, 1, messages, plan.output_tokens, read=read
                )
            ) as evs:
                async for ev in evs:
                    if isinstance(ev, CallDone):
                        final = ev.output
                    yield ev
        elif plan.strategy is Strategy.REFINE:
            answer = ""
            n = len(plan.chunks)
            for i, chunk in enumerate(plan.chunks):
                last = i == n - 1
                messages = prompts.refine_step(
                    chunk.sent(job.spec.text),
                    job.spec.instruction,
                    answer,
                    history if last else (),
                )
                async with contextlib.aclosing(
                    self._call(
                        job,
                        tally,
                        JobStage.REFINE,
                        i,
                        n,
                        messages,
                        plan.output_tokens,
                        read=(chunk.start, chunk.end),
                        stream_answer=last,
                    )
                ) as evs:
                    async for ev in evs:
                        if isinstance(ev, CallDone):
                            answer = ev.output.text
                            final = ev.output
                        yield ev
        else:
            notes: list[CallOutput] = []
            async with contextlib.aclosing(self._map(job, tally, notes)) as evs:
                async for ev in evs:
                    yield ev
            async with contextlib.aclosing(self._reduce(job, tally, notes, history)) as evs:
                async for ev in evs:
                    if isinstance(ev, CallDone) and ev.output.stage is JobStage.REDUCE:
                        final = ev.output
                    yield ev
        assert final is not None
        if final.finish_reason == "length":
            warnings.append(
                JobWarning("OUTPUT_TRUNCATED", "the answer reached max_output_tokens and was cut")
            )
        for w in warnings:
            yield w
        now = time.monotonic()
        if tally.calls == 0:
            cache_status = CacheStatus.MISS
        elif job.ctx.cache_mode == "bypass":  # the cache was not read
            cache_status = CacheStatus.BYPASS
        elif tally.hits == tally.calls:
            cache_status = CacheStatus.HIT
        elif tally.hits:
            cache_status = CacheStatus.PARTIAL
        else:
            cache_status = CacheStatus.MISS
        yield JobResult(
            text=final.text,
            plan=plan,
            model=final.model or plan.model,  # the model that gave the answer
            chunk_outputs=sorted(tally.outputs, key=lambda o: o.index),
            usage=tally.usage,
            cost=tally.cost,
            cache_status=cache_status,
            finish_reason=final.finish_reason,
            timings=Timings(
                total_s=now - job.started,
                planning_s=job.planning_s,
                first_token_s=(tally.first_token_at - job.started) if tally.first_token_at else 0.0,
            ),
            # Streamed as each kind of reroute first happened (``_call``); counted here.
            warnings=[*job.warnings, *warnings, *fallbacks_taken(tally.fallbacks)],
        )

    async def _map(
        self, job: Job, tally: _Tally, notes: list[CallOutput]
    ) -> AsyncGenerator[RunEvent, None]:
        chunks = job.plan.chunks
        n = len(chunks)
        queue: asyncio.Queue[RunEvent | BaseException | _Done] = asyncio.Queue()
        gate = self._concurrency.gate(job.vendor, job.concurrency)
        results: list[CallOutput | None] = [None] * n

        async def one(i: int) -> None:
            chunk = chunks[i]
            text = job.spec.text[chunk.overlap_start : chunk.end]
            messages = prompts.map_step(text, job.spec.instruction)
            async with (
                gate.slot(),
                contextlib.aclosing(
                    self._call(
                        job,
                        tally,
                        JobStage.MAP,
                        i,
                        n,
                        messages,
                        job.plan.map_output_tokens,
                        read=(chunk.start, chunk.end),
                        cache_prefix=prompts.MAP_CACHE_PREFIX,
                        cache_prefix_tokens=chunk.tokens,
                        prompt_tokens=chunk.tokens + job.plan.overhead_tokens,
                    )
                ) as evs,
            ):
                async for ev in evs:
                    if isinstance(ev, CallDone):
                        results[i] = ev.output
                    await queue.put(ev)

        async def drive() -> None:
            try:
                async with asyncio.TaskGroup() as tg:
                    for i in range(n):
                        tg.create_task(one(i))
            except BaseExceptionGroup as eg:
                await queue.put(_first_error(eg))
                return
            await queue.put(_DONE)

        driver = asyncio.create_task(drive())
        try:
            while True:
                ev = await queue.get()
                if isinstance(ev, _Done):
                    break
                if isinstance(ev, BaseException):
                    raise ev
                yield ev
        finally:
            if not driver.done():
                driver.cancel()
                await asyncio.gather(driver, return_exceptions=True)
        notes.extend(r for r in results if r is not None)

    async def _reduce(
        self, job: Job, tally: _Tally, notes: list[CallOutput], history: Sequence[Message]
    ) -> AsyncGenerator[RunEvent, None]:
        texts = [n.text for n in notes]
        ranges = [(n.start, n.end) for n in notes]
        size = job.plan.notes_per_call
        # Collapse in groups until one reduce call can take every note (the planner sized this).
        while len(texts) > size:
            groups = [texts[i : i + size] for i in range(0, len(texts), size)]
            group_ranges = [ranges[i : i + size] for i in range(0, len(ranges), size)]
            collapsed: list[str] = []
            new_ranges: list[tuple[int, int]] = []
            for gi, (group, gs) in enumerate(zip(groups, group_ranges, strict=True)):
                messages = prompts.reduce_step(group, job.spec.instruction)
                async with contextlib.aclosing(
                    self._call(
                        job,
                        tally,
                        JobStage.COLLAPSE,
                        gi,
                        len(groups),
                        messages,
                        job.plan.map_output_tokens,
                        read=(gs[0][0], gs[-1][1]),
                    )
                ) as evs:
                    async for ev in evs:
                        if isinstance(ev, CallDone):
                            collapsed.append(ev.output.text)
                            new_ranges.append((ev.output.start, ev.output.end))
                        yield ev
            texts, ranges = collapsed, new_ranges
        messages = prompts.reduce_step(texts, job.spec.instruction, history)
        read = (ranges[0][0], ranges[-1][1]) if ranges else (0, len(job.spec.text))
        async with contextlib.aclosing(
            self._call(
                job, tally, JobStage.REDUCE, 0, 1, messages, job.plan.output_tokens, read=read
            )
        ) as evs:
            async for ev in evs:
                yield ev

    async def _call(
        self,
        job: Job,
        tally: _Tally,
        stage: JobStage,
        index: int,
        of: int,
        messages: Sequence[Message],
        max_output_tokens: int,
        read: tuple[int, int] | None = None,  # the text range the call reads
        stream_answer: bool | None = None,
        cache_prefix: int = 0,
        prompt_tokens: int = 0,
        cache_prefix_tokens: int = 0,
    ) -> AsyncGenerator[RunEvent, None]:
        """One model call: CallStarted, deltas (of the answer's own call only), CallDone.
        ``cache_prefix``: leading messages shared with other calls (vendor prompt caching),
        ``cache_prefix_tokens`` the planner's count of the document text in them."""
        final_stage = (
            stage in (JobStage.SINGLE, JobStage.REDUCE) if stream_answer is None else stream_answer
        )
        if not job.prompt_cache_key:
            job.prompt_cache_key = prompts.document_cache_key(job.spec.text)
        model = job.plan.model
        # Anthropic caches a marked prefix only from the model's minimum length on ("Shorter
        # prompts cannot be cached, even if marked with cache_control",
        # https://docs.claude.com/en/docs/build-with-claude/prompt-caching): mark it only
        # where the document alone reaches that (the system prompt and markup add a few tokens
        # more, and cl100k counts Claude text low, so the real prefix is longer still).
        if self._caching.ttl == "off" or cache_prefix_tokens < model.cache_min_tokens:
            cache_prefix = 0
        retention = model.prompt_cache_retention if self._caching.extended_retention else ""
        req = Request(
            model=model.model,
            messages=tuple(messages),
            max_output_tokens=max_output_tokens,
            system=prompts.system_prompt(job.spec.system),
            temperature=job.sampling.temperature,
            top_p=job.sampling.top_p,
            stop=job.sampling.stop,
            seed=job.sampling.seed,
            stream=final_stage and job.streaming,
            cache_prefix_messages=cache_prefix,
            cache_prefix_tokens=cache_prefix_tokens,
            prompt_cache_key=job.prompt_cache_key,
            cache_ttl=self._caching.ttl,
            prompt_cache_retention=retention,
            estimated_prompt_tokens=prompt_tokens,
        )
        yield CallStarted(stage, index, of)
        parts: list[str] = []
        finish: Finish | None = None
        start, end = read if read is not None else (0, len(job.spec.text))
        # A single-pass job's one call would be its strategy span's only child: no step span.
        traced = self._tel.tracing and job.plan.strategy is not Strategy.SINGLE_PASS
        scope = self._step_span(stage, index, of, start, end) if traced else nullcontext(None)
        with scope as step:
            async for ev in self._pipeline.call(job.vendor, req, job.ctx):
                if isinstance(ev, TextDelta):
                    parts.append(ev.text)
                    if final_stage:
                        if not tally.first_token_at:
                            tally.first_token_at = time.monotonic()
                        yield AnswerDelta(stage, index, ev.text)
                elif isinstance(ev, Finish):
                    finish = ev
            if finish is None:
                raise UpstreamError(ErrorKind.CONNECTION, "the model call ended without a result")
            if step is not None:
                step.set_attribute("longread.cache.hit", finish.cached)
                if finish.fallback is not None:
                    step.set_attribute("longread.fallback.reason", finish.fallback.reason.value)
                    step.set_attribute("longread.model", finish.fallback.model.model)
        tally.calls += 1
        note = finish.fallback
        answered_by = note.model if note is not None else job.plan.model
        first_of_its_kind = note is not None and all(
            fallback_kind(n) != fallback_kind(note) for n in tally.fallbacks
        )
        if note is not None:
            tally.fallbacks.append(note)
        if finish.cached:
            tally.hits += 1
        else:
            tally.usage.add(replace(finish.usage, calls=1))
            tally.cost += price(answered_by, finish.usage)
        out = CallOutput(
            stage=stage,
            index=index,
            start=start,
            end=end,
            text="".join(parts),
            usage=finish.usage,
            cached=finish.cached,
            finish_reason=finish.finish_reason,
            model=answered_by,
            fallback=finish.fallback,
        )
        if stage in (JobStage.MAP, JobStage.REFINE):
            tally.outputs.append(out)
        yield CallDone(out)
        if note is not None and first_of_its_kind:
            # A Stream learns which model answered when it happens, not only in the result.
            yield JobWarning(
                "FALLBACK",
                f"{stage.value} {index}: answered by a fallback model: {note.describe()}",
            )

    def _step_span(
        self, stage: JobStage, index: int, of: int, start: int, end: int
    ) -> AbstractContextManager[trace.Span]:
        span = self._tel.tracer.start_span(
            f"{stage.value} {index}",
            attributes={
                "longread.stage": stage.value,
                "longread.index": index,
                "longread.of": of,
                "longread.span.start": start,
                "longread.span.end": end,
            },
        )
        return current_span(span, record_exception=False)


def _history(job: Job) -> tuple[Message, ...]:
    """The prior turns the plan kept: the most recent ones."""
    kept = job.plan.history_kept
    return job.spec.history[len(job.spec.history) - kept :] if kept else ()


class _Done:
    pass


_DONE = _Done()


def _first_error(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return _first_error(e)
        if not isinstance(e, asyncio.CancelledError):
            return e
    return eg.exceptions[0]
