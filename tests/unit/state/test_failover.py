"""Shared state when Redis dies, stalls and comes back: fail open (or closed), then recover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from longread_server.state.breakers import BreakerParams, LocalBreakers, Outcome
from longread_server.state.buckets import BucketSpec, Grant, Limited, LocalBuckets
from longread_server.state.failover import FailoverBreakers, FailoverBuckets
from longread_server.state.gate import GatePolicy, RedisGate, StateUnavailable
from longread_server.state.redis import RedisClient, connect
from longread_server.state.redis_breakers import RedisBreakers
from longread_server.state.redis_buckets import RedisBuckets

from tests.clock import FakeClock
from tests.redis_server import RedisServer

SPEC = BucketSpec("rl:{t}:rpm", rate_per_s=0.01, burst=4.0)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test may kill (not the session one)."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
async def client(own_redis: RedisServer) -> AsyncIterator[RedisClient]:
    r = connect(own_redis.url, socket_timeout_s=5)
    yield r
    await r.aclose()


def stores(
    client: RedisClient, clock: FakeClock, **policy: object
) -> tuple[FailoverBuckets, RedisGate]:
    # A generous default timeout: a busy CI machine must not look like a failing Redis.
    policy = {"timeout_s": 1.0, **policy}
    health = RedisGate(GatePolicy(**policy), clock)  # type: ignore[arg-type]
    store = FailoverBuckets(RedisBuckets(client), health, local=LocalBuckets(clock))
    return store, health


async def test_fails_open_to_local_state_and_recovers(
    own_redis: RedisServer, client: RedisClient
) -> None:
    clock = FakeClock()
    store, health = stores(client, clock, retry_s=5.0)
    assert await store.reserve([(SPEC, 3)], [], 0) == Grant(0.0, "shared")

    own_redis.stop()
    d = await store.reserve([(SPEC, 1)], [], 0)
    assert d == Grant(0.0, "local")  # served, from a local bucket
    assert health.degraded and health.errors == 1
    # While it is known down, Redis is not even tried: no timeout per call.
    for _ in range(3):
        assert isinstance(await store.reserve([(SPEC, 1)], [], 0), Grant | Limited)
    assert health.errors == 1 and health.fallbacks == 4

    own_redis.start()
    clock.advance(5.0)
    # Redis restarted empty: a full bucket again (at most one extra burst).
    assert await store.reserve([(SPEC, 1)], [], 0) == Grant(0.0, "shared")
    assert not health.degraded and health.recoveries == 1


async def test_settles_on_the_backend_that_granted(
    own_redis: RedisServer, client: RedisClient
) -> None:
    clock = FakeClock()
    store, _ = stores(client, clock)
    own_redis.stop()
    grant = await store.reserve([(SPEC, 4)], [], 0)
    assert isinstance(grant, Grant) and grant.backend == "local"
    await store.adjust([(SPEC, 4)], grant)  # refunded locally
    local = LocalBuckets(clock)
    assert await local.peek(SPEC) == await store._local.peek(SPEC)  # full again


async def test_fail_closed_refuses(own_redis: RedisServer, client: RedisClient) -> None:
    store, _ = stores(client, FakeClock(), fail_open=False)
    own_redis.stop()
    with pytest.raises(StateUnavailable):
        await store.reserve([(SPEC, 1)], [], 0)


async def test_a_stalled_redis_costs_one_timeout(
    own_redis: RedisServer, client: RedisClient
) -> None:
    """A Redis that accepts but does not answer (CLIENT PAUSE) trips the short timeout."""
    clock = FakeClock()
    store, health = stores(client, clock, timeout_s=0.05, retry_s=5.0)
    await store.reserve([(SPEC, 1)], [], 0)
    pauser = connect(own_redis.url)
    await pauser.execute_command("CLIENT", "PAUSE", "500", "ALL")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await store.reserve([(SPEC, 1)], [], 0) == Grant(0.0, "local")
    assert await store.reserve([(SPEC, 1)], [], 0) == Grant(0.0, "local")
    elapsed = loop.time() - t0
    assert health.errors == 1
    assert elapsed < 0.4  # one 50 ms timeout, not one per call, nor the 0.5 s stall
    await pauser.aclose()  # the pause ends by itself; this server is discarded


async def test_breaker_fails_over_too(own_redis: RedisServer, client: RedisClient) -> None:
    clock = FakeClock()
    health = RedisGate(GatePolicy(timeout_s=1.0, retry_s=5.0), clock)
    breakers = FailoverBreakers(RedisBreakers(client), health, local=LocalBreakers(clock))
    params = BreakerParams(window_size=2, min_calls=2)
    for _ in range(2):
        permit = await breakers.acquire("u", params)
        await breakers.record("u", params, permit, Outcome.FAILURE)
    assert (await breakers.view("u", params)).state == "open"  # in Redis
    permit = await breakers.acquire("u", params)
    own_redis.stop()
    await breakers.record("u", params, permit, Outcome.FAILURE)  # counted as an error, dropped
    permit = await breakers.acquire("u", params)
    assert permit.granted and permit.backend == "local"  # the local breaker knows nothing
    assert health.degraded
