"""The rate-limit stage: reserve, wait within the deadline, settle, refuse, slow down on 429."""

from __future__ import annotations

import grpc
import pytest
from longread_server.api.errors import from_rejection
from longread_server.calls.limits import (
    Quota,
    RateLimitStage,
    make_quota,
    prompt_tokens,
    throttle_seconds,
)
from longread_server.calls.tasks import drain
from longread_server.domain import (
    CallRejected,
    ErrorKind,
    RateLimitInfo,
    TextDelta,
    UpstreamError,
)
from longread_server.state.buckets import LocalBuckets

from tests.clock import FakeClock
from tests.unit.calls.support import Attempt, Upstream, chain, collect, err, make_call, ok

# 60 requests/min (1/s), burst 3; 6000 tokens/min (100/s), burst 1000.
QUOTA = make_quota(
    "tenant:acme",
    requests_per_minute=60,
    tokens_per_minute=6000,
    burst_requests=3,
    burst_tokens=1000,
)
# A call of 400 characters: 100 prompt tokens + 8 of framing, plus 100 output tokens.
COST = 208


def stage(
    clock: FakeClock, store: LocalBuckets, quota: Quota = QUOTA, **kw: object
) -> RateLimitStage:
    return RateLimitStage(store, lambda call: quota, clock=clock, max_wait_s=60, **kw)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> LocalBuckets:
    return LocalBuckets(clock)


def test_quota_from_per_minute_limits() -> None:
    q = make_quota("upstream:openai", requests_per_minute=120, tokens_per_minute=0, hold=True)
    assert q.requests is not None and q.requests.rate_per_s == 2.0 and q.requests.burst == 120
    assert q.tokens is None  # 0: unlimited
    assert q.holds == ("rl:{upstream:openai}:hold",)
    assert q.name_of(q.requests.key) == "upstream:openai/requests_per_minute"


def test_prompt_tokens_prefers_the_planner_count() -> None:
    assert prompt_tokens(make_call(estimated_prompt_tokens=1234).req) == 1234
    assert prompt_tokens(make_call(prompt="y" * 4000).req) == 1000 + 8


async def test_reserves_then_refunds_what_the_call_did_not_use(
    clock: FakeClock, store: LocalBuckets
) -> None:
    upstream = Upstream([Attempt(ok(input_tokens=90, output_tokens=10))])
    events = await collect(chain([stage(clock, store)], upstream), make_call())
    assert [type(e).__name__ for e in events] == ["TextDelta", "Finish"]
    assert await store.peek(QUOTA.requests) == 2  # type: ignore[arg-type]
    assert await store.peek(QUOTA.tokens) == 1000 - 100  # type: ignore[arg-type]


async def test_usage_over_the_reservation_is_a_debt(clock: FakeClock, store: LocalBuckets) -> None:
    upstream = Upstream([Attempt(ok(input_tokens=900, output_tokens=300))])
    await collect(chain([stage(clock, store)], upstream), make_call())
    assert await store.peek(QUOTA.tokens) == -200  # type: ignore[arg-type]


async def test_waits_its_turn_when_the_wait_fits_the_deadline(
    clock: FakeClock, store: LocalBuckets
) -> None:
    nxt = chain([stage(clock, store)], Upstream([Attempt(ok())]))
    for _ in range(3):
        await collect(nxt, make_call())
    assert clock.sleeps == []
    await collect(nxt, make_call(deadline=clock.now() + 5))
    assert clock.sleeps == [pytest.approx(1.0)]  # one request at 1/s


async def test_refuses_at_once_when_the_wait_does_not_fit(
    clock: FakeClock, store: LocalBuckets
) -> None:
    upstream = Upstream([Attempt(ok())])
    nxt = chain([stage(clock, store)], upstream)
    for _ in range(3):
        await collect(nxt, make_call())
    with pytest.raises(CallRejected) as info:
        await collect(nxt, make_call(deadline=clock.now() + 0.5))
    e = info.value
    assert e.reason == "RATE_LIMITED" and not e.permanent
    assert e.retry_after_s == pytest.approx(1.0)
    assert e.quota_subject == "tenant:acme/requests_per_minute"
    assert e.metadata["limit_owner"] == "gateway"
    assert e.message.startswith("the gateway's own limit tenant:acme/requests_per_minute")
    assert len(upstream.calls) == 3 and clock.sleeps == []
    status = from_rejection(e)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED and status.quota


async def test_a_cost_no_bucket_can_hold_is_refused_permanently(
    clock: FakeClock, store: LocalBuckets
) -> None:
    upstream = Upstream([Attempt(ok())])
    with pytest.raises(CallRejected) as info:
        await collect(chain([stage(clock, store)], upstream), make_call(max_output_tokens=5000))
    e = info.value
    assert e.permanent and e.retry_after_s is None
    assert e.quota_subject == "tenant:acme/tokens_per_minute"
    assert from_rejection(e).code == grpc.StatusCode.FAILED_PRECONDITION
    assert upstream.calls == []


async def test_failure_before_any_text_gives_the_tokens_back(
    clock: FakeClock, store: LocalBuckets
) -> None:
    upstream = Upstream([Attempt(error=err(ErrorKind.SERVER))])
    with pytest.raises(UpstreamError):
        await collect(chain([stage(clock, store)], upstream), make_call())
    await drain()
    assert await store.peek(QUOTA.requests) == 2  # type: ignore[arg-type]  # the vendor saw it
    assert await store.peek(QUOTA.tokens) == 1000  # type: ignore[arg-type]


async def test_a_broken_stream_is_charged_what_it_streamed(
    clock: FakeClock, store: LocalBuckets
) -> None:
    upstream = Upstream([Attempt([TextDelta("z" * 40)], err(ErrorKind.CONNECTION))])
    with pytest.raises(UpstreamError):
        await collect(chain([stage(clock, store)], upstream), make_call())
    await drain()
    assert await store.peek(QUOTA.tokens) == 1000 - (108 + 10)  # type: ignore[arg-type]


async def test_refused_further_in_is_a_full_refund(clock: FakeClock, store: LocalBuckets) -> None:
    upstream = Upstream([Attempt(error=CallRejected("UPSTREAM_UNAVAILABLE", "open"))])
    with pytest.raises(CallRejected):
        await collect(chain([stage(clock, store)], upstream), make_call())
    await drain()
    assert await store.peek(QUOTA.requests) == 3  # type: ignore[arg-type]
    assert await store.peek(QUOTA.tokens) == 1000  # type: ignore[arg-type]


async def test_a_429_holds_the_upstream_and_tells_listeners(
    clock: FakeClock, store: LocalBuckets
) -> None:
    quota = make_quota("upstream:openai", requests_per_minute=600, hold=True)
    heard: list[str] = []
    s = stage(clock, store, quota, feedback=True, listeners=(heard.append,))
    limited = err(ErrorKind.RATE_LIMITED, status=429, retry_after_s=7.0)
    upstream = Upstream([Attempt(error=limited), Attempt(ok())])
    nxt = chain([s], upstream)
    with pytest.raises(UpstreamError):
        await collect(nxt, make_call())
    assert heard == ["openai"]
    # The next attempt is not sent before the 7 s are over...
    with pytest.raises(CallRejected) as info:
        await collect(nxt, make_call(deadline=clock.now() + 3))
    assert info.value.retry_after_s == pytest.approx(7.1)  # 7 s, then refill one request
    # The vendor's limit, named as the vendor's, with its retry-after; not our bucket's.
    e = info.value
    assert e.quota_subject == "upstream:openai/throttled"
    assert e.metadata["limit_owner"] == "upstream"
    assert "upstream 'openai' is rate limiting" in e.message and "retry after 7.10s" in e.message
    assert "requests_per_minute" not in e.message
    # ...and when it can wait, it waits them.
    await collect(nxt, make_call(deadline=clock.now() + 30))
    assert clock.sleeps == [pytest.approx(7.1)]
    assert len(upstream.calls) == 2


def test_throttle_seconds_reads_what_the_vendor_said() -> None:
    assert throttle_seconds(err(ErrorKind.RATE_LIMITED, retry_after_s=3.0), 1, 60) == 3.0
    assert throttle_seconds(err(ErrorKind.RATE_LIMITED, retry_after_s=300.0), 1, 60) == 60
    headers = RateLimitInfo(
        remaining_requests=5, reset_requests_s=1.0, remaining_tokens=0, reset_tokens_s=12.5
    )
    assert throttle_seconds(err(ErrorKind.RATE_LIMITED, rate_limits=headers), 1, 60) == 12.5
    assert throttle_seconds(err(ErrorKind.RATE_LIMITED), 1.5, 60) == 1.5
