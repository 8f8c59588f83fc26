"""Scenarios 8-10 and "Redis killed mid-load": rate limits and breakers shared through Redis.

The gateways here use a redis-server of the test's own, which the test kills, stalls
(CLIENT PAUSE) and restarts. Fail-open is the default: the gateway keeps serving from local
state, says so in its counters, and goes back to Redis when it returns.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from longread.client import AsyncClient, Options
from longread_sandbox import Sandbox
from longread_server.app import Gateway, sandbox_upstreams
from longread_server.config import UpstreamConfig
from longread_server.state.redis import connect

from tests.chaos.conftest import Row, client_for, doc, fire, resilience
from tests.redis_cluster import RedisClusterServer
from tests.redis_server import RedisServer

Make = Callable[..., Any]


def limited(sb: Sandbox, rpm: float, burst: float) -> list[UpstreamConfig]:
    ups = sandbox_upstreams(sb.base_url)
    openai = next(u for u in ups if u.name == "openai")
    openai.requests_per_minute, openai.burst_requests = rpm, burst
    return ups


def health(gw: Gateway) -> Any:
    assert gw.resilience is not None and gw.resilience.health is not None
    return gw.resilience.health


async def test_08a_redis_killed_fails_open(
    sb: Sandbox, gateways: Make, own_redis: RedisServer, row: Row
) -> None:
    gw = await gateways(
        upstreams=limited(sb, 60_000, 1000), redis_url=own_redis.url, resilience=resilience()
    )
    async with client_for(gw) as client:
        before = await fire(client, [doc() for _ in range(10)], concurrency=5)
        probe = connect(own_redis.url)
        assert await probe.exists("longread:rl:{upstream:openai}:rpm")  # shared state in use
        await probe.aclose()
        own_redis.stop()
        during = await fire(client, [doc() for _ in range(30)], concurrency=5)
    row.add(before + during)
    row.upstream = sb.stats.requests
    h = health(gw)
    assert all(r.ok for r in before + during)
    assert h.degraded and h.errors >= 1 and h.fallbacks >= 30
    slowest = max(r.elapsed_s for r in during)
    row.notes = f"Redis down: {h.errors} errors, {h.fallbacks} local ops; slowest {slowest:.3f}s"
    assert slowest < 1.0


async def test_08b_redis_killed_fails_closed_when_configured(
    sb: Sandbox, gateways: Make, own_redis: RedisServer, row: Row
) -> None:
    gw = await gateways(
        upstreams=limited(sb, 60_000, 1000),
        redis_url=own_redis.url,
        resilience=resilience(fail_open=False),
    )
    own_redis.stop()
    async with client_for(gw) as client:
        results = await fire(client, [doc() for _ in range(10)], concurrency=5)
    row.add(results)
    row.upstream = sb.stats.requests
    assert {r.code for r in results} == {"UNAVAILABLE"} and sb.stats.requests == 0
    assert all(r.elapsed_s < 1.0 for r in results)
    row.notes = f"refused in at most {max(r.elapsed_s for r in results) * 1000:.0f} ms"


async def test_08c_redis_stalled_costs_one_short_timeout(
    sb: Sandbox, gateways: Make, own_redis: RedisServer, row: Row
) -> None:
    gw = await gateways(
        upstreams=limited(sb, 60_000, 1000), redis_url=own_redis.url, resilience=resilience()
    )
    async with client_for(gw) as client:
        await fire(client, [doc() for _ in range(3)])
        pauser = connect(own_redis.url)
        await pauser.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        during = await fire(client, [doc() for _ in range(10)], concurrency=5, timeout=3)
        await pauser.aclose()
    row.add(during)
    row.upstream = sb.stats.requests
    h = health(gw)
    assert all(r.ok for r in during) and h.errors >= 1
    slowest = max(r.elapsed_s for r in during)
    row.notes = f"Redis paused 1.5 s: slowest request {slowest:.3f}s (state timeout 0.25 s)"
    assert slowest < 1.4  # not held for the whole pause


async def test_09_redis_restart_admits_at_most_one_extra_burst(
    sb: Sandbox, gateways: Make, own_redis: RedisServer, row: Row
) -> None:
    """Bucket of 5 at 1/min. Redis restarts empty: one more burst of 5, never more."""
    gw = await gateways(
        upstreams=limited(sb, 1, 5),
        redis_url=own_redis.url,
        resilience=resilience(local_limit_share=0.2, redis_timeout_s=1.0),
    )
    async with client_for(gw) as client:
        first = await fire(client, [doc() for _ in range(10)], timeout=0.5)
        own_redis.stop()
        own_redis.start()
        second = await fire(client, [doc() for _ in range(10)], timeout=0.5)
    row.add(first + second)
    row.upstream = sb.stats.requests
    assert sum(r.ok for r in first) == 5
    assert {r.code for r in first if not r.ok} == {"RESOURCE_EXHAUSTED"}
    h = health(gw)
    # One extra burst from the restarted (empty) Redis, plus one local token (20 % of 5) if a
    # call happened to fail over while it restarted.
    assert sb.stats.requests <= 5 + 5 + 1
    row.notes = f"admitted {sum(r.ok for r in second)} after the restart; redis errors {h.errors}"


async def test_redis_killed_mid_load_keeps_serving_and_recovers(
    sb: Sandbox, gateways: Make, own_redis: RedisServer, row: Row
) -> None:
    gw = await gateways(
        upstreams=limited(sb, 60_000, 1000),
        redis_url=own_redis.url,
        # A busy CI machine must not make a live Redis look like a failing one.
        resilience=resilience(redis_retry_s=0.2, redis_timeout_s=1.0),
    )
    h = health(gw)
    async with client_for(gw) as client:

        async def load(n: int) -> list[Any]:
            return await fire(client, [doc() for _ in range(n)], concurrency=8)

        results = await load(40)
        own_redis.stop()
        results += await load(40)
        assert h.degraded
        own_redis.start()
        for _ in range(30):  # bounded: Redis is retried every 0.2 s
            results += await load(8)
            if not h.degraded:
                break
        assert h.recoveries >= 1 and not h.degraded  # back on Redis
        results += await load(40)
    row.add(results)
    row.upstream = sb.stats.requests
    assert all(r.ok for r in results)
    row.notes = f"redis errors {h.errors}, local ops {h.fallbacks}, recoveries {h.recoveries}"


async def test_breaker_state_is_shared_across_replicas(
    sb: Sandbox, gateways: Make, fresh_redis: RedisServer | RedisClusterServer, row: Row
) -> None:
    """Replica A sees the upstream fail and opens the breaker; replica B, sharing Redis,
    fails fast without ever calling the upstream."""
    cfg = resilience(
        breaker={"window_size": 4, "min_calls": 4},
        retry={"max_attempts": 1},
        redis_timeout_s=1.0,  # a busy CI machine must not look like a failing Redis
    )
    a = await gateways(redis_url=fresh_redis.url, resilience=cfg)
    b = await gateways(redis_url=fresh_redis.url, resilience=cfg)
    sb.configure(fault_rate=1.0, fault_kind="503")
    async with client_for(a) as ca, client_for(b) as cb:
        tripped = await fire(ca, [doc() for _ in range(4)])
        upstream_before = sb.stats.requests
        refused = await fire(cb, [doc() for _ in range(10)])
    row.add(tripped + refused)
    row.upstream = sb.stats.requests
    assert sb.stats.requests == upstream_before == 4
    assert all(r.details and r.details.metadata.get("circuit") == "open" for r in refused)
    row.notes = "replica B failed fast on the breaker replica A opened (0 upstream calls)"


CONFIG = """
listen = "127.0.0.1:0"
redis_url = "{redis}"
[sandbox]
enabled = false
[resilience]
# Three Python processes, a sandbox and this test share a small CI machine: a generous Redis
# timeout keeps a CPU-starved replica on the shared buckets instead of failing over to local
# ones (whose share is then a third of each limit).
redis_timeout_s = 1.0
local_limit_share = 0.34
[[upstreams]]
name = "anthropic"
kind = "anthropic"
base_url = "{sandbox}"
api_key_env = "CHAOS_UPSTREAM_KEY"
[[upstreams]]
name = "openai"
kind = "openai"
base_url = "{sandbox}/v1"
api_key_env = "CHAOS_UPSTREAM_KEY"
requests_per_minute = {rpm}
burst_requests = {burst}
[[tenants]]
name = "acme"
api_keys_env = "CHAOS_TENANT_KEYS"
"""


def spawn(config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CHAOS_UPSTREAM_KEY": "sandbox", "CHAOS_TENANT_KEYS": "chaos-key"}
    env = {k: v for k, v in env.items() if not k.startswith("LONGREAD_")}
    return subprocess.Popen(
        [sys.executable, "-m", "longread.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


async def port_of(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
    assert "serving on" in line, line
    return int(line.rsplit(":", 1)[1])


async def test_10_three_replicas_share_one_bucket(
    sb: Sandbox, fresh_redis: RedisServer | RedisClusterServer, tmp_path: Path, row: Row
) -> None:
    """3 gateway processes x 10 concurrent calls, one Redis: admitted <= burst + rate * t."""
    rate_per_s, burst = 2.0, 5
    config = tmp_path / "longread.toml"
    config.write_text(
        CONFIG.format(redis=fresh_redis.url, sandbox=sb.base_url, rpm=rate_per_s * 60, burst=burst)
    )
    procs = [spawn(config) for _ in range(3)]
    try:
        ports = await asyncio.gather(*(port_of(p) for p in procs))
        clients = [AsyncClient(f"127.0.0.1:{p}", api_key="chaos-key") for p in ports]
        # Warm each replica up (tokenizer, Redis connections, scripts) on another upstream.
        warm = Options(model="claude-haiku-4-5", cache="bypass")
        await asyncio.gather(*(fire(c, [doc()], options=warm) for c in clients))
        sb.reset()
        t0 = time.monotonic()
        per_replica = await asyncio.gather(
            *(fire(c, [doc() for _ in range(10)], concurrency=10, timeout=2.0) for c in clients)
        )
        elapsed = time.monotonic() - t0
        for c in clients:
            await c.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    results = [r for rs in per_replica for r in rs]
    row.add(results)
    row.upstream = sb.stats.requests
    admitted = sb.stats.requests
    bound = burst + rate_per_s * elapsed
    assert admitted == sum(r.ok for r in results)
    assert burst <= admitted <= bound
    assert {r.code for r in results if not r.ok} <= {"RESOURCE_EXHAUSTED"}
    by_replica = [sum(r.ok for r in rs) for rs in per_replica]
    row.notes = (
        f"admitted {admitted} (per replica {by_replica}) in {elapsed:.2f}s; "
        f"bound burst + rate*t = {bound:.1f}"
    )
