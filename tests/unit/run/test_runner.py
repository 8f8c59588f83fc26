"""JobRunner over a real Pipeline with a scripted adapter: what each strategy calls, in which
order, and what the job reports (events, usage, cost, cache status, warnings, failures)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

import pytest
from longread_server.calls.concurrency import AdaptiveConcurrency
from longread_server.calls.pipeline import CallContext, Pipeline
from longread_server.domain import (
    ErrorKind,
    Finish,
    LlmRequest,
    Message,
    ModelInfo,
    UpstreamError,
    Usage,
)
from longread_server.plan.catalog import price
from longread_server.plan.planner import JobPlan, JobSpec, PlanDefaults, Strategy, plan_job
from longread_server.plan.tokenizers import get_tokenizer
from longread_server.run.events import (
    AnswerDelta,
    CacheStatus,
    CallDone,
    CallStarted,
    JobResult,
    JobStage,
    JobWarning,
    PlanReady,
    RunEvent,
)
from longread_server.run.runner import Job, JobRunner, PromptCaching, Sampling

from tests.clock import FakeClock
from tests.unit.calls.support import Attempt, err
from tests.unit.run.support import (
    NOTE,
    Reply,
    ScriptedAdapter,
    answer,
    model,
    numbered_words,
    step_of,
)

TOK = get_tokenizer("cl100k_base")
Q = "Which words does the document list?"
# Small outputs keep the notes of a reduce call (and so collapse) within reach of small models.
DEFAULTS = PlanDefaults(output_tokens=150, map_output_tokens=100, select_chunk_tokens=40)


def planned(
    text: str, strategy: Strategy = Strategy.AUTO, m: ModelInfo | None = None, **spec_kw: Any
) -> tuple[JobSpec, JobPlan]:
    spec = JobSpec(text=text, instruction=Q, strategy=strategy, **spec_kw)
    return spec, plan_job(spec, m or model(), TOK, DEFAULTS)


def make_job(spec: JobSpec, plan: JobPlan, **kw: Any) -> Job:
    kw.setdefault("ctx", CallContext(tenant="acme"))
    return Job(spec=spec, plan=plan, vendor=plan.model.vendor, **kw)


def runner_for(adapter: ScriptedAdapter) -> JobRunner:
    # A clock that never moves: the adaptive limit sees no latency and stays at the job's cap.
    concurrency = AdaptiveConcurrency(clock=FakeClock())
    return JobRunner(Pipeline({adapter.name: adapter}), concurrency=concurrency)


async def run(adapter: ScriptedAdapter, job: Job) -> list[RunEvent]:
    async with contextlib.aclosing(runner_for(adapter).run(job)) as events:
        return [ev async for ev in events]


def kinds(events: list[RunEvent]) -> list[str]:
    return [type(ev).__name__ for ev in events]


def result_of(events: list[RunEvent]) -> JobResult:
    last = events[-1]
    assert isinstance(last, JobResult)
    return last


def offset_note(doc: str) -> Reply:
    """Map calls answer with where their excerpt starts in ``doc``; notes prompts answer with
    the first note they read, so every output says what it was made from."""

    def reply(req: LlmRequest) -> Attempt:
        step = step_of(req)
        if step == "map":
            part = req.messages[0].content.split("<document_part>\n", 1)[1]
            part = part.split("\n</document_part>", 1)[0]
            return answer(f"note@{doc.index(part)}", input_tokens=50, output_tokens=10)
        if step == "notes" and req.max_output_tokens == DEFAULTS.map_output_tokens:
            first = NOTE.findall(req.messages[-1].content)[0]
            return answer(f"group@{first.split('@')[1]}", input_tokens=70, output_tokens=12)
        return answer("The ", "final ", "answer.", input_tokens=80, output_tokens=15)

    return reply


# ---- single pass ----


async def test_single_pass_streams_the_answer_between_start_and_done() -> None:
    doc = numbered_words(40)
    spec, plan = planned(doc)
    assert plan.strategy is Strategy.SINGLE_PASS
    adapter = ScriptedAdapter(
        reply=lambda req: answer("It lists ", "forty words.", output_tokens=7)
    )
    sampling = Sampling(temperature=0.3, top_p=0.9, stop=("END",), seed=11)
    events = await run(adapter, make_job(spec, plan, sampling=sampling, planning_s=0.25))

    assert kinds(events) == [
        "PlanReady",
        "CallStarted",
        "AnswerDelta",
        "AnswerDelta",
        "CallDone",
        "JobResult",
    ]
    assert events[0] == PlanReady(plan)
    assert events[1] == CallStarted(JobStage.SINGLE, 0, 1)
    assert [ev.text for ev in events if isinstance(ev, AnswerDelta)] == [
        "It lists ",
        "forty words.",
    ]
    result = result_of(events)
    assert result.text == "It lists forty words." and result.finish_reason == "stop"
    assert result.usage == Usage(100, 7, calls=1)
    assert result.cost == price(plan.model, result.usage)
    assert result.cache_status is CacheStatus.MISS
    assert result.timings.planning_s == 0.25 and result.timings.first_token_s > 0
    (req,) = adapter.requests
    # The whole document and the question go in one streamed call with the job's sampling,
    # the document first (the prefix every question on it shares), the question last.
    assert doc in req.messages[0].content and Q in req.messages[-1].content
    assert req.stream and req.max_output_tokens == plan.output_tokens
    assert (req.temperature, req.top_p, req.stop, req.seed) == (0.3, 0.9, ("END",), 11)
    assert req.estimated_prompt_tokens == plan.document_tokens + plan.overhead_tokens


@pytest.mark.parametrize(
    ("words", "caching", "prefix", "ttl"),
    [
        (2000, PromptCaching(), 1, "5m"),  # the document reaches the minimum: marked
        (2000, PromptCaching(ttl="1h"), 1, "1h"),
        (100, PromptCaching(), 0, "5m"),  # below the minimum: a mark would cache nothing
        (2000, PromptCaching(ttl="off"), 0, "off"),
    ],
)
async def test_the_document_prefix_is_marked_only_where_the_vendor_would_cache_it(
    words: int, caching: PromptCaching, prefix: int, ttl: str
) -> None:
    claude = replace(model("claude-x", "anthropic"), cache_min_tokens=1024)
    spec, plan = planned(numbered_words(words), m=claude)
    assert plan.strategy is Strategy.SINGLE_PASS
    adapter = ScriptedAdapter("anthropic", reply=lambda req: answer("ok"))
    concurrency = AdaptiveConcurrency(clock=FakeClock())
    runner = JobRunner(
        Pipeline({adapter.name: adapter}), concurrency=concurrency, prompt_caching=caching
    )
    job = make_job(spec, plan)
    async with contextlib.aclosing(runner.run(job)) as events:
        _ = [ev async for ev in events]
    (req,) = adapter.requests
    assert (req.cache_prefix_messages, req.cache_ttl) == (prefix, ttl)
    assert "<document>" in req.messages[0].content and "Question:" in req.messages[-1].content


async def test_extended_retention_only_where_the_model_has_it() -> None:
    for retention, enabled, sent in [("24h", True, "24h"), ("24h", False, ""), ("", True, "")]:
        gpt = replace(model(), prompt_cache_retention=retention)
        spec, plan = planned(numbered_words(40), m=gpt)
        adapter = ScriptedAdapter(reply=lambda req: answer("ok"))
        runner = JobRunner(
            Pipeline({adapter.name: adapter}),
            concurrency=AdaptiveConcurrency(clock=FakeClock()),
            prompt_caching=PromptCaching(extended_retention=enabled),
        )
        async with contextlib.aclosing(runner.run(make_job(spec, plan))) as events:
            _ = [ev async for ev in events]
        assert adapter.requests[0].prompt_cache_retention == sent


async def test_without_streaming_the_call_is_not_streamed_and_the_answer_comes_whole() -> None:
    spec, plan = planned(numbered_words(40))
    adapter = ScriptedAdapter(reply=lambda req: answer("one ", "piece"))
    events = await run(adapter, make_job(spec, plan, streaming=False))
    assert not adapter.requests[0].stream
    assert kinds(events) == ["PlanReady", "CallStarted", "AnswerDelta", "CallDone", "JobResult"]
    assert events[2] == AnswerDelta(JobStage.SINGLE, 0, "one piece")
    assert result_of(events).text == "one piece"


async def test_a_call_that_ends_without_finishing_fails_the_job() -> None:
    spec, plan = planned(numbered_words(40))
    adapter = ScriptedAdapter(reply=lambda req: Attempt(answer("half").events[:1]))
    with pytest.raises(UpstreamError) as info:
        await run(adapter, make_job(spec, plan))
    assert info.value.kind is ErrorKind.CONNECTION


# ---- map-reduce ----


async def test_map_reduce_maps_every_chunk_then_reduces_the_notes_in_document_order() -> None:
    doc = numbered_words(300)
    spec, plan = planned(doc, Strategy.MAP_REDUCE, max_chunk_tokens=120)
    n = len(plan.chunks)
    assert n >= 4 and plan.collapse_calls == 0
    adapter = ScriptedAdapter(reply=offset_note(doc), hold=2)
    events = await run(adapter, make_job(spec, plan))

    assert isinstance(events[0], PlanReady) and isinstance(events[-1], JobResult)
    maps = [ev for ev in events if isinstance(ev, CallStarted) and ev.stage is JobStage.MAP]
    assert sorted(ev.index for ev in maps) == list(range(n)) and {ev.of for ev in maps} == {n}
    reduce_at = events.index(CallStarted(JobStage.REDUCE, 0, 1))
    # Every map is done before the reduce starts; only the reduce streams its answer.
    done_maps = [
        i
        for i, ev in enumerate(events)
        if isinstance(ev, CallDone) and ev.output.stage is JobStage.MAP
    ]
    assert len(done_maps) == n and max(done_maps) < reduce_at
    deltas = [ev for ev in events if isinstance(ev, AnswerDelta)]
    assert [(d.stage, d.text) for d in deltas] == [
        (JobStage.REDUCE, "The "),
        (JobStage.REDUCE, "final "),
        (JobStage.REDUCE, "answer."),
    ]
    assert all(reduce_at < events.index(d) for d in deltas)

    map_reqs = [r for r in adapter.requests if step_of(r) == "map"]
    (reduce_req,) = [r for r in adapter.requests if step_of(r) == "notes"]
    assert not any(r.stream for r in map_reqs) and reduce_req.stream
    assert all(r.max_output_tokens == plan.map_output_tokens for r in map_reqs)
    assert NOTE.findall(reduce_req.messages[-1].content) == [
        f"note@{c.overlap_start}" for c in plan.chunks
    ]
    result = result_of(events)
    assert result.text == "The final answer."
    assert [(o.index, o.start, o.end) for o in result.chunk_outputs] == [
        (c.index, c.start, c.end) for c in plan.chunks
    ]
    assert [o.text for o in result.chunk_outputs] == [
        f"note@{c.overlap_start}" for c in plan.chunks
    ]


@pytest.mark.parametrize("cap", [1, 2, 3, 16])
async def test_map_calls_run_concurrently_up_to_the_jobs_concurrency(cap: int) -> None:
    doc = numbered_words(300)
    spec, plan = planned(doc, Strategy.MAP_REDUCE, max_chunk_tokens=100)
    n = len(plan.chunks)
    assert n >= 4
    # Each call stays open a few loop turns: the calls the gate lets in overlap.
    adapter = ScriptedAdapter(reply=offset_note(doc), hold=5)
    await run(adapter, make_job(spec, plan, concurrency=cap))
    assert adapter.max_in_flight == min(cap, n)
    assert len(adapter.requests) == n + 1


async def test_notes_that_do_not_fit_one_reduce_call_are_collapsed_first() -> None:
    doc = numbered_words(600)
    small = model(context=1400)
    spec, plan = planned(doc, Strategy.MAP_REDUCE, m=small, max_chunk_tokens=60)
    per_call = plan.notes_per_call
    assert plan.map_calls > per_call and plan.collapse_calls > 0  # the premise of this test
    adapter = ScriptedAdapter(reply=offset_note(doc))
    events = await run(adapter, make_job(spec, plan))

    started = [ev for ev in events if isinstance(ev, CallStarted)]
    stages = [ev.stage for ev in started]
    assert stages.count(JobStage.MAP) == plan.map_calls
    assert stages.count(JobStage.COLLAPSE) == plan.collapse_calls
    assert stages[-1] is JobStage.REDUCE and stages.count(JobStage.REDUCE) == 1
    first_collapse = stages.index(JobStage.COLLAPSE)
    assert set(stages[:first_collapse]) == {JobStage.MAP}
    reduce_req = adapter.requests[-1]
    read = NOTE.findall(reduce_req.messages[-1].content)
    collapsed = [
        ev.output.text
        for ev in events
        if isinstance(ev, CallDone) and ev.output.stage is JobStage.COLLAPSE
    ]
    # The reduce reads the collapse outputs (not the raw notes), in document order.
    assert read == collapsed[-len(read) :] and 1 < len(read) <= per_call
    offsets = [int(t.split("@")[1]) for t in read]
    assert offsets == sorted(offsets) and offsets[0] == 0
    result = result_of(events)
    assert result.usage.calls == plan.calls == len(adapter.requests)


# ---- refine and select ----


async def test_refine_runs_its_steps_in_order_each_reading_the_running_answer() -> None:
    doc = numbered_words(200)
    spec, plan = planned(doc, Strategy.REFINE, max_chunk_tokens=100)
    n = len(plan.chunks)
    assert n >= 3

    def reply(req: LlmRequest) -> Attempt:
        return answer(f"answer after step {len(adapter.requests) - 1}")

    adapter = ScriptedAdapter(reply=reply, hold=2)
    events = await run(adapter, make_job(spec, plan))

    starts = [ev for ev in events if isinstance(ev, CallStarted)]
    assert starts == [CallStarted(JobStage.REFINE, i, n) for i in range(n)]
    assert adapter.max_in_flight == 1  # one step at a time
    first, *rest = adapter.requests
    assert "This is the first part." in first.messages[-1].content
    for i, req in enumerate(rest, start=1):
        prompt = req.messages[-1].content
        assert f"<answer_so_far>\nanswer after step {i - 1}\n</answer_so_far>" in prompt
        assert plan.chunks[i].sent(doc) in prompt
    # Only the last step's answer is the job's: only it streams.
    assert [r.stream for r in adapter.requests] == [False] * (n - 1) + [True]
    deltas = [ev for ev in events if isinstance(ev, AnswerDelta)]
    assert [(d.stage, d.index) for d in deltas] == [(JobStage.REFINE, n - 1)]
    result = result_of(events)
    assert result.text == f"answer after step {n - 1}"
    assert [o.index for o in result.chunk_outputs] == list(range(n))


async def test_select_sends_the_selected_passages_in_one_call() -> None:
    filler = numbered_words(400)
    needle = "The lighthouse keeper was named Ada Quill."
    doc = f"{filler[:1500]} {needle} {filler[1500:]}"
    spec = JobSpec(text=doc, instruction="What was the lighthouse keeper named?")
    spec = replace(spec, strategy=Strategy.SELECT)
    plan = plan_job(spec, model(context=700), TOK, DEFAULTS)
    assert 0 < len(plan.selected) < len(plan.chunks)  # the premise: not everything fits
    adapter = ScriptedAdapter(reply=lambda req: answer("Ada Quill."))
    events = await run(adapter, make_job(spec, plan))

    assert kinds(events) == [
        "PlanReady",
        "CallStarted",
        "AnswerDelta",
        "CallDone",
        "JobResult",
    ]
    (req,) = adapter.requests
    assert step_of(req) == "select"
    prompt = req.messages[-1].content
    chosen = [plan.chunks[i] for i in plan.selected]
    assert all(c.sent(doc) in prompt for c in chosen)
    assert "Ada Quill" in prompt
    left_out = [c for c in plan.chunks if c.index not in plan.selected]
    assert not any(c.sent(doc) in prompt for c in left_out if len(c.sent(doc)) > 20)
    done = events[3]
    assert isinstance(done, CallDone)
    assert (done.output.start, done.output.end) == (chosen[0].start, chosen[-1].end)


# ---- usage, cost, cache status ----


async def test_usage_and_cost_are_the_sum_of_the_calls_paid_for() -> None:
    doc = numbered_words(300)
    spec, plan = planned(doc, Strategy.MAP_REDUCE, max_chunk_tokens=120)
    n = len(plan.chunks)
    adapter = ScriptedAdapter(reply=offset_note(doc))
    result = result_of(await run(adapter, make_job(spec, plan)))
    # offset_note: 50 in / 10 out per map, 80 in / 15 out for the reduce.
    expected = Usage(50 * n + 80, 10 * n + 15, calls=n + 1)
    assert result.usage == expected
    # Each call is priced as it is paid for (at the rates of the model that answered it).
    assert result.cost.total_usd == pytest.approx(price(plan.model, expected).total_usd)
    assert result.cost.total_usd > 0


@pytest.mark.parametrize(
    ("cached_steps", "mode", "status"),
    [
        (set(), "default", CacheStatus.MISS),
        ({"map"}, "default", CacheStatus.PARTIAL),
        ({"map", "notes"}, "default", CacheStatus.HIT),
        (set(), "bypass", CacheStatus.BYPASS),
    ],
)
async def test_cache_status_says_how_many_calls_the_cache_answered(
    cached_steps: set[str], mode: str, status: CacheStatus
) -> None:
    doc = numbered_words(300)
    spec, plan = planned(doc, Strategy.MAP_REDUCE, max_chunk_tokens=120)
    n = len(plan.chunks)
    plain = offset_note(doc)

    def reply(req: LlmRequest) -> Attempt:
        a = plain(req)
        assert a is not None
        if step_of(req) not in cached_steps:
            return a
        *deltas, fin = a.events
        assert isinstance(fin, Finish)
        return Attempt([*deltas, replace(fin, cached=True)])

    adapter = ScriptedAdapter(reply=reply)
    job = make_job(spec, plan, ctx=CallContext(tenant="acme", cache_mode=mode))
    result = result_of(await run(adapter, job))
    assert result.cache_status is status
    # Answers from the cache cost nothing: only the others count in usage and cost.
    paid = {"map": n, "notes": 1}
    calls = sum(c for step, c in paid.items() if step not in cached_steps)
    assert result.usage.calls == calls
    assert (result.cost.total_usd == 0) == (calls == 0)
    hits = [o.cached for o in result.chunk_outputs]
    assert hits == [("map" in cached_steps)] * n


# ---- failures and cancellation ----


async def test_an_upstream_error_mid_map_fails_the_job_and_cancels_the_other_calls() -> None:
    doc = numbered_words(300)
    spec, plan = planned(doc, Strategy.MAP_REDUCE, max_chunk_tokens=100)
    n = len(plan.chunks)
    assert n >= 4
    failing = plan.chunks[1].sent(doc)

    def reply(req: LlmRequest) -> Attempt | None:
        if failing in req.messages[0].content:
            return Attempt(error=err(ErrorKind.SERVER, status=500))
        return None  # the other maps hang until cancelled

    adapter = ScriptedAdapter(reply=reply, hold=3)
    seen: list[RunEvent] = []
    # Every map is let in at once, so which calls were made does not depend on timing.
    job = make_job(spec, plan, concurrency=n)
    with pytest.raises(UpstreamError) as info:
        async with contextlib.aclosing(runner_for(adapter).run(job)) as evs:
            async for ev in evs:
                seen.append(ev)
    assert info.value.kind is ErrorKind.SERVER and info.value.status == 500
    assert len(adapter.requests) == n  # and no reduce
    assert adapter.cancelled == len(adapter.requests) - 1 and adapter.in_flight == 0
    assert not any(isinstance(ev, JobResult) for ev in seen)


async def hanging_map_job(adapter: ScriptedAdapter) -> AsyncGenerator[RunEvent, None]:
    """A map-reduce job's events, taken up to the point where three map calls hang and no
    event is left to take."""
    spec, plan = planned(numbered_words(300), Strategy.MAP_REDUCE, max_chunk_tokens=100)
    events = runner_for(adapter).run(make_job(spec, plan, concurrency=3))
    assert isinstance(await anext(events), PlanReady)
    for i in range(3):
        assert await anext(events) == CallStarted(JobStage.MAP, i, len(plan.chunks))
    assert adapter.in_flight == 3
    return events


async def test_cancelling_the_consumer_cancels_every_call_of_the_job_at_once() -> None:
    adapter = ScriptedAdapter(reply=lambda req: None)
    events = await hanging_map_job(adapter)
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    waiting.cancel()  # as grpc cancels the task of an RPC the client cancelled
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert adapter.in_flight == 0 and adapter.cancelled == 3
    await events.aclose()


async def test_closing_the_events_cancels_every_call_of_the_job_at_once() -> None:
    adapter = ScriptedAdapter(reply=lambda req: None)
    events = await hanging_map_job(adapter)
    await events.aclose()
    # Cancelled here and now, not when the loop finalizes an abandoned generator.
    assert adapter.in_flight == 0 and adapter.cancelled == 3


async def test_closing_the_events_cancels_the_calls_eventually() -> None:
    adapter = ScriptedAdapter(reply=lambda req: None)
    events = await hanging_map_job(adapter)
    await events.aclose()
    for _ in range(50):  # loop turns, not time: the finalizer runs as a task
        if adapter.in_flight == 0:
            break
        await asyncio.sleep(0)
    assert adapter.in_flight == 0 and adapter.cancelled == 3


# ---- warnings ----


async def test_trimmed_history_and_a_truncated_answer_are_warned_about() -> None:
    doc = numbered_words(100)
    turns = tuple(
        Message("user" if i % 2 == 0 else "assistant", f"turn {i} " + numbered_words(120))
        for i in range(4)
    )
    spec, plan = planned(doc, m=model(context=1500), history=turns)
    assert plan.strategy is Strategy.SINGLE_PASS and 0 < plan.history_kept < len(turns)
    early = JobWarning("BUDGET_80_PERCENT", "nearly spent")
    adapter = ScriptedAdapter(reply=lambda req: answer("cut sh", reason="length"))
    events = await run(adapter, make_job(spec, plan, warnings=[early]))

    # Known warnings come right after the plan; those of the run before the result.
    assert events[1] == early
    late = [ev for ev in events[2:] if isinstance(ev, JobWarning)]
    assert [w.code for w in late] == ["HISTORY_TRIMMED", "OUTPUT_TRUNCATED"]
    assert f"{len(turns) - plan.history_kept} oldest" in late[0].message
    assert kinds(events)[-3:] == ["JobWarning", "JobWarning", "JobResult"]
    assert [w.code for w in result_of(events).warnings] == [
        "BUDGET_80_PERCENT",
        "HISTORY_TRIMMED",
        "OUTPUT_TRUNCATED",
    ]
    # The most recent turns that fit are sent, between the document and the question.
    sent = adapter.requests[0].messages
    assert list(sent[1:-1]) == list(turns[len(turns) - plan.history_kept :])
