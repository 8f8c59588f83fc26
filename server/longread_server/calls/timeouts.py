"""Per-attempt timeouts: time to the first event, and the longest silence between events.

The deadline bounds a whole call, but a stream that trickles (a slow proxy, a stalled
connection) or an upstream that never answers should fail long before it, and independently
of it: ``first_event_s`` bounds the wait for the first event of an attempt, ``idle_s`` every
gap after that. Both are also cut to the call's deadline, so an attempt never outlives its
caller's patience and the failure is an upstream TIMEOUT the breaker can count, not a bare
cancellation (a small margin makes sure the gateway, not gRPC, gets there first). The
attempt's iterator is always closed, which closes the HTTP response.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from longread_server.calls.pipeline import Call, Next
from longread_server.domain import ErrorKind, LlmEvent, TextDelta, UpstreamError


@dataclass(slots=True)
class AttemptTimeouts:
    first_event_s: float = 300.0  # 0: no limit but the deadline
    idle_s: float = 60.0  # 0: no limit but the deadline
    # Cut attempts this long before the deadline, so the gateway (not gRPC's own deadline
    # cancellation) ends them: the failure is counted and reported, deterministically.
    deadline_margin_s: float = 0.02

    async def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        events = aiter(nxt(call))
        first = True
        streamed = False
        try:
            while True:
                limit = self.first_event_s if first else self.idle_s
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
                    async with asyncio.timeout(timeout):
                        ev = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if by_deadline:
                        what = "deadline exceeded"
                    elif first:
                        what = f"no response within {limit:g}s"
                    else:
                        what = f"the stream stalled for {limit:g}s"
                    raise UpstreamError(
                        ErrorKind.TIMEOUT, f"{call.vendor}: {what}", streamed=streamed
                    ) from None
                first = False
                if isinstance(ev, TextDelta):
                    streamed = True
                yield ev
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
