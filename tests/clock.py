"""A fake clock for the resilience state: time moves only when a test (or a sleeper) says so."""

from __future__ import annotations

import asyncio


class FakeClock:
    """``now()`` is whatever the test set; ``sleep`` advances it at once (virtual time) and
    records how long each sleeper asked to wait."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def now_ms(self) -> float:
        return self.t * 1000.0

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)
