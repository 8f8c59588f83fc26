"""The hedged attempt: started beside a silent one, first event wins, the other is closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
from longread_server.calls.hedge import HedgeStage
from longread_server.calls.pipeline import Call
from longread_server.calls.retry import RetryBudget
from longread_server.calls.timeouts import AttemptLimits
from longread_server.domain import ErrorKind, LlmEvent, TextDelta, UpstreamError

from tests.unit.calls.support import chain, collect, err, make_call, ok

HANG = float("inf")


@dataclass
class Timed:
    """Attempt n waits ``waits[n]`` seconds (HANG: forever), then yields ``events`` or raises
    ``errors[n]``; records starts and closes."""

    waits: Sequence[float]
    errors: Sequence[UpstreamError | None] = ()
    started: int = 0
    closed: list[int] = field(default_factory=list)
    both_started: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, call: Call) -> AsyncIterator[LlmEvent]:
        n = self.started
        self.started += 1
        if self.started == 2:
            self.both_started.set()
        try:
            wait = self.waits[n]
            if wait == HANG:
                await asyncio.Event().wait()
            await asyncio.sleep(wait)
            error = self.errors[n] if n < len(self.errors) else None
            if error is not None:
                raise error
            yield TextDelta(f"attempt {n}")
            yield ok()[1]
        finally:
            self.closed.append(n)


class Observed:
    def __init__(self) -> None:
        self.hedges = 0

    def hedged(self, upstream: str) -> None:
        self.hedges += 1


def stage(after_s: float = 0.05, budget: RetryBudget | None = None) -> HedgeStage:
    b = budget or RetryBudget(0.2, 10, 10.0)
    return HedgeStage(AttemptLimits(hedge_after_s=after_s), lambda upstream: b, min_call_s=0.01)


async def test_off_by_default_is_one_plain_attempt() -> None:
    upstream = Timed([0.1])
    events = await collect(chain([stage(0)], upstream), make_call())
    assert events[0] == TextDelta("attempt 0") and upstream.started == 1


async def test_a_silent_attempt_is_hedged_and_the_first_to_answer_wins() -> None:
    upstream = Timed([HANG, 0.0])
    hedge = stage()
    events = await collect(chain([hedge], upstream), make_call())
    assert events[0] == TextDelta("attempt 1") and len(events) == 2
    assert upstream.started == 2 and sorted(upstream.closed) == [0, 1]  # the loser is closed


async def test_an_answer_before_the_hedge_delay_starts_no_hedge() -> None:
    upstream = Timed([0.0, 0.0])
    events = await collect(chain([stage(1.0)], upstream), make_call())
    assert events[0] == TextDelta("attempt 0") and upstream.started == 1


async def test_the_first_attempt_can_still_win_after_the_hedge_started() -> None:
    upstream = Timed([0.15, HANG])
    events = await collect(chain([stage(0.05)], upstream), make_call())
    assert events[0] == TextDelta("attempt 0") and sorted(upstream.closed) == [0, 1]


async def test_a_fast_failure_is_raised_without_a_hedge() -> None:
    upstream = Timed([0.0], [err(ErrorKind.SERVER)])
    with pytest.raises(UpstreamError) as info:
        await collect(chain([stage()], upstream), make_call())
    assert info.value.kind is ErrorKind.SERVER and upstream.started == 1


async def test_one_failing_attempt_waits_for_the_other_and_two_failures_raise() -> None:
    upstream = Timed([0.1, 0.0], [None, err(ErrorKind.OVERLOADED)])
    events = await collect(chain([stage(0.05)], upstream), make_call())
    assert events[0] == TextDelta("attempt 0")  # the hedge failed first; the first answered

    upstream = Timed([0.1, 0.0], [err(ErrorKind.SERVER), err(ErrorKind.OVERLOADED)])
    with pytest.raises(UpstreamError) as info:
        await collect(chain([stage(0.05)], upstream), make_call())
    assert info.value.kind is ErrorKind.SERVER  # the one that failed last


async def test_hedges_draw_on_the_retry_budget_and_the_observer_hears_of_them() -> None:
    budget = RetryBudget(0.0, 1, 10.0)  # one retry (or hedge) per window
    observed = Observed()
    hedge = stage(0.02, budget)
    hedge.observer = observed  # type: ignore[assignment]
    first = Timed([0.2, 0.0])
    await collect(chain([hedge], first), make_call())
    second = Timed([0.2, 0.0])
    events = await collect(chain([hedge], second), make_call())
    assert first.started == 2 and second.started == 1  # the budget was spent: no hedge
    assert events[0] == TextDelta("attempt 0") and observed.hedges == 1 and budget.denied == 1


async def test_closing_the_call_closes_both_attempts() -> None:
    upstream = Timed([HANG, HANG])
    it = chain([stage(0.01)], upstream)(make_call())
    task = asyncio.ensure_future(anext(it))
    await asyncio.wait_for(upstream.both_started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(upstream.closed) == [0, 1]
