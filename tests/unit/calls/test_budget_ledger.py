"""The budget ledger: reservations (atomic in process and on Redis), their settlement, the
state file that keeps spend across restarts, and failing open behind a fail-closed gate."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from longread_server.calls.budget import STATE_FILE, BudgetLedger, month_of
from longread_server.domain import CallRejected
from longread_server.state.gate import GatePolicy, RedisGate
from longread_server.state.redis import connect

from tests.redis_cluster import RedisClusterServer
from tests.redis_server import RedisServer, free_port, patient_client, patient_gate


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


# ---- reservations: check and add in one step, settled to what the job used ----


async def test_a_reservation_is_refused_when_less_than_it_is_left() -> None:
    ledger = BudgetLedger({"t": 1.0})
    first = await ledger.reserve("t", 0.6)
    assert first is not None and first.before.spent_usd == 0.0
    with pytest.raises(CallRejected) as info:
        await ledger.reserve("t", 0.6)
    assert info.value.reason == "BUDGET_EXCEEDED"
    assert info.value.metadata["needed_usd"] == "0.600000"
    assert (await ledger.state("t")).spent_usd == pytest.approx(0.6)
    assert await ledger.reserve("other", 1e9) is None  # no cap, nothing to reserve


async def test_settling_gives_back_the_unused_part_and_an_overrun_is_charged_at_once() -> None:
    ledger = BudgetLedger({"t": 1.0})
    under = await ledger.reserve("t", 0.5)
    over = await ledger.reserve("t", 0.25)
    assert under is not None and over is not None
    await under.charge(0.1)
    assert under.covers
    await over.charge(0.2)
    await over.charge(0.2)  # 0.15 beyond its reservation: in the ledger now
    assert not over.covers
    assert (await ledger.state("t")).spent_usd == pytest.approx(0.9)
    await under.settle()
    await over.settle()
    await under.settle()  # once only
    assert (await ledger.state("t")).spent_usd == pytest.approx(0.5)
    await under.charge(0.05)  # a call that outlived its job still pays
    assert (await ledger.state("t")).spent_usd == pytest.approx(0.55)


async def test_redis_reservations_are_atomic_across_ledgers(
    shared_redis: RedisServer | RedisClusterServer,
) -> None:
    """Two replicas, 20 concurrent reservations of 1.49 against a cap of 5: three fit."""
    redis = patient_client(shared_redis.url)
    try:
        await redis.delete(*BudgetLedger._redis_keys(("atomic", month_of(dt.datetime.now(dt.UTC)))))
        ledgers = [BudgetLedger({"atomic": 5.0}, redis, health=patient_gate()) for _ in range(2)]

        async def one(i: int) -> bool:
            try:
                await ledgers[i % 2].reserve("atomic", 1.49)
            except CallRejected:
                return False
            return True

        taken = await asyncio.gather(*(one(i) for i in range(20)))
        assert sum(taken) == 3
        assert (await ledgers[0].state("atomic")).spent_usd == pytest.approx(3 * 1.49)
    finally:
        await redis.aclose()


async def test_a_dead_replicas_reservation_is_given_back_once_its_lease_ends(
    shared_redis: RedisServer | RedisClusterServer,
) -> None:
    """Replica A reserves for a job and dies (never settles); once the job's deadline and
    the margin have passed, the next reservation on replica B gives A's back, once, however
    many replicas look. Were A only slow, its late settlement charges its real cost."""
    tenant = "lease"
    redis = patient_client(shared_redis.url)
    try:
        month = month_of(dt.datetime.now(dt.UTC))
        await redis.delete(*BudgetLedger._redis_keys((tenant, month)))
        a, b, c = (
            BudgetLedger({tenant: 5.0}, redis, health=patient_gate(), reservation_margin_s=0.0)
            for _ in range(3)
        )
        slow = await a.reserve(tenant, 2.0, within_s=0.0)  # its deadline: now
        assert slow is not None
        assert (await b.state(tenant)).spent_usd == pytest.approx(2.0)
        await asyncio.sleep(0.05)
        # Two replicas reserve at once: A's 2.0 comes back exactly once.
        held = await asyncio.gather(b.reserve(tenant, 1.0, 30), c.reserve(tenant, 1.0, 30))
        assert (await b.state(tenant)).spent_usd == pytest.approx(2.0)
        for r in held:
            assert r is not None
            await r.charge(0.5)
            await r.settle()
        assert (await b.state(tenant)).spent_usd == pytest.approx(1.0)
        # A was only slow: its settlement adds what its job cost (its reservation is gone).
        await slow.charge(0.75)
        await slow.settle()
        assert (await b.state(tenant)).spent_usd == pytest.approx(1.75)
    finally:
        await redis.aclose()


@pytest.mark.parametrize("tenant", ["plain", "a{b}c", "{", "x{}y{z}", "{}", "t}{u}"])
async def test_the_spend_and_its_leases_share_a_cluster_slot(
    redis_cluster: RedisClusterServer, tenant: str
) -> None:
    """Each step on a tenant's spend and leases is one script, so they must hash to one slot:
    asked of a real cluster, for tenant names with braces too."""
    spend, leases = BudgetLedger._redis_keys((tenant, "2026-12"))
    redis = connect(redis_cluster.url)
    try:
        slots = [await redis.execute_command("CLUSTER KEYSLOT", k) for k in (spend, leases)]
        assert slots[0] == slots[1], (spend, leases)
    finally:
        await redis.aclose()


async def test_a_reservation_taken_while_redis_was_down_reaches_redis_as_the_jobs_cost(
    shared_redis: RedisServer | RedisClusterServer,
) -> None:
    gate = RedisGate(GatePolicy(timeout_s=0.5, retry_s=0.0))
    tenant = "down-then-up"
    dead = connect(f"redis://127.0.0.1:{free_port()}")
    live = patient_client(shared_redis.url)
    try:
        await live.delete(*BudgetLedger._redis_keys((tenant, month_of(dt.datetime.now(dt.UTC)))))
        ledger = BudgetLedger({tenant: 1.0}, dead, health=gate)
        spend = await ledger.reserve(tenant, 0.5)
        assert spend is not None and spend.where == "local"
        await spend.charge(0.2)
        # Redis comes back before the job ends (the same ledger, now pointed at a live one).
        ledger._redis = live
        await spend.settle()  # a transaction (INCRBYFLOAT, EXPIRE) on the tenant's key
        assert (await ledger.state(tenant)).spent_usd == pytest.approx(0.2)
        assert gate.dropped == 0 and not gate.degraded
    finally:
        await dead.aclose()
        await live.aclose()


# ---- the state file: spend survives a restart without Redis ----


async def test_spend_survives_a_restart_in_the_state_file(tmp_path: Path) -> None:
    ledger = BudgetLedger({"t": 1.0}, state_dir=tmp_path)
    assert not ledger.volatile
    await ledger.charge("t", 0.25)
    spend = await ledger.reserve("t", 0.5)
    assert spend is not None
    # A crash mid-job: the next gateway still counts the whole reservation.
    again = BudgetLedger({"t": 1.0}, state_dir=tmp_path)
    assert (await again.state("t")).spent_usd == pytest.approx(0.75)
    await spend.charge(0.1)
    await spend.settle()
    after = BudgetLedger({"t": 1.0}, state_dir=tmp_path)
    assert (await after.state("t")).spent_usd == pytest.approx(0.35)
    data = json.loads((tmp_path / STATE_FILE).read_text())
    assert data["version"] == 1


async def test_an_unreadable_state_file_starts_from_zero(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    ledger = BudgetLedger({"t": 1.0}, state_dir=tmp_path)
    assert (await ledger.state("t")).spent_usd == 0.0
    await ledger.charge("t", 0.5)  # and overwrites it with good state
    assert (await BudgetLedger({"t": 1.0}, state_dir=tmp_path).state("t")).spent_usd == 0.5


def test_without_redis_or_a_state_dir_a_capped_ledger_is_volatile() -> None:
    assert BudgetLedger({"t": 1.0}).volatile
    assert not BudgetLedger({}).volatile  # nothing to forget
