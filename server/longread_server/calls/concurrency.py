"""Adaptive concurrency for map fan-out: AIMD per upstream, within configured bounds.

A job's map calls used to run at a fixed ``max_concurrency``. Vendors push back (429s, 529s)
or slow down when we push too hard, and a fixed number is either timid or abusive. Each
upstream gets one ``AdaptiveLimit`` shared by every job in the process:

* additive increase: each healthy call adds ``1/limit`` (about +1 per limit's worth of calls),
  up to the upstream's ``max_concurrency``;
* multiplicative decrease (``backoff``, default halve, floor ``min``): on a 429 or overload
  (also the ones retries absorb: the upstream rate-limit stage reports every 429), and when
  recent latency (fast EWMA) exceeds ``latency_tolerance`` times the baseline (slow EWMA), at
  most once per ``cooldown_s`` so one burst of errors is one signal.

Each job gets its own ``Gate`` (its calls never wait for another job's), capped at the job's
concurrency and at the upstream's current limit.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from longread_server.domain import CallRejected, ErrorKind, UpstreamError
from longread_server.state.clock import SYSTEM_CLOCK, Clock

_FAST = 0.3  # EWMA weight of the recent-latency estimate
_SLOW = 0.05  # EWMA weight of the baseline
_WARMUP = 5  # samples before latency may cause a decrease


@dataclass(frozen=True, slots=True)
class ConcurrencyParams:
    adaptive: bool = True
    min_limit: int = 1
    backoff: float = 0.5
    latency_tolerance: float = 2.0
    cooldown_s: float = 1.0


def is_pushback(err: BaseException) -> bool:
    """Errors that mean "fewer at once, please"."""
    if isinstance(err, UpstreamError):
        return err.kind in (ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED)
    return isinstance(err, CallRejected) and err.reason == "RATE_LIMITED"


class AdaptiveLimit:
    """The current concurrency limit of one upstream."""

    def __init__(
        self, max_limit: int, params: ConcurrencyParams, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.max_limit = max(1, max_limit)
        self.params = params
        self._clock = clock
        self.value = float(self.max_limit)
        self.fast = 0.0
        self.baseline = 0.0
        self.samples = 0
        self.decreases = 0
        self._last_decrease = -math.inf
        self._gates: weakref.WeakSet[Gate] = weakref.WeakSet()

    @property
    def limit(self) -> int:
        if not self.params.adaptive:
            return self.max_limit
        return max(self.params.min_limit, min(self.max_limit, math.floor(self.value)))

    def on_success(self, latency_s: float) -> None:
        self.samples += 1
        if self.samples == 1:
            self.fast = self.baseline = latency_s
        else:
            self.fast += _FAST * (latency_s - self.fast)
            self.baseline += _SLOW * (latency_s - self.baseline)
        congested = (
            self.samples > _WARMUP and self.fast > self.params.latency_tolerance * self.baseline
        )
        if congested:
            self.decrease()
            return
        before = self.limit
        self.value = min(float(self.max_limit), self.value + 1.0 / max(1.0, self.value))
        if self.limit > before:
            for gate in list(self._gates):
                gate.wake()

    def on_pushback(self) -> None:
        self.decrease()

    def decrease(self) -> None:
        now = self._clock.now()
        if now - self._last_decrease < self.params.cooldown_s:
            return
        self._last_decrease = now
        self.decreases += 1
        self.value = max(float(self.params.min_limit), self.value * self.params.backoff)

    def gate(self, cap: int) -> Gate:
        g = Gate(self, cap, self._clock)
        self._gates.add(g)
        return g


class Gate:
    """One job's admission to its upstream: at most ``min(cap, limit)`` calls at once."""

    def __init__(self, limit: AdaptiveLimit, cap: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self._limit = limit
        self._cap = max(1, cap)
        self._clock = clock
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def capacity(self) -> int:
        return min(self._cap, self._limit.limit)

    def wake(self) -> None:
        """Let waiters in while there is room (each re-checks when it runs)."""
        room = self.capacity - self.in_flight
        for fut in list(self._waiters):
            if room <= 0:
                break
            if not fut.done():
                fut.set_result(None)
                room -= 1

    async def _acquire(self) -> None:
        while self.in_flight >= self.capacity:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self.wake()  # pass on the turn we were given
                raise
            finally:
                self._waiters.remove(fut)
        self.in_flight += 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body; its outcome and latency feed the limit."""
        await self._acquire()
        started = self._clock.now()
        try:
            yield
        except BaseException as e:
            if is_pushback(e):
                self._limit.on_pushback()
            raise
        else:
            self._limit.on_success(self._clock.now() - started)
        finally:
            self.in_flight -= 1
            self.wake()


class AdaptiveConcurrency:
    """Every upstream's ``AdaptiveLimit``; the runner asks it for a gate per job."""

    def __init__(
        self,
        params: ConcurrencyParams = ConcurrencyParams(),
        max_limits: Mapping[str, int] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.params = params
        self._max = dict(max_limits or {})
        self._clock = clock
        self.limits: dict[str, AdaptiveLimit] = {}

    def limit(self, upstream: str, default_max: int = 8) -> AdaptiveLimit:
        lim = self.limits.get(upstream)
        if lim is None:
            max_limit = self._max.get(upstream, default_max)
            lim = self.limits[upstream] = AdaptiveLimit(max_limit, self.params, self._clock)
        return lim

    def gate(self, upstream: str, cap: int) -> Gate:
        return self.limit(upstream, cap).gate(cap)

    def pushback(self, upstream: str) -> None:
        """A 429 seen anywhere on ``upstream`` (a ``RateLimitStage`` listener)."""
        self.limit(upstream).on_pushback()
