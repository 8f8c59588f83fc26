"""The pipeline every model call goes through, whatever the strategy.

Stages, outermost first: cache -> single-flight -> tenant budget -> rate limits -> circuit
breaker -> retry -> vendor adapter. Each stage wraps the next as an async iterator of
``LlmEvent``s, so streaming and non-streaming calls share one path. This module wires the
stages that exist; each is a small object with one job.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

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


class UnknownUpstream(LookupError):
    """No adapter is configured under that name."""


class Pipeline:
    """Runs model calls through the configured stages."""

    def __init__(self, adapters: Mapping[str, VendorAdapter]) -> None:
        self._adapters = dict(adapters)

    def adapter(self, vendor: str) -> VendorAdapter:
        try:
            return self._adapters[vendor]
        except KeyError:
            raise UnknownUpstream(vendor) from None

    async def call(self, vendor: str, req: LlmRequest, ctx: CallContext) -> AsyncIterator[LlmEvent]:
        """Streams the events of one model call."""
        adapter = self.adapter(vendor)
        remaining = ctx.remaining()
        if remaining is not None and remaining <= 0:
            raise UpstreamError(ErrorKind.TIMEOUT, "deadline passed before the call started")
        async for event in adapter.call(req, timeout=remaining):
            yield event
