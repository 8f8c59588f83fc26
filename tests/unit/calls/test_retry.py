"""Retries: full jitter, Retry-After, the deadline, the budget, never after streamed text."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from longread_server.calls.breaker import BreakerStage
from longread_server.calls.pipeline import Call, CallStage
from longread_server.calls.retry import RetryBudget, RetryPolicy, RetryStage
from longread_server.calls.timeouts import AttemptLimits, AttemptTimeouts
from longread_server.domain import CallRejected, ErrorKind, LlmEvent, TextDelta, UpstreamError
from longread_server.state.breakers import BreakerParams, LocalBreakers

from tests.clock import FakeClock
from tests.unit.calls.support import Attempt, Upstream, chain, collect, err, make_call, ok


def retry_stage(clock: FakeClock, **kw: object) -> RetryStage:
    policy = RetryPolicy(max_attempts=3, base_s=0.5, cap_s=20.0)
    return RetryStage(policy, clock=clock, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def test_full_jitter_stays_within_the_exponential_envelope() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=0.5, cap_s=3.0)
    rng = random.Random(1)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (5, 3.0)]:
        waits = [policy.backoff(retry, rng) for _ in range(500)]
        assert min(waits) >= 0 and max(waits) <= ceiling
        assert max(waits) > 0.8 * ceiling  # spread over the whole range: no synchronised herd
    assert policy.delay(1, err(retry_after_s=7.0), rng) >= 7.0  # never sooner than asked


async def test_retries_a_retryable_failure_until_it_succeeds() -> None:
    clock = FakeClock()
    upstream = Upstream(
        [Attempt(error=err()), Attempt(error=err(ErrorKind.TIMEOUT)), Attempt(ok())]
    )
    events = await collect(chain([retry_stage(clock)], upstream), make_call())
    assert len(upstream.calls) == 3 and len(events) == 2
    assert [c.attempt for c in upstream.calls] == [0, 1, 2]
    assert len(clock.sleeps) == 2


async def test_gives_up_after_max_attempts() -> None:
    clock = FakeClock()
    upstream = Upstream([Attempt(error=err())])
    with pytest.raises(UpstreamError):
        await collect(chain([retry_stage(clock)], upstream), make_call())
    assert len(upstream.calls) == 3


@pytest.mark.parametrize(
    "kind", [ErrorKind.BAD_REQUEST, ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.BILLING]
)
async def test_never_retries_what_cannot_succeed(kind: ErrorKind) -> None:
    upstream = Upstream([Attempt(error=err(kind)), Attempt(ok())])
    with pytest.raises(UpstreamError):
        await collect(chain([retry_stage(FakeClock())], upstream), make_call())
    assert len(upstream.calls) == 1


async def test_never_retries_after_text_was_passed_on() -> None:
    upstream = Upstream([Attempt([TextDelta("partial")], err(ErrorKind.CONNECTION)), Attempt(ok())])
    seen = []
    with pytest.raises(UpstreamError):
        async for ev in chain([retry_stage(FakeClock())], upstream)(make_call()):
            seen.append(ev)
    assert seen == [TextDelta("partial")] and len(upstream.calls) == 1


async def test_never_retries_a_streamed_error() -> None:
    upstream = Upstream([Attempt(error=err(ErrorKind.SERVER, streamed=True)), Attempt(ok())])
    with pytest.raises(UpstreamError):
        await collect(chain([retry_stage(FakeClock())], upstream), make_call())
    assert len(upstream.calls) == 1


async def test_never_retries_the_gateways_own_refusals() -> None:
    upstream = Upstream(
        [Attempt(error=CallRejected("UPSTREAM_UNAVAILABLE", "open")), Attempt(ok())]
    )
    with pytest.raises(CallRejected):
        await collect(chain([retry_stage(FakeClock())], upstream), make_call())
    assert len(upstream.calls) == 1


async def test_honours_retry_after() -> None:
    clock = FakeClock()
    upstream = Upstream(
        [Attempt(error=err(ErrorKind.RATE_LIMITED, retry_after_s=7.0)), Attempt(ok())]
    )
    await collect(chain([retry_stage(clock)], upstream), make_call(deadline=clock.now() + 30))
    assert clock.sleeps[0] >= 7.0


async def test_a_429_whose_wait_passes_the_deadline_is_resource_exhausted() -> None:
    clock = FakeClock()
    upstream = Upstream(
        [Attempt(error=err(ErrorKind.RATE_LIMITED, retry_after_s=7.0)), Attempt(ok())]
    )
    with pytest.raises(CallRejected) as info:
        await collect(chain([retry_stage(clock)], upstream), make_call(deadline=clock.now() + 5))
    assert info.value.reason == "RATE_LIMITED" and info.value.retry_after_s == 7.0
    assert len(upstream.calls) == 1 and clock.sleeps == []


async def test_other_failures_past_the_deadline_surface_as_they_are() -> None:
    clock = FakeClock()
    upstream = Upstream([Attempt(error=err(retry_after_s=7.0)), Attempt(ok())])
    with pytest.raises(UpstreamError):
        await collect(chain([retry_stage(clock)], upstream), make_call(deadline=clock.now() + 5))
    assert len(upstream.calls) == 1


def test_budget_allows_a_share_of_calls_plus_a_floor() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_retries=3, window_s=10, clock=clock)
    for _ in range(50):
        budget.record_call()
    granted = sum(budget.try_retry() for _ in range(100))
    assert granted == 13  # 0.2 * 50 + 3
    clock.advance(11)  # the window has passed: only the floor is left
    assert sum(budget.try_retry() for _ in range(100)) == 3


async def test_budget_caps_retries_when_everything_fails() -> None:
    """Synchronised failures: attempts stay within (1 + ratio) * calls + floor."""
    clock = FakeClock()
    s = retry_stage(clock, budget_ratio=0.2, budget_min_retries=3)
    upstream = Upstream([Attempt(error=err())])
    nxt = chain([s], upstream)
    for _ in range(100):
        with pytest.raises(UpstreamError):
            await collect(nxt, make_call())
    assert len(upstream.calls) <= 100 * 1.2 + 3
    assert s.budget("openai").denied > 0


async def _hangs(call: Call) -> AsyncIterator[LlmEvent]:
    await asyncio.Event().wait()
    yield TextDelta("never")  # pragma: no cover


async def test_a_hung_upstream_fails_within_attempt_limit_times_attempts() -> None:
    """Every attempt hangs: each ends at its own first-event limit, so the call fails after
    about max_attempts x the limit (plus the short backoffs), and each was a breaker failure."""
    limit = 0.05
    breakers = LocalBreakers()
    params = BreakerParams(window_size=100, min_calls=100)
    calls: list[Call] = []

    async def hangs(call: Call) -> AsyncIterator[LlmEvent]:
        calls.append(call)
        async for ev in _hangs(call):
            yield ev  # pragma: no cover

    stages: list[CallStage] = [
        RetryStage(RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.001), min_call_s=0.01),
        BreakerStage(breakers, params),
        AttemptTimeouts(AttemptLimits.fixed(limit, 5)),
    ]
    t0 = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        await collect(chain(stages, hangs), make_call())
    elapsed = time.monotonic() - t0
    assert info.value.kind is ErrorKind.TIMEOUT and len(calls) == 3
    assert 3 * limit <= elapsed < 3 * limit + 1.0  # generous: a loaded machine is slow
    assert (await breakers.view("openai", params)).failures == 3


async def test_the_deadline_cuts_the_last_hung_attempt_and_it_is_not_counted() -> None:
    """Attempts of 0.2 s under a 0.5 s deadline: two run out their own limit (failures), the
    third is cut by the deadline (the caller's, not counted), and the call ends by then."""
    breakers = LocalBreakers()
    params = BreakerParams(window_size=100, min_calls=100)
    stages: list[CallStage] = [
        RetryStage(RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.001), min_call_s=0.01),
        BreakerStage(breakers, params),
        AttemptTimeouts(AttemptLimits.fixed(0.2, 5)),
    ]
    t0 = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        await collect(chain(stages, _hangs), make_call(deadline=t0 + 0.5))
    assert info.value.cut_by_deadline and time.monotonic() - t0 < 0.5 + 1.0
    view = await breakers.view("openai", params)
    assert (view.calls, view.failures) == (2, 2)
