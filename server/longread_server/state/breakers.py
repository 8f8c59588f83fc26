"""Circuit-breaker state with resilience4j's semantics, and the in-process backend.

Per upstream: CLOSED while calls go well; OPEN (calls fail fast) once, over a sliding window of
at least ``min_calls`` outcomes, the failure rate or the slow-call rate reaches its threshold;
after the open wait, HALF_OPEN hands out exactly ``half_open_calls`` probe permits and goes
back to OPEN (with a longer wait) or to CLOSED depending on how the probes fare.

* Windows: ``count`` keeps the last ``window_size`` outcomes (``min_calls`` is clamped to it);
  ``time`` keeps ``window_size`` one-second buckets (not clamped), as resilience4j does.
* The transition out of OPEN is lazy: the first ``acquire`` after the wait makes it.
* The open wait backs off: ``open_s * open_backoff ** (opens - 1)`` up to ``open_max_s``,
  where ``opens`` counts re-opens since the breaker last closed (Envoy's ejection backoff).
* Half-open re-opens as soon as the probes seen so far already reach a threshold whatever the
  others do, and closes once all of them are in. A half-open state that outlives
  ``half_open_max_s`` re-opens: a probe whose replica died must not wedge a shared breaker.
* ``IGNORED`` outcomes (a 429, a cancelled call) count for nothing and give a half-open
  permit back. Outcomes from an earlier state (``Permit.epoch``) are dropped.

The Redis backend (``redis_breakers``) runs the same machine in Lua.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from longread_server.state.clock import SYSTEM_CLOCK, Clock

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
# What a caller refused in HALF_OPEN (all probes out) is told to wait: the probes are quick.
HALF_OPEN_RETRY_S = 1.0
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class BreakerParams:
    """Thresholds and timings (see ``config.BreakerConfig`` for the meaning and defaults)."""

    window: str = "count"  # "count" | "time"
    window_size: int = 100
    min_calls: int = 50
    failure_rate: float = 0.5
    slow_rate: float = 1.0
    open_s: float = 30.0
    open_backoff: float = 2.0
    open_max_s: float = 300.0
    half_open_calls: int = 3
    half_open_max_s: float = 120.0

    @property
    def effective_min_calls(self) -> int:
        if self.window == "count":
            return max(1, min(self.min_calls, self.window_size))
        return max(1, self.min_calls)

    def open_wait(self, opens: int) -> float:
        """The wait in OPEN after the ``opens``-th opening in a row (1 for the first)."""
        return min(self.open_max_s, self.open_s * self.open_backoff ** max(0, opens - 1))

    def trips(self, calls: int, failures: int, slow: int) -> bool:
        """Whether a window with these counts opens the breaker."""
        if calls < self.effective_min_calls or calls == 0:
            return False
        return failures / calls >= self.failure_rate - _EPS or slow / calls >= self.slow_rate - _EPS


class Outcome(enum.IntEnum):
    """How one permitted call went, as the breaker counts it."""

    SUCCESS = 0
    FAILURE = 1
    SLOW_SUCCESS = 2
    SLOW_FAILURE = 3
    IGNORED = 4

    @classmethod
    def of(cls, *, failed: bool, slow: bool) -> Outcome:
        return cls(int(failed) + 2 * int(slow))

    @property
    def failed(self) -> bool:
        return self in (Outcome.FAILURE, Outcome.SLOW_FAILURE)

    @property
    def slow(self) -> bool:
        return self in (Outcome.SLOW_SUCCESS, Outcome.SLOW_FAILURE)


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer to ``acquire``: go ahead (``granted``) or fail fast for ``retry_after_s``."""

    granted: bool
    epoch: int
    state: str
    retry_after_s: float = 0.0
    # Which backend handed the permit out ("" for a plain store); record on the same one.
    backend: str = ""


@dataclass(frozen=True, slots=True)
class BreakerView:
    """A breaker as ``acquire`` would find it now, without taking a permit."""

    state: str
    rejecting: bool  # acquire would refuse (open and waiting, or every probe out)
    retry_after_s: float
    calls: int
    failures: int
    slow: int
    opens: int


class BreakerStore(Protocol):
    """Where breaker state lives: this process, or Redis for every replica."""

    async def acquire(self, name: str, params: BreakerParams) -> Permit: ...

    async def record(
        self, name: str, params: BreakerParams, permit: Permit, outcome: Outcome
    ) -> str:
        """Count ``outcome`` for a granted ``permit``; returns the state afterwards."""
        ...

    async def view(self, name: str, params: BreakerParams) -> BreakerView: ...


class _Window:
    """The CLOSED state's sliding window: last N outcomes, or N one-second buckets."""

    def __init__(self, params: BreakerParams) -> None:
        self._params = params
        self._outcomes: deque[Outcome] = deque()
        self._seconds: dict[int, list[int]] = {}
        self.calls = self.failures = self.slow = 0

    def add(self, now: float, outcome: Outcome) -> None:
        if self._params.window == "count":
            self._outcomes.append(outcome)
            self._count(outcome, +1)
            if len(self._outcomes) > self._params.window_size:
                self._count(self._outcomes.popleft(), -1)
        else:
            self.expire(now)
            bucket = self._seconds.setdefault(math.floor(now), [0, 0, 0])
            bucket[0] += 1
            bucket[1] += int(outcome.failed)
            bucket[2] += int(outcome.slow)
            self._count(outcome, +1)

    def _count(self, outcome: Outcome, sign: int) -> None:
        self.calls += sign
        self.failures += sign * int(outcome.failed)
        self.slow += sign * int(outcome.slow)

    def expire(self, now: float) -> None:
        if self._params.window != "time":
            return
        oldest = math.floor(now) - self._params.window_size
        for second in [s for s in self._seconds if s <= oldest]:
            c, f, s = self._seconds.pop(second)
            self.calls -= c
            self.failures -= f
            self.slow -= s

    def clear(self) -> None:
        self._outcomes.clear()
        self._seconds.clear()
        self.calls = self.failures = self.slow = 0


class _Machine:
    """One breaker's state (all times from the injected clock)."""

    def __init__(self, params: BreakerParams) -> None:
        self.params = params
        self.state = CLOSED
        self.epoch = 0
        self.opens = 0
        self.open_until = 0.0
        self.half_open_since = 0.0
        self.permits = 0
        self.probes = self.probe_failures = self.probe_slow = 0
        self.window = _Window(params)

    def to_open(self, now: float) -> None:
        self.state = OPEN
        self.epoch += 1
        self.opens += 1
        self.open_until = now + self.params.open_wait(self.opens)

    def to_half_open(self, now: float) -> None:
        self.state = HALF_OPEN
        self.epoch += 1
        self.half_open_since = now
        self.permits = self.params.half_open_calls
        self.probes = self.probe_failures = self.probe_slow = 0

    def to_closed(self) -> None:
        self.state = CLOSED
        self.epoch += 1
        self.opens = 0
        self.window.clear()

    def half_open_expired(self, now: float) -> bool:
        limit = self.params.half_open_max_s
        return limit > 0 and now - self.half_open_since >= limit

    def acquire(self, now: float) -> Permit:
        if self.state == OPEN:
            if now < self.open_until:
                return Permit(False, self.epoch, OPEN, self.open_until - now)
            self.to_half_open(now)
        if self.state == HALF_OPEN:
            if self.half_open_expired(now):
                self.to_open(now)
                return Permit(False, self.epoch, OPEN, self.open_until - now)
            if self.permits <= 0:
                return Permit(False, self.epoch, HALF_OPEN, HALF_OPEN_RETRY_S)
            self.permits -= 1
            return Permit(True, self.epoch, HALF_OPEN)
        return Permit(True, self.epoch, CLOSED)

    def record(self, now: float, epoch: int, outcome: Outcome) -> str:
        if epoch != self.epoch:
            return self.state
        if self.state == CLOSED:
            if outcome is Outcome.IGNORED:
                return self.state
            self.window.add(now, outcome)
            w = self.window
            if self.params.trips(w.calls, w.failures, w.slow):
                self.to_open(now)
        elif self.state == HALF_OPEN:
            if outcome is Outcome.IGNORED:
                self.permits += 1
                return self.state
            self.probes += 1
            self.probe_failures += int(outcome.failed)
            self.probe_slow += int(outcome.slow)
            n = self.params.half_open_calls
            decided_bad = (
                self.probe_failures >= self.params.failure_rate * n - _EPS
                or self.probe_slow >= self.params.slow_rate * n - _EPS
            )
            if decided_bad:
                self.to_open(now)
            elif self.probes >= n:
                self.to_closed()
        return self.state

    def view(self, now: float) -> BreakerView:
        self.window.expire(now)
        w = self.window
        if self.state == OPEN:
            left = max(0.0, self.open_until - now)
            rejecting, retry = left > 0, left
        elif self.state == HALF_OPEN:
            rejecting = self.permits <= 0 and not self.half_open_expired(now)
            retry = HALF_OPEN_RETRY_S if rejecting else 0.0
        else:
            rejecting, retry = False, 0.0
        return BreakerView(self.state, rejecting, retry, w.calls, w.failures, w.slow, self.opens)


class LocalBreakers:
    """Breakers in this process's memory (the default, and the fallback when Redis fails)."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._machines: dict[str, _Machine] = {}

    def _machine(self, name: str, params: BreakerParams) -> _Machine:
        m = self._machines.get(name)
        if m is None or m.params != params:
            m = self._machines[name] = _Machine(params)
        return m

    async def acquire(self, name: str, params: BreakerParams) -> Permit:
        return self._machine(name, params).acquire(self._clock.now())

    async def record(
        self, name: str, params: BreakerParams, permit: Permit, outcome: Outcome
    ) -> str:
        return self._machine(name, params).record(self._clock.now(), permit.epoch, outcome)

    async def view(self, name: str, params: BreakerParams) -> BreakerView:
        return self._machine(name, params).view(self._clock.now())
