"""Per-request cost caps and per-tenant monthly budgets, shared by replicas through Redis."""

from __future__ import annotations

import grpc
import pytest
from longread.client import AsyncClient, Options, error_details
from longread_sandbox import Sandbox
from longread_server.app import start
from longread_server.config import TenantConfig

from tests.conftest import gateway_config
from tests.redis_server import RedisServer

DOC = "The ferry to Marsh Island leaves at seven. The return trip departs at noon. " * 4
Q = "When does the ferry leave?"
# claude-opus-4-1 is the priciest catalog model, so a few small jobs reach a small cap.
# cache="bypass": every job calls upstream (a cached answer would cost nothing).
OPTS = Options(model="claude-opus-4-1", max_output_tokens=100, cache="bypass")


async def test_tenant_budget_warns_then_stops_across_replicas(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    tenant = TenantConfig(name="thrifty", api_keys=["k-thrifty"], monthly_budget_usd=0.02)
    cfg = gateway_config(sandbox, tenants=[tenant], redis_url=redis_server.url)
    replicas = [await start(cfg), await start(cfg)]
    try:
        clients = [
            AsyncClient(f"127.0.0.1:{gw.port}", api_key="k-thrifty", timeout=30) for gw in replicas
        ]
        spent = 0.0
        warned_at = None
        refused = None
        for i in range(20):
            c = clients[i % 2]  # alternate replicas: the ledger must be shared
            try:
                r = await c.analyze(DOC, Q, options=OPTS)
            except grpc.aio.AioRpcError as e:
                refused = (i, e)
                break
            spent += r.cost.total_usd
            if any(w.code == "BUDGET_80_PERCENT" for w in r.warnings) and warned_at is None:
                warned_at = i
        assert refused is not None, "the budget never stopped spending"
        i, err = refused
        assert warned_at is not None and warned_at < i
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        d = error_details(err)
        assert d.reason == "BUDGET_EXCEEDED"
        assert d.quota_violations
        assert d.quota_violations[0][0] == "tenant:thrifty/monthly_budget_usd"
        assert float(d.metadata["spent_usd"]) == pytest.approx(spent, rel=1e-6)
        assert spent <= 0.02
        for c in clients:
            await c.close()
    finally:
        for gw in replicas:
            await gw.stop(0.5)


async def test_budget_warning_is_a_stream_event(sandbox: Sandbox) -> None:
    tenant = TenantConfig(name="tight", api_keys=["k-tight"], monthly_budget_usd=0.011)
    gw = await start(gateway_config(sandbox, tenants=[tenant]))
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}", api_key="k-tight") as c:
            events = [ev async for ev in c.stream(DOC, Q, options=OPTS)]
        kinds = [ev.WhichOneof("event") for ev in events]
        assert kinds[:2] == ["plan", "warning"]
        assert events[1].warning.code == "BUDGET_80_PERCENT"
        assert [w.code for w in events[-1].result.warnings] == ["BUDGET_80_PERCENT"]
    finally:
        await gw.stop(0.5)


async def test_budget_ledger_shares_the_redis_gate_and_stops_calling_a_dead_redis(
    sandbox: Sandbox,
) -> None:
    """The ledger's Redis work goes through the gateway's one Redis gate: when Redis dies,
    the first failure sets Redis aside (for ``redis_retry_s``) for the ledger, rate limits and
    breakers alike; every budget check after it is served from the local ledger, and jobs go
    on (budgets fail open)."""
    redis = RedisServer()
    redis.start()
    tenant = TenantConfig(name="gated", api_keys=["k-gated"], monthly_budget_usd=5.0)
    cfg = gateway_config(sandbox, tenants=[tenant], redis_url=redis.url)
    cfg.resilience.redis_retry_s = 600.0  # once down, down for the whole test
    gw = await start(cfg)
    try:
        assert gw.ledger is not None and gw.resilience is not None
        gate = gw.ledger.health
        assert gate is gw.resilience.health
        async with AsyncClient(f"127.0.0.1:{gw.port}", api_key="k-gated", timeout=30) as c:
            first = await c.analyze(DOC, Q, options=OPTS)
            assert gate.errors == 0 and not gate.degraded
            shared = await gw.ledger.state("gated")
            assert shared.spent_usd == pytest.approx(first.cost.total_usd, rel=1e-6)
            redis.stop()
            later = [await c.analyze(DOC, Q, options=OPTS) for _ in range(4)]
        assert all(r.text for r in later)
        assert gate.degraded and gate.errors == 1
        fallbacks = gate.fallbacks
        local = await gw.ledger.state("gated")  # served locally: no Redis call, no new error
        assert gate.fallbacks == fallbacks + 1 and gate.errors == 1
        spent = first.cost.total_usd + sum(r.cost.total_usd for r in later)
        assert local.spent_usd == pytest.approx(spent, rel=1e-6)
    finally:
        await gw.stop(0.5)
        redis.close()
