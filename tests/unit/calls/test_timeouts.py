"""Attempt timeouts: the deadline bounds an attempt; the iterator is always closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from longread_server.calls.timeouts import AttemptTimeouts
from longread_server.domain import ErrorKind, TextDelta, UpstreamError

from tests.unit.calls.support import Attempt, Upstream, chain, collect, make_call, ok


async def test_passes_events_through_and_closes() -> None:
    upstream = Upstream([Attempt(ok())])
    events = await collect(chain([AttemptTimeouts(5, 5)], upstream), make_call())
    assert len(events) == 2 and upstream.closed == 1


async def test_a_passed_deadline_is_an_upstream_timeout() -> None:
    async def never(call: object) -> object:
        await asyncio.Event().wait()
        yield  # pragma: no cover

    nxt = chain([AttemptTimeouts(5, 5)], never)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError) as info:
        await collect(nxt, make_call(deadline=time.monotonic() - 1))
    assert info.value.kind is ErrorKind.TIMEOUT and "deadline" in info.value.message


async def test_stopping_early_closes_the_attempt() -> None:
    upstream = Upstream([Attempt([TextDelta("a"), TextDelta("b")])])
    it = chain([AttemptTimeouts(5, 5)], upstream)(make_call())
    assert await anext(it) == TextDelta("a")
    await it.aclose()  # type: ignore[attr-defined]
    assert upstream.closed == 1


def _paced(before_first: float, after_first: float) -> Any:
    async def upstream(call: object) -> AsyncIterator[TextDelta]:
        await asyncio.sleep(before_first)
        yield TextDelta("a")
        await asyncio.sleep(after_first)
        yield TextDelta("b")

    return upstream


async def test_each_timeout_says_which_limit_it_hit() -> None:
    cases = [
        # (first-event limit, idle limit, deadline in s, upstream's pauses, message)
        (0.05, 5.0, None, (1.0, 0.0), "no response within 0.05s"),
        (5.0, 0.05, None, (0.0, 1.0), "the stream stalled for 0.05s"),
        (5.0, 5.0, 0.05, (1.0, 0.0), "deadline exceeded"),
    ]
    for first_s, idle_s, deadline_s, pauses, message in cases:
        stage = AttemptTimeouts(first_s, idle_s, deadline_margin_s=0.0)
        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        with pytest.raises(UpstreamError) as info:
            await collect(chain([stage], _paced(*pauses)), make_call(deadline=deadline))
        assert info.value.kind is ErrorKind.TIMEOUT
        assert info.value.message.endswith(message), info.value.message
