"""Scenarios 1-7, 11-13 of the resilience reference, against the real gateway and sandbox.

Every scenario runs its own sandbox and gateway, records what the client saw and what the
upstream received, and checks that nothing was lost or left hanging.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from longread.client import Options, error_details
from longread_sandbox import Sandbox
from longread_server.app import Gateway, sandbox_upstreams
from longread_server.config import TelemetryConfig, TenantConfig
from longread_server.telemetry import setup
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.chaos.conftest import (
    BYPASS,
    QUESTION,
    Row,
    client_for,
    doc,
    fire,
    gateway_tasks,
    one,
    points,
    resilience,
    settled,
)
from tests.waiting import until

Make = Callable[..., Any]


async def breaker_view(gw: Gateway, upstream: str = "openai") -> Any:
    assert gw.resilience is not None
    return await gw.resilience.breakers.view(upstream, gw.resilience.breaker_params)


async def test_01_unavailable_opens_at_min_calls_then_fails_fast(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """100% 503: the breaker opens after exactly min_calls attempts (retries included); after
    that, calls fail fast with UNAVAILABLE + RetryInfo and never reach the upstream."""
    reader = InMemoryMetricReader()
    cfg = resilience(breaker={"window_size": 10, "min_calls": 5})
    tel = setup(TelemetryConfig(metrics=True), metric_readers=[reader])
    gw = await gateways(resilience=cfg, telemetry=tel)
    sb.configure(fault_rate=1.0, fault_kind="503")
    async with client_for(gw) as client:
        results = await fire(client, [doc(str(i)) for i in range(20)])
    row.add(results)
    row.upstream = sb.stats.requests
    assert sb.stats.requests == 5  # exactly min_calls attempts, then no connection at all
    fast = [r for r in results if r.details and r.details.metadata.get("circuit") == "open"]
    assert len(fast) >= 17
    assert all(r.code == "UNAVAILABLE" for r in results)
    assert all(r.details.retry_after_s and r.details.retry_after_s > 25 for r in fast)  # type: ignore[union-attr]
    latencies = sorted(r.elapsed_s for r in fast)
    row.notes = (
        f"fail-fast RPC latency median {statistics.median(latencies) * 1000:.2f} ms, "
        f"max {latencies[-1] * 1000:.2f} ms (client-observed, loopback)"
    )
    # Fast because refused before any connection (5 upstream requests above); the latency is
    # reported, not asserted: a busy machine's scheduling would make a bound flaky.
    # ...and the metrics say so.
    assert points(reader, "longread.breaker.state") == [({"longread.upstream": "openai"}, 2)]
    refused = points(reader, "longread.resilience.rejections")
    assert sum(v for a, v in refused if a["longread.reason"] == "circuit_open") >= 17
    assert sum(v for _, v in points(reader, "longread.resilience.retries")) >= 1


async def test_02_half_open_lets_exactly_n_probes_through_a_burst(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """After the open wait, a burst of 200 gets exactly 3 probes upstream; failed probes
    re-open it with a longer wait; successful probes close it."""
    # The second wait (1.5 s) outlasts the time the gateway takes to receive the whole burst.
    cfg = {
        "window_size": 4,
        "min_calls": 4,
        "half_open_calls": 3,
        "open_s": 0.3,
        "open_backoff": 5.0,
        "open_max_s": 2.0,
    }
    gw = await gateways(resilience=resilience(breaker=cfg, retry={"max_attempts": 1}))
    sb.configure(fault_rate=1.0, fault_kind="503", latency_ms=50)
    async with client_for(gw) as client:
        row.add(await fire(client, [doc() for _ in range(4)]))
        assert (await breaker_view(gw)).state == "open"
        await asyncio.sleep(0.3)  # the gateway's real open wait (0.3 s) must pass
        before = sb.stats.requests
        burst = await fire(client, [doc() for _ in range(200)], concurrency=200)
        row.add(burst)
        assert sb.stats.requests - before == 3  # exactly the probes
        assert all(not r.ok for r in burst)
        view = await breaker_view(gw)
        assert view.state == "open" and view.opens == 2
        reopened = [
            r.details.retry_after_s or 0.0
            for r in burst
            if r.details and r.details.metadata.get("circuit") == "open"
        ]
        assert 0.3 < max(reopened) <= 1.5  # the second open wait is 5x the first
        sb.configure(fault_rate=0.0)
        await asyncio.sleep(view.retry_after_s)
        before = sb.stats.requests
        burst = await fire(client, [doc() for _ in range(200)], concurrency=200)
        row.add(burst)
        probes_ok = sum(r.ok for r in burst)
        assert sb.stats.requests - before == probes_ok >= 3
        assert (await breaker_view(gw)).state == "closed"
        after = await fire(client, [doc() for _ in range(20)], concurrency=10)
        row.add(after)
        assert all(r.ok for r in after)
    row.upstream = sb.stats.requests
    row.notes = "probes per half-open burst: 3 (failing), then 3 ok -> closed"


async def test_03a_slow_calls_open_the_breaker(sb: Sandbox, gateways: Make, row: Row) -> None:
    """Calls that answer, but only after the slow-call threshold, open the breaker."""
    cfg = {"window_size": 4, "min_calls": 4, "slow_call_s": 0.1, "slow_call_rate": 0.5}
    gw = await gateways(resilience=resilience(breaker=cfg))
    sb.configure(latency_ms=300)
    async with client_for(gw) as client:
        results = await fire(client, [doc() for _ in range(10)], timeout=3)
    row.add(results)
    row.upstream = sb.stats.requests
    assert [r.ok for r in results] == [True] * 4 + [False] * 6
    assert {r.code for r in results[4:]} == {"UNAVAILABLE"}
    assert sb.stats.requests == 4  # the other six failed fast: they never waited 0.3 s upstream
    row.notes = f"failed fast in at most {max(r.elapsed_s for r in results[4:]) * 1000:.0f} ms"


async def test_03b_per_try_timeout_then_retry_within_the_deadline(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """The first attempt hangs; the per-try timeout (0.2 s) cuts it and the retry answers,
    well inside the 2 s deadline."""
    gw = await gateways(
        resilience=resilience(first_event_timeout_s=0.2, retry={"budget_min_retries": 10})
    )
    baseline = len(gateway_tasks(sb))
    async with client_for(gw) as client:
        results = await fire(
            client, [doc(fault="timeout*1") for _ in range(5)], concurrency=5, timeout=2
        )
    row.add(results)
    row.upstream = sb.stats.requests
    assert all(r.ok for r in results)
    assert sb.stats.requests == 10 and sb.stats.disconnects == 5
    assert all(0.2 <= r.elapsed_s < 1.0 for r in results)
    await settled(sb, baseline)
    row.notes = f"slowest {max(r.elapsed_s for r in results):.2f}s of a 2 s deadline"


async def test_04_blackhole_ends_at_the_deadline_and_leaks_nothing(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """An upstream that never answers, under deadlines shorter than an attempt's own
    first-event limit: every call ends with DEADLINE_EXCEEDED at its deadline, every upstream
    connection is closed, no task is left, and the breaker counted none of them (the callers
    gave up first; a hang that outlives the attempt's limit is counted, see test_14)."""
    gw = await gateways()
    baseline = len(gateway_tasks(sb))
    sb.configure(fault_rate=1.0, fault_kind="timeout")
    async with client_for(gw) as client:
        results = await fire(client, [doc() for _ in range(10)], concurrency=10, timeout=0.5)
    row.add(results)
    row.upstream = sb.stats.requests
    assert {r.code for r in results} == {"DEADLINE_EXCEEDED"}
    assert all(r.elapsed_s < 0.5 + 0.3 for r in results)
    await settled(sb, baseline)
    assert sb.stats.disconnects == sb.stats.requests == 10
    view = await breaker_view(gw)
    assert (view.calls, view.failures) == (0, 0)
    row.notes = "all closed upstream; deadline cuts not counted by the breaker"


async def test_05_reset_after_the_first_token_is_not_retried(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """The stream breaks after answer text was sent to the client: no retry (the next attempt
    would have succeeded), the error reaches the client, and the tenant is charged the prompt
    plus what was streamed, not the whole reservation and not nothing."""
    tenant = TenantConfig(name="acme", api_keys=["k"], tokens_per_minute=60, burst_tokens=100_000)
    gw = await gateways(tenants=[tenant])
    assert gw.resilience is not None
    quota = gw.resilience.tenant_quotas["acme"]
    assert quota.tokens is not None
    deltas = 0
    code = ""
    async with client_for(gw, api_key="k") as client:
        try:
            async for ev in client.stream(
                doc(fault="reset*1", repeat=6), QUESTION, options=BYPASS, timeout=5
            ):
                if ev.HasField("delta"):
                    deltas += 1
        except grpc.aio.AioRpcError as e:
            code = e.code().name
    row.sent, row.upstream = 1, sb.stats.requests
    row.failed[code] += 1
    assert code == "UNAVAILABLE" and deltas >= 1
    assert sb.stats.requests == 1  # not retried
    charged = quota.tokens.burst - await gw.resilience.buckets.peek(quota.tokens)
    row.notes = f"{deltas} deltas reached the client; tenant charged {charged:.0f} tokens"
    assert 50 < charged < 2048  # the prompt and a few deltas, not prompt + max output


async def test_06_429_retry_after(sb: Sandbox, gateways: Make, row: Row) -> None:
    """429 with Retry-After 1.5 s: past the deadline it is RESOURCE_EXHAUSTED at once (and the
    upstream is held, so the next call does not even try); within it, the retry waits at
    least 1.5 s and succeeds. The breaker is untouched."""
    gw = await gateways()
    sb.configure(retry_after_ms=1500)
    async with client_for(gw) as client:
        short = await one(client, doc(fault="429*1"), timeout=1.0)
        held = await one(client, doc(), timeout=1.0)
        patient = await one(client, doc(fault="429*1"), timeout=6.0)
    row.add([short, held, patient])
    row.upstream = sb.stats.requests
    assert short.code == "RESOURCE_EXHAUSTED" and short.elapsed_s < 0.5
    assert short.details is not None and short.details.retry_after_s == pytest.approx(1.5, abs=0.01)
    assert held.code == "RESOURCE_EXHAUSTED" and held.elapsed_s < 0.5
    assert held.details is not None and held.details.quota_violations
    assert patient.ok and patient.elapsed_s >= 1.5
    assert sb.stats.requests == 3  # 429, (held: none), 429 + retry
    view = await breaker_view(gw)
    assert (view.state, view.failures) == ("closed", 0)
    row.notes = (
        f"past deadline: {short.elapsed_s * 1000:.0f} ms; held: {held.elapsed_s * 1000:.0f} ms "
        f"(0 upstream); within deadline: ok after {patient.elapsed_s:.2f}s"
    )


async def test_07_synchronized_failures_stay_within_the_retry_budget(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """50 calls fail at once, all retryable: upstream attempts stay <= 1.2 x calls + floor."""
    gw = await gateways(resilience=resilience(breaker={"enabled": False}))
    sb.configure(fault_rate=1.0, fault_kind="503")
    async with client_for(gw) as client:
        results = await fire(client, [doc() for _ in range(50)], concurrency=50)
    row.add(results)
    row.upstream = sb.stats.requests
    assert {r.code for r in results} == {"UNAVAILABLE"}
    assert 50 < sb.stats.requests <= 50 * 1.2 + 3
    assert gw.resilience is not None
    row.notes = f"retries denied by the budget: {gw.resilience.retry.budget('openai').denied}"


async def test_11_cost_above_tpm_capacity_is_refused_at_once(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    tenant = TenantConfig(name="acme", api_keys=["k"], tokens_per_minute=6000, burst_tokens=1000)
    gw = await gateways(tenants=[tenant])
    async with client_for(gw, api_key="k") as client:
        r = await one(client, doc(repeat=60))
    row.add([r])
    row.upstream = sb.stats.requests
    assert r.code == "FAILED_PRECONDITION" and r.elapsed_s < 0.5
    assert r.details is not None and r.details.reason == "RATE_LIMITED"
    assert r.details.quota_violations[0][0] == "tenant:acme/tokens_per_minute"
    assert r.details.retry_after_s is None
    assert sb.stats.requests == 0
    row.notes = f"refused in {r.elapsed_s * 1000:.1f} ms, no upstream call"


async def test_12_single_flight_coalesces_identical_calls(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """100 identical concurrent requests make one upstream call and share its answer; a caller
    that gives up does not hurt the others; a shared failure reaches everyone."""
    gw = await gateways()
    sb.configure(latency_ms=200)
    same = doc()
    async with client_for(gw) as client:
        quitter = asyncio.create_task(one(client, same, options=Options()))
        await asyncio.sleep(0.05)
        quitter.cancel()
        results = await fire(client, [same] * 100, concurrency=100, options=Options())
        assert sb.stats.requests == 1
        assert len({r.text for r in results}) == 1 and all(r.ok for r in results)
        row.add(results)
        failing = doc(fault="500")
        failures = await fire(client, [failing] * 100, concurrency=100, options=Options())
        row.add(failures)
    row.upstream = sb.stats.requests
    assert {r.code for r in failures} == {"UNAVAILABLE"}
    assert sb.stats.requests - 1 <= 3  # one call and its retries, shared by all 100
    row.notes = "100 identical: 1 upstream call; 100 identical failing: 1 call + retries"


async def test_13a_stalled_stream_hits_the_idle_timeout(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """A stream that stalls after a few deltas fails after the idle timeout (0.3 s), long
    before the 10 s deadline, and is not retried (text was sent)."""
    gw = await gateways(resilience=resilience(idle_timeout_s=0.3))
    t0 = time.monotonic()
    code, deltas, message = "", 0, ""
    async with client_for(gw) as client:
        try:
            async for ev in client.stream(
                doc(fault="stall", repeat=6), QUESTION, options=BYPASS, timeout=10
            ):
                deltas += ev.HasField("delta")
        except grpc.aio.AioRpcError as e:
            code = e.code().name
            message = error_details(e).message
    elapsed = time.monotonic() - t0
    row.sent, row.upstream = 1, sb.stats.requests
    row.failed[code] += 1
    row.notes = f"failed after {elapsed:.2f}s, {deltas} deltas first ({message[-28:]})"
    assert code == "DEADLINE_EXCEEDED" and deltas >= 1
    assert 0.3 <= elapsed < 2.0
    assert sb.stats.requests == 1
    await until(lambda: sb.stats.active == 0, 1.0)


async def test_13b_slow_but_steady_stream_is_not_cut(sb: Sandbox, gateways: Make, row: Row) -> None:
    """A stream paced at 40 tokens/s takes longer than the idle timeout in total, but no gap
    is that long: it completes."""
    gw = await gateways(resilience=resilience(idle_timeout_s=0.3))
    sb.configure(tokens_per_s=40)
    async with client_for(gw) as client:
        r = await one(client, doc(repeat=6), timeout=10, stream=True)
    row.add([r])
    row.upstream = sb.stats.requests
    assert r.ok and r.elapsed_s > 0.3
    row.notes = f"completed in {r.elapsed_s:.2f}s with a 0.3 s idle timeout"


async def test_01b_open_circuit_falls_back_to_another_vendor(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """openai's breaker is open; its configured fallback (anthropic, claude-haiku-4-5) answers
    instead. A request labelled fallback=off fails fast."""
    ups = sandbox_upstreams(sb.base_url)
    by_name = {u.name: u for u in ups}
    by_name["openai"].fallback = "anthropic"
    by_name["anthropic"].models = ["claude-haiku-4-5"]
    cfg = resilience(breaker={"window_size": 4, "min_calls": 4}, retry={"max_attempts": 1})
    gw = await gateways(upstreams=ups, resilience=cfg)
    async with client_for(gw) as client:
        # Tripping calls opt out: a 503 is a fallback trigger too, and would open anthropic's.
        off = Options(cache="bypass", labels={"fallback": "off"})
        failing = await fire(client, [doc(fault="503") for _ in range(4)], options=off)
        assert (await breaker_view(gw)).state == "open"
        rerouted = await fire(client, [doc() for _ in range(5)])
        sent = sb.stats.requests
        pinned = await one(
            client, doc(), options=Options(cache="bypass", labels={"fallback": "off"})
        )
    row.add([*failing, *rerouted, pinned])
    row.upstream = sb.stats.requests
    assert all(r.ok for r in rerouted) and "1998" in rerouted[0].text
    assert sb.stats.by_endpoint["/v1/messages"] == 5
    assert pinned.code == "UNAVAILABLE" and sb.stats.requests == sent  # refused, never sent
    row.notes = "5 calls answered by the fallback (anthropic); fallback=off failed fast"


async def test_map_fanout_backs_off_on_429_and_recovers(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """A map-reduce job whose first map calls get 429s: the job still succeeds (retries), the
    upstream's adaptive concurrency limit is cut, then grows back on healthy calls."""
    gw = await gateways(resilience=resilience(concurrency={"cooldown_s": 0.05}))
    assert gw.resilience is not None
    sb.configure(latency_ms=30, script=["429"] * 4)
    peak: list[int] = []
    text = " ".join(f"Section {i} {doc()}" for i in range(24))
    opts = Options(strategy="map_reduce", max_chunk_tokens=150, cache="bypass")

    async def sample() -> None:
        while True:
            peak.append(sb.stats.active)
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    async with client_for(gw) as client:
        r = await one(client, text, timeout=20, options=opts)
    sampler.cancel()
    lim = gw.resilience.concurrency.limits["openai"]
    row.add([r])
    row.upstream = sb.stats.requests
    assert r.ok
    assert lim.decreases >= 1
    assert sb.stats.by_status[429] == 4
    row.notes = (
        f"limit cut {lim.decreases}x on 429s, back to {lim.limit} of 8 after "
        f"{sb.stats.requests} calls; peak upstream concurrency {max(peak)}"
    )


# A hung upstream, on 30 % of calls: the attempt's own first-event limit, derived from the
# request (base + per 1K prompt tokens + per 1K output tokens unstreamed), capped here at 0.4 s.
HUNG_LIMIT_S = 0.4
HUNG_ATTEMPTS = 3
HUNG_SEED = 12  # the sandbox's fault RNG: 10 of its first 30 and 18 of its first 60 draws hang


def hung_resilience(**breaker: Any) -> Any:
    return resilience(
        first_event_timeout_s=HUNG_LIMIT_S,
        attempt={"first_event_base_s": 0.3, "first_event_per_1k_prompt_s": 0.2},
        retry={"max_attempts": HUNG_ATTEMPTS, "budget_min_retries": 1000},
        breaker=breaker or None,
    )


def time_to_fail_bound() -> float:
    """Attempt limit x attempts, the backoffs between them (cap 0.2 s), and a margin for a
    loaded machine: far below the 10 s deadline a hang would otherwise hold a request for."""
    return HUNG_LIMIT_S * HUNG_ATTEMPTS + 0.2 * (HUNG_ATTEMPTS - 1) + 1.0


async def test_14a_hung_upstream_fails_within_attempt_limit_times_attempts(
    sb: Sandbox, gateways: Make, row: Row
) -> None:
    """30 % of upstream calls hang (accept, never answer). Every request ends well before
    its 10 s deadline: a hung attempt is cut at its own limit and retried, so a request fails
    only when all its attempts hang, within limit x attempts; every cut attempt is a breaker
    failure; requests that met no hang are as fast as without faults."""
    gw = await gateways(resilience=hung_resilience())
    baseline = len(gateway_tasks(sb))
    sb.configure(fault_rate=0.3, fault_kind="timeout", seed=HUNG_SEED)
    async with client_for(gw) as client:
        results = await fire(client, [doc(str(i)) for i in range(40)], concurrency=10, timeout=10)
    row.add(results)
    row.upstream = sb.stats.requests
    await settled(sb, baseline)
    hung = sb.stats.disconnects  # the hung attempts the gateway gave up on
    failed = [r.elapsed_s for r in results if not r.ok]
    assert hung >= 8
    assert sb.stats.requests == 40 + hung - len(failed)  # a hang is retried, but not the last
    bound = time_to_fail_bound()
    assert all(r.elapsed_s < bound for r in results), max(r.elapsed_s for r in results)
    assert all(r.ok or r.code == "DEADLINE_EXCEEDED" for r in results)
    view = await breaker_view(gw)
    assert (view.calls, view.failures) == (sb.stats.requests, hung)
    # A request that met a hang took at least one attempt limit; one that met none did not.
    retried = [r for r in results if r.ok and r.elapsed_s >= HUNG_LIMIT_S]
    fast = sorted(r.elapsed_s for r in results if r.ok and r.elapsed_s < HUNG_LIMIT_S)
    assert 1 <= len(retried) <= hung and len(fast) + len(retried) + len(failed) == 40
    assert len(fast) >= 40 - hung
    row.notes = (
        f"{hung} hung attempts cut and counted by the breaker ({view.failures}); "
        f"retried ok slowest {max(r.elapsed_s for r in retried):.2f}s; "
        f"failed {len(failed)} (slowest {max(failed, default=0):.2f}s); "
        f"unaffected median {statistics.median(fast) * 1000:.0f} ms; bound {bound:.1f}s"
    )


async def test_14b_hung_upstream_opens_the_breaker(sb: Sandbox, gateways: Make, row: Row) -> None:
    """The same 30 % hangs with a breaker set to open at 20 % upstream faults over 20
    attempts: the cut attempts open it, and from then on requests fail fast (UNAVAILABLE,
    circuit open) instead of waiting for a hang; no request waits past limit x attempts."""
    gw = await gateways(resilience=hung_resilience(window_size=20, min_calls=20, failure_rate=0.2))
    baseline = len(gateway_tasks(sb))
    sb.configure(fault_rate=0.3, fault_kind="timeout", seed=HUNG_SEED)
    async with client_for(gw) as client:
        results = await fire(client, [doc(str(i)) for i in range(60)], concurrency=5, timeout=10)
    row.add(results)
    row.upstream = sb.stats.requests
    await settled(sb, baseline)
    view = await breaker_view(gw)
    assert view.opens >= 1
    fast = [r for r in results if r.details and r.details.metadata.get("circuit") == "open"]
    assert fast and all(r.code == "UNAVAILABLE" for r in fast)
    assert sb.stats.requests < 60 + sb.stats.disconnects  # open: some calls never sent
    bound = time_to_fail_bound()
    assert all(r.elapsed_s < bound for r in results), max(r.elapsed_s for r in results)
    row.notes = (
        f"breaker opened {view.opens}x after {sb.stats.requests} upstream attempts in all; "
        f"{len(fast)} requests failed fast (circuit open); slowest request "
        f"{max(r.elapsed_s for r in results):.2f}s (bound {bound:.1f}s)"
    )
