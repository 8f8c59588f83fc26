"""Health as a balancer or an orchestrator sees it: readiness ("" and the AnalysisService)
falls and comes back with a required Redis and with the upstreams' circuits; liveness falls
while the event loop is blocked and comes back when it runs. Every transition is read through
the grpc.health.v1 API (Watch, Check) of a real gateway over loopback, and printed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from longread.client import Options
from longread_sandbox import Sandbox
from longread_server.api.health import LIVENESS
from longread_server.api.registry import SERVICE_NAME
from longread_server.app import Gateway, sandbox_upstreams, start

from tests.chaos.conftest import TRANSITIONS, Transitions, client_for, doc, fire, resilience
from tests.conftest import gateway_config
from tests.redis_server import RedisServer
from tests.waiting import until

Make = Callable[..., Any]
NAMES = {v: k for k, v in health_pb2.HealthCheckResponse.ServingStatus.items()}
# Harness bound on one transition: a hang fails the test instead of hanging it.
WITHIN_S = 20.0


@pytest.fixture
async def gateways(sb: Sandbox) -> AsyncIterator[Make]:
    """``await make(server={...}, **config changes)``: a gateway on the scenario's sandbox
    with readiness re-evaluated every 50 ms, stopped after."""
    started: list[Gateway] = []

    async def make(server: dict[str, Any] | None = None, **changes: Any) -> Gateway:
        cfg = gateway_config(sb, **changes)
        cfg.server.readiness_interval_s = 0.05
        for k, v in (server or {}).items():
            setattr(cfg.server, k, v)
        gw = await start(cfg)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop(0.2)


class Watcher:
    """One Watch stream: every status the server sent, in order."""

    def __init__(self, port: int, service: str) -> None:
        self.service = service
        self.seen: list[str] = []
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        stub: Any = health_pb2_grpc.HealthStub(self._channel)
        async for reply in stub.Watch(health_pb2.HealthCheckRequest(service=self.service)):
            self.seen.append(NAMES[reply.status])

    async def reaches(self, status: str) -> None:
        """Until the latest status sent is ``status``."""
        await until(lambda: bool(self.seen) and self.seen[-1] == status, WITHIN_S, poll=0.01)

    async def saw(self, *statuses: str) -> None:
        """Until the statuses sent are exactly ``statuses``."""
        await until(lambda: tuple(self.seen) == statuses, WITHIN_S, poll=0.01)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()


@asynccontextmanager
async def watching(
    gw: Gateway, scenario: str, cause: str, *services: str
) -> AsyncIterator[list[Watcher]]:
    watchers = [Watcher(gw.port, s) for s in services]
    try:
        yield watchers
    finally:
        for w in watchers:
            await w.close()
            TRANSITIONS.append(Transitions(scenario, w.service, w.seen, cause))


async def check(gw: Gateway, service: str) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
        stub: Any = health_pb2_grpc.HealthStub(ch)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return NAMES[reply.status]


async def test_readiness_falls_while_a_required_redis_is_down(
    gateways: Make, own_redis: RedisServer
) -> None:
    """redis_required: Redis killed -> both readiness names NOT_SERVING (liveness untouched);
    Redis back -> SERVING."""
    # A generous Redis timeout: on a loaded machine a slow answer would count as Redis down
    # (a killed server is refused at once).
    slow_ok = resilience(redis_timeout_s=3.0)
    gw = await gateways(redis_url=own_redis.url, redis_required=True, resilience=slow_ok)
    assert gw.readiness is not None
    async with watching(
        gw, "redis_required", "redis killed, then restarted", "", SERVICE_NAME, LIVENESS
    ) as (overall, service, live):
        for w in (overall, service, live):
            await w.reaches("SERVING")
        own_redis.stop()
        await overall.reaches("NOT_SERVING")
        await service.reaches("NOT_SERVING")
        assert gw.readiness.reasons == ["redis unreachable (redis_required)"]
        assert await check(gw, "") == "NOT_SERVING"
        own_redis.start()
        await overall.reaches("SERVING")
        await service.reaches("SERVING")
        assert await check(gw, SERVICE_NAME) == "SERVING"
    assert overall.seen == service.seen == ["SERVING", "NOT_SERVING", "SERVING"]
    assert live.seen == ["SERVING"]


async def test_readiness_holds_while_an_optional_redis_is_down(
    sb: Sandbox, gateways: Make, own_redis: RedisServer
) -> None:
    """Without redis_required the gateway serves from local state when Redis is down, so it
    stays ready: the gate knows Redis is down, readiness is evaluated, and it says SERVING."""
    gw = await gateways(redis_url=own_redis.url, resilience=resilience(redis_timeout_s=3.0))
    assert gw.readiness is not None and gw.resilience is not None
    gate = gw.resilience.health
    assert gate is not None
    async with watching(gw, "redis_optional", "redis killed", "") as (overall,):
        await overall.reaches("SERVING")
        own_redis.stop()
        async with client_for(gw) as client:
            results = await fire(client, [doc("optional")])
        assert [r.code for r in results] == ["OK"]  # answered from local state
        assert gate.degraded
        await gw.readiness.evaluate()
        assert gw.readiness.reasons == []
        assert await check(gw, "") == await check(gw, SERVICE_NAME) == "SERVING"
    assert overall.seen == ["SERVING"]


async def test_readiness_falls_when_every_circuit_is_open(sb: Sandbox, gateways: Make) -> None:
    """Two upstreams: one open circuit leaves the replica ready (the other still answers);
    both open -> NOT_SERVING; once the open wait is over (half-open: probes may pass) ->
    SERVING again, so traffic comes back to probe them."""
    ups = [u for u in sandbox_upstreams(sb.base_url) if u.name in ("openai", "anthropic")]
    cfg = resilience(
        breaker={"window_size": 4, "min_calls": 4, "open_s": 1.0}, retry={"max_attempts": 1}
    )
    gw = await gateways(upstreams=ups, resilience=cfg)
    assert gw.readiness is not None
    sb.configure(fault_rate=1.0, fault_kind="503")
    openai = Options(vendor="openai", model="gpt-4o-mini", cache="bypass")
    anthropic = Options(vendor="anthropic", model="claude-haiku-4-5", cache="bypass")
    async with (
        watching(gw, "circuits", "503s open openai, then anthropic", "") as (overall,),
        client_for(gw) as client,
    ):
        await overall.reaches("SERVING")
        results = await fire(client, [doc("o") for _ in range(4)], options=openai)
        assert all(r.code == "UNAVAILABLE" for r in results)
        await gw.readiness.evaluate()
        assert await check(gw, "") == "SERVING"  # anthropic's circuit is still closed
        results = await fire(client, [doc("a") for _ in range(4)], options=anthropic)
        assert all(r.code == "UNAVAILABLE" for r in results)
        await overall.reaches("NOT_SERVING")
        assert gw.readiness.reasons == ["every upstream's circuit is open"]
        assert await check(gw, SERVICE_NAME) == "NOT_SERVING"
        sb.configure(fault_rate=0.0)
        await overall.reaches("SERVING")
        results = await fire(client, [doc("after")], options=openai)
        assert [r.code for r in results] == ["OK"]
    assert overall.seen == ["SERVING", "NOT_SERVING", "SERVING"]


async def test_liveness_falls_while_the_loop_is_blocked(sb: Sandbox) -> None:
    """The gateway's event loop is blocked (a sleep run on it) for longer than
    server.liveness_block_s: liveness goes NOT_SERVING, then SERVING once the loop runs;
    readiness is not touched. Draining then takes readiness down for good and leaves
    liveness SERVING."""
    cfg = gateway_config(sb)
    cfg.server.liveness_block_s = 0.2
    cfg.server.drain_delay_s = 0.3
    gw = await start(cfg)  # stopped by the test: the drain is part of it
    stopping: asyncio.Task[None] | None = None
    try:
        assert gw.watchdog is not None and gw.watchdog.blocks == 0
        async with watching(
            gw, "loop_blocked", "time.sleep(1.5) on the loop, drain", LIVENESS, ""
        ) as (live, overall):
            await live.reaches("SERVING")
            await overall.reaches("SERVING")
            asyncio.get_running_loop().call_soon(time.sleep, 1.5)
            await live.saw("SERVING", "NOT_SERVING", "SERVING")
            assert gw.watchdog.blocks == 1
            assert await check(gw, "") == "SERVING"
            stopping = asyncio.create_task(gw.stop(0.2))
            await overall.reaches("NOT_SERVING")
            assert await check(gw, LIVENESS) == "SERVING"
            await stopping
    finally:
        if stopping is None:
            await gw.stop(0.2)
    assert overall.seen == ["SERVING", "NOT_SERVING"]


async def test_no_watchdog_when_liveness_block_s_is_0(gateways: Make) -> None:
    """liveness_block_s = 0: no watchdog thread, and liveness answers SERVING."""
    gw = await gateways(server={"liveness_block_s": 0.0})
    assert gw.watchdog is None
    assert await check(gw, LIVENESS) == "SERVING"
