"""A scripted upstream and call builders for stage tests (no network, no real time)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from longread_server.calls.pipeline import Call, CallContext, CallStage, Next
from longread_server.domain import (
    ErrorKind,
    Finish,
    LlmEvent,
    LlmRequest,
    Message,
    TextDelta,
    UpstreamError,
    Usage,
    VendorKind,
)

from tests.clock import FakeClock


class FakeAdapter:
    name = "fake"
    kind = VendorKind.OPENAI
    max_temperature = 2.0

    def build_payload(self, req: LlmRequest) -> dict[str, Any]:
        return {}

    def call(self, req: LlmRequest, *, timeout: float | None = None) -> AsyncIterator[LlmEvent]:
        raise NotImplementedError


def make_call(
    vendor: str = "openai",
    *,
    tenant: str = "acme",
    deadline: float | None = None,
    model: str = "gpt-4.1-mini",
    prompt: str = "x" * 400,
    max_output_tokens: int = 100,
    estimated_prompt_tokens: int = 0,
    labels: dict[str, str] | None = None,
) -> Call:
    req = LlmRequest(
        model=model,
        messages=(Message("user", prompt),),
        max_output_tokens=max_output_tokens,
        estimated_prompt_tokens=estimated_prompt_tokens,
    )
    ctx = CallContext(tenant=tenant, deadline=deadline, labels=labels or {})
    return Call(vendor, FakeAdapter(), req, ctx)


def ok(text: str = "hello", input_tokens: int = 100, output_tokens: int = 20) -> list[LlmEvent]:
    return [TextDelta(text), Finish("stop", Usage(input_tokens, output_tokens, calls=1))]


def err(kind: ErrorKind = ErrorKind.OVERLOADED, **kw: Any) -> UpstreamError:
    return UpstreamError(kind, f"fake {kind.value}", **kw)


@dataclass
class Attempt:
    """What one attempt does: yield ``events``, then raise ``error`` (if any). ``took`` seconds
    pass on the fake clock before the first event."""

    events: Sequence[LlmEvent] = ()
    error: BaseException | None = None
    took: float = 0.0


@dataclass
class Upstream:
    """A scripted upstream: attempt n follows ``script[n]`` (the last one repeats)."""

    script: list[Attempt]
    clock: FakeClock | None = None
    calls: list[Call] = field(default_factory=list)
    closed: int = 0

    async def __call__(self, call: Call) -> AsyncIterator[LlmEvent]:
        step = self.script[min(len(self.calls), len(self.script) - 1)]
        self.calls.append(call)
        try:
            if step.took and self.clock is not None:
                self.clock.advance(step.took)
            for ev in step.events:
                yield ev
            if step.error is not None:
                raise step.error
        finally:
            self.closed += 1


def chain(stages: Sequence[CallStage], inner: Callable[[Call], AsyncIterator[LlmEvent]]) -> Next:
    nxt: Next = inner
    for stage in reversed(stages):
        nxt = (lambda s, n: lambda c: s(c, n))(stage, nxt)
    return nxt


async def collect(nxt: Next, call: Call) -> list[LlmEvent]:
    return [ev async for ev in nxt(call)]
