"""Per-attempt timeouts: time to the first event, and the longest silence between events.

The deadline bounds a whole call, but an upstream that accepts a request and never answers
(or a stream that stalls) should fail long before it, and independently of it, so that the
failure is counted by the breaker and the retry gets a fair share of the caller's time.

* The first-event limit is derived per attempt, because a healthy upstream's time to the
  first event grows with the work before it: ``first_event_base_s`` (connection, queueing,
  a short prefill) plus ``first_event_per_1k_prompt_s`` per 1,000 prompt tokens (prefill
  grows with the prompt) plus, when the call does not stream, ``first_event_per_1k_output_s``
  per 1,000 of ``max_output_tokens`` (a non-streaming answer's first byte comes after the
  whole answer has been generated); never more than ``first_event_max_s``.
* ``idle_s`` bounds every gap after the first event.
* Both are cut to the call's deadline (a small margin makes sure the gateway, not gRPC, gets
  there first). A cut by the deadline is the caller's patience running out, not the
  upstream's limit: the error says so (``cut_by_deadline``) and the breaker does not count
  it, while an attempt's own limit running out is an upstream TIMEOUT it does count.

The limits are resolved per (upstream, model) by :class:`AttemptPolicy` from the defaults and
the configured overrides, which is where model differences live (reasoning models think
before their first visible token). The attempt's iterator is always closed, which closes
the HTTP response.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from longread_server.calls.pipeline import Call, Next
from longread_server.domain import (
    ErrorKind,
    LlmEvent,
    LlmRequest,
    Operation,
    TextDelta,
    UpstreamError,
)
from longread_server.repeat_timeout import RepeatTimeout

# When the planner did not count the prompt: an English-text rule of thumb (about four
# characters per token) is close enough for an allowance that is generous by design.
CHARS_PER_TOKEN = 4


def prompt_tokens(req: LlmRequest) -> int:
    """The prompt's size in tokens: the planner's count, else an estimate from its length."""
    if req.estimated_prompt_tokens > 0:
        return req.estimated_prompt_tokens
    chars = len(req.system) + sum(len(m.content) for m in req.messages)
    return math.ceil(chars / CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """How long one attempt at one (upstream, model) may stay silent.

    See ``config.AttemptConfig`` for the meaning of each field and why the defaults are what
    they are. ``first_event_max_s`` 0 and ``idle_s`` 0 mean no limit but the deadline;
    ``hedge_after_s`` 0 means no hedged attempt (``calls/hedge.py``).
    """

    first_event_base_s: float = 20.0
    first_event_per_1k_prompt_s: float = 0.2
    first_event_per_1k_output_s: float = 50.0
    first_event_max_s: float = 300.0
    idle_s: float = 60.0
    hedge_after_s: float = 0.0

    @classmethod
    def fixed(
        cls, first_event_s: float, idle_s: float, hedge_after_s: float = 0.0
    ) -> AttemptLimits:
        """The same first-event limit whatever the request (0: none)."""
        return cls(first_event_s, 0.0, 0.0, first_event_s, idle_s, hedge_after_s)

    def first_event_s(self, req: LlmRequest) -> float:
        """The first-event limit of an attempt at ``req`` (0: no limit but the deadline)."""
        if self.first_event_max_s <= 0:
            return 0.0
        limit = self.first_event_base_s
        if req.operation is not Operation.COUNT_TOKENS:  # a count is a tokenizer pass
            limit += self.first_event_per_1k_prompt_s * prompt_tokens(req) / 1000
            if not req.stream:
                limit += self.first_event_per_1k_output_s * req.max_output_tokens / 1000
        return min(limit, self.first_event_max_s)


@dataclass(frozen=True, slots=True)
class LimitsOverride:
    """Replaces some of the default limits for one upstream, or for some of its models."""

    upstream: str = ""  # "": every upstream
    models: tuple[str, ...] = ()  # shell-style patterns ("gpt-5*"); empty: every model
    changes: Mapping[str, float] = field(default_factory=dict)  # AttemptLimits fields

    def applies(self, upstream: str, model: str) -> bool:
        if self.upstream and self.upstream != upstream:
            return False
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)


class AttemptPolicy:
    """The limits of each (upstream, model): the defaults, then every override that applies,
    in order (a later one replaces what an earlier one set). Resolved once per pair."""

    def __init__(
        self, default: AttemptLimits | None = None, overrides: Sequence[LimitsOverride] = ()
    ) -> None:
        self.default = default or AttemptLimits()
        self.overrides = tuple(overrides)
        self._resolved: dict[tuple[str, str], AttemptLimits] = {}

    def limits(self, upstream: str, model: str) -> AttemptLimits:
        key = (upstream, model)
        found = self._resolved.get(key)
        if found is None:
            found = self.default
            for o in self.overrides:
                if o.applies(upstream, model):
                    found = replace(found, **dict(o.changes))
            if len(self._resolved) < 4096:  # pairs come from config and catalog: few
                self._resolved[key] = found
        return found

    @property
    def may_hedge(self) -> bool:
        """Whether any upstream or model has hedging on (else the stage is left out)."""
        return self.default.hedge_after_s > 0 or any(
            o.changes.get("hedge_after_s", 0.0) > 0 for o in self.overrides
        )


@dataclass(slots=True)
class AttemptTimeouts:
    policy: AttemptPolicy | AttemptLimits = field(default_factory=AttemptPolicy)
    # Cut attempts this long before the deadline, so the gateway (not gRPC's own deadline
    # cancellation) ends them: the failure is reported, deterministically.
    deadline_margin_s: float = 0.02

    def limits(self, call: Call) -> AttemptLimits:
        p = self.policy
        return p if isinstance(p, AttemptLimits) else p.limits(call.vendor, call.req.model)

    async def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        limits = self.limits(call)
        first_event_s = limits.first_event_s(call.req)
        events = aiter(nxt(call))
        first = True
        streamed = False
        bound = RepeatTimeout()
        try:
            while True:
                limit = first_event_s if first else limits.idle_s
                timeout: float | None = limit if limit > 0 else None
                by_deadline = False
                remaining = call.ctx.remaining()
                if remaining is not None:
                    remaining -= self.deadline_margin_s
                    if first and remaining <= 0:
                        # No time left to even send it (under overload, the deadline can
                        # pass while the request waits in the gateway): not the upstream's
                        # fault, so not a breaker failure.
                        raise UpstreamError(
                            ErrorKind.TIMEOUT,
                            "deadline passed before the call started",
                            unsent=True,
                        )
                    if timeout is None or remaining < timeout:
                        timeout, by_deadline = max(0.0, remaining), True
                try:
                    with bound.bound(timeout):
                        ev = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise _timeout(
                        call, limit, first=first, streamed=streamed, by_deadline=by_deadline
                    ) from None
                first = False
                if isinstance(ev, TextDelta):
                    streamed = True
                yield ev
        finally:
            bound.close()
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()


def _timeout(
    call: Call, limit: float, *, first: bool, streamed: bool, by_deadline: bool
) -> UpstreamError:
    if by_deadline:
        what = "deadline exceeded"
    elif first:
        what = f"no response within {limit:g}s"
    else:
        what = f"the stream stalled for {limit:g}s"
    return UpstreamError(
        ErrorKind.TIMEOUT,
        f"{call.vendor}: {what}",
        streamed=streamed,
        cut_by_deadline=by_deadline,
    )


def override(upstream: str = "", models: Sequence[str] = (), **changes: Any) -> LimitsOverride:
    """A :class:`LimitsOverride` (``changes``: ``AttemptLimits`` fields)."""
    unknown = set(changes) - set(AttemptLimits.__dataclass_fields__)
    if unknown:
        raise ValueError(f"not attempt limits: {sorted(unknown)}")
    return LimitsOverride(upstream, tuple(models), {k: float(v) for k, v in changes.items()})
