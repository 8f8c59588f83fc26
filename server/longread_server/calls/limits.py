"""Rate limits: requests-per-minute and tokens-per-minute token buckets.

Two stages share this code. The tenant stage reserves once per model call (a tenant pays for
what it asked, not for the gateway's retries); the upstream stage sits inside the retry stage
and reserves once per attempt, because every attempt is a request the vendor counts.

* Cost: 1 request, and prompt tokens (``LlmRequest.estimated_prompt_tokens`` from the plan,
  else characters / 4) plus ``max_output_tokens``, reserved before the call and settled after
  it against the real usage: the difference is refunded, or charged as a debt.
* Failures settle too: an attempt that never reached the vendor (refused further in, cancelled
  while waiting) is refunded whole; one that failed before any text keeps its request and gets
  its tokens back; one that broke mid-stream is charged its prompt and the text it streamed.
* A cost larger than a bucket can ever hold is refused at once (FAILED_PRECONDITION); a wait
  that does not fit the deadline (less ``min_call_s`` for the call itself: a call that starts
  with nothing left is wasted), or ``max_wait_s``, is refused at once with the wait as
  RetryInfo (RESOURCE_EXHAUSTED + QuotaFailure); otherwise the call waits its turn.
* Upstream feedback: a vendor 429 holds the upstream for its ``retry-after(-ms)`` (or the
  ``x-ratelimit-reset-*`` / ``anthropic-ratelimit-*-reset`` of whatever it ran out of) and
  drains its buckets, so new attempts wait instead of hammering; listeners (the adaptive map
  concurrency) hear about it too.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace

from longread_server.calls.pipeline import Call, Next
from longread_server.calls.resilience_metrics import NULL_OBSERVER, ResilienceObserver
from longread_server.calls.tasks import detach
from longread_server.domain import (
    CallRejected,
    ErrorKind,
    Finish,
    LlmEvent,
    LlmRequest,
    Operation,
    TextDelta,
    UpstreamError,
)
from longread_server.state.buckets import BucketSpec, BucketStore, Grant, Limited, Never
from longread_server.state.clock import SYSTEM_CLOCK, Clock
from longread_server.state.gate import StateUnavailable

CHARS_PER_TOKEN = 4  # the usual rough estimate when no tokenizer count is at hand
MESSAGE_OVERHEAD = 4  # tokens of framing per message
REQUESTS = "requests_per_minute"
TOKENS = "tokens_per_minute"


@dataclass(frozen=True, slots=True)
class Quota:
    """The buckets of one subject (``tenant:acme``, ``upstream:openai``)."""

    subject: str
    requests: BucketSpec | None = None
    tokens: BucketSpec | None = None
    holds: tuple[str, ...] = ()  # hold keys that stop this subject (upstreams: after a 429)

    def items(self, requests: float, tokens: float) -> list[tuple[BucketSpec, float]]:
        out: list[tuple[BucketSpec, float]] = []
        if self.requests is not None and requests:
            out.append((self.requests, requests))
        if self.tokens is not None and tokens:
            out.append((self.tokens, tokens))
        return out

    @property
    def buckets(self) -> list[BucketSpec]:
        return [b for b in (self.requests, self.tokens) if b is not None]

    def name_of(self, key: str) -> str:
        """``subject/limit`` for a bucket or hold key (QuotaFailure's subject)."""
        if self.requests is not None and key == self.requests.key:
            return f"{self.subject}/{REQUESTS}"
        if self.tokens is not None and key == self.tokens.key:
            return f"{self.subject}/{TOKENS}"
        return f"{self.subject}/throttled"


def make_quota(
    subject: str,
    *,
    requests_per_minute: float = 0.0,
    tokens_per_minute: float = 0.0,
    burst_requests: float = 0.0,
    burst_tokens: float = 0.0,
    hold: bool = False,
) -> Quota:
    """A subject's quota from per-minute limits (0: unlimited; a burst of 0: one minute's
    worth). Keys carry the subject as a Redis Cluster hash tag, so one script can update all
    of a subject's buckets."""
    tag = "{" + subject + "}"
    requests = tokens = None
    if requests_per_minute > 0:
        burst = max(1.0, burst_requests or requests_per_minute)
        requests = BucketSpec(f"rl:{tag}:rpm", requests_per_minute / 60.0, burst)
    if tokens_per_minute > 0:
        tokens = BucketSpec(
            f"rl:{tag}:tpm", tokens_per_minute / 60.0, burst_tokens or tokens_per_minute
        )
    holds = (f"rl:{tag}:hold",) if hold else ()
    return Quota(subject, requests, tokens, holds)


def prompt_tokens(req: LlmRequest) -> int:
    """The planner's count when it gave one, else a character-based estimate (a counting
    call uses no model tokens: it costs a request, not tokens)."""
    if req.operation is Operation.COUNT_TOKENS:
        return 0
    if req.estimated_prompt_tokens > 0:
        return req.estimated_prompt_tokens
    chars = len(req.system) + sum(len(m.content) for m in req.messages)
    return math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD * (len(req.messages) + 1)


def throttle_seconds(err: UpstreamError, default_s: float, max_s: float) -> float:
    """How long a vendor's 429 asks us to stay away: ``retry-after(-ms)``, else the reset of
    whatever the rate-limit headers say ran out, else ``default_s``; at most ``max_s``."""
    seconds = err.retry_after_s
    info = err.rate_limits
    if seconds is None and info is not None:
        resets = []
        if info.remaining_requests == 0 and info.reset_requests_s is not None:
            resets.append(info.reset_requests_s)
        if info.remaining_tokens == 0 and info.reset_tokens_s is not None:
            resets.append(info.reset_tokens_s)
        if resets:
            seconds = max(resets)
    if seconds is None or seconds <= 0:
        seconds = default_s
    return min(seconds, max_s)


@dataclass(slots=True)
class _Ledger:
    """What one reservation took and what the call turned out to use."""

    prompt: int
    reserved_tokens: int
    sent: bool = False  # the call went past the wait (may have reached the vendor)
    streamed_chars: int = 0
    finish: Finish | None = None

    def used_tokens(self) -> int:
        if self.finish is not None:
            usage = self.finish.usage
            if usage.input_tokens or usage.output_tokens:
                return usage.input_tokens + usage.output_tokens
        return self.prompt + math.ceil(self.streamed_chars / CHARS_PER_TOKEN)

    def refund(self, outcome: BaseException | None) -> tuple[float, float]:
        """(requests, tokens) to give back."""
        if not self.sent or isinstance(outcome, CallRejected):
            return 1.0, float(self.reserved_tokens)  # the vendor never saw it
        if self.finish is not None or self.streamed_chars:
            return 0.0, float(self.reserved_tokens - self.used_tokens())
        if isinstance(outcome, UpstreamError):
            return 0.0, float(self.reserved_tokens)  # failed before the vendor did the work
        return 0.0, 0.0  # cancelled in flight: the vendor may well charge all of it


ThrottleListener = Callable[[str], None]


@dataclass(slots=True)
class RateLimitStage:
    """Reserves from the quota ``quota_for(call)`` names (None: not limited)."""

    store: BucketStore
    quota_for: Callable[[Call], Quota | None]
    clock: Clock = SYSTEM_CLOCK
    max_wait_s: float = 60.0  # the longest wait when the call has no (longer) deadline
    min_call_s: float = 0.5  # a wait must leave the call at least this much of its deadline
    # Upstream feedback (the upstream stage): 429s hold and drain this quota.
    feedback: bool = False
    throttle_default_s: float = 1.0
    throttle_max_s: float = 60.0
    listeners: Sequence[ThrottleListener] = field(default_factory=tuple)
    limit: str = "tenant"  # which limit this is, for metrics
    observer: ResilienceObserver = NULL_OBSERVER
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)  # spans for waits

    def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        quota = self.quota_for(call)
        if quota is None:
            # Not limited: the events pass straight through, with no generator of ours
            # around them (each layer costs its share on every event of every call).
            return nxt(call)
        return self._limited(call, nxt, quota)

    async def _limited(self, call: Call, nxt: Next, quota: Quota) -> AsyncIterator[LlmEvent]:
        prompt = prompt_tokens(call.req)
        ledger = _Ledger(prompt, prompt + call.req.max_output_tokens)
        items = quota.items(1.0, ledger.reserved_tokens)
        grant = await self._reserve(call, quota, items)
        outcome: BaseException | None = None
        try:
            if grant.wait_s > 0:
                with self.tracer.start_as_current_span(
                    "rate limit wait",
                    attributes={"longread.limit": self.limit, "longread.wait_s": grant.wait_s},
                ):
                    await self.clock.sleep(grant.wait_s)
            ledger.sent = True
            async for ev in nxt(call):
                if isinstance(ev, TextDelta):
                    ledger.streamed_chars += len(ev.text)
                elif isinstance(ev, Finish):
                    ledger.finish = ev
                yield ev
        except UpstreamError as e:
            outcome = e
            if self.feedback and e.kind is ErrorKind.RATE_LIMITED:
                await self._throttled(call, quota, e)
            raise
        except BaseException as e:
            outcome = e
            raise
        finally:
            refund = self._refund_items(quota, ledger, outcome)
            if refund:
                if outcome is None:
                    await self.store.adjust(refund, grant)
                else:
                    detach(self.store.adjust(refund, grant))

    async def _reserve(
        self, call: Call, quota: Quota, items: list[tuple[BucketSpec, float]]
    ) -> Grant:
        max_wait = self.max_wait_s
        if call.ctx.deadline is not None:
            left = call.ctx.deadline - self.clock.now() - self.min_call_s
            max_wait = max(0.0, min(max_wait, left))
        try:
            decision = await self.store.reserve(items, quota.holds, max_wait)
        except StateUnavailable as e:
            self.observer.rejected("state_unavailable", self.limit)
            raise CallRejected(
                "UPSTREAM_UNAVAILABLE", str(e), retry_after_s=1.0, metadata={"state": "redis"}
            ) from e
        if isinstance(decision, Never):
            name = quota.name_of(decision.key)
            self.observer.rejected("over_capacity", name)
            raise CallRejected(
                "RATE_LIMITED",
                f"this call needs {decision.cost:.0f} from {name}, whose bucket holds at most "
                f"{decision.burst:.0f}: it can never be admitted (ask for fewer tokens, or "
                "raise the limit)",
                quota_subject=name,
                metadata={"cost": f"{decision.cost:.0f}", "capacity": f"{decision.burst:.0f}"},
                permanent=True,
            )
        if isinstance(decision, Limited):
            name = quota.name_of(decision.key)
            self.observer.rejected("rate_limited", name)
            wait = decision.retry_after_s
            if decision.key in quota.holds:
                # Held after the vendor's own 429: its limit, not one of ours.
                message = (
                    f"upstream {call.vendor!r} is rate limiting (it answered 429 and asked to "
                    f"wait): retry after {wait:.2f}s, more than the call's deadline allows"
                )
                owner = "upstream"
            else:
                message = (
                    f"the gateway's own limit {name} is exhausted: the call would have to "
                    f"wait {wait:.2f}s, more than its deadline allows"
                )
                owner = "gateway"
            raise CallRejected(
                "RATE_LIMITED",
                message,
                retry_after_s=wait,
                quota_subject=name,
                metadata={"vendor": call.vendor, "limit_owner": owner},
            )
        self.observer.waited(self.limit, decision.wait_s)
        return decision

    def _refund_items(
        self, quota: Quota, ledger: _Ledger, outcome: BaseException | None
    ) -> list[tuple[BucketSpec, float]]:
        requests, tokens = ledger.refund(outcome)
        return [(spec, amount) for spec, amount in quota.items(requests, tokens) if amount]

    async def _throttled(self, call: Call, quota: Quota, err: UpstreamError) -> None:
        seconds = throttle_seconds(err, self.throttle_default_s, self.throttle_max_s)
        for key in quota.holds:
            await self.store.hold(key, seconds, quota.buckets)
        for listener in self.listeners:
            listener(call.vendor)
