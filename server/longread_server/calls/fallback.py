"""Routing around an open circuit: send the call to the upstream's configured ``fallback``.

A call goes to the fallback when its upstream's breaker is refusing calls (checked before the
call, so nothing waits in the primary's rate limits first) or when an attempt is refused by
the breaker after the call started (it opened during the retries). Only one hop, and only
before any event has been passed on. The fallback has its own rate limits, breaker and
retries, since every stage after this one sees the rerouted call.

The model: the same model id if the catalog lists it for the fallback's vendor and the
fallback serves it (e.g. an Azure or proxy deployment of the same model); otherwise the first
of the fallback's configured ``models`` whose context window and output limit fit the call.
No such model: no fallback, the call fails fast. A request can opt out with the label
``fallback=off``. Cost is still reported at the planned model's prices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace

from longread_server.calls.breaker import CIRCUIT
from longread_server.calls.limits import prompt_tokens
from longread_server.calls.pipeline import Call, Next
from longread_server.config import UpstreamConfig
from longread_server.domain import CallRejected, LlmEvent, Operation
from longread_server.plan.catalog import Catalog
from longread_server.state.breakers import BreakerParams, BreakerStore
from longread_server.state.gate import StateUnavailable
from longread_server.vendors.base import VendorAdapter

OPT_OUT_LABEL = "fallback"
_OFF = frozenset({"off", "false", "no", "0", "never"})


@dataclass(slots=True)
class FallbackStage:
    breakers: BreakerStore
    params: BreakerParams
    upstreams: Mapping[str, UpstreamConfig]
    adapters: Mapping[str, VendorAdapter]
    catalog: Catalog

    def reroute(self, call: Call) -> Call | None:
        """The call as its fallback would make it, or None (no usable fallback)."""
        if call.ctx.labels.get(OPT_OUT_LABEL, "").lower() in _OFF:
            return None
        if call.req.operation is not Operation.CHAT:  # a count means this vendor's count
            return None
        primary = self.upstreams.get(call.vendor)
        if primary is None or not primary.fallback:
            return None
        target = self.upstreams.get(primary.fallback)
        adapter = self.adapters.get(primary.fallback)
        if target is None or adapter is None:
            return None
        model = self._model_for(call, target)
        if model is None:
            return None
        req = call.req if model == call.req.model else replace(call.req, model=model)
        return replace(call, vendor=target.name, adapter=adapter, req=req)

    def _model_for(self, call: Call, target: UpstreamConfig) -> str | None:
        wanted = call.req.model
        if self.catalog.get(target.name, wanted) is not None and (
            not target.models or wanted in target.models
        ):
            return wanted
        need_in = prompt_tokens(call.req) + call.req.max_output_tokens
        for name in target.models:
            info = self.catalog.get(target.name, name)
            if (
                info is not None
                and info.context_window >= need_in
                and info.max_output_tokens >= call.req.max_output_tokens
            ):
                return name
        return None

    async def _rejecting(self, upstream: str) -> bool:
        try:
            return (await self.breakers.view(upstream, self.params)).rejecting
        except StateUnavailable:
            return False  # the breaker stage will say so

    async def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        alt = self.reroute(call)
        if alt is None:
            async for ev in nxt(call):
                yield ev
            return
        if await self._rejecting(call.vendor) and not await self._rejecting(alt.vendor):
            async for ev in nxt(alt):
                yield ev
            return
        passed_on = False
        try:
            async for ev in nxt(call):
                passed_on = True
                yield ev
        except CallRejected as e:
            if passed_on or CIRCUIT not in e.metadata:
                raise
        else:
            return
        async for ev in nxt(alt):
            yield ev
