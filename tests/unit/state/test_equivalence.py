"""The Lua scripts and the in-process backends are the same machine.

Hypothesis drives both with one random sequence of operations and clock moves and compares
every answer, so a divergence between ``buckets``/``breakers`` and their Redis scripts shows
up as a minimal failing sequence.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from longread_server.state.breakers import BreakerParams, LocalBreakers, Outcome, Permit
from longread_server.state.buckets import BucketSpec, Grant, Limited, LocalBuckets, Never
from longread_server.state.redis_breakers import RedisBreakers
from longread_server.state.redis_buckets import RedisBuckets
from redis.asyncio import Redis

from tests.clock import FakeClock

RPM = BucketSpec("rl:{s}:rpm", rate_per_s=0.5, burst=4.0)
TPM = BucketSpec("rl:{s}:tpm", rate_per_s=50.0, burst=500.0)
HOLD = "rl:{s}:hold"
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Dyadic steps (exact in binary): both machines then see the same instants, and a step that
# lands exactly on a boundary (open_until, a window edge) is judged alike by both; with steps
# like 0.1 the float sums of seconds (local) and milliseconds (Lua) round differently there.
times = st.sampled_from([0.0, 0.0, 0.125, 0.5, 1.0, 2.5, 7.0])
bucket_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"),
            times,
            st.integers(0, 5),
            st.integers(0, 600),
            st.sampled_from([0.0, 1.0, 10.0]),
        ),
        st.tuples(st.just("adjust"), times, st.integers(-300, 300)),
        st.tuples(st.just("hold"), times, st.sampled_from([0.5, 3.0])),
    ),
    min_size=1,
    max_size=25,
)


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, Grant):
        return math.isclose(a.wait_s, b.wait_s, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, Limited):
        return a.key == b.key and math.isclose(a.retry_after_s, b.retry_after_s, rel_tol=1e-9)
    assert isinstance(a, Never)
    return bool(a == b)


@SETTINGS
@given(ops=bucket_ops)
async def test_bucket_scripts_match_the_local_arithmetic(redis: Redis, ops: list[Any]) -> None:
    clock = FakeClock()
    local = LocalBuckets(clock)
    shared = RedisBuckets(redis, prefix=f"eq:{uuid.uuid4().hex[:8]}:", now_ms=clock.now_ms)
    for op in ops:
        clock.advance(op[1])
        if op[0] == "reserve":
            items = [(RPM, float(op[2])), (TPM, float(op[3]))]
            items = [(s, c) for s, c in items if c]
            a = await local.reserve(items, [HOLD], op[4])
            b = await shared.reserve(items, [HOLD], op[4])
            assert same(a, b), (op, a, b)
        elif op[0] == "adjust":
            await local.adjust([(TPM, float(op[2]))])
            await shared.adjust([(TPM, float(op[2]))])
        else:
            await local.hold(HOLD, op[2], [RPM])
            await shared.hold(HOLD, op[2], [RPM])
        for spec in (RPM, TPM):
            assert await local.peek(spec) == pytest.approx(await shared.peek(spec), abs=1e-6)


P = BreakerParams(
    window="count",
    window_size=5,
    min_calls=3,
    failure_rate=0.5,
    slow_rate=0.8,
    open_s=2.0,
    open_backoff=2.0,
    open_max_s=5.0,
    half_open_calls=2,
    half_open_max_s=6.0,
)
breaker_ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), times),
        st.tuples(st.just("record"), times, st.integers(0, 7), st.sampled_from(list(Outcome))),
    ),
    min_size=1,
    max_size=40,
)


@SETTINGS
@given(ops=breaker_ops, window=st.sampled_from(["count", "time"]))
async def test_breaker_script_matches_the_local_machine(
    redis: Redis, ops: list[Any], window: str
) -> None:
    clock = FakeClock()
    params = P if window == "count" else replace(P, window="time", window_size=3)
    local = LocalBreakers(clock)
    shared = RedisBreakers(redis, prefix=f"eq:{uuid.uuid4().hex[:8]}:", now_ms=clock.now_ms)
    permits: list[tuple[Permit, Permit]] = []
    for op in ops:
        clock.advance(op[1])
        if op[0] == "acquire":
            a = await local.acquire("u", params)
            b = await shared.acquire("u", params)
            assert (a.granted, a.epoch, a.state) == (b.granted, b.epoch, b.state), op
            assert a.retry_after_s == pytest.approx(b.retry_after_s, abs=1e-6)
            if a.granted:
                permits.append((a, b))
        elif permits:
            pa, pb = permits.pop(op[2] % len(permits))
            assert await local.record("u", params, pa, op[3]) == await shared.record(
                "u", params, pb, op[3]
            ), op
        va, vb = await local.view("u", params), await shared.view("u", params)
        assert (va.state, va.rejecting, va.calls, va.failures, va.slow, va.opens) == (
            vb.state,
            vb.rejecting,
            vb.calls,
            vb.failures,
            vb.slow,
            vb.opens,
        )
