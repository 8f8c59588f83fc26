"""The cache and single-flight stages on a real Pipeline, with a scripted upstream whose calls
can be held open (so concurrency is decided by the test, not by timing), in process and across
two "replicas" sharing a real redis-server."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from longread_server.calls.cache import (
    CacheStage,
    ResponseCache,
    build_response_cache,
)
from longread_server.calls.pipeline import CallContext, Pipeline
from longread_server.calls.singleflight import SingleFlightStage
from longread_server.config import CacheConfig
from longread_server.domain import (
    CallRejected,
    ErrorKind,
    Finish,
    LlmEvent,
    LlmRequest,
    Message,
    TextDelta,
    UpstreamError,
    Usage,
)
from longread_server.state.redis import connect
from longread_server.vendors.openai import OpenAIAdapter

from tests.redis_cluster import RedisClusterServer
from tests.redis_server import RedisServer, free_port, patient_client, patient_gate
from tests.waiting import until

DELTAS = ["The lamp ", "was converted ", "in 1926."]
TEXT = "".join(DELTAS)


class ScriptedUpstream(OpenAIAdapter):
    """The real OpenAI payload builder; calls answer from a script and can be held open."""

    def __init__(self) -> None:
        super().__init__(httpx.AsyncClient(), name="openai", base_url="http://x/v1", api_key="k")
        self.calls = 0
        self.started = asyncio.Event()
        self.hold: asyncio.Event | None = None  # set: the call pauses after its first delta
        self.fail: UpstreamError | None = None
        # set: after its Finish the call waits for it (what the stages behind the flight do
        # on the way out: a breaker's record, a bucket's refund), then raises ``fail_after``
        self.settle: asyncio.Event | None = None
        self.fail_after: UpstreamError | None = None

    async def call(
        self, req: LlmRequest, *, timeout: float | None = None
    ) -> AsyncGenerator[LlmEvent, None]:
        self.calls += 1
        self.started.set()
        for i, d in enumerate(DELTAS):
            yield TextDelta(d)
            if i == 0 and self.hold is not None:
                await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        yield Finish("stop", Usage(100, 7, calls=1), model=req.model, response_id="r1")
        if self.settle is not None:
            await self.settle.wait()
        if self.fail_after is not None:
            raise self.fail_after


@dataclass
class Replica:
    upstream: ScriptedUpstream
    cache: ResponseCache
    flights: SingleFlightStage
    pipeline: Pipeline

    async def ask(
        self,
        tenant: str = "acme",
        mode: str = "default",
        stream: bool = True,
        deadline: float | None = None,
        text: str = "When was the lamp converted?",
    ) -> list[LlmEvent]:
        req = LlmRequest(
            model="gpt-4.1-mini",
            messages=(Message("user", text),),
            max_output_tokens=64,
            stream=stream,
        )
        ctx = CallContext(tenant=tenant, cache_mode=mode, deadline=deadline)
        return [ev async for ev in self.pipeline.call("openai", req, ctx)]


def replica(redis_url: str = "", prefix: str = "", **cfg: Any) -> Replica:
    config = CacheConfig(**cfg)
    if prefix:
        config.redis_prefix = prefix
    redis = patient_client(redis_url) if redis_url else None
    cache = build_response_cache(config, redis, patient_gate() if redis else None)
    upstream = ScriptedUpstream()
    flights = SingleFlightStage(cache)
    pipeline = Pipeline({"openai": upstream}, [CacheStage(cache), flights])
    return Replica(upstream, cache, flights, pipeline)


def text_of(events: list[LlmEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def finish_of(events: list[LlmEvent]) -> Finish:
    last = events[-1]
    assert isinstance(last, Finish)
    return last


# ---- in process ----


async def test_concurrent_identical_misses_make_one_call() -> None:
    r = replica()
    r.upstream.hold = asyncio.Event()
    tasks = [asyncio.create_task(r.ask()) for _ in range(50)]
    await until(lambda: r.cache.stats.coalesced == 49)
    r.upstream.hold.set()
    results = await asyncio.gather(*tasks)
    assert r.upstream.calls == 1
    assert all(text_of(ev) == TEXT for ev in results)
    finishes = [finish_of(ev) for ev in results]
    assert sum(not f.cached for f in finishes) == 1  # the caller that made the call pays
    assert all(f.usage.input_tokens == 100 for f in finishes)  # the original usage
    # followers got the deltas as they came, not one blob
    assert all([e.text for e in ev if isinstance(e, TextDelta)] == DELTAS for ev in results)
    again = await r.ask()
    assert r.upstream.calls == 1 and finish_of(again).cached and text_of(again) == TEXT
    assert r.cache.stats.hits == 1 and r.cache.stats.stores == 1 and r.flights.in_flight == 0


async def test_followers_receive_deltas_while_the_call_runs() -> None:
    r = replica()
    r.upstream.hold = asyncio.Event()
    first = asyncio.create_task(r.ask())
    await r.upstream.started.wait()
    follower = r.pipeline.call(
        "openai",
        LlmRequest("gpt-4.1-mini", (Message("user", "When was the lamp converted?"),), 64),
        CallContext(tenant="acme"),
    )
    got = await anext(follower)  # arrives while the upstream call is still held open
    assert got == TextDelta(DELTAS[0]) and not first.done()
    r.upstream.hold.set()
    rest = [ev async for ev in follower]
    assert text_of([got, *rest]) == TEXT and finish_of(rest).cached
    assert not finish_of(await first).cached and r.upstream.calls == 1


async def test_a_flight_keeps_its_deltas_out_of_the_garbage_collectors_reach() -> None:
    r = replica()
    r.upstream.hold = asyncio.Event()
    first = asyncio.create_task(r.ask())
    await r.upstream.started.wait()
    await until(lambda: any(f.events for f in r.flights._flights.values()))
    (flight,) = r.flights._flights.values()
    # What a full collection would walk for each delta buffered: nothing.
    assert flight.events == [DELTAS[0]]
    assert not any(gc.is_tracked(ev) for ev in flight.events)
    assert gc.is_tracked(TextDelta(DELTAS[0]))  # what it kept before
    r.upstream.hold.set()
    events = await first
    assert [ev for ev in events if isinstance(ev, TextDelta)] == [TextDelta(d) for d in DELTAS]


class Burst(ScriptedUpstream):
    """A fast upstream: every delta is there at once (the call never waits between them), and
    it notes when the call's task reads each one."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def call(
        self, req: LlmRequest, *, timeout: float | None = None
    ) -> AsyncGenerator[LlmEvent, None]:
        self.calls += 1
        for d in DELTAS:
            self.log.append(f"read {d!r}")
            yield TextDelta(d)
        yield Finish("stop", Usage(100, 7, calls=1), model=req.model, response_id="r1")


async def _first_delta_order(stream: bool) -> list[str]:
    log: list[str] = []
    r = replica()
    r.upstream = upstream = Burst(log)
    r.pipeline = Pipeline({"openai": upstream}, [CacheStage(r.cache), r.flights])
    req = LlmRequest("gpt-4.1-mini", (Message("user", f"{uuid.uuid4()}"),), 64, stream=stream)

    async def consume() -> None:
        async for ev in r.pipeline.call("openai", req, CallContext(tenant="acme")):
            if isinstance(ev, TextDelta):
                log.append(f"got {ev.text!r}")

    await consume()
    return log


async def test_a_streams_first_delta_is_passed_on_before_the_rest_of_a_burst_is_read() -> None:
    log = await _first_delta_order(stream=True)
    assert log.index(f"got {DELTAS[0]!r}") < log.index(f"read {DELTAS[1]!r}")
    assert [e for e in log if e.startswith("got")] == [f"got {d!r}" for d in DELTAS]


async def test_a_calls_first_delta_waits_for_nobody_when_it_does_not_stream() -> None:
    # A whole answer is one delta: the call goes on to its end without a turn for the caller.
    log = await _first_delta_order(stream=False)
    assert log.index(f"read {DELTAS[-1]!r}") < log.index(f"got {DELTAS[0]!r}")


async def test_a_call_whose_only_caller_left_after_the_first_delta_is_not_held_by_it() -> None:
    r = replica()
    caller = r.pipeline.call(
        "openai",
        LlmRequest("gpt-4.1-mini", (Message("user", f"{uuid.uuid4()}"),), 64, stream=True),
        CallContext(tenant="acme"),
    )
    assert isinstance(caller, AsyncGenerator)
    assert await anext(caller) == TextDelta(DELTAS[0])
    (flight,) = r.flights._flights.values()
    assert flight.task is not None
    await caller.aclose()  # gone without coming back for more: the call reads on at once
    await asyncio.wait_for(asyncio.shield(flight.task), 2.0)
    assert not flight.task.cancelled()  # finished, before the grace for an abandoned call
    assert r.cache.stats.stores == 1


async def test_a_cancelled_caller_never_cancels_the_shared_call() -> None:
    r = replica()
    r.upstream.hold = asyncio.Event()
    first = asyncio.create_task(r.ask())
    await r.upstream.started.wait()
    second = asyncio.create_task(r.ask())
    await until(lambda: r.cache.stats.coalesced == 1)
    first.cancel()  # the caller that started the call goes away
    with pytest.raises(asyncio.CancelledError):
        await first
    r.upstream.hold.set()
    assert text_of(await second) == TEXT
    assert r.upstream.calls == 1
    third = await r.ask()  # stored although its first caller was gone
    assert finish_of(third).cached and r.upstream.calls == 1


async def test_an_error_reaches_every_caller_and_nothing_is_stored() -> None:
    r = replica()
    r.upstream.hold = asyncio.Event()
    r.upstream.fail = UpstreamError(ErrorKind.SERVER, "boom", status=500, streamed=True)
    tasks = [asyncio.create_task(r.ask()) for _ in range(10)]
    await until(lambda: r.cache.stats.coalesced == 9)
    r.upstream.hold.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(e, UpstreamError) and e.kind is ErrorKind.SERVER for e in results)
    assert r.upstream.calls == 1 and r.cache.stats.stores == 0
    r.upstream.fail = None
    assert text_of(await r.ask()) == TEXT and r.upstream.calls == 2  # a failure is not cached


async def test_callers_have_the_stored_answer_before_the_call_has_settled() -> None:
    """The answer is stored and handed out at its Finish; what the stages behind do on the way
    out (held here), and even a failure there, does not hold it back or take it away."""
    r = replica()
    r.upstream.settle = asyncio.Event()
    r.upstream.fail_after = UpstreamError(ErrorKind.CONNECTION, "books not settled")
    first = await asyncio.wait_for(r.ask(stream=False), 5)
    assert text_of(first) == TEXT and not finish_of(first).cached
    assert r.cache.stats.stores == 1 and r.flights.in_flight == 0
    assert not r.upstream.settle.is_set()  # the call is still on its way out
    again = await r.ask(stream=False)  # meanwhile: read from the cache, not a second call
    assert finish_of(again).cached and r.upstream.calls == 1
    r.upstream.settle.set()
    await asyncio.sleep(0.01)
    later = await r.ask(stream=False)
    assert text_of(later) == TEXT and finish_of(later).cached and r.upstream.calls == 1


async def test_a_follower_waits_no_longer_than_its_deadline() -> None:
    r = replica()
    r.upstream.hold = asyncio.Event()
    first = asyncio.create_task(r.ask())
    await r.upstream.started.wait()
    with pytest.raises(UpstreamError) as err:
        await r.ask(deadline=time.monotonic() - 1)  # already past: gives up at once
    assert err.value.kind is ErrorKind.TIMEOUT
    r.upstream.hold.set()
    assert text_of(await first) == TEXT


async def test_policy_modes() -> None:
    r = replica()
    with pytest.raises(CallRejected) as rejected:
        await r.ask(mode="only_if_cached")
    assert rejected.value.reason == "NOT_CACHED" and r.upstream.calls == 0
    await r.ask(mode="no_store")
    assert r.upstream.calls == 1 and r.cache.stats.stores == 0
    with pytest.raises(CallRejected):
        await r.ask(mode="only_if_cached")  # no_store stored nothing
    await r.ask(mode="bypass")  # does not read, does store
    assert r.upstream.calls == 2 and r.cache.stats.stores == 1
    await r.ask(mode="bypass")
    assert r.upstream.calls == 3
    hit = await r.ask(mode="only_if_cached")
    assert finish_of(hit).cached and r.upstream.calls == 3
    assert finish_of(await r.ask(mode="no_store")).cached  # no_store still reads


async def test_bypass_calls_are_never_coalesced() -> None:
    r = replica()
    r.upstream.hold = asyncio.Event()
    tasks = [asyncio.create_task(r.ask(mode="bypass")) for _ in range(3)]
    await until(lambda: r.upstream.calls == 3)
    r.upstream.hold.set()
    await asyncio.gather(*tasks)
    assert r.cache.stats.coalesced == 0


async def test_non_streaming_hit_is_one_delta() -> None:
    r = replica()
    await r.ask(stream=True)
    events = await r.ask(stream=False)
    assert [e.text for e in events if isinstance(e, TextDelta)] == [TEXT]


async def test_tenants_are_isolated_unless_sharing_is_configured() -> None:
    r = replica()
    await r.ask(tenant="acme")
    assert not finish_of(await r.ask(tenant="globex")).cached
    assert r.upstream.calls == 2
    shared = replica(share_across_tenants=True)
    await shared.ask(tenant="acme")
    assert finish_of(await shared.ask(tenant="globex")).cached
    assert shared.upstream.calls == 1
    # ...but answers, not in-flight calls: one tenant's call never fails another's
    shared.upstream.hold = asyncio.Event()
    a = asyncio.create_task(shared.ask(tenant="acme", text="another question"))
    b = asyncio.create_task(shared.ask(tenant="globex", text="another question"))
    await until(lambda: shared.upstream.calls == 3)
    shared.upstream.hold.set()
    await asyncio.gather(a, b)


async def test_cache_disabled_passes_through() -> None:
    r = replica(enabled=False)
    await r.ask()
    await r.ask()
    assert r.upstream.calls == 2
    with pytest.raises(CallRejected):
        await r.ask(mode="only_if_cached")


# ---- across replicas, through a real Redis ----


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"


async def test_a_replica_waits_for_another_replicas_answer(
    shared_redis: RedisServer | RedisClusterServer, prefix: str
) -> None:
    a = replica(shared_redis.url, prefix)
    b = replica(shared_redis.url, prefix)
    a.upstream.hold = asyncio.Event()
    first = asyncio.create_task(a.ask())
    await a.upstream.started.wait()
    waiting = [asyncio.create_task(b.ask()) for _ in range(5)]
    # One waiter per replica and key; the other four join it (all five are in before the
    # answer lands, else a late one is a plain local hit on a loaded machine).
    await until(lambda: b.cache.stats.remote_waits == 1 and b.cache.stats.coalesced == 4)
    a.upstream.hold.set()
    results = [await first, *await asyncio.gather(*waiting)]
    assert a.upstream.calls == 1 and b.upstream.calls == 0
    assert all(text_of(ev) == TEXT for ev in results)
    assert all(finish_of(ev).cached for ev in results[1:])
    # the waiters' stream is replayed with its deltas once the answer lands
    assert [e.text for e in results[1] if isinstance(e, TextDelta)] == DELTAS
    assert b.cache.stats.remote_hits == 1 and b.cache.stats.coalesced == 4


async def test_a_crashed_owners_lease_expires_and_a_waiter_takes_over(
    shared_redis: RedisServer | RedisClusterServer, prefix: str
) -> None:
    b = replica(shared_redis.url, prefix, lock_ttl_s=5.0)
    # A replica took the lease for this call and died: only its lease is left, for 1.5 s (long
    # enough that b's first call, which also sets up its cluster client, finds it there).
    req = LlmRequest("gpt-4.1-mini", (Message("user", "When was the lamp converted?"),), 64)
    key = b.cache.key_now(
        replace_call(b, req, CallContext(tenant="acme"))  # the key the gateway computes
    )
    raw = connect(shared_redis.url)
    await raw.set(f"{prefix}{{{key}}}:lock", "dead-replica-token", px=1500)
    events = await b.ask()
    assert text_of(events) == TEXT and b.upstream.calls == 1
    assert b.cache.stats.takeovers == 1 and b.cache.stats.remote_waits == 1
    assert await raw.exists(f"{prefix}{{{key}}}:lock") == 0  # released after storing
    assert await raw.exists(f"{prefix}{{{key}}}") == 1
    await raw.aclose()


def replace_call(r: Replica, req: LlmRequest, ctx: CallContext) -> Any:
    from longread_server.calls.pipeline import Call

    return Call("openai", r.upstream, req, ctx)


async def test_the_owners_error_reaches_waiters_on_other_replicas(
    shared_redis: RedisServer | RedisClusterServer, prefix: str
) -> None:
    a = replica(shared_redis.url, prefix)
    b = replica(shared_redis.url, prefix)
    a.upstream.hold = asyncio.Event()
    a.upstream.fail = UpstreamError(ErrorKind.RATE_LIMITED, "slow down", status=429)
    first = asyncio.create_task(a.ask())
    await a.upstream.started.wait()
    waiting = asyncio.create_task(b.ask())
    await until(lambda: b.cache.stats.remote_waits == 1)
    a.upstream.hold.set()
    for task in (first, waiting):
        with pytest.raises(UpstreamError) as err:
            await task
        assert err.value.kind is ErrorKind.RATE_LIMITED and err.value.status == 429
    assert b.upstream.calls == 0 and b.cache.stats.remote_errors == 1


async def test_the_lease_is_renewed_while_the_owner_calls(
    shared_redis: RedisServer | RedisClusterServer, prefix: str
) -> None:
    # A lease long enough that a busy machine's scheduling pauses do not outlast it (renewed
    # every third of it), short enough that the wait below spans several.
    a = replica(shared_redis.url, prefix, lock_ttl_s=0.6)
    b = replica(shared_redis.url, prefix, lock_ttl_s=0.6)
    a.upstream.hold = asyncio.Event()
    first = asyncio.create_task(a.ask())
    await a.upstream.started.wait()
    waiting = asyncio.create_task(b.ask())
    await asyncio.sleep(2.0)  # > 3 lease periods: only renewals keep the lease alive
    assert b.upstream.calls == 0 and b.cache.stats.takeovers == 0
    a.upstream.hold.set()
    assert text_of(await waiting) == TEXT and text_of(await first) == TEXT


# A cluster client that reaches no node raises an error of its own (not a RedisError).
@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_redis_down_serves_from_local_state_and_counts(prefix: str, scheme: str) -> None:
    r = replica(f"{scheme}://127.0.0.1:{free_port()}/0", prefix)  # nothing listens there
    assert text_of(await r.ask()) == TEXT
    assert finish_of(await r.ask()).cached  # the local fallback kept it
    assert r.upstream.calls == 1 and r.cache.stats.redis_errors >= 1
    r2 = replica(f"{scheme}://127.0.0.1:{free_port()}/0", prefix, local_fallback=False)
    await r2.ask()
    await r2.ask()
    assert r2.upstream.calls == 2  # served uncached, never failed


async def test_bypass_and_no_store_with_redis(
    shared_redis: RedisServer | RedisClusterServer, prefix: str
) -> None:
    a = replica(shared_redis.url, prefix)
    b = replica(shared_redis.url, prefix)
    await a.ask(mode="no_store")
    with pytest.raises(CallRejected):
        await b.ask(mode="only_if_cached")
    await a.ask(mode="bypass")
    assert finish_of(await b.ask(mode="only_if_cached")).cached
    assert a.upstream.calls == 2 and b.upstream.calls == 0
