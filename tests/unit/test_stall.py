"""The stall timer: a limit on each wait, one timer between them, cancellation kept apart."""

from __future__ import annotations

import asyncio

import pytest
from longread_server.stall import StallTimer


async def test_a_wait_past_its_deadline_is_a_timeout_and_the_task_goes_on() -> None:
    stall = StallTimer()
    with pytest.raises(TimeoutError), stall.waiting(stall.now() + 0.02):
        await asyncio.sleep(1)
    await asyncio.sleep(0.01)  # not cancelled any more
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    stall.close()


async def test_waits_with_later_deadlines_keep_one_timer() -> None:
    stall = StallTimer()
    handles = set()
    for _ in range(50):
        with stall.waiting(stall.now() + 5):
            await asyncio.sleep(0)
        handles.add(id(stall._handle))
    assert len(handles) == 1
    stall.close()


async def test_the_timer_firing_between_waits_cancels_nothing() -> None:
    stall = StallTimer()
    with stall.waiting(stall.now() + 0.02):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)  # the timer fires now: a slow consumer, not a stalled wait
    with stall.waiting(stall.now() + 1):
        await asyncio.sleep(0.01)
    stall.close()


async def test_a_moved_deadline_is_what_counts() -> None:
    stall = StallTimer()
    with stall.waiting(stall.now() + 0.02):
        await asyncio.sleep(0)
    # Armed for 20 ms; this wait may last 80 ms: the timer re-arms instead of cutting it.
    with stall.waiting(stall.now() + 0.08):
        await asyncio.sleep(0.04)
    stall.close()


async def test_a_deadline_already_passed_times_out_at_once() -> None:
    stall = StallTimer()
    with pytest.raises(TimeoutError), stall.waiting(stall.now() - 1):
        await asyncio.sleep(1)
    stall.close()


async def test_the_tasks_own_cancellation_stays_a_cancellation() -> None:
    async def wait() -> None:
        stall = StallTimer()
        try:
            with stall.waiting(stall.now() + 10):
                await asyncio.sleep(10)
        finally:
            stall.close()

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
