"""The RepeatTimeout against the bound it stands in for: every case runs with ``asyncio.timeout``
as well, on asyncio's loop and on uvloop, and both must behave alike."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop
from longread_server.repeat_timeout import RepeatTimeout

T = TypeVar("T")
Bound = Callable[[float | None, Awaitable[T]], Coroutine[Any, Any, T]]

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _reference() -> Bound[Any]:
    async def bounded(timeout: float | None, aw: Awaitable[Any]) -> Any:
        async with asyncio.timeout(timeout):
            return await aw

    return bounded


def _repeat_timeout() -> Bound[Any]:
    rt: RepeatTimeout | None = None

    async def bounded(timeout: float | None, aw: Awaitable[Any]) -> Any:
        nonlocal rt
        rt = rt or RepeatTimeout()  # one for all the awaits of a case, as its users keep one
        with rt.bound(timeout):
            return await aw

    return bounded


BOUNDS = {"asyncio.timeout": _reference, "RepeatTimeout": _repeat_timeout}


def hold_the_loop(seconds: float) -> None:
    """Work that does not yield to the loop, as a busy consumer's would."""
    time.sleep(seconds)


def run(loop: str, case: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(case())


both = pytest.mark.parametrize(
    ("loop", "make"),
    [(lp, b) for lp in LOOPS for b in BOUNDS],
    ids=[f"{lp}-{b}" for lp in LOOPS for b in BOUNDS],
)


@both
def test_an_await_that_outlasts_the_bound_raises_timeout_error(loop: str, make: str) -> None:
    async def case() -> tuple[float, int]:
        bounded = BOUNDS[make]()
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await bounded(0.05, asyncio.sleep(5))
        task = asyncio.current_task()
        assert task is not None
        return time.monotonic() - t0, task.cancelling()

    took, cancelling = run(loop, case)
    assert 0.045 <= took < 1.0
    assert cancelling == 0  # the cancellation it made is taken back


@both
def test_an_await_within_the_bound_returns_its_result(loop: str, make: str) -> None:
    async def case() -> str:
        return str(await BOUNDS[make]()(1.0, asyncio.sleep(0.01, "done")))

    assert run(loop, case) == "done"


@both
def test_the_bound_is_per_await_however_many_there_are(loop: str, make: str) -> None:
    async def case() -> float:
        bounded = BOUNDS[make]()
        t0 = time.monotonic()
        for _ in range(100):  # 100 x 2 ms: far beyond one 50 ms bound, each await within it
            await bounded(0.05, asyncio.sleep(0.002))
        return time.monotonic() - t0

    assert run(loop, case) > 0.05


@both
def test_time_between_awaits_does_not_count(loop: str, make: str) -> None:
    async def case() -> None:
        bounded = BOUNDS[make]()
        await bounded(0.05, asyncio.sleep(0.01))
        hold_the_loop(0.1)  # the consumer busy with what the await gave it, past the bound
        await asyncio.sleep(0.1)  # and awaiting something else, unbounded
        await bounded(0.05, asyncio.sleep(0.01))

    run(loop, case)


@both
def test_no_bound_waits_as_long_as_it_takes(loop: str, make: str) -> None:
    async def case() -> str:
        bounded = BOUNDS[make]()
        await bounded(0.02, asyncio.sleep(0))  # a timer left from an earlier bound
        return str(await bounded(None, asyncio.sleep(0.1, "late")))

    assert run(loop, case) == "late"


@both
def test_a_bound_already_past_times_out_the_next_suspension(loop: str, make: str) -> None:
    async def case() -> None:
        with pytest.raises(TimeoutError):
            await BOUNDS[make]()(0.0, asyncio.sleep(1))

    run(loop, case)


@both
def test_a_cancellation_from_elsewhere_stays_a_cancellation(loop: str, make: str) -> None:
    async def case() -> int:
        bounded = BOUNDS[make]()

        async def waits() -> None:
            await bounded(5.0, asyncio.sleep(5))

        task = asyncio.create_task(waits())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelling()

    assert run(loop, case) == 1


@both
def test_a_cancellation_at_the_moment_the_bound_runs_out_wins(loop: str, make: str) -> None:
    async def case() -> None:
        bounded = BOUNDS[make]()

        async def waits() -> None:
            await bounded(0.05, asyncio.sleep(5))

        task = asyncio.create_task(waits())
        await asyncio.sleep(0)  # it is waiting, bounded
        hold_the_loop(0.08)  # its bound runs out while the loop is held up here...
        task.cancel()  # ...and somebody cancels it before the loop turns
        with pytest.raises(asyncio.CancelledError):
            await task

    run(loop, case)


@both
def test_an_outer_asyncio_timeout_running_out_first_is_the_outer_ones(loop: str, make: str) -> None:
    async def case() -> tuple[bool, int]:
        bounded = BOUNDS[make]()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05) as outer:
                await bounded(5.0, asyncio.sleep(5))
        task = asyncio.current_task()
        assert task is not None
        return outer.expired(), task.cancelling()

    assert run(loop, case) == (True, 0)


@both
def test_an_inner_bound_running_out_first_leaves_the_outer_timeout_alone(
    loop: str, make: str
) -> None:
    async def case() -> tuple[bool, str]:
        bounded = BOUNDS[make]()
        async with asyncio.timeout(5.0) as outer:
            with contextlib.suppress(TimeoutError):
                await bounded(0.05, asyncio.sleep(5))
            after = await asyncio.sleep(0.01, "the outer block goes on")
        return outer.expired(), after

    assert run(loop, case) == (False, "the outer block goes on")


@both
def test_bounds_each_await_of_a_generator_driven_by_its_consumer(loop: str, make: str) -> None:
    async def case() -> list[int]:
        bounded = BOUNDS[make]()

        async def slow_third() -> AsyncIterator[int]:
            for i in range(5):
                await bounded(0.05, asyncio.sleep(0.2 if i == 2 else 0.001))
                yield i

        got: list[int] = []
        with pytest.raises(TimeoutError):
            async for i in slow_third():
                got.append(i)
        return got

    assert run(loop, case) == [0, 1]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stream_that_keeps_answering_sets_about_one_timer_per_bound(loop: str) -> None:
    """What it is for: 200 awaits of 5 ms each under a 100 ms bound set a handful of timers
    (about one per 100 ms), where asyncio.timeout sets one per await."""

    async def case() -> int:
        rt = RepeatTimeout()
        timers: list[asyncio.TimerHandle] = []  # kept, so no two can share an id
        for _ in range(200):
            with rt.bound(0.1):
                await asyncio.sleep(0.005)
            if rt._handle is not None and all(rt._handle is not t for t in timers):
                timers.append(rt._handle)
        rt.close()
        return len(timers)

    assert 1 <= run(loop, case) <= 200 * 0.005 / 0.1 + 3


@pytest.mark.parametrize("loop", LOOPS)
def test_close_cancels_the_timer_and_a_closed_one_still_bounds(loop: str) -> None:
    async def case() -> None:
        rt = RepeatTimeout()
        with rt.bound(5.0):
            await asyncio.sleep(0)
        handle = rt._handle
        assert handle is not None
        rt.close()
        assert handle.cancelled() and rt._handle is None
        with pytest.raises(TimeoutError), rt.bound(0.02):
            await asyncio.sleep(1)

    run(loop, case)


@pytest.mark.parametrize("loop", LOOPS)
def test_one_serves_one_task_after_another(loop: str) -> None:
    async def case() -> list[str]:
        rt = RepeatTimeout()

        async def one(t: float) -> str:
            try:
                with rt.bound(0.05):
                    await asyncio.sleep(t)
                return "ok"
            except TimeoutError:
                return "timed out"

        return [await asyncio.create_task(one(t)) for t in (0.01, 0.2, 0.01)]

    assert run(loop, case) == ["ok", "timed out", "ok"]


@pytest.mark.parametrize("loop", LOOPS)
def test_two_awaits_at_once_are_refused(loop: str) -> None:
    async def case() -> None:
        rt = RepeatTimeout()
        with rt.bound(1.0):
            with pytest.raises(RuntimeError, match="one await at a time"), rt.bound(1.0):
                pass
            await asyncio.sleep(0)

    run(loop, case)


def test_outside_a_task_it_says_so() -> None:
    loop = asyncio.new_event_loop()
    try:
        rt = RepeatTimeout(loop)
        with pytest.raises(RuntimeError, match="inside a task"), rt.bound(1.0):
            pass
    finally:
        loop.close()
