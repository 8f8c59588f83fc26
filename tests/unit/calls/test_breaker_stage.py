"""The breaker stage: what counts as a failure, slow first events, failing fast, fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from longread_server.calls.breaker import CIRCUIT, BreakerStage, classify
from longread_server.calls.fallback import FallbackStage, chains_from
from longread_server.calls.tasks import drain
from longread_server.calls.timeouts import AttemptLimits, AttemptTimeouts
from longread_server.config import UpstreamConfig
from longread_server.domain import (
    CallRejected,
    ErrorKind,
    LlmEvent,
    TextDelta,
    UpstreamError,
    VendorKind,
)
from longread_server.plan.catalog import Catalog
from longread_server.state.breakers import BreakerParams, LocalBreakers, Outcome

from tests.clock import FakeClock
from tests.unit.calls.support import (
    Attempt,
    FakeAdapter,
    Upstream,
    chain,
    collect,
    err,
    make_call,
    ok,
)

P = BreakerParams(window_size=4, min_calls=4, slow_rate=0.5, half_open_calls=1, open_s=30)


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        (ErrorKind.SERVER, Outcome.FAILURE),
        (ErrorKind.OVERLOADED, Outcome.FAILURE),
        (ErrorKind.TIMEOUT, Outcome.FAILURE),
        (ErrorKind.CONNECTION, Outcome.FAILURE),
        (ErrorKind.RATE_LIMITED, Outcome.IGNORED),
        (ErrorKind.BAD_REQUEST, Outcome.SUCCESS),
        (ErrorKind.AUTH, Outcome.SUCCESS),
        (ErrorKind.NOT_FOUND, Outcome.SUCCESS),
    ],
)
def test_only_upstream_faults_are_failures(kind: ErrorKind, outcome: Outcome) -> None:
    assert classify(err(kind), slow=False) is outcome


def test_an_attempt_never_sent_or_cut_by_the_deadline_is_not_counted() -> None:
    assert classify(err(ErrorKind.TIMEOUT, unsent=True), slow=False) is Outcome.IGNORED
    assert classify(err(ErrorKind.TIMEOUT, cut_by_deadline=True), slow=True) is Outcome.IGNORED
    assert classify(err(ErrorKind.TIMEOUT), slow=False) is Outcome.FAILURE


async def _hangs(call: object) -> AsyncIterator[LlmEvent]:
    await asyncio.Event().wait()
    yield TextDelta("never")  # pragma: no cover


async def test_hung_attempts_open_it_through_their_first_event_limit() -> None:
    """An upstream that accepts and never answers: each attempt ends at its own first-event
    limit as a TIMEOUT failure, so min_calls of them open the breaker, and the next call
    fails fast without reaching the upstream."""
    clock = FakeClock()
    breakers = LocalBreakers(clock)
    timeouts = AttemptTimeouts(AttemptLimits.fixed(0.02, 5))
    nxt = chain([BreakerStage(breakers, P, 10.0, clock), timeouts], _hangs)
    for _ in range(P.min_calls):
        with pytest.raises(UpstreamError) as e:
            await collect(nxt, make_call(deadline=time.monotonic() + 30))
        assert e.value.kind is ErrorKind.TIMEOUT and not e.value.cut_by_deadline
    assert (await breakers.view("openai", P)).state == "open"
    with pytest.raises(CallRejected):
        await collect(nxt, make_call())


async def test_attempts_cut_by_the_callers_deadline_never_open_it() -> None:
    """The same hang under deadlines shorter than the attempt's own limit: the caller gave
    up first, which says nothing about the upstream (it may need longer for a long prompt)."""
    clock = FakeClock()
    breakers = LocalBreakers(clock)
    timeouts = AttemptTimeouts(AttemptLimits.fixed(30, 5), deadline_margin_s=0.0)
    nxt = chain([BreakerStage(breakers, P, 10.0, clock), timeouts], _hangs)
    for _ in range(2 * P.min_calls):
        with pytest.raises(UpstreamError) as e:
            await collect(nxt, make_call(deadline=time.monotonic() + 0.02))
        assert e.value.cut_by_deadline
    view = await breakers.view("openai", P)
    assert view.state == "closed" and view.calls == 0


async def test_calls_whose_deadline_passed_in_the_gateway_never_open_it() -> None:
    """Under overload the deadline can pass while a request waits in the gateway: its
    attempt is refused before it is sent, and must not count against a healthy upstream."""
    clock = FakeClock()
    breakers = LocalBreakers(clock)
    upstream = Upstream([Attempt(events=ok())])
    nxt = chain([BreakerStage(breakers, P, 10.0, clock), AttemptTimeouts()], upstream)
    for _ in range(10):
        with pytest.raises(UpstreamError) as e:
            await collect(nxt, make_call(deadline=time.monotonic() - 1))
        assert e.value.kind is ErrorKind.TIMEOUT and e.value.unsent
    view = await breakers.view("openai", P)
    assert view.state == "closed" and view.failures == 0
    assert upstream.calls == []


async def test_client_errors_never_open_it() -> None:
    clock = FakeClock()
    breakers = LocalBreakers(clock)
    nxt = chain(
        [BreakerStage(breakers, P, 10.0, clock)],
        Upstream([Attempt(error=err(ErrorKind.BAD_REQUEST))]),
    )
    for _ in range(20):
        with pytest.raises(UpstreamError):
            await collect(nxt, make_call())
    assert (await breakers.view("openai", P)).state == "closed"


async def test_opens_then_fails_fast_without_calling_upstream() -> None:
    clock = FakeClock()
    breakers = LocalBreakers(clock)
    upstream = Upstream([Attempt(error=err(ErrorKind.SERVER))])
    nxt = chain([BreakerStage(breakers, P, 10.0, clock)], upstream)
    for _ in range(4):
        with pytest.raises(UpstreamError):
            await collect(nxt, make_call())
    with pytest.raises(CallRejected) as info:
        await collect(nxt, make_call())
    e = info.value
    assert e.reason == "UPSTREAM_UNAVAILABLE" and e.metadata[CIRCUIT] == "open"
    assert e.retry_after_s == pytest.approx(30.0)
    assert len(upstream.calls) == 4


async def test_slow_first_events_open_it() -> None:
    clock = FakeClock()
    breakers = LocalBreakers(clock)
    upstream = Upstream([Attempt(ok(), took=12.0)], clock=clock)
    nxt = chain([BreakerStage(breakers, P, 10.0, clock)], upstream)
    for _ in range(4):
        await collect(nxt, make_call())  # successful, but slow
    assert (await breakers.view("openai", P)).state == "open"


async def test_a_cancelled_probe_gives_its_permit_back() -> None:
    clock = FakeClock()
    breakers = LocalBreakers(clock)
    for _ in range(4):
        permit = await breakers.acquire("openai", P)
        await breakers.record("openai", P, permit, Outcome.FAILURE)
    clock.advance(30)
    started = asyncio.Event()

    async def hang(call: object) -> object:
        started.set()
        await asyncio.Event().wait()
        yield  # pragma: no cover

    nxt = chain([BreakerStage(breakers, P, 10.0, clock)], hang)  # type: ignore[arg-type]
    task = asyncio.create_task(collect(nxt, make_call()))
    await started.wait()
    assert not (await breakers.acquire("openai", P)).granted  # the one probe is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await drain()
    assert (await breakers.acquire("openai", P)).granted


def fallback_stage(breakers: LocalBreakers, models: list[str]) -> FallbackStage:
    upstreams = {
        "openai": UpstreamConfig("openai", VendorKind.OPENAI, "http://x", fallback="anthropic"),
        "anthropic": UpstreamConfig("anthropic", VendorKind.ANTHROPIC, "http://y", models=models),
    }
    adapters = {"openai": FakeAdapter(), "anthropic": FakeAdapter()}
    chains = chains_from(upstreams.values(), [])
    return FallbackStage(breakers, P, upstreams, adapters, Catalog.builtin(), chains)


def test_fallback_model_is_the_same_or_the_first_that_fits() -> None:
    stage = fallback_stage(LocalBreakers(FakeClock()), ["claude-haiku-4-5", "claude-sonnet-4-6"])
    found = stage.reroute(make_call(), "anthropic")
    assert found is not None
    alt, info = found
    assert alt.vendor == "anthropic" and alt.req.model == "claude-haiku-4-5" == info.model
    assert stage.chain_for(make_call(labels={"fallback": "off"})) is None
    huge = make_call(estimated_prompt_tokens=5_000_000)
    assert stage.reroute(huge, "anthropic") is None  # fits no fallback model: fail fast instead
    assert fallback_stage(LocalBreakers(FakeClock()), []).reroute(make_call(), "anthropic") is None


async def test_open_circuit_goes_to_the_fallback() -> None:
    clock = FakeClock()
    breakers = LocalBreakers(clock)
    stage = fallback_stage(breakers, ["claude-haiku-4-5"])
    upstream = Upstream([Attempt(ok())])
    inner = BreakerStage(breakers, P, 10.0, clock)
    nxt = chain([stage, inner], upstream)
    for _ in range(4):
        permit = await breakers.acquire("openai", P)
        await breakers.record("openai", P, permit, Outcome.FAILURE)
    await collect(nxt, make_call())
    assert [(c.vendor, c.req.model) for c in upstream.calls] == [("anthropic", "claude-haiku-4-5")]


async def test_a_circuit_that_opens_during_the_call_falls_back_too() -> None:
    clock = FakeClock()
    breakers = LocalBreakers(clock)
    stage = fallback_stage(breakers, ["claude-haiku-4-5"])
    calls: list[str] = []

    async def primary_refuses(call: object) -> object:
        calls.append(call.vendor)  # type: ignore[attr-defined]
        if call.vendor == "openai":  # type: ignore[attr-defined]
            raise CallRejected("UPSTREAM_UNAVAILABLE", "open", metadata={CIRCUIT: "open"})
        for ev in ok():
            yield ev

    await collect(chain([stage], primary_refuses), make_call())  # type: ignore[arg-type]
    assert calls == ["openai", "anthropic"]
