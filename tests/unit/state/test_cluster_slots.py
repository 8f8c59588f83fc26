"""Every script and transaction of the shared state keeps its keys in one Redis Cluster slot.

A cluster runs a script or a MULTI only when all its keys hash to one slot (else CROSSSLOT).
Each store here runs against a real Redis through a client that records the keys of every
script call and transaction, for the names the gateway builds (tenants, upstreams, models,
breakers, cache keys and scopes); each recorded call must map to one slot (``key_slot``, the
cluster's own CRC16 and hash-tag rule).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, cast

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from longread_server.calls.budget import BudgetLedger, month_of
from longread_server.calls.limits import make_quota
from longread_server.state.breakers import BreakerParams, Outcome
from longread_server.state.gate import SHARED
from longread_server.state.redis import RedisClient
from longread_server.state.redis_breakers import RedisBreakers
from longread_server.state.redis_buckets import RedisBuckets
from longread_server.state.redis_cache import RedisCache
from redis.crc import key_slot

from tests.redis_server import patient_gate

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Names as configured: any text, braces included (a name is not trusted to be tag-free).
names = st.text(min_size=1, max_size=24)


def _text(key: object) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


class _Pipeline:
    """Records the key (first argument) of every command queued in a transaction."""

    def __init__(self, real: Any, calls: list[list[str]]) -> None:
        self._real, self._calls, self._keys = real, calls, cast(list[str], [])

    async def __aenter__(self) -> _Pipeline:
        await self._real.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._real.__aexit__(kind, e, tb)

    async def execute(self) -> Any:
        self._calls.append(self._keys)
        return await self._real.execute()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def queue(key: object, *args: Any, **kwargs: Any) -> Any:
            self._keys.append(_text(key))
            return getattr(self._real, name)(key, *args, **kwargs)

        return queue


class Recorder:
    """A client that records the keys of each script call and transaction, then runs it."""

    def __init__(self, real: RedisClient) -> None:
        self.real = real
        self.calls: list[list[str]] = []

    def register_script(self, text: str) -> Callable[..., Awaitable[Any]]:
        script = self.real.register_script(text)

        async def run(keys: Sequence[Any], args: Sequence[Any]) -> Any:
            self.calls.append([_text(k) for k in keys])
            return await script(keys=keys, args=args)

        return run

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self.real.pipeline(transaction=transaction), self.calls)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def slots(self) -> list[set[int]]:
        """The slots of each recorded call's keys."""
        return [{key_slot(k.encode()) for k in keys} for keys in self.calls]


def recorder(redis: RedisClient) -> tuple[Recorder, RedisClient]:
    rec = Recorder(redis)
    return rec, cast(RedisClient, rec)


@SETTINGS
@given(name=names, per_model=st.booleans())
@example(name="}", per_model=False)
@example(name="{x}", per_model=True)
async def test_bucket_scripts_keep_a_quotas_keys_in_one_slot(
    redis: RedisClient, name: str, per_model: bool
) -> None:
    rec, client = recorder(redis)
    store = RedisBuckets(client, prefix=f"test:{uuid.uuid4().hex[:8]}:")
    subject = f"upstream:{name}/gpt-4.1-mini" if per_model else f"tenant:{name}"
    quota = make_quota(subject, requests_per_minute=60, tokens_per_minute=6000, hold=True)
    items = quota.items(1.0, 100.0)
    assert len(items) == 2 and len(quota.holds) == 1
    await store.reserve(items, quota.holds, max_wait_s=0)
    await store.adjust(items)
    await store.hold(quota.holds[0], 1.0, quota.buckets)
    await store.peek(items[0][0])
    assert [len(keys) for keys in rec.calls] == [3, 2, 3, 1]
    assert all(len(slots) == 1 for slots in rec.slots()), rec.calls


@SETTINGS
@given(name=names)
@example(name="}")  # with a tag of the bare name, "{}": no tag, two slots
@example(name="a}b{")
async def test_breaker_script_keeps_state_and_window_in_one_slot(
    redis: RedisClient, name: str
) -> None:
    rec, client = recorder(redis)
    for window in ("count", "time"):  # a list, then a hash of counters, as the window
        store = RedisBreakers(client, prefix=f"test:{uuid.uuid4().hex[:8]}:")
        params = BreakerParams(window=window, window_size=4, min_calls=1)
        permit = await store.acquire(name, params)
        await store.record(name, params, permit, Outcome.FAILURE)
        await store.view(name, params)
    assert len(rec.calls) == 6 and all(len(keys) == 2 for keys in rec.calls)
    assert all(len(slots) == 1 for slots in rec.slots()), rec.calls


@SETTINGS
@given(digest=st.text("0123456789abcdef", min_size=64, max_size=64), tenant=names)
async def test_cache_lease_scripts_keep_an_answers_keys_in_one_slot(
    redis: RedisClient, digest: str, tenant: str
) -> None:
    rec, client = recorder(redis)
    cache = RedisCache(client, prefix=f"test:{uuid.uuid4().hex[:8]}:cache:")
    for scope in ("", f":{tenant}"):  # answers shared across tenants: leases per tenant
        joined = await cache.join(digest, scope, "token", 5.0, watched="other")
        assert joined.state == "acquired"
        await cache.renew(digest, scope, "token", 5.0)
        await cache.fail(digest, scope, "token", b"error", 1.0)
        await cache.join(digest, scope, "token2", 5.0)
        await cache.release(digest, scope, "token2")
    assert [len(keys) for keys in rec.calls] == [3, 1, 2, 3, 1] * 2
    assert all(len(slots) == 1 for slots in rec.slots()), rec.calls


async def test_budget_reservation_booking_and_settlement_touch_one_slot(
    redis: RedisClient,
) -> None:
    rec, client = recorder(redis)
    tenant = f"slots-{uuid.uuid4().hex[:8]}"
    ledger = BudgetLedger({tenant: 10.0}, client, health=patient_gate())
    spend = await ledger.reserve(tenant, 1.0)
    assert spend is not None and spend.where == SHARED
    await ledger.book((tenant, month_of(dt.datetime.now(dt.UTC))), 0.5, 0.5, SHARED)
    await spend.charge(0.25)
    await spend.settle()
    # The reservation's script (spend and leases), the booking's transaction (spend), the
    # settlement's script (spend and leases).
    assert [len(set(keys)) for keys in rec.calls] == [2, 1, 2], rec.calls
    assert all(len(slots) == 1 for slots in rec.slots()), rec.calls
