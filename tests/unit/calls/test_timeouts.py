"""Attempt timeouts: the deadline bounds an attempt; the iterator is always closed."""

from __future__ import annotations

import asyncio
import time

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
