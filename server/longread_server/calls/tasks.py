"""Fire-and-forget work that must outlive the call that started it.

A stage that is cancelled (the client left, the deadline passed) still owes its shared state a
settlement: a refund, a breaker outcome. Awaiting Redis inside a cancelled task would delay
the cancellation and could be cut short itself, so the settlement runs in its own task. The
set keeps a reference until it is done (the event loop only keeps weak ones).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)
_RUNNING: set[asyncio.Task[Any]] = set()


def detach(work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` in the background; its failure is logged, never raised. Without a running
    loop (a generator finalized at shutdown) there is nothing left to settle for."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        work.close()
        return
    task = loop.create_task(work)
    _RUNNING.add(task)
    task.add_done_callback(_done)


def _done(task: asyncio.Task[Any]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("background settlement failed: %r", task.exception())


async def drain() -> None:
    """Wait for every detached task (tests, shutdown)."""
    while _RUNNING:
        await asyncio.gather(*list(_RUNNING), return_exceptions=True)
