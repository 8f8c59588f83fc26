"""Shared state that degrades to local state when Redis fails, and comes back when it returns.

Each store here puts its Redis backend first and an in-process one behind it, through the
gateway's one Redis gate (``gate.RedisGate``: timeouts, fail open or closed, when to try Redis
again, counters): rate-limit buckets, circuit breakers, and the response cache's values.

Local fallback buckets enforce ``local_share`` of each limit (set it to 1/replicas to keep
the fleet-wide total while Redis is down; a Redis Cluster master that fails is such an outage
until its replica is promoted); a reservation or permit is always settled on the
backend that granted it. The response cache always fails open (a cache must never refuse a
call), to this process's LRU, or to no cache when ``cache.local_fallback`` is off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from longread_server.state.breakers import (
    BreakerParams,
    BreakerStore,
    BreakerView,
    LocalBreakers,
    Outcome,
    Permit,
)
from longread_server.state.buckets import (
    BucketSpec,
    BucketStore,
    Decision,
    Grant,
    Items,
    LocalBuckets,
)
from longread_server.state.cache_store import MemoryCacheStore
from longread_server.state.gate import LOCAL, SHARED, RedisGate


def _share(spec: BucketSpec, share: float) -> BucketSpec:
    if share >= 1.0:
        return spec
    return replace(spec, rate_per_s=spec.rate_per_s * share, burst=max(1.0, spec.burst * share))


class FailoverBuckets:
    """Redis buckets, with local buckets standing in while Redis is unavailable."""

    def __init__(
        self,
        shared: BucketStore,
        health: RedisGate,
        *,
        local: LocalBuckets | None = None,
        local_share: float = 1.0,
    ) -> None:
        self._shared = shared
        self._local = local or LocalBuckets()
        self._health = health
        self._share = local_share

    def _scaled(self, items: Items) -> list[tuple[BucketSpec, float]]:
        return [(_share(spec, self._share), cost) for spec, cost in items]

    async def reserve(self, items: Items, holds: Sequence[str], max_wait_s: float) -> Decision:
        decision, where = await self._health.run(
            lambda: self._shared.reserve(items, holds, max_wait_s),
            lambda: self._local.reserve(self._scaled(items), holds, max_wait_s),
        )
        return replace(decision, backend=where) if isinstance(decision, Grant) else decision

    async def adjust(self, items: Items, grant: Grant | None = None) -> None:
        if grant is not None and grant.backend == LOCAL:
            await self._local.adjust(self._scaled(items))
            return
        await self._health.settle(SHARED, lambda: self._shared.adjust(items))

    async def hold(self, key: str, seconds: float, drain: Sequence[BucketSpec]) -> None:
        # Both: the local buckets must also stop hammering if Redis fails during the hold.
        await self._local.hold(key, seconds, [_share(s, self._share) for s in drain])
        await self._health.settle(SHARED, lambda: self._shared.hold(key, seconds, drain))

    async def peek(self, spec: BucketSpec) -> float:
        level, _ = await self._health.run(
            lambda: self._shared.peek(spec), lambda: self._local.peek(_share(spec, self._share))
        )
        return level


class FailoverBreakers:
    """Redis breakers, with local breakers standing in while Redis is unavailable."""

    def __init__(
        self, shared: BreakerStore, health: RedisGate, *, local: LocalBreakers | None = None
    ) -> None:
        self._shared = shared
        self._local = local or LocalBreakers()
        self._health = health

    async def acquire(self, name: str, params: BreakerParams) -> Permit:
        permit, where = await self._health.run(
            lambda: self._shared.acquire(name, params), lambda: self._local.acquire(name, params)
        )
        return replace(permit, backend=where)

    async def record(
        self, name: str, params: BreakerParams, permit: Permit, outcome: Outcome
    ) -> str:
        if permit.backend == LOCAL:
            return await self._local.record(name, params, permit, outcome)
        state = permit.state

        async def shared() -> None:
            nonlocal state
            state = await self._shared.record(name, params, permit, outcome)

        await self._health.settle(SHARED, shared)
        return state

    async def view(self, name: str, params: BreakerParams) -> BreakerView:
        view, _ = await self._health.run(
            lambda: self._shared.view(name, params), lambda: self._local.view(name, params)
        )
        return view


class RemoteStore(Protocol):
    """The shared side of the response cache (``redis_cache.RedisCache``): raises Redis's
    errors instead of answering when it cannot."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...


class FailoverStore:
    """``primary`` (shared) while it answers; ``fallback`` (this process) while it does not."""

    def __init__(
        self, primary: RemoteStore, fallback: MemoryCacheStore | None, health: RedisGate
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.health = health

    async def get(self, key: str) -> bytes | None:
        async def local() -> bytes | None:
            return self.fallback.get_now(key) if self.fallback is not None else None

        value, _ = await self.health.run(lambda: self.primary.get(key), local, fail_open=True)
        return value

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        async def local() -> None:
            if self.fallback is not None:
                self.fallback.put_now(key, value, ttl_s)

        await self.health.run(lambda: self.primary.put(key, value, ttl_s), local, fail_open=True)
