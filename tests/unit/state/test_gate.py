"""The one Redis gate, without Redis: failures are raised by stand-ins, time is a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from longread_server.calls.cache import CacheStats, build_response_cache
from longread_server.calls.resilience import redis_gate
from longread_server.config import CacheConfig, Config
from longread_server.state.buckets import BucketSpec, Decision, Grant, Items, LocalBuckets
from longread_server.state.cache_store import MemoryCacheStore
from longread_server.state.failover import FailoverBuckets, FailoverStore
from longread_server.state.gate import LOCAL, SHARED, GatePolicy, RedisGate, StateUnavailable
from longread_server.state.redis import connect
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.clock import FakeClock
from tests.redis_server import free_port


class Redisish:
    """A shared operation that answers, or fails the way a dead Redis does."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(0)  # a round trip: concurrent operations overlap
        if self.down:
            raise RedisConnectionError("refused")
        return "shared answer"


async def local() -> str:
    return "local answer"


async def test_fails_open_leaves_redis_alone_for_retry_s_then_recovers() -> None:
    clock = FakeClock()
    gate = RedisGate(GatePolicy(retry_s=5.0), clock)
    redis = Redisish()
    assert await gate.run(redis, local) == ("shared answer", SHARED)
    redis.down = True
    assert await gate.run(redis, local) == ("local answer", LOCAL)
    assert gate.degraded and gate.errors == 1 and gate.last_error.startswith("ConnectionError")
    clock.advance(4.99)
    for _ in range(3):  # known down: Redis is not tried
        assert await gate.run(redis, local) == ("local answer", LOCAL)
    assert redis.calls == 2 and gate.errors == 1 and gate.fallbacks == 4
    redis.down = False
    clock.advance(0.01)
    assert await gate.run(redis, local) == ("shared answer", SHARED)
    assert not gate.degraded and gate.recoveries == 1


async def test_fail_closed_refuses_unless_the_operation_fails_open() -> None:
    gate = RedisGate(GatePolicy(fail_open=False), FakeClock())
    redis = Redisish()
    redis.down = True
    with pytest.raises(StateUnavailable):
        await gate.run(redis, local)
    with pytest.raises(StateUnavailable):  # known down: refused without trying
        await gate.run(redis, local)
    assert redis.calls == 1
    assert await gate.run(redis, local, fail_open=True) == ("local answer", LOCAL)


async def test_the_interval_is_fixed_by_default_and_doubles_up_to_retry_max_s() -> None:
    for retry_max_s, waits in ((None, [1.0, 1.0, 1.0, 1.0]), (4.0, [1.0, 2.0, 4.0, 4.0])):
        clock = FakeClock()
        gate = RedisGate(GatePolicy(retry_s=1.0, retry_max_s=retry_max_s), clock)
        redis = Redisish()
        redis.down = True
        seen = []
        for _ in waits:
            await gate.run(redis, local)  # tried (the interval ran out), failed
            start = clock.now()
            while not gate.available():
                clock.advance(0.25)
            seen.append(clock.now() - start)
        assert seen == waits
        redis.down = False
        await gate.run(redis, local)
        redis.down = True
        await gate.run(redis, local)  # a success started the streak over
        assert not gate.available()
        clock.advance(1.0)
        assert gate.available()


async def test_failures_already_in_flight_do_not_lengthen_the_interval() -> None:
    clock = FakeClock()
    gate = RedisGate(GatePolicy(retry_s=1.0, retry_max_s=8.0), clock)
    redis = Redisish()
    redis.down = True
    await asyncio.gather(*(gate.run(redis, local) for _ in range(5)))
    assert gate.errors == 5  # every one counted...
    clock.advance(1.0)
    assert gate.available()  # ...but one outage, one interval


async def test_settle_runs_follow_ups_where_the_first_step_ran() -> None:
    clock = FakeClock()
    gate = RedisGate(GatePolicy(retry_s=5.0), clock)
    redis = Redisish()
    assert await gate.settle(LOCAL, redis) is None and redis.calls == 0
    assert await gate.settle(SHARED, redis) == "shared answer"
    redis.down = True
    assert await gate.settle(SHARED, redis) is None  # failed: counted, never raised
    assert gate.errors == 1 and gate.degraded
    assert await gate.settle(SHARED, redis) is None  # known down: skipped
    assert gate.dropped == 1 and redis.calls == 2
    redis.down = False
    clock.advance(5.0)
    assert await gate.settle(SHARED, redis) == "shared answer"
    assert not gate.degraded and gate.recoveries == 1


async def test_a_stalled_redis_costs_one_timeout() -> None:
    gate = RedisGate(GatePolicy(timeout_s=0.02, retry_s=60.0))

    async def stalled() -> str:
        await asyncio.sleep(10)
        return "never"

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(3):
        assert await gate.run(stalled, local) == ("local answer", LOCAL)
    assert loop.time() - t0 < 1.0 and gate.errors == 1
    assert gate.last_error.startswith("TimeoutError")


async def test_a_full_queue_is_not_a_redis_failure() -> None:
    gate = RedisGate(GatePolicy(timeout_s=0.02, max_in_flight=1))
    redis = Redisish()
    async with gate._slots:  # other operations hold every slot past the timeout
        assert await gate.run(redis, local) == ("local answer", LOCAL)
    assert gate.busy == 1 and gate.errors == 0 and not gate.degraded and redis.calls == 0
    assert await gate.run(redis, local) == ("shared answer", SHARED)


class CountingBuckets(LocalBuckets):
    """A stand-in for the Redis buckets that counts the calls that reach it."""

    def __init__(self) -> None:
        super().__init__(FakeClock())
        self.calls = 0

    async def reserve(self, items: Items, holds: Sequence[str], max_wait_s: float) -> Decision:
        self.calls += 1
        return await super().reserve(items, holds, max_wait_s)


class DeadRemote:
    async def get(self, key: str) -> bytes | None:
        raise RedisConnectionError("refused")

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        raise RedisConnectionError("refused")


async def test_one_outage_is_one_view_of_health() -> None:
    """A cache read that finds Redis dead sends the rate limits to local state too, without
    each paying its own timeout."""
    clock = FakeClock()
    gate = RedisGate(GatePolicy(retry_s=1.0), clock)
    store = FailoverStore(DeadRemote(), MemoryCacheStore(10_000, clock), gate)
    shared = CountingBuckets()
    buckets = FailoverBuckets(shared, gate, local=LocalBuckets(clock))
    assert await store.get("k") is None
    spec = BucketSpec("rl:{t}:rpm", rate_per_s=1.0, burst=2.0)
    assert await buckets.reserve([(spec, 1)], [], 0) == Grant(0.0, LOCAL)
    assert shared.calls == 0 and gate.errors == 1 and gate.fallbacks == 2
    # ...and the cache's count of Redis errors is the gate's: one outage, one count.
    stats = CacheStats(health=gate)
    assert stats.redis_errors == 1 and stats.to_json()["redis_errors"] == 1


async def test_the_gateway_builds_one_gate_from_its_settings() -> None:
    cfg = Config()
    cfg.resilience.redis_timeout_s, cfg.resilience.redis_retry_s = 0.5, 3.0
    gate = redis_gate(cfg)
    assert (gate.policy.timeout_s, gate.policy.retry_s, gate.policy.fail_open) == (0.5, 3.0, True)
    redis = connect(f"redis://127.0.0.1:{free_port()}/0")  # never used: nothing is asked
    try:
        cache = build_response_cache(CacheConfig(), redis, gate)
        assert cache.gate is gate and cache.stats.health is gate
        assert build_response_cache(CacheConfig(), None, gate).gate is None  # no Redis: none
    finally:
        await redis.aclose()
