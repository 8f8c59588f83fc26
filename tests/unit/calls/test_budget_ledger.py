"""The budget ledger fails open, even behind a Redis gate set to fail closed."""

from __future__ import annotations

from longread_server.calls.budget import BudgetLedger
from longread_server.state.gate import GatePolicy, RedisGate
from longread_server.state.redis import connect

from tests.redis_server import free_port


async def test_a_dead_redis_leaves_the_ledger_counting_locally_under_fail_closed() -> None:
    redis = connect(f"redis://127.0.0.1:{free_port()}")  # nothing listens there
    gate = RedisGate(GatePolicy(timeout_s=0.5, retry_s=600.0, fail_open=False))
    ledger = BudgetLedger({"t": 1.0}, redis, health=gate)
    try:
        await ledger.charge("t", 0.25)
        state = await ledger.state("t")
        assert state.spent_usd == 0.25 and state.remaining_usd == 0.75
        assert gate.errors == 1 and gate.degraded
    finally:
        await redis.aclose()
