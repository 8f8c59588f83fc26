"""The budget stage charges what the upstream used: a finished call its reported usage, a
call ended early (cancelled, cut by the drain, broken) its prompt and the answer so far."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from longread_server.calls.budget import BudgetLedger, BudgetStage
from longread_server.calls.pipeline import Call
from longread_server.domain import Finish, LlmEvent, TextDelta, Usage
from longread_server.plan.catalog import Catalog, price
from longread_server.plan.tokenizers import get_tokenizer

from tests.unit.calls.support import make_call

CATALOG = Catalog.builtin()
MODEL = CATALOG.get("openai", "gpt-4.1-mini")
PROMPT_TOKENS = 50_000


def stage() -> tuple[BudgetStage, BudgetLedger]:
    ledger = BudgetLedger({"acme": 100.0})
    return BudgetStage(ledger, CATALOG), ledger


def call() -> Call:
    return make_call(estimated_prompt_tokens=PROMPT_TOKENS)


def upstream(*events: LlmEvent) -> object:
    async def inner(c: Call) -> AsyncIterator[LlmEvent]:
        for ev in events:
            yield ev

    return inner


async def spent(ledger: BudgetLedger) -> float:
    return (await ledger.state("acme")).spent_usd


async def read(stage_: BudgetStage, events: tuple[LlmEvent, ...], take: int) -> None:
    """Reads ``take`` events of the call, then closes it (as a cancelled caller does)."""
    gen = stage_(call(), upstream(*events))  # type: ignore[arg-type]
    assert isinstance(gen, AsyncGenerator)
    async with contextlib.aclosing(gen) as evs:
        n = 0
        async for _ in evs:
            n += 1
            if n >= take:
                break


async def test_a_finished_call_is_charged_its_reported_usage_once() -> None:
    s, ledger = stage()
    usage = Usage(input_tokens=PROMPT_TOKENS, output_tokens=10, calls=1)
    events = (TextDelta("The harbour."), Finish("stop", usage))
    await read(s, events, take=99)
    assert MODEL is not None
    assert await spent(ledger) == price(MODEL, usage).total_usd


async def test_a_call_closed_after_the_answer_began_is_charged_prompt_and_answer() -> None:
    s, ledger = stage()
    events = (TextDelta("The harbour was "), TextDelta("dredged."), Finish("stop", Usage()))
    await read(s, events, take=2)  # closed before Finish
    assert MODEL is not None
    answer = get_tokenizer("cl100k_base").count("The harbour was dredged.")
    expected = price(MODEL, Usage(input_tokens=PROMPT_TOKENS, output_tokens=answer)).total_usd
    assert await spent(ledger) == expected > 0


async def test_a_call_closed_before_any_answer_is_not_charged() -> None:
    # Nothing shows that the upstream read the prompt (it may never have been sent).
    s, ledger = stage()
    await read(s, (), take=1)
    assert await spent(ledger) == 0
