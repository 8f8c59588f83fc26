"""A timeout for an await that is made again and again: one read of a stream after another.

``asyncio.timeout`` costs the same whether it is ever reached or not: each entry makes a
``Timeout``, asks for the running loop and the current task (on Python 3.11 each of those is a
``getpid`` system call, to notice a fork), schedules a timer, and its exit cancels that timer.
A streamed answer passes several such bounds per delta (the socket read, the attempt's
silence limit, a follower's wait for the flight), and the limits are seconds long while the
deltas come every few milliseconds.

A :class:`RepeatTimeout` is the same bound, armed lazily: entering ``bound(t)`` only records when it
would expire. Its one timer, when it goes off before that time (the bound was armed again since
the timer was set), sets itself again for the recorded time, so a stream that keeps answering
schedules about one timer per limit instead of one per read. What it does when the time is up
is what ``asyncio.timeout`` does: it cancels the task, and the ``with`` block turns that
cancellation into ``TimeoutError``, raised from the await it bounds; a cancellation from
anywhere else stays a ``CancelledError`` (the same ``uncancel`` bookkeeping as
``asyncio.Timeout``, so the two nest either way). ``tests/unit/test_repeat_timeout.py`` holds the
two to the same cases.

A RepeatTimeout bounds one await at a time, of whichever task enters it; between awaits it is not
armed, so the time a stream's consumer takes with an event never counts against the stream.
``close()`` cancels its timer (a closed one can still be used: it makes a new one).
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

# libuv, under uvloop, counts time in whole milliseconds: a timer it runs a fraction of one
# early is taken as on time, rather than set again for the rest of that millisecond.
_RESOLUTION_S = 0.001


class RepeatTimeout:
    """``with timeout.bound(seconds): await ...``; ``seconds`` None: no bound."""

    __slots__ = ("_cancelling", "_expires", "_fired", "_handle", "_loop", "_task", "_timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._expires = math.inf  # loop time at which the armed bound runs out; inf: unarmed
        self._timeout: float | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._fired = False

    def bound(self, timeout: float | None) -> RepeatTimeout:
        """Bounds the ``with`` block to ``timeout`` seconds (None: no bound)."""
        self._timeout = timeout
        return self

    def __enter__(self) -> RepeatTimeout:
        timeout = self._timeout
        if timeout is None:  # no bound: nothing to arm, and no task to cancel
            return self
        loop = self._loop
        task = asyncio.current_task(loop)  # given the loop: no lookup of the running one
        if task is None:
            raise RuntimeError("a RepeatTimeout bounds an await inside a task")
        if self._task is not None:
            raise RuntimeError("a RepeatTimeout bounds one await at a time")
        self._task = task
        self._cancelling = task.cancelling()
        expires = loop.time() + timeout
        self._expires = expires
        handle = self._handle
        if handle is None or handle.when() > expires:
            if handle is not None:
                handle.cancel()
            self._handle = loop.call_at(expires, self._check)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None  # no cycle: task -> coroutine -> it -> task
        self._expires = math.inf
        if self._fired:
            self._fired = False
            assert task is not None
            if task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def _check(self) -> None:
        self._handle = None
        expires = self._expires
        if expires == math.inf:  # not armed: the next bound sets a timer of its own
            return
        if expires - self._loop.time() > _RESOLUTION_S:  # armed again since: later
            self._handle = self._loop.call_at(expires, self._check)
            return
        self._fired = True
        self._expires = math.inf
        assert self._task is not None
        self._task.cancel()

    def close(self) -> None:
        """Cancels the timer, so nothing is kept for it once the awaits are over."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
