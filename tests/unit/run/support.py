"""A scripted vendor adapter behind the real call Pipeline, and small builders for plans.

The adapter stands where a vendor adapter stands (``Pipeline(adapters, stages)``), so every
test call passes the pipeline's own innermost step; what each call answers is decided by a
``reply`` function of the request, reusing ``Attempt`` from the stage tests' scripted upstream.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from longread_server.calls.pipeline import Call, Next
from longread_server.domain import (
    Finish,
    LlmEvent,
    LlmRequest,
    ModelInfo,
    TextDelta,
    Usage,
    VendorKind,
)

from tests.unit.calls.support import Attempt

# None: the call hangs until it is cancelled (a slow upstream the test outlives).
Reply = Callable[[LlmRequest], Attempt | None]


def answer(*parts: str, input_tokens: int = 100, output_tokens: int = 20, **finish: Any) -> Attempt:
    """A successful call that streams ``parts`` and finishes (``finish``: Finish fields)."""
    usage = Usage(input_tokens, output_tokens, calls=1)
    return Attempt(
        [*(TextDelta(p) for p in parts), Finish(finish.pop("reason", "stop"), usage, **finish)]
    )


class ScriptedAdapter:
    """A vendor adapter whose calls follow ``reply``. Keeps the contract of
    ``vendors/base.py``: a non-streaming request gets its text as one delta."""

    kind = VendorKind.OPENAI
    max_temperature = 2.0

    def __init__(self, name: str = "openai", reply: Reply | None = None, hold: int = 0) -> None:
        self.name = name
        self.reply: Reply = reply or (lambda req: answer("fine"))
        # Loop turns each call stays open before answering, so concurrent calls overlap.
        self.hold = hold
        self.requests: list[LlmRequest] = []
        self.timeouts: list[float | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0

    def build_payload(self, req: LlmRequest) -> dict[str, Any]:
        return {"model": req.model}

    async def call(
        self, req: LlmRequest, *, timeout: float | None = None
    ) -> AsyncIterator[LlmEvent]:
        self.requests.append(req)
        self.timeouts.append(timeout)
        step = self.reply(req)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(self.hold):
                await asyncio.sleep(0)
            if step is None:
                await asyncio.get_running_loop().create_future()  # until cancelled
                return
            events: Sequence[LlmEvent] = step.events
            if not req.stream:
                text = "".join(e.text for e in events if isinstance(e, TextDelta))
                rest = [e for e in events if not isinstance(e, TextDelta)]
                events = [TextDelta(text), *rest] if text else rest
            for ev in events:
                yield ev
            if step.error is not None:
                raise step.error
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


class CountingAdapter(ScriptedAdapter):
    """An upstream with a token-counting endpoint (as Anthropic's)."""

    kind = VendorKind.ANTHROPIC

    def __init__(self, name: str = "anthropic", count: int = 0, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.count = count
        self.counted: list[LlmRequest] = []
        self.count_error: BaseException | None = None

    async def count_tokens(self, req: LlmRequest, *, timeout: float | None = None) -> int:
        self.counted.append(req)
        if self.count_error is not None:
            raise self.count_error
        return self.count


@dataclass
class Recorder:
    """A pipeline stage that only notes every call passing through."""

    calls: list[Call] = field(default_factory=list)

    async def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        self.calls.append(call)
        async for ev in nxt(call):
            yield ev


def model(
    name: str = "tiny",
    vendor: str = "openai",
    *,
    context: int = 100_000,
    max_output: int = 4096,
    input_per_mtok: float = 1.0,
    output_per_mtok: float = 2.0,
    exact: bool = True,
) -> ModelInfo:
    return ModelInfo(
        vendor=vendor,
        model=name,
        context_window=context,
        max_output_tokens=max_output,
        input_per_mtok=input_per_mtok,
        output_per_mtok=output_per_mtok,
        cached_input_per_mtok=input_per_mtok / 4,
        tokens_exact=exact,
    )


def numbered_words(n: int) -> str:
    """A document whose every word is unique, so any excerpt can be located in it."""
    return " ".join(f"w{i:04d}." for i in range(n))


# What kind of step a prompt is, by the wording of plan/prompts.py.
def step_of(req: LlmRequest) -> str:
    last = req.messages[-1].content
    if "<answer_so_far>" in last or "This is the first part." in last:
        return "refine"
    if "These are notes taken from" in last:
        return "notes"
    if "These passages were selected" in last:
        return "select"
    if "<document_part>" in req.messages[0].content:
        return "map"  # the chunk first (the cacheable prefix), the task and question after
    return "single"


NOTE = re.compile(r"note@\d+|group@\d+")
