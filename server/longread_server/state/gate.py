"""The one Redis gate: whether shared state is worth trying now, and what its failures cost.

Every piece of state shared through Redis (the response cache and its single-flight leases,
rate-limit buckets, circuit breakers, tenant budgets) goes through one ``RedisGate``, so one
Redis outage is one view of health. Shared state must never make the gateway less available
than running without it: every Redis operation gets a short timeout (``timeout_s``); on an
error or timeout the operation is done on in-process state instead (fail open, the default) or
refused with ``StateUnavailable`` (fail closed), and Redis is left alone for ``retry_s``, so a
dead Redis costs one timeout per interval, not one per call. The first operation after that
interval tries Redis again; success switches back. With ``retry_max_s`` above ``retry_s`` the
interval doubles per failed retry up to it (``backoff.Backoff``); by default it stays fixed.

Counters say what happened, for metrics and tests: ``errors``, ``fallbacks``, ``recoveries``,
``dropped``, ``busy``, and ``degraded``. They are the gate's, not one part's: whichever part
meets a dead Redis first sets it aside for all of them, so per-part counts would only say who
happened to ask first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from longread_server.backoff import Backoff
from longread_server.state.clock import SYSTEM_CLOCK, Clock
from longread_server.state.redis import REDIS_FAILURES

log = logging.getLogger(__name__)
T = TypeVar("T")

# Where an operation was served (``Grant.backend``, ``Permit.backend``).
SHARED = "shared"
LOCAL = "local"

_FAILURES = REDIS_FAILURES


class StateUnavailable(Exception):
    """Shared state failed and the gateway is configured to fail closed."""


@dataclass(frozen=True, slots=True)
class GatePolicy:
    timeout_s: float = 0.25  # per Redis operation (``resilience.redis_timeout_s``)
    retry_s: float = 1.0  # Redis left alone this long after a failure (``redis_retry_s``)
    fail_open: bool = True  # Redis down: local state (True) or refuse (False)
    # Redis operations in flight at once: a burst waits for a pooled connection (within the
    # timeout) instead of exhausting the pool and being mistaken for a Redis failure.
    max_in_flight: int = 128
    # Longest interval after repeated failures (doubling from ``retry_s``); None: retry_s.
    retry_max_s: float | None = None

    @property
    def backoff(self) -> Backoff:
        cap = self.retry_s if self.retry_max_s is None else max(self.retry_s, self.retry_max_s)
        return Backoff(self.retry_s, cap)


class RedisGate:
    """Whether Redis is usable right now, and what its failures have cost."""

    def __init__(self, policy: GatePolicy | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.policy = policy = policy or GatePolicy()
        self._clock = clock
        self._backoff = policy.backoff
        self._down_until = 0.0
        self._streak = 0  # failed tries in a row, each after the previous interval ran out
        self._slots = asyncio.Semaphore(policy.max_in_flight)
        self.degraded = False
        self.errors = 0  # Redis operations that failed or timed out
        self.last_error = ""
        self.fallbacks = 0  # operations served from local state instead
        self.recoveries = 0  # times Redis came back after failing
        self.dropped = 0  # follow-ups (settlements) skipped while Redis was down
        self.busy = 0  # operations served locally because max_in_flight were already out

    def available(self) -> bool:
        """False while Redis is known to be down (within its interval after a failure)."""
        return not self.degraded or self._clock.now() >= self._down_until

    async def run(
        self,
        shared: Callable[[], Awaitable[T]],
        local: Callable[[], Awaitable[T]],
        *,
        fail_open: bool | None = None,
    ) -> tuple[T, str]:
        """``shared()`` if Redis is usable, else (or if it fails) ``local()``; refused instead
        when failing closed (``fail_open``: this operation's choice over the policy's)."""
        if self.available():
            started = False
            try:
                async with asyncio.timeout(self.policy.timeout_s), self._slots:
                    started = True
                    result = await shared()
            except _FAILURES as e:
                if started:
                    self.failed(e)
                else:
                    self.busy += 1  # our own queue was full: not Redis's fault
            else:
                self.succeeded()
                return result, SHARED
        if not (self.policy.fail_open if fail_open is None else fail_open):
            raise StateUnavailable("shared rate-limit/breaker state (Redis) is unavailable")
        self.fallbacks += 1
        return await local(), LOCAL

    async def settle(self, where: str, shared: Callable[[], Awaitable[T]]) -> T | None:
        """Run a follow-up on Redis (when the first step was done there): its result, or None
        when it was skipped or failed. Errors are counted, never raised: the caller's call has
        already happened."""
        if where != SHARED:
            return None
        if not self.available():
            self.dropped += 1  # Redis is known to be down: do not pay a timeout per call
            return None
        try:
            async with asyncio.timeout(self.policy.timeout_s), self._slots:
                result = await shared()
        except _FAILURES as e:
            self.failed(e)
            return None
        self.succeeded()
        return result

    def failed(self, error: BaseException) -> None:
        """Counts a Redis failure and leaves Redis alone for the next interval."""
        now = self._clock.now()
        self.errors += 1
        self.last_error = f"{type(error).__name__}: {error}"
        # Operations that were already in flight when Redis failed do not lengthen the
        # interval; a try made after it ran out and failed again does (with retry_max_s).
        if not self.degraded or now >= self._down_until:
            self._streak += 1
        self._down_until = max(self._down_until, now + self._backoff.delay(self._streak))
        if not self.degraded:
            self.degraded = True
            mode = "local state" if self.policy.fail_open else "refusing calls"
            log.warning("shared state: Redis failed (%r); using %s", error, mode)

    def succeeded(self) -> None:
        """Redis answered: back to using it."""
        self._streak = 0
        if self.degraded:
            self.degraded = False
            self._down_until = 0.0
            self.recoveries += 1
            log.warning("shared state: Redis is back")
