"""What the health service says, per service name, and what decides it.

Names (the ``service`` of a ``grpc.health.v1`` Check or Watch):

* ``""`` and ``longread.v1.AnalysisService``: readiness. SERVING while this replica is worth
  sending RPCs to. NOT_SERVING while a Redis the operator requires (``redis_required``) is
  unreachable, while every upstream's circuit is open and waiting (every call would fail
  fast), and for good once the drain has begun. A task re-evaluates it every
  ``server.readiness_interval_s``.
* ``liveness``: whether the event loop still runs. A watchdog *thread* posts a heartbeat to
  the loop; when the loop has not run it for ``server.liveness_block_s``, liveness says
  NOT_SERVING, and SERVING again once the loop has run it. A thread, because a blocked loop
  cannot notice its own block. It stays SERVING while draining: the process is alive, and a
  restart in the middle of a drain would cut the RPCs the drain lets finish.

Redis is judged through the one Redis gate (``state/gate.py``): the readiness task pings
through it, so a failed ping sets Redis aside for the other state too, and a failure met by
any other part makes readiness fall without a ping of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future

from grpc_health.v1 import health, health_pb2

from longread_server.api.registry import SERVICE_NAME
from longread_server.state.breakers import OPEN, BreakerParams, BreakerStore
from longread_server.state.gate import SHARED, RedisGate, StateUnavailable

log = logging.getLogger("longread.health")

LIVENESS = "liveness"
READINESS = ("", SERVICE_NAME)
SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    """Sets the readiness names from Redis (when required) and the upstreams' circuits."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        *,
        interval_s: float,
        gate: RedisGate | None = None,
        ping: Callable[[], Awaitable[object]] | None = None,
        breakers: BreakerStore | None = None,
        params: BreakerParams | None = None,
        upstreams: Sequence[str] = (),
    ) -> None:
        """``gate`` and ``ping``: Redis is required (None: it is not). ``breakers``: circuits
        count (None: breakers are off)."""
        self._servicer = servicer
        self._interval_s = interval_s
        self._gate = gate
        self._ping = ping
        self._breakers = breakers
        self._params = params or BreakerParams()
        self._upstreams = tuple(upstreams)
        self._task: asyncio.Task[None] | None = None
        self._draining = False
        self._stopping = False
        self.status = SERVING
        self.reasons: list[str] = []  # why NOT_SERVING, as last evaluated

    async def start(self) -> None:
        await self.evaluate()
        self._task = asyncio.create_task(self._run(), name="longread-readiness")

    async def drain(self) -> None:
        """NOT_SERVING for good: the replica is leaving."""
        self._draining = True
        await self.stop()
        self.reasons = ["draining"]
        await self._set(NOT_SERVING)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        # The flag as well as the cancel: should a cancel be lost inside an evaluation (it
        # awaits Redis through code that catches errors), the loop still ends at its next turn.
        while not self._stopping:
            await asyncio.sleep(self._interval_s)
            try:
                await self.evaluate()
            except Exception:  # a bug here must not leave readiness stuck either way
                log.exception("readiness: evaluation failed")

    async def evaluate(self) -> None:
        reasons = []
        if not await self._redis_up():
            reasons.append("redis unreachable (redis_required)")
        if await self._all_open():
            reasons.append("every upstream's circuit is open")
        if self._draining:
            return
        status = NOT_SERVING if reasons else SERVING
        if status != self.status:
            if reasons:
                log.warning("readiness: NOT_SERVING (%s)", "; ".join(reasons))
            else:
                log.warning("readiness: SERVING again")
        self.reasons = reasons
        await self._set(status)

    async def _redis_up(self) -> bool:
        gate, ping = self._gate, self._ping
        if gate is None or ping is None:
            return True
        if not gate.available():
            return False

        async def shared() -> bool:
            await ping()
            return True

        async def local() -> bool:
            return False

        _, where = await gate.run(shared, local, fail_open=True)
        return where == SHARED

    async def _all_open(self) -> bool:
        if self._breakers is None or not self._upstreams:
            return False
        for name in self._upstreams:
            try:
                view = await self._breakers.view(name, self._params)
            except StateUnavailable:  # failing closed on a dead Redis: that is Redis's reason
                return False
            # Open and still waiting: once the wait is over the next call probes the upstream,
            # and a replica that took no traffic would never probe.
            if view.state != OPEN or not view.rejecting:
                return False
        return True

    async def _set(self, status: int) -> None:
        self.status = status
        for name in READINESS:
            await self._servicer.set(name, status)


class LoopWatchdog:
    """A thread that sets ``liveness`` from whether the event loop runs its heartbeat."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        loop: asyncio.AbstractEventLoop,
        block_s: float,
    ) -> None:
        self._servicer = servicer
        self._loop = loop
        self._block_s = block_s
        # A heartbeat a second (or faster for a short threshold): a block is noticed at most
        # that long after it reaches the threshold.
        self._period_s = min(1.0, block_s / 2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="longread-watchdog", daemon=True)
        self.blocks = 0  # times the loop was found blocked

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(self._period_s + self._block_s)

    def _watch(self) -> None:
        while not self._stopped.wait(self._period_s):
            ran = threading.Event()
            try:
                self._loop.call_soon_threadsafe(ran.set)
            except RuntimeError:  # the loop is closed
                return
            if ran.wait(self._block_s):
                continue
            self.blocks += 1
            log.error("liveness: the event loop has not run for %.1fs (NOT_SERVING)", self._block_s)
            # Queued behind the heartbeat: it runs once the loop does, so a watcher sees
            # NOT_SERVING before the SERVING that follows.
            down = self._set(NOT_SERVING)
            while not ran.wait(self._period_s):
                if self._stopped.is_set():
                    return
            if down is not None:
                with contextlib.suppress(Exception):
                    down.result(self._block_s)
            log.warning("liveness: the event loop runs again (SERVING)")
            self._set(SERVING)

    def _set(self, status: int) -> Future[None] | None:
        try:
            return asyncio.run_coroutine_threadsafe(
                self._servicer.set(LIVENESS, status), self._loop
            )
        except RuntimeError:  # the loop is closed
            return None
