"""A Redis Cluster master killed mid-load, its replica promoted: no request fails, no limit
admits beyond its bound.

Two gateways share a real cluster (3 masters, 3 replicas, its own for this test). Load runs
on both: calls to an upstream without limits, which must all succeed, and calls to an
upstream whose rate limit the load exceeds, which must succeed or be refused by that limit
(RESOURCE_EXHAUSTED, RATE_LIMITED), nothing else. Mid-load the master owning the limit's
bucket is killed (SIGKILL); the cluster declares it failed and promotes its replica. Until
then the gateways serve from local state (each enforcing ``local_limit_share`` = 1/2 of the
limit); then they find the new master and go back to the shared bucket.

The bound (README, "Shared state"): the shared bucket admits at most burst + rate * t; while
Redis is unavailable, the local buckets of the fleet at most burst + rate * t more (each has
1/replicas of the limit); and the promoted replica may lack the last writes its master had
not yet sent it, at most one full bucket (as after a restart of a single node).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from longread.client import Options
from longread_sandbox import Sandbox
from longread_server.app import Gateway
from longread_server.state.redis import connect

from tests.chaos.conftest import Result, Row, client_for, doc, one, resilience
from tests.chaos.test_shared_state import health, limited
from tests.redis_cluster import RedisClusterServer
from tests.waiting import until

Make = Callable[..., Any]
RATE_PER_S, BURST = 2.0, 5
FREE = Options(model="claude-haiku-4-5", cache="bypass")  # anthropic: no limit configured
LIMITED = Options(model="gpt-4.1-mini", cache="bypass")  # openai: RATE_PER_S, BURST
BUCKET = "longread:rl:{upstream:openai}:rpm"


@pytest.fixture
async def own_cluster() -> AsyncIterator[RedisClusterServer]:
    """A cluster of the test's own: it loses a master."""
    cluster = RedisClusterServer()
    try:
        await asyncio.to_thread(cluster.start)
        yield cluster
    finally:
        await asyncio.to_thread(cluster.close)


async def test_cluster_master_killed_mid_load_replica_promoted(
    sb: Sandbox, gateways: Make, own_cluster: RedisClusterServer, row: Row
) -> None:
    cfg = {
        "upstreams": limited(sb, RATE_PER_S * 60, BURST),
        "redis_url": own_cluster.url,
        # Local share 1/2: two replicas keep the fleet-wide limit while the cluster fails
        # over. A generous timeout: a busy machine must not look like a failing Redis, and a
        # dead master answers at once anyway (connection refused).
        "resilience": resilience(local_limit_share=0.5, redis_timeout_s=1.0, redis_retry_s=0.2),
    }
    gws: list[Gateway] = [await gateways(**cfg), await gateways(**cfg)]
    gates = [health(gw) for gw in gws]
    free: list[Result] = []
    capped: list[Result] = []
    stop = asyncio.Event()

    async def worker(i: int) -> None:
        async with client_for(gws[i % 2]) as client:
            while not stop.is_set():
                free.append(await one(client, doc(f"free {i}"), timeout=3.0, options=FREE))
                capped.append(await one(client, doc(f"capped {i}"), timeout=2.0, options=LIMITED))
                await asyncio.sleep(0.05)

    t0 = time.monotonic()
    workers = [asyncio.create_task(worker(i)) for i in range(6)]
    try:
        # The shared bucket is in use on the cluster before its master is killed.
        await until(lambda: len(capped) >= 20, within=120, poll=0.05)
        probe = connect(own_cluster.url, socket_timeout_s=5)
        assert await probe.exists(BUCKET)
        await probe.aclose()
        master = await asyncio.to_thread(own_cluster.master_of, BUCKET)
        replica = await asyncio.to_thread(own_cluster.replica_of, master)
        before = len(free) + len(capped)
        await asyncio.to_thread(own_cluster.kill, master)
        await asyncio.to_thread(own_cluster.wait_promoted, replica)
        # Both gateways back on the cluster, on the promoted replica, under load.
        # (Bounds on these waits only turn a hang into a failure.)
        await until(lambda: all(g.recoveries and not g.degraded for g in gates), 120, 0.05)
        after = len(free) + len(capped)
        target = len(capped) + 20
        await until(lambda: len(capped) >= target, within=120, poll=0.05)
        assert own_cluster.role(replica) == "master"
        probe = connect(own_cluster.url, socket_timeout_s=5)  # the old one's link is dead
        assert own_cluster.master_of(BUCKET) is replica
        assert await probe.exists(BUCKET)  # the shared bucket, on the promoted replica
        await probe.aclose()
    finally:
        stop.set()
        await asyncio.gather(*workers)
    elapsed = time.monotonic() - t0

    results = free + capped
    row.add(results)
    row.upstream = sb.stats.requests
    admitted = sum(r.ok for r in capped)
    bound = 3 * BURST + 2 * RATE_PER_S * elapsed
    refused = Counter(r.details.reason if r.details else r.code for r in capped if not r.ok)
    errors, fallbacks = sum(g.errors for g in gates), sum(g.fallbacks for g in gates)
    row.notes = (
        f"master killed after {before} requests, back on the promoted replica after {after}; "
        f"{len(free)} unlimited calls all ok; limited: admitted {admitted} of {len(capped)} "
        f"in {elapsed:.1f}s, bound 3*burst + 2*rate*t = {bound:.1f}; "
        f"redis errors {errors}, local ops {fallbacks}"
    )
    print(f"\n{row.scenario}: {row.notes}")
    assert all(r.ok for r in free), Counter(r.code for r in free if not r.ok)
    assert set(refused) <= {"RATE_LIMITED"}, refused
    assert sb.stats.by_model["gpt-4.1-mini"] == admitted  # refused calls never went upstream
    assert admitted <= bound
    assert errors >= 1 and fallbacks >= 1  # the failover was felt, and served locally
