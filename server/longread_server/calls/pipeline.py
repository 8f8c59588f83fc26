"""The pipeline every model call goes through, whatever the strategy.

Stages, outermost first: cache -> single-flight -> tenant budget -> rate limits -> circuit
breaker -> retry -> vendor adapter. Each stage is a small object with one job that wraps the
rest of the pipeline: it receives the call and ``nxt`` (the remaining stages) and yields the
``LlmEvent``s of the call, so streaming and non-streaming calls share one path.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from longread_server.domain import ErrorKind, LlmEvent, LlmRequest, UpstreamError
from longread_server.vendors.base import VendorAdapter


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling and until when; flows from the gRPC request into every stage."""

    tenant: str = ""
    deadline: float | None = None  # time.monotonic() seconds
    cache_mode: str = "default"  # default | bypass | no_store | only_if_cached
    cache_ttl_s: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()


@dataclass(frozen=True, slots=True)
class Call:
    """One model call as the stages see it."""

    vendor: str  # the upstream name
    adapter: VendorAdapter
    req: LlmRequest
    ctx: CallContext


Next = Callable[[Call], AsyncIterator[LlmEvent]]


class Stage(Protocol):
    """One step of the pipeline. Yields the call's events, usually by iterating ``nxt(call)``
    (possibly more than once, as a retry does, or not at all, as a cache hit does)."""

    def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]: ...


class UnknownUpstream(LookupError):
    """No adapter is configured under that name."""


async def _send(call: Call) -> AsyncIterator[LlmEvent]:
    """The innermost step: the vendor adapter, bounded by the call's deadline."""
    remaining = call.ctx.remaining()
    if remaining is not None and remaining <= 0:
        raise UpstreamError(ErrorKind.TIMEOUT, "deadline passed before the call started")
    async for event in call.adapter.call(call.req, timeout=remaining):
        yield event


def _wrap(stage: Stage, nxt: Next) -> Next:
    def run(call: Call) -> AsyncIterator[LlmEvent]:
        return stage(call, nxt)

    return run


class Pipeline:
    """Runs model calls through the configured stages (outermost first)."""

    def __init__(self, adapters: Mapping[str, VendorAdapter], stages: Sequence[Stage] = ()) -> None:
        self._adapters = dict(adapters)
        chain: Next = _send
        for stage in reversed(stages):
            chain = _wrap(stage, chain)
        self._chain = chain

    def adapter(self, vendor: str) -> VendorAdapter:
        try:
            return self._adapters[vendor]
        except KeyError:
            raise UnknownUpstream(vendor) from None

    def call(self, vendor: str, req: LlmRequest, ctx: CallContext) -> AsyncIterator[LlmEvent]:
        """Streams the events of one model call through every stage."""
        return self._chain(Call(vendor, self.adapter(vendor), req, ctx))
