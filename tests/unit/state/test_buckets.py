"""Token buckets: the same behaviour from the in-process store and the Redis Lua scripts."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from longread_server.state.buckets import (
    BucketSpec,
    BucketStore,
    Grant,
    Limited,
    LocalBuckets,
    Never,
)
from longread_server.state.redis import RedisClient, connect
from longread_server.state.redis_buckets import RedisBuckets

from tests.clock import FakeClock
from tests.redis_cluster import RedisClusterServer
from tests.redis_server import RedisServer

RPM = BucketSpec("rl:{t}:rpm", rate_per_s=1.0, burst=5.0)  # 60/min, burst 5
TPM = BucketSpec("rl:{t}:tpm", rate_per_s=100.0, burst=1000.0)
HOLD = "rl:{t}:hold"


async def test_full_bucket_admits_the_burst_then_queues(buckets: BucketStore) -> None:
    for _ in range(5):
        assert await buckets.reserve([(RPM, 1)], [], max_wait_s=0) == Grant(0.0)
    # Empty: the next one may queue for 1 s (one token at 1/s) if it can wait that long...
    d = await buckets.reserve([(RPM, 1)], [], max_wait_s=10)
    assert isinstance(d, Grant) and d.wait_s == pytest.approx(1.0)
    # ...and the one after that for 2 s: queued callers are served in order, never together.
    d = await buckets.reserve([(RPM, 1)], [], max_wait_s=10)
    assert isinstance(d, Grant) and d.wait_s == pytest.approx(2.0)
    assert await buckets.peek(RPM) == pytest.approx(-2.0)


async def test_a_wait_past_the_deadline_takes_nothing(buckets: BucketStore) -> None:
    await buckets.reserve([(RPM, 5)], [], max_wait_s=0)
    d = await buckets.reserve([(RPM, 1)], [], max_wait_s=0.5)
    assert d == Limited(pytest.approx(1.0), RPM.key)  # type: ignore[arg-type]
    assert await buckets.peek(RPM) == pytest.approx(0.0)


async def test_refill_is_continuous_and_capped(buckets: BucketStore, clock: FakeClock) -> None:
    await buckets.reserve([(RPM, 5)], [], max_wait_s=0)
    clock.advance(2.5)
    assert await buckets.peek(RPM) == pytest.approx(2.5)
    clock.advance(100)
    assert await buckets.peek(RPM) == pytest.approx(5.0)


async def test_all_or_nothing_across_buckets(buckets: BucketStore) -> None:
    # Tokens are short, so the request is not taken either.
    await buckets.reserve([(TPM, 900)], [], max_wait_s=0)
    d = await buckets.reserve([(RPM, 1), (TPM, 500)], [], max_wait_s=0)
    assert isinstance(d, Limited) and d.key == TPM.key
    assert d.retry_after_s == pytest.approx(4.0)  # 400 missing at 100/s
    assert await buckets.peek(RPM) == pytest.approx(5.0)
    assert await buckets.peek(TPM) == pytest.approx(100.0)


async def test_cost_above_capacity_is_never_admitted(buckets: BucketStore) -> None:
    d = await buckets.reserve([(RPM, 1), (TPM, 1001)], [], max_wait_s=3600)
    assert d == Never(TPM.key, 1001.0, 1000.0)
    assert await buckets.peek(RPM) == pytest.approx(5.0)


async def test_settle_refunds_up_to_burst_and_charges_debt(
    buckets: BucketStore, clock: FakeClock
) -> None:
    await buckets.reserve([(TPM, 800)], [], max_wait_s=0)
    await buckets.adjust([(TPM, 500)])  # used 300 of 800
    assert await buckets.peek(TPM) == pytest.approx(700.0)
    await buckets.adjust([(TPM, 10_000)])
    assert await buckets.peek(TPM) == pytest.approx(1000.0)  # never above burst
    await buckets.reserve([(TPM, 1000)], [], max_wait_s=0)
    await buckets.adjust([(TPM, -500)])  # used 500 more than reserved: a debt
    assert await buckets.peek(TPM) == pytest.approx(-500.0)
    d = await buckets.reserve([(TPM, 100)], [], max_wait_s=60)
    assert isinstance(d, Grant) and d.wait_s == pytest.approx(6.0)


async def test_hold_blocks_and_drained_buckets_restart_empty(
    buckets: BucketStore, clock: FakeClock
) -> None:
    await buckets.hold(HOLD, 7.0, [RPM])
    d = await buckets.reserve([(RPM, 1)], [HOLD], max_wait_s=5)
    assert isinstance(d, Limited) and d.retry_after_s == pytest.approx(8.0)  # 7 s + 1 token
    assert d.key == HOLD  # the wait is the hold's doing (a vendor 429), not the bucket's
    clock.advance(7.0)
    assert await buckets.peek(RPM) == pytest.approx(0.0)  # no refill during the hold
    clock.advance(1.0)
    assert await buckets.reserve([(RPM, 1)], [HOLD], max_wait_s=0) == Grant(0.0)
    # A hold never shortens an earlier, longer one.
    await buckets.hold(HOLD, 10.0, [])
    await buckets.hold(HOLD, 1.0, [])
    d = await buckets.reserve([], [HOLD], max_wait_s=0)
    assert isinstance(d, Limited) and d.retry_after_s == pytest.approx(10.0)


async def test_hold_applies_without_buckets(buckets: BucketStore, clock: FakeClock) -> None:
    """An unlimited upstream still backs off after a 429."""
    await buckets.hold(HOLD, 2.0, [])
    d = await buckets.reserve([], [HOLD], max_wait_s=5)
    assert isinstance(d, Grant) and d.wait_s == pytest.approx(2.0)
    clock.advance(2.0)
    assert await buckets.reserve([], [HOLD], max_wait_s=0) == Grant(0.0)


async def test_redis_keys_expire_when_full(
    shared_client: RedisClient, clock: FakeClock, prefix: str
) -> None:
    store = RedisBuckets(shared_client, prefix=prefix, now_ms=clock.now_ms)
    await store.reserve([(RPM, 3)], [], max_wait_s=0)
    ttl = await shared_client.pttl(prefix + RPM.key)
    assert 3000 < ttl <= 4000  # 3 s to refill 3 tokens at 1/s, plus a 1 s margin


async def test_redis_reservations_are_atomic(
    shared_redis: RedisServer | RedisClusterServer, prefix: str
) -> None:
    """200 concurrent reservations from 5 clients on Redis time: exactly the burst admitted."""
    spec = BucketSpec("rl:{atomic}:rpm", rate_per_s=0.001, burst=25.0)
    conns = [connect(shared_redis.url, socket_timeout_s=5) for _ in range(5)]
    try:
        clients = [RedisBuckets(c, prefix=prefix) for c in conns]
        results = await asyncio.gather(
            *(clients[i % 5].reserve([(spec, 1)], [], max_wait_s=0) for i in range(200))
        )
    finally:
        for c in conns:
            await c.aclose()
    assert sum(isinstance(r, Grant) for r in results) == 25


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 3), st.integers(1, 4), st.floats(0, 5)), min_size=1, max_size=60
    )
)
async def test_admitted_never_exceeds_burst_plus_rate_times_t(
    steps: list[tuple[float, int, float]],
) -> None:
    """Whatever arrives when, what is let through by time t is at most burst + rate * t."""
    clock = FakeClock(0.0)
    store = LocalBuckets(clock)
    spec = BucketSpec("k", rate_per_s=2.0, burst=5.0)
    admitted: list[tuple[float, int]] = []  # (time it may proceed, cost)
    for gap, cost, patience in steps:
        clock.advance(gap)
        d = await store.reserve([(spec, cost)], [], max_wait_s=patience)
        if isinstance(d, Grant):
            admitted.append((clock.now() + d.wait_s, cost))
    for t, _ in admitted:
        total = sum(c for at, c in admitted if at <= t)
        assert total <= spec.burst + spec.rate_per_s * t + 1e-6
