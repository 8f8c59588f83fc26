"""Admission control and the drain, against the real server over loopback.

The limit is pinned (min = max) so which request is refused follows from the rule, not from
the machine's speed; every wait is for a state (requests in flight, the drain's phase), never
a measured duration.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from longread.client import AsyncClient, Options, error_details
from longread.v1 import analysis_service_pb2 as svc
from longread_sandbox import Sandbox, SandboxConfig
from longread_server.app import Gateway, start
from longread_server.config import AdmissionConfig, TenantConfig

from tests.conftest import TENANT_KEYS, gateway_config
from tests.waiting import until

Q = "When was the harbour dredged?"
BYPASS = Options(cache="bypass")
ACME, GLOBEX = TENANT_KEYS["acme"], TENANT_KEYS["globex"]


def doc(marker: str = "") -> str:
    return f"Report {uuid.uuid4().hex}. The harbour was dredged in 1998. " * 3 + marker


@pytest.fixture
async def slow_sandbox() -> AsyncIterator[Sandbox]:
    """Every upstream answer takes 300 ms: requests stay in flight long enough to count."""
    sb = Sandbox(SandboxConfig(host="127.0.0.1", port=0, latency_ms=300))
    await sb.start()
    yield sb
    await sb.stop()


async def pinned_gateway(sb: Sandbox, limit: int, **changes: Any) -> Gateway:
    tenants = [TenantConfig(name=n, api_keys=[k]) for n, k in TENANT_KEYS.items()]
    admission = AdmissionConfig(enabled=True, initial_limit=limit, min_limit=limit, max_limit=limit)
    return await start(gateway_config(sb, tenants=tenants, admission=admission, **changes))


async def health_status(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub: Any = health_pb2_grpc.HealthStub(ch)
        r = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(r.status)


async def test_over_the_limit_is_refused_with_retry_info_and_others_get_their_share(
    slow_sandbox: Sandbox,
) -> None:
    gw = await pinned_gateway(slow_sandbox, limit=2)
    assert gw.admission is not None
    target = f"127.0.0.1:{gw.port}"
    try:
        async with (
            AsyncClient(target, api_key=ACME) as acme,
            AsyncClient(target, api_key=GLOBEX) as globex,
        ):
            held = [asyncio.create_task(acme.analyze(doc(), Q, options=BYPASS)) for _ in range(2)]
            await until(lambda: gw.admission is not None and gw.admission.in_flight == 2)

            # acme holds the whole limit: its next request is refused at once, with details.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await acme.analyze(doc(), Q, options=BYPASS, timeout=10)
            d = error_details(info.value)
            assert d.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert d.reason == "OVERLOADED" and d.domain == "longread.dev"
            assert d.retry_after_s is not None and d.retry_after_s > 0
            assert d.metadata is not None and d.metadata["limit"] == "2"

            # globex holds nothing, less than its share (2 // 2): it is served.
            r = await globex.analyze(doc(), Q, options=BYPASS, timeout=10)
            assert "1998" in r.text
            # Health is never refused.
            assert await health_status(gw.port) == health_pb2.HealthCheckResponse.SERVING
            for t in held:
                assert "1998" in (await t).text
        assert gw.admission.refused == 1
        assert gw.admission.in_flight == 0 and not gw.admission.by_tenant
    finally:
        await gw.stop(0.5)


async def test_a_flooding_tenant_does_not_starve_another(slow_sandbox: Sandbox) -> None:
    gw = await pinned_gateway(slow_sandbox, limit=4)
    target = f"127.0.0.1:{gw.port}"
    flood_codes: list[grpc.StatusCode] = []
    stop = asyncio.Event()
    try:
        async with (
            AsyncClient(target, api_key=ACME) as acme,
            AsyncClient(target, api_key=GLOBEX) as globex,
        ):

            async def flood() -> None:
                while not stop.is_set():
                    try:
                        await acme.analyze(doc(), Q, options=BYPASS, timeout=10)
                        flood_codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as e:
                        flood_codes.append(e.code())
                        await asyncio.sleep(0.01)

            flooders = [asyncio.create_task(flood()) for _ in range(16)]
            await until(lambda: grpc.StatusCode.RESOURCE_EXHAUSTED in flood_codes)
            served = 0
            for _ in range(8):
                r = await globex.analyze(doc(), Q, options=BYPASS, timeout=10)
                served += "1998" in r.text
            stop.set()
            await asyncio.gather(*flooders)
        assert served == 8
        assert set(flood_codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert grpc.StatusCode.OK in flood_codes
    finally:
        await gw.stop(0.5)


async def test_drain_not_serving_in_flight_finish_and_the_cut_get_details(
    slow_sandbox: Sandbox,
) -> None:
    budgeted = TenantConfig(name="acme", api_keys=["k-acme"], monthly_budget_usd=100.0)
    gw = await start(gateway_config(slow_sandbox, tenants=[budgeted]))
    gw.cfg.server.drain_delay_s = 0.3
    adm = gw.admission
    assert adm is not None and gw.ledger is not None
    target = f"127.0.0.1:{gw.port}"
    async with AsyncClient(target, api_key="k-acme") as c:
        finishing = asyncio.create_task(c.analyze(doc(), Q, options=BYPASS, timeout=30))
        # Streams deltas, then goes silent: still running when the grace period ends.
        stalled_events: list[svc.StreamResponse] = []

        async def stalled() -> None:
            async for ev in c.stream(doc(" [[sandbox-fault:stall]]"), Q, options=BYPASS):
                stalled_events.append(ev)

        stalling = asyncio.create_task(stalled())
        await until(lambda: adm.in_flight == 2)
        stopping = asyncio.create_task(gw.stop(2.0))

        # From the start of the drain: NOT_SERVING, and new RPCs still served for the delay.
        deadline = time.monotonic() + 10
        while await health_status(gw.port) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health never said NOT_SERVING"
            await asyncio.sleep(0.005)
        # After the delay: new RPCs refused with DRAINING; health still answers.
        await until(lambda: adm.closed)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await c.analyze(doc(), Q, options=BYPASS, timeout=5)
        d = error_details(info.value)
        assert (d.code, d.reason) == (grpc.StatusCode.UNAVAILABLE, "DRAINING")
        assert d.retry_after_s is not None and d.retry_after_s > 0
        assert await health_status(gw.port) == health_pb2.HealthCheckResponse.NOT_SERVING

        # In flight within the grace period: finishes.
        finished = await finishing
        assert "1998" in finished.text
        # Still running at its end: cut, with details from our own error mapping.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stalling
        d = error_details(info.value)
        assert (d.code, d.reason) == (grpc.StatusCode.UNAVAILABLE, "DRAINING"), d
        assert d.domain == "longread.dev"
        assert d.retry_after_s is not None and d.retry_after_s > 0
        assert stalled_events  # it was streaming when it was cut
        await stopping
    assert adm.in_flight == 0
    # The cut Stream is charged too: the prompt the upstream read and the answer so far.
    spent = (await gw.ledger.state("acme")).spent_usd
    assert spent > finished.cost.total_usd * 1.5
