"""Waiting in tests for something another task, thread or process causes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest


async def until(check: Callable[[], bool], within: float = 10.0, poll: float = 0.002) -> float:
    """Seconds until ``check()`` holds, polled; fails the test after ``within`` seconds. The
    bound is wall-clock time, not loop turns: on a busy machine a Redis round trip or another
    process takes longer, never fewer turns."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > within:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(poll)
    return time.monotonic() - t0
