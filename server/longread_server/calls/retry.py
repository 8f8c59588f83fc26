"""Retries: full-jitter exponential backoff, Retry-After, a retry budget, the deadline.

An attempt that failed with a retryable ``UpstreamError`` is tried again, up to
``max_attempts`` in all, unless:

* answer text has already been passed downstream (ours or the error's ``streamed``): the
  call is committed, as gRPC A6 commits on response headers;
* the wait (``max(retry-after, uniform(0, min(cap, base * 2**(n-1))))``, AWS's full jitter)
  would not leave the attempt ``min_call_s`` before the deadline. A 429 whose Retry-After
  does not fit becomes RESOURCE_EXHAUSTED + RetryInfo, so the client knows when to come back;
  other errors surface as they are;
* the upstream's retry budget is spent: over a sliding window, retries may not exceed
  ``budget_ratio`` of calls plus a small floor (Finagle's RetryBudget, Envoy's 20 %), so a
  failing upstream sees at most ~1.2x its normal traffic, not 3x.

Refusals from the gateway itself (``CallRejected``: open circuit, rate limit past the
deadline) are never retried here: they already waited as long as made sense.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from longread_server.backoff import Backoff
from longread_server.calls.pipeline import Call, Next
from longread_server.calls.resilience_metrics import NULL_OBSERVER, ResilienceObserver
from longread_server.domain import CallRejected, ErrorKind, LlmEvent, TextDelta, UpstreamError
from longread_server.state.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3  # including the first
    base_s: float = 0.5
    cap_s: float = 20.0

    @property
    def waits(self) -> Backoff:
        return Backoff(self.base_s, self.cap_s, jitter=True)

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full jitter before retry number ``retry`` (1 for the first retry)."""
        return self.waits.delay(retry, rng)

    def delay(self, retry: int, err: UpstreamError, rng: random.Random) -> float:
        """The wait before retry ``retry``: never shorter than the upstream asked for."""
        return self.waits.delay(retry, rng, at_least=err.retry_after_s)


class RetryBudget:
    """Retries allowed for one upstream: ``ratio * calls + min_retries`` over ``window_s``,
    counted in one-second buckets (in-process: a budget is about this replica's traffic)."""

    def __init__(
        self, ratio: float, min_retries: int, window_s: float, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.window_s = window_s
        self._clock = clock
        self._seconds: deque[list[int]] = deque()  # [second, calls, retries]
        self.calls = 0
        self.retries = 0
        self.denied = 0

    def _bucket(self) -> list[int]:
        now = math.floor(self._clock.now())
        oldest = now - math.ceil(self.window_s)
        while self._seconds and self._seconds[0][0] <= oldest:
            _, calls, retries = self._seconds.popleft()
            self.calls -= calls
            self.retries -= retries
        if not self._seconds or self._seconds[-1][0] != now:
            self._seconds.append([now, 0, 0])
        return self._seconds[-1]

    def record_call(self) -> None:
        self._bucket()[1] += 1
        self.calls += 1

    def try_retry(self) -> bool:
        bucket = self._bucket()
        if self.retries + 1 > self.ratio * self.calls + self.min_retries:
            self.denied += 1
            return False
        bucket[2] += 1
        self.retries += 1
        return True


@dataclass(slots=True)
class RetryStage:
    policy: RetryPolicy
    budget_ratio: float = 0.2
    budget_min_retries: int = 3
    budget_window_s: float = 10.0
    min_call_s: float = 0.5  # a retry must leave the attempt at least this much time
    clock: Clock = SYSTEM_CLOCK
    rng: random.Random = field(default_factory=random.Random)
    budgets: dict[str, RetryBudget] = field(default_factory=dict)
    observer: ResilienceObserver = NULL_OBSERVER

    def budget(self, upstream: str) -> RetryBudget:
        b = self.budgets.get(upstream)
        if b is None:
            b = self.budgets[upstream] = RetryBudget(
                self.budget_ratio, self.budget_min_retries, self.budget_window_s, self.clock
            )
        return b

    async def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        budget = self.budget(call.vendor)
        budget.record_call()
        retry = 0
        while True:
            streamed = False
            try:
                attempt = call if call.attempt == retry else replace(call, attempt=retry)
                async for ev in nxt(attempt):
                    if isinstance(ev, TextDelta):
                        streamed = True
                    yield ev
                return
            except UpstreamError as err:
                retry += 1
                delay = self._delay_or_raise(call, err, retry, streamed, budget)
            await self.clock.sleep(delay)

    def _delay_or_raise(
        self, call: Call, err: UpstreamError, retry: int, streamed: bool, budget: RetryBudget
    ) -> float:
        if streamed or err.streamed or not err.kind.retryable or retry >= self.policy.max_attempts:
            raise err
        delay = self.policy.delay(retry, err, self.rng)
        deadline = call.ctx.deadline
        if deadline is not None and self.clock.now() + delay + self.min_call_s > deadline:
            if err.kind is ErrorKind.RATE_LIMITED and err.retry_after_s is not None:
                raise CallRejected(
                    "RATE_LIMITED",
                    f"upstream {call.vendor!r} is rate limiting (it answered 429): retry "
                    f"after {err.retry_after_s:.2f}s, past the call's deadline",
                    retry_after_s=err.retry_after_s,
                    quota_subject=f"upstream:{call.vendor}/throttled",
                    metadata={"vendor": call.vendor, "limit_owner": "upstream"},
                ) from err
            raise err
        if not budget.try_retry():
            raise err
        self.observer.retried(call.vendor, err.kind.value)
        return delay
