"""What a job reports when a fallback model answered some of its calls: each call priced at
the rates of the model that answered it, the result naming that model, a FALLBACK warning."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest
from longread_server.calls.concurrency import AdaptiveConcurrency
from longread_server.calls.pipeline import Call, Next, Pipeline
from longread_server.domain import FallbackNote, FallbackReason, Finish, LlmEvent
from longread_server.plan.catalog import Catalog, Price, price
from longread_server.plan.planner import Strategy
from longread_server.run.events import CallDone, JobResult, JobStage, JobWarning, RunEvent
from longread_server.run.runner import JobRunner

from tests.clock import FakeClock
from tests.unit.run.support import ScriptedAdapter, numbered_words, step_of
from tests.unit.run.test_runner import make_job, offset_note, planned

HAIKU = Catalog.builtin().get("anthropic", "claude-haiku-4-5")


def rerouting(stages: set[str]) -> object:
    """A stage standing in for the fallback: the calls of ``stages`` (``step_of``: "single",
    "map", "notes") come back as answered by claude-haiku-4-5 after a 5xx."""

    async def stage(call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        step = step_of(call.req)
        async for ev in nxt(call):
            if isinstance(ev, Finish) and step in stages:
                assert HAIKU is not None
                note = FallbackNote(
                    FallbackReason.UPSTREAM_ERROR, call.vendor, call.req.model, HAIKU, "503"
                )
                ev = dataclasses.replace(ev, fallback=note)
            yield ev

    return stage


async def run_with(stages: set[str], strategy: Strategy) -> list[RunEvent]:
    doc = numbered_words(300)
    spec, plan = planned(doc, strategy, max_chunk_tokens=120)
    adapter = ScriptedAdapter(reply=offset_note(doc))
    pipeline = Pipeline({adapter.name: adapter}, [rerouting(stages)])  # type: ignore[list-item]
    runner = JobRunner(pipeline, concurrency=AdaptiveConcurrency(clock=FakeClock()))
    async with contextlib.aclosing(runner.run(make_job(spec, plan))) as events:
        return [ev async for ev in events]


async def test_a_single_pass_answered_by_the_fallback_is_named_and_priced_as_it() -> None:
    events = await run_with({"single"}, Strategy.SINGLE_PASS)
    result = events[-1]
    assert isinstance(result, JobResult) and HAIKU is not None
    assert result.model == HAIKU  # not the planned model
    assert result.cost.total_usd == pytest.approx(price(HAIKU, result.usage).total_usd)
    assert result.cost.total_usd != pytest.approx(price(result.plan.model, result.usage).total_usd)
    fallback = [w for w in result.warnings if w.code == "FALLBACK"]
    assert len(fallback) == 1 and "anthropic/claude-haiku-4-5 (upstream_error: 503)" in (
        fallback[0].message
    )
    assert any(isinstance(ev, JobWarning) and ev.code == "FALLBACK" for ev in events[:-1])


async def test_map_calls_rerouted_are_priced_apart_from_the_primarys() -> None:
    events = await run_with({"map"}, Strategy.MAP_REDUCE)
    result = events[-1]
    assert isinstance(result, JobResult) and HAIKU is not None
    done = [ev.output for ev in events if isinstance(ev, CallDone)]
    maps = [o for o in done if o.stage is JobStage.MAP]
    (reduce,) = [o for o in done if o.stage is JobStage.REDUCE]
    assert maps and all(o.model == HAIKU and o.fallback is not None for o in maps)
    assert reduce.model == result.plan.model and reduce.fallback is None
    expected = sum(
        (price(HAIKU, o.usage) for o in maps), start=price(result.plan.model, reduce.usage)
    )
    assert isinstance(expected, Price)
    assert result.cost.total_usd == pytest.approx(expected.total_usd)
    assert result.model == result.plan.model  # the reduce, which gave the answer, was not rerouted
    (warning,) = [w for w in result.warnings if w.code == "FALLBACK"]
    assert warning.message.startswith(f"{len(maps)} call(s) answered by a fallback model")
    # The Stream heard of it once, right after the first rerouted call, not once per call.
    streamed = [ev for ev in events[:-1] if isinstance(ev, JobWarning) and ev.code == "FALLBACK"]
    assert len(streamed) == 1 and streamed[0].message.startswith("map ")
    first = next(i for i, ev in enumerate(events) if isinstance(ev, CallDone))
    assert events[first + 1] == streamed[0]
