"""Shared state that degrades to local state when Redis fails, and comes back when it returns.

Rate limits and breakers must never make the gateway less available than running without
them. Every Redis operation gets a short timeout; on an error or timeout the operation is
done on in-process state instead (fail open, the default) or refused (fail closed), and Redis
is left alone for ``retry_s`` so a dead Redis costs one timeout per interval, not one per
call. The first operation after that interval tries Redis again; success switches back.
Counters (``errors``, ``fallbacks``, ``recoveries``, ``dropped``) and ``degraded`` say what
happened, for metrics and tests.

Local fallback buckets enforce ``local_share`` of each limit (set it to 1/replicas to keep
the fleet-wide total while Redis is down); a reservation or permit is always settled on the
backend that granted it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from redis.exceptions import RedisError

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
from longread_server.state.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)
T = TypeVar("T")
SHARED = "shared"
LOCAL = "local"


class StateUnavailable(Exception):
    """Shared state failed and the gateway is configured to fail closed."""


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    timeout_s: float = 0.25
    retry_s: float = 1.0
    fail_open: bool = True
    # Redis operations in flight at once: a burst waits for a pooled connection (within the
    # timeout) instead of exhausting the pool and being mistaken for a Redis failure.
    max_in_flight: int = 128


class SharedHealth:
    """Whether Redis is usable right now, and what its failures have cost."""

    def __init__(self, policy: FailoverPolicy, clock: Clock = SYSTEM_CLOCK) -> None:
        self.policy = policy
        self._clock = clock
        self._down_until = 0.0
        self._slots = asyncio.Semaphore(policy.max_in_flight)
        self.degraded = False
        self.errors = 0  # Redis operations that failed or timed out
        self.fallbacks = 0  # operations served from local state instead
        self.recoveries = 0  # times Redis came back after failing
        self.dropped = 0  # follow-ups (settlements) skipped while Redis was down
        self.busy = 0  # operations served locally because max_in_flight were already out

    async def run(
        self,
        shared: Callable[[], Awaitable[T]],
        local: Callable[[], Awaitable[T]],
        *,
        fail_open: bool | None = None,
    ) -> tuple[T, str]:
        """``shared()`` if Redis is usable, else (or if it fails) ``local()``; refused instead
        when failing closed (``fail_open``: this operation's choice over the policy's)."""
        if not self.degraded or self._clock.now() >= self._down_until:
            started = False
            try:
                async with asyncio.timeout(self.policy.timeout_s), self._slots:
                    started = True
                    result = await shared()
            except (RedisError, OSError, TimeoutError) as e:
                if started:
                    self._failed(e)
                else:
                    self.busy += 1  # our own queue was full: not Redis's fault
            else:
                if self.degraded:
                    self.degraded = False
                    self.recoveries += 1
                    log.warning("shared state: Redis is back")
                return result, SHARED
        if not (self.policy.fail_open if fail_open is None else fail_open):
            raise StateUnavailable("shared rate-limit/breaker state (Redis) is unavailable")
        self.fallbacks += 1
        return await local(), LOCAL

    async def settle(self, where: str, shared: Callable[[], Awaitable[None]]) -> None:
        """Run a follow-up on Redis (when the first step was done there); errors are counted,
        never raised: the caller's call has already happened."""
        if where != SHARED:
            return
        if self.degraded and self._clock.now() < self._down_until:
            self.dropped += 1  # Redis is known to be down: do not pay a timeout per call
            return
        try:
            async with asyncio.timeout(self.policy.timeout_s), self._slots:
                await shared()
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(e)

    def _failed(self, e: BaseException) -> None:
        self.errors += 1
        self._down_until = self._clock.now() + self.policy.retry_s
        if not self.degraded:
            self.degraded = True
            mode = "local state" if self.policy.fail_open else "refusing calls"
            log.warning("shared state: Redis failed (%r); using %s", e, mode)


def _share(spec: BucketSpec, share: float) -> BucketSpec:
    if share >= 1.0:
        return spec
    return replace(spec, rate_per_s=spec.rate_per_s * share, burst=max(1.0, spec.burst * share))


class FailoverBuckets:
    """Redis buckets, with local buckets standing in while Redis is unavailable."""

    def __init__(
        self,
        shared: BucketStore,
        health: SharedHealth,
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
        self, shared: BreakerStore, health: SharedHealth, *, local: LocalBreakers | None = None
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
