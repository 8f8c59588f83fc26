"""Fallback chains: when the model a call asked for cannot answer, the next one in its chain.

A chain is an ordered list of "upstream" or "upstream/model" entries, configured per upstream
(``upstreams[].fallback``, or ``[[resilience.fallback]]`` with ``upstream``) or per model
(``[[resilience.fallback]]`` with ``model``, which wins). The call moves on, before any event
of it has been passed on, when:

* ``circuit_open``: its upstream's breaker is refusing calls (checked before the call, so
  nothing waits in the primary's rate limits first) or refused an attempt during the retries;
* ``rate_limited``: the upstream still answered 429 after the retries, or asked to wait past
  the deadline;
* ``upstream_error``: still 5xx or overloaded after the retries;
* ``context_overflow``: the vendor said the prompt exceeds the model's window. Only an entry
  whose window is larger than the refusing model's (and fits our count) is taken: our count
  evidently fell short, so a model of the same window would refuse too.

This stage sits outside retry: every entry gets its own retries, rate limits, breaker and
timeouts, since every stage after this one sees the rerouted call. An "upstream" entry means
the same model there if the catalog lists it and the upstream serves it (an Azure or proxy
deployment of the same model), else the first of the upstream's configured ``models`` that
fits. Entries that do not fit, whose circuit is open, or that were tried already are skipped.
A request opts out with the label ``fallback=off``. Nothing answered: the primary's error.

The answer says which model gave it: its ``Finish`` carries a ``FallbackNote`` (the model,
the reason), so the runner reports and prices it as that model's and the budget charges that
model's rates. The answer is cached under the key of the request that answered (the fallback
model's payload), never under the primary's: the cache stage before us keyed the primary's
request and single-flight does not store an answer with a note. An identical request later
goes to the primary again, and to the fallback's cached answer only if it falls back again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry import trace

from longread_server.calls.breaker import CIRCUIT
from longread_server.calls.cache import ResponseCache, replay
from longread_server.calls.limits import prompt_tokens
from longread_server.calls.pipeline import Call, Next
from longread_server.calls.resilience_metrics import NULL_OBSERVER, ResilienceObserver
from longread_server.config import FALLBACK_TRIGGERS, FallbackChainConfig, UpstreamConfig
from longread_server.domain import (
    CallRejected,
    ErrorKind,
    FallbackNote,
    FallbackReason,
    Finish,
    LlmEvent,
    LlmRequest,
    ModelInfo,
    Operation,
    TextDelta,
    UpstreamError,
)
from longread_server.plan.catalog import Catalog
from longread_server.state.breakers import BreakerParams, BreakerStore
from longread_server.state.gate import StateUnavailable
from longread_server.vendors.base import VendorAdapter
from longread_server.vendors.errors import is_context_overflow

log = logging.getLogger(__name__)

OPT_OUT_LABEL = "fallback"
_OFF = frozenset({"off", "false", "no", "0", "never"})
_ALL = frozenset(FallbackReason(t) for t in FALLBACK_TRIGGERS)


@dataclass(frozen=True, slots=True)
class Chain:
    """Where a call goes next, in order, and on which failures."""

    entries: tuple[str, ...]
    on: frozenset[FallbackReason] = _ALL


def chains_from(
    upstreams: Iterable[UpstreamConfig], configured: Iterable[FallbackChainConfig]
) -> dict[tuple[str, str], Chain]:
    """The chains by (upstream, model): ("u", "") for an upstream's calls, ("", "m") for a
    model's on any upstream. ``[[resilience.fallback]]`` replaces an upstream's shorthand."""
    chains = {(u.name, ""): Chain((u.fallback,)) for u in upstreams if u.fallback}
    for c in configured:
        entries = tuple(e for e in c.chain if e)
        if entries:
            on = frozenset(FallbackReason(t) for t in c.on)
            chains[(c.upstream, c.model)] = Chain(entries, on)
    return chains


def trigger(error: BaseException) -> FallbackReason | None:
    """Why ``error`` sends a call down its chain (None: it does not)."""
    if isinstance(error, CallRejected):
        if CIRCUIT in error.metadata:
            return FallbackReason.CIRCUIT_OPEN
        if error.reason == "RATE_LIMITED" and error.quota_subject.startswith("upstream:"):
            return FallbackReason.RATE_LIMITED  # the vendor's own 429s holding it, not ours
        return None
    if not isinstance(error, UpstreamError) or error.streamed or error.cut_by_deadline:
        return None
    if error.kind is ErrorKind.RATE_LIMITED:
        return FallbackReason.RATE_LIMITED
    if error.kind in (ErrorKind.SERVER, ErrorKind.OVERLOADED):
        return FallbackReason.UPSTREAM_ERROR
    if is_context_overflow(error):
        return FallbackReason.CONTEXT_OVERFLOW
    return None


@dataclass(slots=True)
class FallbackStage:
    breakers: BreakerStore
    params: BreakerParams
    upstreams: Mapping[str, UpstreamConfig]
    adapters: Mapping[str, VendorAdapter]
    catalog: Catalog
    chains: Mapping[tuple[str, str], Chain] = field(default_factory=dict)
    breaker_on: bool = True  # with the breaker off no circuit is ever open: no look-up
    # The response cache, to read and store a fallback's answer under its own key
    # (``calls/stages.py`` sets it when the pipeline has a cache).
    cache: ResponseCache | None = None
    observer: ResilienceObserver = NULL_OBSERVER

    def chain_for(self, call: Call) -> Chain | None:
        if call.ctx.labels.get(OPT_OUT_LABEL, "").lower() in _OFF:
            return None
        if call.req.operation is not Operation.CHAT:  # a count means this vendor's count
            return None
        for key in ((call.vendor, call.req.model), ("", call.req.model), (call.vendor, "")):
            chain = self.chains.get(key)
            if chain is not None:
                return chain
        return None

    def reroute(
        self, call: Call, entry: str, above_window: int = 0
    ) -> tuple[Call, ModelInfo] | None:
        """The call as ``entry`` would take it, with the model that would answer, or None
        (no such upstream, or none of its models fits). ``above_window``: only a model
        whose window is larger (the call overflowed a model of that window)."""
        name, _, model = entry.partition("/")
        target = self.upstreams.get(name)
        adapter = self.adapters.get(name)
        if target is None or adapter is None:
            return None
        if model:
            candidates = [model]
        else:
            same = not target.models or call.req.model in target.models
            candidates = [call.req.model] if same else []
            candidates += target.models
        need = prompt_tokens(call.req) + call.req.max_output_tokens
        for m in candidates:
            info = self.catalog.get(name, m)
            if (
                info is not None
                and info.context_window >= need
                and info.context_window > above_window
                and info.max_output_tokens >= call.req.max_output_tokens
            ):
                req = call.req if m == call.req.model else _for_model(call.req, info)
                return Call(vendor=name, adapter=adapter, req=req, ctx=call.ctx), info
        return None

    async def _rejecting(self, upstream: str) -> bool:
        if not self.breaker_on:
            return False
        try:
            return (await self.breakers.view(upstream, self.params)).rejecting
        except StateUnavailable:
            return False  # the breaker stage will say so

    def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        chain = self.chain_for(call)
        if chain is None:
            return nxt(call)  # nothing to fall back to: no generator of ours around the events
        return self._with_fallback(call, nxt, chain)

    async def _with_fallback(self, call: Call, nxt: Next, chain: Chain) -> AsyncIterator[LlmEvent]:
        first_error: BaseException | None = None
        reason: FallbackReason | None = None
        detail = ""
        if FallbackReason.CIRCUIT_OPEN in chain.on and await self._rejecting(call.vendor):
            reason, detail = FallbackReason.CIRCUIT_OPEN, f"{call.vendor}'s circuit is open"
        else:
            passed_on = False
            try:
                async for ev in nxt(call):
                    passed_on = True
                    yield ev
                return
            except (UpstreamError, CallRejected) as e:
                reason = None if passed_on else trigger(e)
                if reason is None or reason not in chain.on:
                    raise
                first_error, detail = e, str(e)
        primary = self.catalog.get(call.vendor, call.req.model)
        above = primary.context_window if primary else 0
        tried = {(call.vendor, call.req.model)}
        for entry in chain.entries:
            remaining = call.ctx.remaining()
            if remaining is not None and remaining <= 0:
                break
            window = above if reason is FallbackReason.CONTEXT_OVERFLOW else 0
            target = self.reroute(call, entry, window)
            if target is None:
                continue
            alt, info = target
            if (alt.vendor, alt.req.model) in tried or await self._rejecting(alt.vendor):
                continue
            tried.add((alt.vendor, alt.req.model))
            note = FallbackNote(reason, call.vendor, call.req.model, info, detail[:200])
            _record(note)
            self.observer.fell_back(
                note.reason.value,
                f"{call.vendor}/{call.req.model}",
                f"{alt.vendor}/{alt.req.model}",
            )
            passed_on = False
            try:
                async for ev in self._answer(alt, nxt, note):
                    passed_on = True
                    yield ev
                return
            except (UpstreamError, CallRejected) as e:
                if passed_on:
                    raise
                # This entry failed too: the next one, for whatever reason this one failed
                # (an overflow here raises the window the next entry must beat).
                log.info("fallback: %s failed too: %s", entry, e)
                again = trigger(e)
                if again is not None:
                    reason, detail = again, str(e)
                    if again is FallbackReason.CONTEXT_OVERFLOW:
                        above = max(above, info.context_window)
        if first_error is not None:
            raise first_error
        async for ev in nxt(call):  # the circuit was open and no entry could answer: its refusal
            yield ev

    async def _answer(self, alt: Call, nxt: Next, note: FallbackNote) -> AsyncIterator[LlmEvent]:
        """The fallback's events, its Finish carrying the note: from the cache under the
        fallback request's own key when it is there, else from upstream (and then stored)."""
        cache = self.cache
        key = await cache.key(alt) if cache is not None and cache.cfg.enabled else None
        if cache is not None and key is not None and alt.ctx.cache_mode != "bypass":
            stored = await cache.read(key)
            if stored is not None:
                for ev in replay(stored, stream=alt.req.stream):
                    yield dataclasses.replace(ev, fallback=note) if isinstance(ev, Finish) else ev
                return
        deltas: list[str] = []
        async for ev in nxt(alt):
            if isinstance(ev, TextDelta):
                deltas.append(ev.text)
            elif isinstance(ev, Finish):
                if cache is not None and key is not None and not ev.cached:
                    await cache.keep(alt.ctx, key, deltas, ev)
                ev = dataclasses.replace(ev, fallback=note)
            yield ev


def _record(note: FallbackNote) -> None:
    """The reroute on the current span (the job's step, or its strategy span) and in the log;
    the client span of the attempt itself is named after the fallback model."""
    attrs = {
        "longread.fallback.reason": note.reason.value,
        "longread.fallback.from_model": f"{note.from_upstream}/{note.from_model}",
        "longread.fallback.model": f"{note.model.vendor}/{note.model.model}",
    }
    trace.get_current_span().add_event("fallback", attrs)
    log.info("fallback: %s", note.describe())


def _for_model(req: LlmRequest, info: ModelInfo) -> LlmRequest:
    """``req`` for another model, with vendor prompt caching asked for as that model allows:
    the breakpoint only where the document reaches its minimum cacheable length, extended
    retention only where it has it (a model without it may refuse the parameter)."""
    prefix = req.cache_prefix_messages if req.cache_prefix_tokens >= info.cache_min_tokens else 0
    retention = info.prompt_cache_retention if req.prompt_cache_retention else ""
    return dataclasses.replace(
        req, model=info.model, cache_prefix_messages=prefix, prompt_cache_retention=retention
    )
