"""Both backends of each piece of state, driven by the same fake clock.

The Redis backends run their real Lua scripts on the real test redis-server, and again on the
test Redis Cluster (each script routed to the node owning its keys' slot); the fake clock
reaches them through the scripts' ``now_ms`` override, so one test checks the in-process
arithmetic and the Lua arithmetic alike, with no sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from longread_server.state.breakers import BreakerStore, LocalBreakers
from longread_server.state.buckets import BucketStore, LocalBuckets
from longread_server.state.redis import RedisClient, connect
from longread_server.state.redis_breakers import RedisBreakers
from longread_server.state.redis_buckets import RedisBuckets

from tests.clock import FakeClock
from tests.redis_cluster import RedisClusterServer
from tests.redis_server import RedisServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RedisClient]:
    # Generous timeouts: these tests check script semantics, not speed, on a busy CI machine.
    r = connect(redis_server.url, socket_timeout_s=5)
    yield r
    await r.aclose()


@pytest.fixture
async def cluster(redis_cluster: RedisClusterServer) -> AsyncIterator[RedisClient]:
    r = connect(redis_cluster.url, socket_timeout_s=5)
    yield r
    await r.aclose()


@pytest.fixture
async def shared_client(
    shared_redis: RedisServer | RedisClusterServer,
) -> AsyncIterator[RedisClient]:
    """A client of the session's Redis, one node then the cluster."""
    r = connect(shared_redis.url, socket_timeout_s=5)
    yield r
    await r.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"


# "redis" is one node, "cluster" a Redis Cluster: the same scripts, routed by their keys' slot.
@pytest.fixture(params=["local", "redis", "cluster"])
def buckets(request: pytest.FixtureRequest, clock: FakeClock, prefix: str) -> BucketStore:
    if request.param == "local":
        return LocalBuckets(clock)
    redis = request.getfixturevalue(request.param)
    return RedisBuckets(redis, prefix=prefix, now_ms=clock.now_ms)


@pytest.fixture(params=["local", "redis", "cluster"])
def breakers(request: pytest.FixtureRequest, clock: FakeClock, prefix: str) -> BreakerStore:
    if request.param == "local":
        return LocalBreakers(clock)
    redis = request.getfixturevalue(request.param)
    return RedisBreakers(redis, prefix=prefix, now_ms=clock.now_ms)
