"""Admission of the AnalysisService's RPCs: an adaptive concurrency limit, a fair share per
tenant, and the drain.

**What it measures.** The gateway's own scarce resource is its one event loop: every step of
every RPC (receiving it, planning, each upstream send and read, each message out) is a callback
that waits its turn there. When the gateway takes more than it can process, that wait, the
loop's *lag*, grows without bound, and with it every request's latency. So the signal is the
lag, sampled by ``LoopLag``: at a fixed interval it puts a callback at the end of the loop's
ready queue and measures how long it waits to run. The lag is independent of upstream model
time: an Analyze of a long document that waits seconds for its vendor waits on a socket, not
in the ready queue, and adds nothing to it, so long jobs never shrink the limit. (An RPC's own
latency would; and its processing time would mix in the legitimate CPU of tokenizing a large
document.)

**The limit** (``AdmissionLimit``), a gradient on the lag, updated once per window: above
``target_lag_ms`` the limit is multiplied by ``target / lag`` (at least by one half): a lag
twice the target halves it. At or under the target, if the limit was reached during the window,
it grows by its square root (quickly from small, slowly when large, as Netflix's Gradient2
queue allowance does). A limit nobody reaches stays where it is, so a quiet period cannot
inflate it. This is not ``calls/concurrency.py``'s AIMD: that one waits for a slot and judges
upstream latency against its own baseline, where here the baseline of a healthy loop is about
zero, so the target is absolute, and the excess is refused at once, never queued.

**Fair share.** Under the limit every RPC is admitted. At the limit, a tenant holding fewer
than its share (limit / tenants with RPCs in flight, the caller included) is still admitted,
and one at or over its share is refused: a tenant's flood fills the spare capacity but cannot
keep the others out. The overshoot this allows is bounded by one limit's worth.

**Refusals** raise ``CallRejected`` (``OVERLOADED``, or ``DRAINING`` once the drain has begun),
which ``api/errors.py`` turns into RESOURCE_EXHAUSTED (UNAVAILABLE) with ErrorInfo and
RetryInfo. Health and reflection never come here.

**Drain** (``Gateway.stop``): ``close`` refuses new RPCs; ``drained`` waits for those in flight;
``cut`` ends the ones left at the end of the grace period. A cut cancels the RPC's task with a
mark its servicer recognises (``was_cut``), so each one ends through ``api/errors.py`` with
UNAVAILABLE, DRAINING and RetryInfo instead of grpc's bare "Cancelling all calls". A Stream
that is handing a message to grpc when the cut comes is not cancelled there (the status would
be lost inside grpc); it stops as soon as grpc takes the message (``sending``).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from longread_server.config import AdmissionConfig
from longread_server.domain import CallRejected

_MAX_DECREASE = 0.5  # one window never cuts the limit by more than half


class AdmissionLimit:
    """The gateway's concurrency limit, adjusted from the loop's lag, window by window."""

    def __init__(self, params: AdmissionConfig) -> None:
        self.params = params
        self._target_s = params.target_lag_ms / 1000
        self.value = float(min(max(params.initial_limit, params.min_limit), params.max_limit))
        self.reached = False  # the limit was reached during the current window
        self.lag_s = 0.0  # the last window's mean lag
        self._sum = 0.0
        self._n = 0
        self._window_end = 0.0

    @property
    def limit(self) -> int:
        return math.floor(self.value)

    def observe(self, lag_s: float, now: float) -> None:
        """One lag sample; closes the window (and updates the limit) once it is over."""
        self._sum += lag_s
        self._n += 1
        if now < self._window_end:
            return
        self._window_end = now + self.params.window_s
        self.update(self._sum / self._n)
        self._sum = 0.0
        self._n = 0

    def update(self, lag_s: float) -> None:
        p = self.params
        self.lag_s = lag_s
        if lag_s > self._target_s:
            factor = max(_MAX_DECREASE, self._target_s / lag_s)
            self.value = max(float(p.min_limit), self.value * factor)
        elif self.reached:
            self.value = min(float(p.max_limit), self.value + math.sqrt(self.value))
        self.reached = False


@dataclass(slots=True)
class Ticket:
    """One admitted RPC."""

    tenant: str
    task: asyncio.Task[object] | None
    cut: bool = False  # ended by the drain
    in_send: bool = False  # a Stream handing a message to grpc: not to be cancelled now


class _Sending:
    """``Admission.sending``'s context: a plain class, not a generator's, since a Stream
    enters one for every message it sends."""

    __slots__ = ("_admission", "_ticket")

    def __init__(self, admission: Admission, ticket: Ticket | None) -> None:
        self._admission = admission
        self._ticket = ticket

    def __enter__(self) -> None:
        if self._ticket is not None:
            self._ticket.in_send = True

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        ticket = self._ticket
        if ticket is None:
            return
        ticket.in_send = False
        if kind is None and ticket.cut:
            raise self._admission.cut_error()


class Admission:
    """Admits, refuses and tracks the AnalysisService's RPCs (one per server)."""

    def __init__(self, params: AdmissionConfig) -> None:
        self.params = params
        self.limit: AdmissionLimit | None = AdmissionLimit(params) if params.enabled else None
        self.in_flight = 0
        self.by_tenant: dict[str, int] = {}
        self.refused = 0
        self.closed = False
        self._tickets: dict[asyncio.Task[object] | None, Ticket] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- per RPC ----

    def admit(self, tenant: str) -> Ticket:
        """Admits the current task's RPC for ``tenant``, or raises ``CallRejected``."""
        if self.closed:
            self.refused += 1
            raise CallRejected(
                "DRAINING",
                "the server is shutting down; retry (another replica will serve)",
                retry_after_s=self.params.drain_retry_after_s,
            )
        mine = self.by_tenant.get(tenant, 0)
        lim = self.limit
        if lim is not None and self.in_flight + 1 >= lim.limit:
            lim.reached = True
            if self.in_flight >= lim.limit:
                tenants = len(self.by_tenant) + (0 if mine else 1)
                share = max(1, lim.limit // tenants)
                if mine >= share:
                    self.refused += 1
                    raise CallRejected(
                        "OVERLOADED",
                        f"the gateway is at its concurrency limit ({lim.limit}) and tenant "
                        f"{tenant!r} holds {mine}, its share being {share}; retry later",
                        retry_after_s=self.params.retry_after_s,
                        metadata={"limit": str(lim.limit), "tenant_share": str(share)},
                    )
        task: asyncio.Task[object] | None = asyncio.current_task()
        ticket = Ticket(tenant, task)
        self._tickets[task] = ticket
        self.in_flight += 1
        self.by_tenant[tenant] = mine + 1
        self._idle.clear()
        return ticket

    def current(self) -> Ticket | None:
        """The current task's ticket, if its RPC was admitted and is not yet released."""
        return self._tickets.get(asyncio.current_task())

    def release(self) -> None:
        """Ends the current task's RPC (a no-op if it was never admitted)."""
        ticket = self._tickets.pop(asyncio.current_task(), None)
        if ticket is None:
            return
        self.in_flight -= 1
        left = self.by_tenant[ticket.tenant] - 1
        if left:
            self.by_tenant[ticket.tenant] = left
        else:
            del self.by_tenant[ticket.tenant]
        if not self.in_flight:
            self._idle.set()

    def was_cut(self) -> bool:
        """True when the current task's RPC is being ended by the drain (its CancelledError
        is ours, not the client's); the cancellation is taken back so the RPC can send its
        status."""
        ticket = self._tickets.get(asyncio.current_task())
        if ticket is None or not ticket.cut:
            return False
        if ticket.task is not None:
            ticket.task.uncancel()
        return True

    def cut_error(self) -> CallRejected:
        return CallRejected(
            "DRAINING",
            "the server is shutting down and its grace period is over; retry (another "
            "replica will serve)",
            retry_after_s=self.params.drain_retry_after_s,
        )

    def sending(self, ticket: Ticket | None) -> _Sending:
        """Around a Stream's ``yield``: a cut waits until grpc has taken the message, then
        ends the Stream with ``cut_error``."""
        return _Sending(self, ticket)

    # ---- the drain ----

    def close(self) -> None:
        """From now on every new RPC is refused with DRAINING."""
        self.closed = True

    async def drained(self, timeout_s: float) -> bool:
        """Waits up to ``timeout_s`` for the RPCs in flight to end; True if they all did."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    def cut(self) -> int:
        """Ends every RPC still in flight (see the module's docstring); returns how many."""
        n = 0
        for ticket in list(self._tickets.values()):
            if ticket.cut:
                continue
            ticket.cut = True
            n += 1
            if ticket.task is not None and not ticket.in_send:
                ticket.task.cancel()
        return n


class LoopLag:
    """Samples the event loop's ready-queue delay into an ``AdmissionLimit``."""

    def __init__(self, limit: AdmissionLimit, interval_s: float) -> None:
        self._limit = limit
        self._interval_s = interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._queued_at = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(self._interval_s, self._enqueue)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop = None

    def _enqueue(self) -> None:
        if self._loop is None:
            return
        self._queued_at = time.perf_counter()
        self._loop.call_soon(self._ran)

    def _ran(self) -> None:
        if self._loop is None:
            return
        now = time.perf_counter()
        self._limit.observe(now - self._queued_at, now)
        self._timer = self._loop.call_later(self._interval_s, self._enqueue)
