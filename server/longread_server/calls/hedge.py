"""A hedged attempt: when the first attempt has sent nothing after ``hedge_after_s``, a second
one starts beside it; whichever sends the first event is used, the other is closed.

Off unless ``hedge_after_s`` is set (for every upstream or, through the overrides, for some
models). Model calls are reads, so sending one twice is safe, but not free: a hedged call can
cost the upstream twice (a vendor bills the prompt it already processed for the request we
close), and the tenant's budget is charged for the answer that was used only. So hedges are
paid for like retries, from the same retry budget of the upstream (``calls/retry.py``): when
an upstream hangs on many calls, hedging stops at the budget instead of doubling its load.

The stage sits inside retry and outside the upstream's rate limit, breaker and attempt
timeouts, so each of the two attempts passes those on its own: both are paid for in the
upstream's buckets, each is an outcome for the breaker (the closed one gives its permit
back), and each has its own first-event and idle limits. An attempt therefore waits for its
first event at most ``hedge_after_s`` + its first-event limit.

Each attempt runs in a task of its own from start to end and hands its events over through a
queue: an attempt's stages (spans, timeouts) enter and leave their contexts in one task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from longread_server.calls.pipeline import Call, Next
from longread_server.calls.resilience_metrics import NULL_OBSERVER, ResilienceObserver
from longread_server.calls.retry import RetryBudget
from longread_server.calls.timeouts import AttemptLimits, AttemptPolicy
from longread_server.domain import LlmEvent

_END = object()  # an attempt finished; an exception object: it failed


class _Attempt:
    """One attempt, pumped into the shared queue by its own task."""

    def __init__(
        self, index: int, events: AsyncIterator[LlmEvent], queue: asyncio.Queue[tuple[int, object]]
    ) -> None:
        self.index = index
        self.task = asyncio.create_task(self._pump(events, queue))

    async def _pump(
        self, events: AsyncIterator[LlmEvent], queue: asyncio.Queue[tuple[int, object]]
    ) -> None:
        try:
            async for ev in events:
                await queue.put((self.index, ev))
        except Exception as e:  # handed to the reader, which raises it
            await queue.put((self.index, e))
            return
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        await queue.put((self.index, _END))

    async def cancel(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@dataclass(slots=True)
class HedgeStage:
    policy: AttemptPolicy | AttemptLimits
    budget: Callable[[str], RetryBudget]  # the upstream's retry budget (RetryStage.budget)
    min_call_s: float = 0.5  # a hedge must have at least this long before the deadline
    observer: ResilienceObserver = NULL_OBSERVER

    def hedge_after_s(self, call: Call) -> float:
        p = self.policy
        limits = p if isinstance(p, AttemptLimits) else p.limits(call.vendor, call.req.model)
        return limits.hedge_after_s

    def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        delay = self.hedge_after_s(call)
        if delay <= 0:
            return nxt(call)  # not hedged: no generator of ours around the events
        return self._hedged(call, nxt, delay)

    async def _hedged(self, call: Call, nxt: Next, delay: float) -> AsyncIterator[LlmEvent]:
        queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue(maxsize=8)
        attempts = [_Attempt(0, nxt(call), queue)]
        hedge_in: float | None = delay  # None: no hedge (any more)
        winner: int | None = None
        failed: dict[int, BaseException] = {}
        try:
            while True:
                try:
                    async with asyncio.timeout(hedge_in):
                        index, item = await queue.get()
                except TimeoutError:
                    hedge_in = None
                    if self._may_hedge(call):
                        self.observer.hedged(call.vendor)
                        attempts.append(_Attempt(1, nxt(call), queue))
                    continue
                hedge_in = None  # the first attempt has answered or failed: no hedge
                if winner is not None and index != winner:
                    continue  # what the closed attempt sent before it was stopped
                if isinstance(item, BaseException):
                    failed[index] = item
                    if winner is not None or len(failed) == len(attempts):
                        raise item
                    continue  # the other attempt may still answer
                if winner is None:
                    winner = index
                    for other in attempts:
                        if other.index != index:
                            await other.cancel()
                if item is _END:
                    return
                yield item  # type: ignore[misc]
        finally:
            for a in attempts:
                await a.cancel()

    def _may_hedge(self, call: Call) -> bool:
        remaining = call.ctx.remaining()
        if remaining is not None and remaining < self.min_call_s:
            return False
        return self.budget(call.vendor).try_retry()
