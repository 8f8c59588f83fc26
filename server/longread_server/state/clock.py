"""The one notion of time the resilience state uses, so tests can replace it.

Buckets, breakers, retry budgets and backoff waits read ``now()`` and wait with ``sleep()``
instead of calling ``time.monotonic``/``asyncio.sleep`` directly: unit tests inject a fake
clock and move time forward by hand, so no test sleeps to let time pass.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds and a way to wait for them to pass."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """``time.monotonic`` (the clock gRPC deadlines in ``CallContext`` use) and
    ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()
