"""A client that cancels, or whose deadline passes, stops every upstream call of its job.

A map-reduce job fans out over many chunks; every upstream call hangs (the sandbox's
``timeout`` fault, which notices when its client goes away). Once the gateway has the job's
full concurrency in flight, the client cancels (or its deadline passes); the sandbox must see
every one of those connections closed, and the gateway must have no task left, within a
generous 1 s bound. The measured time is reported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from longread.client import Options
from longread_sandbox import Sandbox

from tests.chaos.conftest import BODY, QUESTION, Row, client_for, gateway_tasks, settled
from tests.waiting import until

MAP_REDUCE = Options(strategy="map_reduce", max_chunk_tokens=120, cache="bypass")
# Default cache mode: identical calls share one single-flight leader task, which today
# outlives its callers (calls/singleflight.py): cancelling the client does not reach upstream.
SINGLE_FLIGHT = pytest.param(
    Options(strategy="map_reduce", max_chunk_tokens=120),
    id="single_flight",
)


def long_doc() -> str:
    """~3k tokens, every chunk different: ~25 distinct map calls."""
    run = time.monotonic_ns()
    return " ".join(f"Entry {i} of archive {run}: {BODY}" for i in range(40))


@pytest.mark.parametrize("options", [pytest.param(MAP_REDUCE, id="bypass"), SINGLE_FLIGHT])
async def test_cancel_stops_every_upstream_call(
    sb: Sandbox, gateways: Callable[..., Any], row: Row, options: Options
) -> None:
    gw = await gateways()
    baseline = len(gateway_tasks(sb))
    sb.configure(fault_rate=1.0, fault_kind="timeout")
    async with client_for(gw) as client:
        started = time.monotonic()
        stream = client.stream(long_doc(), QUESTION, options=options, timeout=30)

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(consume())
        await until(lambda: sb.stats.active == 8, 5.0)
        in_flight, ramp = sb.stats.active, time.monotonic() - started
        row.sent, row.upstream = 1, sb.stats.requests
        row.failed["CANCELLED"] = 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        try:
            took = await until(lambda: sb.stats.active == 0, 1.0)
        except pytest.fail.Exception:
            row.notes = f"{sb.stats.active} of {in_flight} upstream calls still open 1 s later"
            raise
        await until(lambda: sb.stats.disconnects >= in_flight, 1.0)
    await settled(sb, baseline)
    row.notes = (
        f"{in_flight} upstream calls in flight after {ramp:.2f}s; all closed "
        f"{took * 1000:.1f} ms after the cancel"
    )
    assert took < 1.0


async def test_deadline_stops_every_upstream_call(
    sb: Sandbox, gateways: Callable[..., Any], row: Row
) -> None:
    gw = await gateways()
    baseline = len(gateway_tasks(sb))
    sb.configure(fault_rate=1.0, fault_kind="timeout")
    async with client_for(gw) as client:
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.analyze(long_doc(), QUESTION, options=MAP_REDUCE, timeout=1.0)
        ended = time.monotonic()
        took = await until(lambda: sb.stats.active == 0, 1.0)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await settled(sb, baseline)
    row.sent, row.upstream = 1, sb.stats.requests
    row.failed[info.value.code().name] = 1
    row.notes = (
        f"client saw the status after {ended - t0:.3f}s (deadline 1 s); upstream calls "
        f"closed {took * 1000:.1f} ms after that"
    )
    assert took < 1.0
