"""The budget stage charges what the upstream used: a finished call its reported usage, a
call ended early (cancelled, cut by the drain, broken) its prompt and the answer so far, and
every other attempt the vendor received its prompt; a job's reservation pays for its calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

import pytest
from longread_server.calls.budget import BudgetLedger, BudgetStage
from longread_server.calls.pipeline import Call
from longread_server.domain import CallRejected, Finish, LlmEvent, TextDelta, Usage
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


async def test_a_call_closed_before_it_was_sent_is_not_charged() -> None:
    # Closed while waiting (a rate limit, a back-off): the vendor never saw the prompt.
    s, ledger = stage()
    await read(s, (), take=1)
    assert await spent(ledger) == 0


def sending(*attempts: tuple[bool, tuple[LlmEvent, ...]]) -> object:
    """An inner pipeline that sends one attempt per item, as the pipeline's own sender counts
    them: (refused by the vendor, events) each; the last one's events are the call's."""

    async def inner(c: Call) -> AsyncIterator[LlmEvent]:
        for refused, _events in attempts:
            c.meter.sent += 1
            c.meter.refused += refused
        for ev in attempts[-1][1]:
            yield ev
        await asyncio.get_running_loop().create_future()  # then the vendor keeps working

    return inner


async def run_until_closed(s: BudgetStage, inner: object, take: int, c: Call | None = None) -> None:
    gen = s(c or call(), inner)  # type: ignore[arg-type]
    assert isinstance(gen, AsyncGenerator)
    async with contextlib.aclosing(gen) as evs:
        n = 0
        async for _ in evs:
            n += 1
            if n >= take:
                break


def prompt_usd(n: int = 1) -> float:
    assert MODEL is not None
    return price(MODEL, Usage(input_tokens=n * PROMPT_TOKENS)).total_usd


async def test_a_call_cancelled_while_the_vendor_reads_its_prompt_is_charged_the_prompt() -> None:
    s, ledger = stage()
    task = asyncio.ensure_future(run_until_closed(s, sending((False, ())), take=1))
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await spent(ledger) == pytest.approx(prompt_usd())


async def test_every_attempt_the_vendor_received_pays_its_prompt_but_not_a_refused_one() -> None:
    usage = Usage(input_tokens=PROMPT_TOKENS, output_tokens=10, calls=1)
    assert MODEL is not None
    finished = price(MODEL, usage).total_usd
    done = (TextDelta("The harbour."), Finish("stop", usage))
    # A timed-out attempt (received, no answer), a 429 (refused), then the answer.
    s, ledger = stage()
    await run_until_closed(s, sending((False, ()), (True, ()), (False, done)), take=2)
    assert await spent(ledger) == pytest.approx(finished + prompt_usd())


async def test_calls_a_reservation_covers_pass_a_spent_ledger_and_charge_the_reservation() -> None:
    ledger = BudgetLedger({"acme": 100.0})
    spend = await ledger.reserve("acme", 100.0)  # the whole budget, for this job
    assert spend is not None
    usage = Usage(input_tokens=PROMPT_TOKENS, output_tokens=10, calls=1)
    c = make_call(estimated_prompt_tokens=PROMPT_TOKENS)
    c = replace(c, ctx=replace(c.ctx, tenant="acme", budget=spend))
    s = BudgetStage(ledger, CATALOG)
    await run_until_closed(s, sending((False, (Finish("stop", usage),))), take=1, c=c)
    assert MODEL is not None
    assert spend.used_usd == pytest.approx(price(MODEL, usage).total_usd)
    # A call of a job without a reservation is refused by the spent ledger.
    with pytest.raises(CallRejected):
        await run_until_closed(s, sending((False, ())), take=1)
