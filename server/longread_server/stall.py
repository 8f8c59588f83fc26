"""The one stall timer: a limit on each wait of a stream (the next event, the next read) that
costs one timer per stream instead of one per wait.

``asyncio.timeout`` around every wait arms a timer and cancels it again for each event; a
paced stream's events come every few tens of milliseconds and the limit is seconds, so almost
every timer is armed for nothing. ``StallTimer`` keeps one timer and moves only the limit:
``waiting(deadline)`` before each wait is a float store when the deadline is later than the
armed timer, which is the usual case. When the timer fires it compares the clock with the
current deadline; it re-arms if the deadline moved, and cancels the task only while it
waits, the way ``asyncio.timeout`` does, so a TimeoutError leaves the ``waiting`` block and
the task's own cancellations stay its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class StallTimer:
    """One task's limit on each of its waits, with one timer between them."""

    __slots__ = ("_armed", "_cancelling", "_deadline", "_expired", "_handle", "_loop", "_task")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a StallTimer works in a task")
        self._task = task
        self._handle: asyncio.TimerHandle | None = None
        self._armed = 0.0  # when the handle fires
        self._deadline: float | None = None  # loop time; None while not waiting
        self._expired = False
        self._cancelling = 0

    @contextmanager
    def waiting(self, deadline: float | None) -> Iterator[None]:
        """Limits the wait inside the block to ``deadline`` (loop time; None: no limit).
        Raises ``TimeoutError`` when the deadline passes first."""
        if deadline is not None:
            if deadline <= self._loop.time():
                raise TimeoutError
            if self._handle is None or deadline < self._armed:
                self._arm(deadline)
        self._deadline = deadline
        self._expired = False
        self._cancelling = self._task.cancelling()
        try:
            yield
        except asyncio.CancelledError:
            if self._expired and self._task.uncancel() <= self._cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._deadline = None

    def now(self) -> float:
        """The loop's clock, which deadlines are given in."""
        return self._loop.time()

    def close(self) -> None:
        """Cancels the timer (the stream ended)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return  # not waiting: the next wait arms it again
        if self._loop.time() < deadline:
            self._arm(deadline)  # the deadline moved on since the timer was armed
            return
        self._expired = True
        self._task.cancel()
