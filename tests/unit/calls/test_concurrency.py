"""Adaptive map concurrency: AIMD on 429s and latency, within bounds; the gate honours it."""

from __future__ import annotations

import asyncio

import pytest
from longread_server.calls.concurrency import AdaptiveConcurrency, AdaptiveLimit, ConcurrencyParams
from longread_server.domain import ErrorKind, UpstreamError

from tests.clock import FakeClock


def limit(clock: FakeClock, max_limit: int = 16) -> AdaptiveLimit:
    return AdaptiveLimit(max_limit, ConcurrencyParams(min_limit=2, cooldown_s=1.0), clock)


def test_halves_on_pushback_once_per_cooldown_and_not_below_min() -> None:
    clock = FakeClock()
    lim = limit(clock)
    lim.on_pushback()
    lim.on_pushback()  # same burst of 429s: one signal
    assert lim.limit == 8
    for _ in range(5):
        clock.advance(1.0)
        lim.on_pushback()
    assert lim.limit == 2


def test_grows_back_by_about_one_per_limit_successes() -> None:
    clock = FakeClock()
    lim = limit(clock)
    lim.on_pushback()
    assert lim.limit == 8
    for _ in range(9):
        lim.on_success(1.0)
    assert lim.limit == 9
    for _ in range(500):
        lim.on_success(1.0)
    assert lim.limit == 16  # never above the configured bound


def test_rising_latency_backs_off() -> None:
    clock = FakeClock()
    lim = limit(clock)
    for _ in range(20):
        lim.on_success(1.0)
    assert lim.limit == 16
    for _ in range(4):
        lim.on_success(5.0)
    assert lim.limit == 8


def test_non_adaptive_keeps_the_configured_limit() -> None:
    lim = AdaptiveLimit(8, ConcurrencyParams(adaptive=False), FakeClock())
    lim.on_pushback()
    assert lim.limit == 8


async def test_gate_caps_concurrency_and_follows_the_limit() -> None:
    clock = FakeClock()
    reg = AdaptiveConcurrency(ConcurrencyParams(min_limit=1), {"openai": 4}, clock)
    gate = reg.gate("openai", 8)
    release = asyncio.Event()
    running = 0
    peak = 0

    async def work(fail: bool = False) -> None:
        nonlocal running, peak
        async with gate.slot():
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1
            if fail:
                raise UpstreamError(ErrorKind.RATE_LIMITED, "429")

    tasks = [asyncio.create_task(work(fail=i == 0)) for i in range(10)]
    await asyncio.sleep(0)
    assert gate.in_flight == 4 and peak == 4  # min(job cap 8, upstream max 4)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, UpstreamError) for r in results) == 1
    lim = reg.limit("openai")
    assert lim.decreases == 1  # the 429 halved it; the successes after it grew it back
    assert lim.limit == 4


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    reg = AdaptiveConcurrency(ConcurrencyParams(), {"u": 1}, FakeClock())
    gate = reg.gate("u", 1)
    hold = asyncio.Event()

    async def holder() -> None:
        async with gate.slot():
            await hold.wait()

    async def waiter() -> str:
        async with gate.slot():
            return "ran"

    h = asyncio.create_task(holder())
    await asyncio.sleep(0)
    w1, w2 = asyncio.create_task(waiter()), asyncio.create_task(waiter())
    await asyncio.sleep(0)
    hold.set()
    w1.cancel()
    assert await w2 == "ran"
    with pytest.raises(asyncio.CancelledError):
        await w1
    await h
    assert gate.in_flight == 0
