"""The pipeline every model call goes through, whatever the strategy.

The stages and their order, with the reasons for it, are in ``calls/stages.py``. Each stage
is a small object with one job that wraps the rest of the pipeline: it receives
the call and ``nxt`` (the remaining stages) and yields the ``LlmEvent``s of the call, so
streaming and non-streaming calls share one path.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from longread_server.domain import (
    Embedding,
    ErrorKind,
    Finish,
    LlmEvent,
    LlmRequest,
    Operation,
    TextDelta,
    TokenCount,
    UpstreamError,
)
from longread_server.telemetry import Instruments, Telemetry, current_span, disabled
from longread_server.vendors.base import VendorAdapter
from longread_server.vendors.peer import Peer
from longread_server.vendors.transport import send_trace_context


class JobSpend(Protocol):
    """What a job has reserved of its tenant's budget (``calls/budget.py``): its calls are
    charged against it, and need no check of the ledger while it covers them."""

    @property
    def covers(self) -> bool: ...

    async def charge(self, usd: float) -> None: ...


@dataclass(slots=True)
class CallMeter:
    """What one call did at the vendor, over all its attempts (retries, hedges): shared by
    every ``replace(call, attempt=n)``, so the stages outside see what the ones inside did."""

    sent: int = 0  # attempts handed to the vendor adapter
    refused: int = 0  # of those, the ones the vendor answered with an error (nothing billed)


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling and until when; flows from the gRPC request into every stage."""

    tenant: str = ""
    deadline: float | None = None  # time.monotonic() seconds
    cache_mode: str = "default"  # default | bypass | no_store | only_if_cached
    cache_ttl_s: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    budget: JobSpend | None = None  # the job's reservation of its tenant's budget

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
    attempt: int = 0  # 0 for the first try; a retry stage passes replace(call, attempt=n)
    meter: CallMeter = field(default_factory=CallMeter)


Next = Callable[[Call], AsyncIterator[LlmEvent]]


class CallStage(Protocol):
    """One step of the pipeline. Yields the call's events, usually by iterating ``nxt(call)``
    (possibly more than once, as a retry does, or not at all, as a cache hit does)."""

    def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]: ...


class UnknownUpstream(LookupError):
    """No adapter is configured under that name."""


def _sender(tel: Telemetry, peers: Mapping[str, Peer]) -> Next:
    """The innermost step: one attempt at the vendor, bounded by the call's deadline, traced
    as a GenAI client span (``chat {model}``) and measured. With tracing on, the span's
    context goes upstream with the request (``vendors/transport.py``)."""
    tracer, inst, tracing = tel.tracer, tel.instruments, tel.tracing

    async def send(call: Call) -> AsyncIterator[LlmEvent]:
        remaining = call.ctx.remaining()
        if remaining is not None and remaining <= 0:
            raise UpstreamError(
                ErrorKind.TIMEOUT, "deadline passed before the call started", unsent=True
            )
        req = call.req
        peer = peers.get(call.vendor) or _peer_of(call.adapter)
        operation = req.operation.value
        # What the GenAI conventions put on the span and on its metrics alike.
        base = {
            **peer.attributes,
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": req.model,
        }
        span = tracer.start_span(f"{operation} {req.model}", kind=SpanKind.CLIENT)
        if span.is_recording():
            span.set_attributes(
                {
                    **base,
                    "gen_ai.request.max_tokens": req.max_output_tokens,
                    "gen_ai.request.stream": req.stream,
                    "longread.upstream": call.vendor,
                    "longread.tenant": call.ctx.tenant,
                    "longread.attempt": call.attempt,
                }
            )
            if req.temperature is not None:
                span.set_attribute("gen_ai.request.temperature", req.temperature)
            if tel.record_content:
                span.set_attribute("longread.prompt", _prompt_text(req))
        error = ""
        started = time.perf_counter()
        try:
            with (
                current_span(span, end_on_exit=False, current=tel.client_spans),
                send_trace_context(span if tracing else None),
            ):
                if req.operation is Operation.COUNT_TOKENS:
                    count = TokenCount(await _endpoint(call)(req, timeout=remaining))
                    if span.is_recording():
                        span.set_attribute("gen_ai.usage.input_tokens", count.input_tokens)
                    yield count
                    return
                call.meter.sent += 1
                if req.operation is Operation.EMBEDDING:
                    values, usage, model = await _endpoint(call)(req, timeout=remaining)
                    done = Finish("stop", usage, model=model or req.model)
                    _record_finish(span, inst, base, done)
                    yield Embedding(values)
                    yield done
                    return
                # A streamed answer's first chunk, on the span only: the conventions'
                # histogram of it (gen_ai.client.operation.time_to_first_chunk) would be one
                # more SDK recording per call, as much CPU as the call's token usage.
                waiting = req.stream and span.is_recording()
                async for event in call.adapter.call(req, timeout=remaining):
                    if waiting and type(event) is TextDelta:
                        waiting = False
                        first = time.perf_counter() - started
                        span.set_attribute("gen_ai.response.time_to_first_chunk", first)
                    elif isinstance(event, Finish):
                        _record_finish(span, inst, base, event)
                    yield event
        except UpstreamError as e:
            # The vendor answered with an error (nothing billed) or never saw the request.
            if e.status is not None or e.unsent:
                call.meter.refused += 1
            error = e.kind.value
            inst.upstream_errors.add(1, {**base, "error.type": error})
            span.set_status(Status(StatusCode.ERROR, e.kind.value))
            span.set_attribute("error.type", e.kind.value)
            if e.status is not None:
                span.set_attribute("http.response.status_code", e.status)
            # What the vendor said that is not content (its text may quote the prompt, so it
            # is recorded only with the content).
            if e.vendor_code or e.vendor_type:
                span.set_attribute("longread.upstream.error_code", e.vendor_code or e.vendor_type)
            if e.request_id:
                span.set_attribute("longread.upstream.request_id", e.request_id)
            if tel.record_content and e.detail:
                span.set_attribute("longread.upstream.error_detail", e.detail)
            raise
        except BaseException as e:
            error = type(e).__name__
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            span.set_attribute("error.type", type(e).__name__)
            raise
        finally:
            # The conventions ask for error.type on the duration of a failed operation.
            took = time.perf_counter() - started
            inst.operation_duration.record(took, {**base, "error.type": error} if error else base)
            span.end()

    return send


# The operations only some upstreams serve: the adapter method that does, and its name in errors.
_OPTIONAL_ENDPOINTS = {
    Operation.COUNT_TOKENS: ("count_tokens", "token-counting endpoint"),
    Operation.EMBEDDING: ("embed", "embeddings endpoint"),
}


def _endpoint(call: Call) -> Callable[..., Awaitable[Any]]:
    """The adapter's method for the call's optional operation; a call to an upstream without
    it is refused before anything is sent."""
    method, what = _OPTIONAL_ENDPOINTS[call.req.operation]
    found: Callable[..., Awaitable[Any]] | None = getattr(call.adapter, method, None)
    if found is None:
        raise UpstreamError(ErrorKind.BAD_REQUEST, f"{call.vendor} has no {what}", unsent=True)
    return found


def _peer_of(adapter: VendorAdapter) -> Peer:
    """An upstream the pipeline was given no peer for (tests, a stage's own adapter): its
    protocol's provider."""
    return Peer.of(adapter.kind, "")


def _prompt_text(req: LlmRequest) -> str:
    return "\n\n".join([req.system, *(m.content for m in req.messages)])


def _record_finish(
    span: trace.Span, inst: Instruments, base: dict[str, str | int], event: Finish
) -> None:
    u = event.usage
    inst.token_usage.record(u.input_tokens, {**base, "gen_ai.token.type": "input"})
    inst.token_usage.record(u.output_tokens, {**base, "gen_ai.token.type": "output"})
    if span.is_recording():
        span.set_attributes(
            {
                "gen_ai.response.model": event.model,
                "gen_ai.response.id": event.response_id,
                "gen_ai.response.finish_reasons": [event.finish_reason],
                "gen_ai.usage.input_tokens": u.input_tokens,
                "gen_ai.usage.output_tokens": u.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": u.cached_input_tokens,
                "gen_ai.usage.cache_creation.input_tokens": u.cache_write_tokens,
            }
        )


def _wrap(stage: CallStage, nxt: Next) -> Next:
    def run(call: Call) -> AsyncIterator[LlmEvent]:
        return stage(call, nxt)

    return run


class Pipeline:
    """Runs model calls through the configured stages (outermost first)."""

    def __init__(
        self,
        adapters: Mapping[str, VendorAdapter],
        stages: Sequence[CallStage] = (),
        telemetry: Telemetry | None = None,
        peers: Mapping[str, Peer] | None = None,
    ) -> None:
        """``peers``: each upstream's provider and address for telemetry, by upstream name
        (``Peer.of`` its kind and base URL); an upstream without one is named by its
        protocol."""
        self._adapters = dict(adapters)
        named = dict(peers or {})
        for name, adapter in self._adapters.items():
            named.setdefault(name, _peer_of(adapter))
        chain: Next = _sender(telemetry or disabled(), named)
        for stage in reversed(stages):
            chain = _wrap(stage, chain)
        self._chain = chain

    def adapter(self, vendor: str) -> VendorAdapter:
        try:
            return self._adapters[vendor]
        except KeyError:
            raise UnknownUpstream(vendor) from None

    def serves(self, vendor: str, operation: Operation) -> bool:
        """Whether ``vendor``'s upstream has an endpoint for ``operation`` (every one answers
        CHAT; COUNT_TOKENS and EMBEDDING only where the adapter has one)."""
        optional = _OPTIONAL_ENDPOINTS.get(operation)
        return optional is None or hasattr(self.adapter(vendor), optional[0])

    def call(self, vendor: str, req: LlmRequest, ctx: CallContext) -> AsyncIterator[LlmEvent]:
        """Streams the events of one model call through every stage."""
        return self._chain(Call(vendor, self.adapter(vendor), req, ctx))
