"""The circuit-breaker stage: one breaker per upstream, consulted and fed on every attempt.

It sits inside the retry stage, so each attempt takes a permit and reports its outcome: the
window counts what the upstream actually did, a retry never slips past an open breaker, and
exactly ``half_open_calls`` attempts probe a recovering upstream. The state machine and its
backends (in-process, Redis) are in ``state/breakers.py``.

Classification (what the breaker is told):

* an upstream fault (``ErrorKind.upstream_fault``: 5xx, 529, timeouts, resets, broken
  streams) is a failure;
* any other answer from the upstream (400, 401, 404, 402...) is a success: the upstream is
  up, the request was wrong, and such errors must never open the breaker. A refused key
  (401/403) included: an open circuit would answer UNAVAILABLE, which callers retry, in place
  of the FAILED_PRECONDITION that names the upstream whose credentials to fix;
* a 429 is ignored (rate limits handle it; reference: do not count 429s), and so is a call
  that ends without an outcome (cancelled, refused further in) or that was never sent
  because the caller's deadline had already passed (under overload requests wait in the
  gateway, and counting them would open the breaker against a healthy upstream): its permit
  is given back;
* an attempt cut by the caller's deadline while still inside its own time limits is ignored
  too: a short deadline says nothing about a healthy upstream that needs longer (a long
  prompt's prefill). An attempt that runs past its own first-event or idle limit
  (``calls/timeouts.py``) is a TIMEOUT failure: that is how a hung upstream opens the
  breaker;
* slow means the *first event* (headers to first token, or the whole answer when not
  streaming) took at least ``slow_call_s``: total duration depends on the output length,
  time to first event on the upstream's health.

While open, calls fail fast with UNAVAILABLE + RetryInfo (the remaining open wait), unless the
fallback stage (``calls/fallback.py``) routes them elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from longread_server.calls.pipeline import Call, Next
from longread_server.calls.resilience_metrics import NULL_OBSERVER, ResilienceObserver
from longread_server.calls.tasks import detach
from longread_server.domain import (
    CallRejected,
    ErrorKind,
    Finish,
    LlmEvent,
    TokenCount,
    UpstreamError,
)
from longread_server.state.breakers import BreakerParams, BreakerStore, Outcome, Permit
from longread_server.state.clock import SYSTEM_CLOCK, Clock
from longread_server.state.gate import StateUnavailable

CIRCUIT = "circuit"  # metadata key that marks a rejection as the breaker's


def classify(err: UpstreamError, *, slow: bool) -> Outcome:
    """The breaker outcome of an attempt that failed with ``err``."""
    if err.unsent or err.cut_by_deadline:
        return Outcome.IGNORED
    if err.kind.upstream_fault:
        return Outcome.of(failed=True, slow=slow)
    if err.kind is ErrorKind.RATE_LIMITED:
        return Outcome.IGNORED
    return Outcome.of(failed=False, slow=slow)


def open_circuit(upstream: str, permit: Permit) -> CallRejected:
    return CallRejected(
        "UPSTREAM_UNAVAILABLE",
        f"upstream {upstream!r} is failing (circuit {permit.state}); failing fast, "
        f"retry in {permit.retry_after_s:.1f}s",
        retry_after_s=permit.retry_after_s,
        metadata={"vendor": upstream, CIRCUIT: permit.state},
    )


@dataclass(slots=True)
class BreakerStage:
    store: BreakerStore
    params: BreakerParams
    slow_call_s: float = 60.0
    clock: Clock = SYSTEM_CLOCK
    observer: ResilienceObserver = NULL_OBSERVER

    async def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        name = call.vendor
        try:
            permit = await self.store.acquire(name, self.params)
        except StateUnavailable as e:
            self.observer.rejected("state_unavailable", name)
            raise CallRejected(
                "UPSTREAM_UNAVAILABLE", str(e), retry_after_s=1.0, metadata={"state": "redis"}
            ) from e
        self.observer.breaker(name, permit.state)
        if not permit.granted:
            self.observer.rejected("circuit_open", name)
            raise open_circuit(name, permit)
        started = self.clock.now()
        first: float | None = None
        outcome = Outcome.IGNORED
        try:
            async for ev in nxt(call):
                if first is None:
                    first = self.clock.now()
                if isinstance(ev, Finish | TokenCount):
                    outcome = Outcome.of(failed=False, slow=first - started >= self.slow_call_s)
                yield ev
        except UpstreamError as e:
            waited = (first if first is not None else self.clock.now()) - started
            outcome = classify(e, slow=waited >= self.slow_call_s)
            self.observer.breaker(name, await self.store.record(name, self.params, permit, outcome))
            raise
        except BaseException:
            # Cancelled or closed early: settle in the background, never delay the cancel.
            detach(self.store.record(name, self.params, permit, outcome))
            raise
        self.observer.breaker(name, await self.store.record(name, self.params, permit, outcome))
