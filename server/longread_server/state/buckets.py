"""Token buckets: the shared vocabulary and the in-process backend.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_s``. A call reserves its cost
from several buckets at once (requests and tokens, one subject), all or nothing:

* a cost larger than some bucket's ``burst`` can never be admitted: ``Never``, at once;
* otherwise the cost is taken *now* (a level may go negative: a debt) and the caller is told
  how long to wait before it may proceed (``Grant.wait_s``). Taking the tokens up front queues
  callers in arrival order, like GCRA, so the admitted total never exceeds
  ``burst + rate * t``;
* if that wait is longer than the caller can afford (its deadline), nothing is taken:
  ``Limited`` with the wait as ``retry_after_s``.

``adjust`` settles a reservation later (a refund is positive, a debt negative); ``hold`` stops
every reservation that names the hold key for a while and drains the buckets it lists (what an
upstream's 429 asks for). A missing bucket is a full one, so state can expire freely.
The Redis backend (``redis_buckets``) implements exactly this arithmetic in Lua.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from longread_server.state.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One bucket: its key, refill rate and capacity (both > 0)."""

    key: str
    rate_per_s: float
    burst: float


@dataclass(frozen=True, slots=True)
class Grant:
    """Admitted: the cost is taken; proceed after ``wait_s`` seconds."""

    wait_s: float = 0.0
    # Which backend holds the reservation ("" for a plain store); settle it on the same one.
    backend: str = ""


@dataclass(frozen=True, slots=True)
class Limited:
    """Not admitted (nothing taken): the cost would be available in ``retry_after_s``."""

    retry_after_s: float
    key: str  # the bucket or hold that needs the longest wait


@dataclass(frozen=True, slots=True)
class Never:
    """Not admitted, not ever: ``cost`` is more than bucket ``key`` can hold."""

    key: str
    cost: float
    burst: float


Decision = Grant | Limited | Never
Items = Sequence[tuple[BucketSpec, float]]


class BucketStore(Protocol):
    """Where bucket levels live: this process, or Redis for every replica."""

    async def reserve(self, items: Items, holds: Sequence[str], max_wait_s: float) -> Decision:
        """Take every ``(bucket, cost)`` of ``items``, or none (see the module docstring)."""
        ...

    async def adjust(self, items: Items, grant: Grant | None = None) -> None:
        """Add each amount to its bucket (capped at ``burst``; negative is a debt)."""
        ...

    async def hold(self, key: str, seconds: float, drain: Sequence[BucketSpec]) -> None:
        """Block reservations naming ``key`` for ``seconds``; ``drain`` buckets restart empty
        when the hold ends, so no burst follows it."""
        ...

    async def peek(self, spec: BucketSpec) -> float:
        """The bucket's level now (for metrics and tests)."""
        ...


def refilled(level: float, stamp: float, now: float, spec: BucketSpec) -> tuple[float, float]:
    """Level and stamp after refilling up to ``now``. A stamp in the future (a drained bucket
    under a hold) does not refill until then."""
    if now > stamp:
        return min(spec.burst, level + spec.rate_per_s * (now - stamp)), now
    return level, stamp


def wait_for(level: float, stamp: float, now: float, cost: float, spec: BucketSpec) -> float:
    """Seconds until ``cost`` is available in a bucket refilled to ``(level, stamp)``."""
    return max(0.0, stamp - now) + max(0.0, (cost - level) / spec.rate_per_s)


class LocalBuckets:
    """Buckets in this process's memory (the default, and the fallback when Redis fails)."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._levels: dict[str, tuple[float, float]] = {}
        self._holds: dict[str, float] = {}

    def _get(self, spec: BucketSpec, now: float) -> tuple[float, float]:
        level, stamp = self._levels.get(spec.key, (spec.burst, now))
        return refilled(level, stamp, now, spec)

    async def reserve(self, items: Items, holds: Sequence[str], max_wait_s: float) -> Decision:
        now = self._clock.now()
        for spec, cost in items:
            if cost > spec.burst:
                return Never(spec.key, cost, spec.burst)
        wait, worst = 0.0, ""
        for key in holds:
            left = self._holds.get(key, now) - now
            if left > wait:
                wait, worst = left, key
        held = worst  # the hold in force, if any
        states = [self._get(spec, now) for spec, _ in items]
        for (spec, cost), (level, stamp) in zip(items, states, strict=True):
            w = wait_for(level, stamp, now, cost, spec)
            if w > wait:
                # A bucket stamped in the future was drained by a hold (a vendor's 429): the
                # wait is the vendor's doing, and the refusal names the hold, not our limit.
                wait, worst = w, held if held and stamp > now else spec.key
        if wait > max_wait_s:
            return Limited(wait, worst)
        for (spec, cost), (level, stamp) in zip(items, states, strict=True):
            self._levels[spec.key] = (level - cost, stamp)
        return Grant(wait)

    async def adjust(self, items: Items, grant: Grant | None = None) -> None:
        now = self._clock.now()
        for spec, amount in items:
            level, stamp = self._get(spec, now)
            self._levels[spec.key] = (min(spec.burst, level + amount), stamp)

    async def hold(self, key: str, seconds: float, drain: Sequence[BucketSpec]) -> None:
        now = self._clock.now()
        until = now + seconds
        if until > self._holds.get(key, now):
            self._holds[key] = until
        for spec in drain:
            level, stamp = self._get(spec, now)
            self._levels[spec.key] = (min(level, 0.0), max(stamp, until))

    async def peek(self, spec: BucketSpec) -> float:
        return self._get(spec, self._clock.now())[0]
