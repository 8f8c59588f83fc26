"""The circuit-breaker state machine (resilience4j semantics), in process and in Redis Lua.

Modelled on resilience4j's CircuitBreakerStateMachineTest: a fake clock is advanced by hand,
nothing sleeps, and every test runs against both backends.
"""

from __future__ import annotations

import asyncio

import pytest
from longread_server.state.breakers import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerParams,
    BreakerStore,
    Outcome,
)

from tests.clock import FakeClock

OK, FAIL, SLOW, IGN = Outcome.SUCCESS, Outcome.FAILURE, Outcome.SLOW_SUCCESS, Outcome.IGNORED
P = BreakerParams(
    window="count",
    window_size=10,
    min_calls=10,
    failure_rate=0.5,
    slow_rate=1.0,
    open_s=30.0,
    open_backoff=2.0,
    open_max_s=100.0,
    half_open_calls=4,
    half_open_max_s=0.0,
)
NAME = "openai"


async def call(store: BreakerStore, outcome: Outcome, params: BreakerParams = P) -> str:
    permit = await store.acquire(NAME, params)
    assert permit.granted, permit
    return await store.record(NAME, params, permit, outcome)


async def trip(store: BreakerStore, params: BreakerParams = P) -> None:
    for _ in range(params.effective_min_calls):
        await call(store, FAIL, params)
    assert (await store.view(NAME, params)).state == OPEN


async def test_below_minimum_calls_it_never_opens(breakers: BreakerStore) -> None:
    for _ in range(9):
        assert await call(breakers, FAIL) == CLOSED  # 9 of 9 failed, minimum is 10
    assert await call(breakers, FAIL) == OPEN  # the 10th trips it


async def test_opens_at_the_failure_rate_threshold(breakers: BreakerStore) -> None:
    for outcome in [OK] * 5 + [FAIL] * 4:
        assert await call(breakers, outcome) == CLOSED
    assert await call(breakers, FAIL) == OPEN  # 5 of 10 = 50% >= 50%


async def test_count_window_slides(breakers: BreakerStore) -> None:
    for outcome in [FAIL] * 4 + [OK] * 6:
        await call(breakers, outcome)
    v = await breakers.view(NAME, P)
    assert (v.state, v.calls, v.failures) == (CLOSED, 10, 4)
    for _ in range(4):  # the old failures slide out as new successes come in
        await call(breakers, OK)
    v = await breakers.view(NAME, P)
    assert (v.calls, v.failures) == (10, 0)


async def test_min_calls_is_clamped_to_a_count_window(breakers: BreakerStore) -> None:
    params = BreakerParams(window="count", window_size=4, min_calls=100, half_open_max_s=0)
    for _ in range(3):
        assert await call(breakers, FAIL, params) == CLOSED
    assert await call(breakers, FAIL, params) == OPEN


async def test_time_window_forgets_old_seconds(breakers: BreakerStore, clock: FakeClock) -> None:
    params = BreakerParams(window="time", window_size=5, min_calls=4, half_open_max_s=0)
    for _ in range(3):
        await call(breakers, FAIL, params)
    clock.advance(6)  # those three are now older than the 5 s window
    v = await breakers.view(NAME, params)
    assert (v.calls, v.failures) == (0, 0)
    for _ in range(3):
        assert await call(breakers, FAIL, params) == CLOSED
    assert await call(breakers, FAIL, params) == OPEN


async def test_time_window_does_not_clamp_min_calls(breakers: BreakerStore) -> None:
    params = BreakerParams(window="time", window_size=2, min_calls=6, half_open_max_s=0)
    for _ in range(5):
        assert await call(breakers, FAIL, params) == CLOSED
    assert await call(breakers, FAIL, params) == OPEN


async def test_slow_call_rate_opens_it(breakers: BreakerStore) -> None:
    params = BreakerParams(
        window_size=4, min_calls=4, slow_rate=0.75, failure_rate=1.0, half_open_max_s=0
    )
    for outcome in (SLOW, SLOW, OK):
        assert await call(breakers, outcome, params) == CLOSED
    assert await call(breakers, SLOW, params) == OPEN  # 3 of 4 slow, no failures


async def test_open_fails_fast_until_the_wait_is_over(
    breakers: BreakerStore, clock: FakeClock
) -> None:
    await trip(breakers)
    clock.advance(10)
    permit = await breakers.acquire(NAME, P)
    assert not permit.granted and permit.state == OPEN
    assert permit.retry_after_s == pytest.approx(20.0)
    clock.advance(20)
    permit = await breakers.acquire(NAME, P)  # lazy OPEN -> HALF_OPEN on the first call
    assert permit.granted and permit.state == HALF_OPEN


async def test_half_open_permits_exactly_n_probes(breakers: BreakerStore, clock: FakeClock) -> None:
    await trip(breakers)
    clock.advance(30)
    permits = [await breakers.acquire(NAME, P) for _ in range(50)]
    assert sum(p.granted for p in permits) == 4
    refused = [p for p in permits if not p.granted]
    assert all(p.state == HALF_OPEN and p.retry_after_s > 0 for p in refused)


async def test_half_open_permits_under_a_concurrent_burst(
    breakers: BreakerStore, clock: FakeClock
) -> None:
    await trip(breakers)
    clock.advance(30)
    permits = await asyncio.gather(*(breakers.acquire(NAME, P) for _ in range(200)))
    assert sum(p.granted for p in permits) == 4


async def test_failed_probes_reopen_with_a_longer_wait(
    breakers: BreakerStore, clock: FakeClock
) -> None:
    await trip(breakers)
    waits = []
    for _ in range(4):
        v = await breakers.view(NAME, P)
        waits.append(round(v.retry_after_s))
        clock.advance(v.retry_after_s)
        probes = [await breakers.acquire(NAME, P) for _ in range(4)]
        await breakers.record(NAME, P, probes[0], FAIL)
        assert await breakers.record(NAME, P, probes[1], FAIL) == OPEN  # 2 of 4: decided
        assert await breakers.record(NAME, P, probes[2], OK) == OPEN  # late: ignored
    assert waits == [30, 60, 100, 100]  # 30 * 2^n, capped at open_max_s


async def test_successful_probes_close_and_reset(breakers: BreakerStore, clock: FakeClock) -> None:
    await trip(breakers)
    clock.advance(30)
    probes = [await breakers.acquire(NAME, P) for _ in range(4)]
    assert await breakers.record(NAME, P, probes[0], FAIL) == HALF_OPEN  # 1 of 4 < 50%
    for p in probes[1:3]:
        assert await breakers.record(NAME, P, p, OK) == HALF_OPEN
    assert await breakers.record(NAME, P, probes[3], OK) == CLOSED
    v = await breakers.view(NAME, P)
    assert (v.state, v.calls, v.opens) == (CLOSED, 0, 0)
    await trip(breakers)  # a fresh window, and the first wait again
    assert (await breakers.view(NAME, P)).retry_after_s == pytest.approx(30.0)


async def test_ignored_outcome_releases_the_probe_permit(
    breakers: BreakerStore, clock: FakeClock
) -> None:
    await trip(breakers)
    clock.advance(30)
    probes = [await breakers.acquire(NAME, P) for _ in range(4)]
    assert not (await breakers.acquire(NAME, P)).granted
    await breakers.record(NAME, P, probes[0], IGN)  # e.g. the caller cancelled
    assert (await breakers.acquire(NAME, P)).granted
    assert not (await breakers.acquire(NAME, P)).granted


async def test_ignored_outcomes_do_not_count_when_closed(breakers: BreakerStore) -> None:
    for _ in range(20):
        await call(breakers, IGN)
    v = await breakers.view(NAME, P)
    assert (v.state, v.calls) == (CLOSED, 0)


async def test_outcomes_from_an_earlier_state_are_dropped(
    breakers: BreakerStore, clock: FakeClock
) -> None:
    slow_caller = await breakers.acquire(NAME, P)  # granted while closed
    await trip(breakers)
    clock.advance(30)
    await breakers.acquire(NAME, P)  # now half-open
    assert await breakers.record(NAME, P, slow_caller, FAIL) == HALF_OPEN
    v = await breakers.view(NAME, P)
    assert v.state == HALF_OPEN


async def test_half_open_that_never_finishes_reopens(
    breakers: BreakerStore, clock: FakeClock
) -> None:
    params = BreakerParams(window_size=2, min_calls=2, half_open_calls=1, half_open_max_s=60)
    await trip(breakers, params)
    clock.advance(params.open_s)
    assert (await breakers.acquire(NAME, params)).granted  # a probe whose replica then dies
    clock.advance(59)
    assert (await breakers.view(NAME, params)).rejecting
    clock.advance(1)
    permit = await breakers.acquire(NAME, params)
    assert not permit.granted and permit.state == OPEN
    assert permit.retry_after_s == pytest.approx(params.open_s * params.open_backoff)


async def test_no_transition_from_closed_to_half_open(
    breakers: BreakerStore, clock: FakeClock
) -> None:
    for _ in range(5):
        await call(breakers, OK)
    clock.advance(10_000)
    permit = await breakers.acquire(NAME, P)
    assert permit.granted and permit.state == CLOSED


async def test_breakers_are_independent(breakers: BreakerStore) -> None:
    await trip(breakers)
    permit = await breakers.acquire("anthropic", P)
    assert permit.granted and permit.state == CLOSED
