"""The one back-off rule: how long to wait before attempt number ``n`` of something that failed.

Exponential from ``base_s``, multiplied by ``factor`` per attempt and capped at ``cap_s``;
with ``jitter`` the wait is drawn uniformly from ``[0, that]`` ("full jitter"), so callers that
failed together do not come back together. A delay the other side asked for (a Retry-After)
is a floor: the wait is never shorter than it.

It only computes delays; the caller waits however it waits (``Clock.sleep``, ``asyncio.sleep``,
``time.sleep`` in a thread), so one rule serves the retry stage, the Redis gate, single-flight
polling and exporters alike. Pass an ``rng`` for deterministic jitter (tests, replays).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``min(cap_s, base_s * factor ** (n - 1))`` before attempt ``n`` (1 for the first retry),
    or a uniform draw below it with ``jitter``."""

    base_s: float
    cap_s: float = math.inf
    factor: float = 2.0
    jitter: bool = False

    def ceiling(self, attempt: int) -> float:
        """The longest wait before attempt ``attempt`` (the wait itself without jitter)."""
        try:
            grown = self.base_s * self.factor ** max(0, attempt - 1)
        except OverflowError:  # a long-running poll: far past the cap anyway
            return self.cap_s
        return min(self.cap_s, grown)

    def delay(
        self,
        attempt: int,
        rng: random.Random | None = None,
        *,
        at_least: float | None = None,
    ) -> float:
        """The wait before attempt ``attempt``; never shorter than ``at_least`` (a server's
        Retry-After) when given. ``rng``: the source of jitter (the module's by default)."""
        wait = self.ceiling(attempt)
        if self.jitter:
            wait = rng.uniform(0.0, wait) if rng is not None else random.uniform(0.0, wait)
        if at_least is not None and at_least > wait:
            return at_least
        return wait
