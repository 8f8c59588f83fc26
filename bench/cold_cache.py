"""What a cold cache costs the gateway's own steps of a miss: each step timed in-process
with the core's caches warm (the same call back to back) and again after the core's second-level
cache has been written over, as it is when the rest of a request's path has run in between; and
the same steps timed where they run, in a gateway serving sequential misses.

The steps are the gateway's computations of a cache-miss Analyze (``bench.overhead``'s request),
called with the arguments they were given by one real Analyze through an in-process gateway
against the sandbox: the request's validation and conversion (``convert.parse_request``),
counting its tokens and planning it (``Planning.plan_now``), its cache key
(``ResponseCache.key_now``: the vendor payload, its canonical form and hash) and the response's
conversion to protobuf (``convert.result``). ``bench.instructions`` counts how many lines a
whole call fetches from beyond that cache (``l2_misses_per_call``); this shows what such fetches
cost in time.

In-process: pinned to the server's core; the cache written over is twice the size sysfs gives
for that core's second level (8 MiB when sysfs does not say). In the server: ``longread serve``
with the steps wrapped by timers (``bench._step_timer``) on the server's core, sent
``IN_SERVER_CALLS`` sequential misses by ghz from the other core after ``_step_timer.SKIP`` of
warm-up. Prints one JSON object.
Run: python -m bench.cold_cache
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from bench import _load, _servers, _step_timer
from bench._load import LOADGEN_CPU, SERVER_CPU, cache_geometry
from bench.overhead import analyze_data, capture

WARM_CALLS = 2000
COLD_CALLS = 400
FALLBACK_EVICT_BYTES = 8 * 1024 * 1024
STEPS = tuple(_step_timer.STEPS)
IN_SERVER_CALLS = 1500

Step = Callable[[], object]


@contextmanager
def _recording(owner: Any, attr: str, name: str, seen: dict[str, Step]) -> Iterator[None]:
    """Records the first call of ``owner.attr`` as ``seen[name]``, a call that can be made
    again."""
    original = getattr(owner, attr)

    def record(*args: Any, **kwargs: Any) -> Any:
        seen.setdefault(name, lambda: original(*args, **kwargs))
        return original(*args, **kwargs)

    setattr(owner, attr, record)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def _steps(sandbox_port: int) -> dict[str, Step]:
    """The steps of one real Analyze, with its arguments."""
    seen: dict[str, Step] = {}
    with ExitStack() as stack:
        for name, (owner, attr) in _step_timer.STEPS.items():
            stack.enter_context(_recording(owner, attr, name, seen))
        asyncio.run(capture(sandbox_port))
    missing = [name for name in STEPS if name not in seen]
    if missing:
        raise RuntimeError(f"the Analyze did not call {', '.join(missing)}")
    return {name: seen[name] for name in STEPS}


def _median_us(step: Step, calls: int, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(calls):
        if before is not None:
            before()
        t0 = time.perf_counter_ns()
        step()
        times.append(time.perf_counter_ns() - t0)
    return round(statistics.median(times) / 1000, 1)


def _in_server() -> dict[str, Any]:
    """The steps' median times inside a gateway serving sequential misses."""
    sp, gp = _servers.free_port(), _servers.free_port()
    fd, path = tempfile.mkstemp(suffix=".json", prefix="longread-steps-")
    os.close(fd)
    sb = _servers.sandbox(sp, cpu=LOADGEN_CPU)
    try:
        gw = _servers.gateway(
            gp, sp, cpu=SERVER_CPU, serve=("bench._step_timer", "--times-file", path)
        )
        try:
            calls = _step_timer.SKIP + IN_SERVER_CALLS
            stats = _load.ghz(gp, analyze_data(), total=calls, concurrency=1)
            if stats.ok != calls:
                raise RuntimeError(f"{calls - stats.ok} of {calls} misses failed: {stats.errors}")
        finally:
            gw.stop()  # the timers' medians are written once it has stopped
        with open(path) as f:
            timed: dict[str, Any] = json.load(f)
    finally:
        sb.stop()
        os.unlink(path)
    return timed


def main() -> dict[str, Any]:
    in_server = _in_server()
    os.sched_setaffinity(0, {SERVER_CPU})
    sp = _servers.free_port()
    sb = _servers.sandbox(sp, cpu=LOADGEN_CPU)
    try:
        steps = _steps(sp)
    finally:
        sb.stop()
    l2 = cache_geometry(SERVER_CPU).get("L2")
    evict_bytes = 2 * int(l2.split(",")[0]) if l2 else FALLBACK_EVICT_BYTES
    buffer = bytearray(evict_bytes)
    zeros = bytes(evict_bytes // 64)

    def evict() -> None:
        buffer[::64] = zeros  # one write to every line

    out: dict[str, Any] = {}
    for label, step in steps.items():
        warm = _median_us(step, WARM_CALLS)
        cold = _median_us(step, COLD_CALLS, evict)
        served = in_server[label]["median_us"]
        out[label] = {
            "warm_us": warm,
            "cold_us": cold,
            "in_server_us": served,
            "cold_over_warm": round(cold / warm, 2),
            "in_server_over_warm": round(served / warm, 2),
        }
    warm_sum = sum(s["warm_us"] for s in out.values())
    cold_sum = sum(s["cold_us"] for s in out.values())
    served_sum = sum(s["in_server_us"] for s in out.values())
    return {
        "steps": out,
        "all_steps": {
            "warm_us": round(warm_sum, 1),
            "cold_us": round(cold_sum, 1),
            "in_server_us": round(served_sum, 1),
            "cold_over_warm": round(cold_sum / warm_sum, 2),
            "in_server_over_warm": round(served_sum / warm_sum, 2),
        },
        "setup": {
            "request": "bench.overhead's Analyze (a 464-character document), one cache miss",
            "warm": f"median of {WARM_CALLS} calls back to back",
            "cold": f"median of {COLD_CALLS} calls, each after writing over {evict_bytes:,} "
            "bytes (one write a line)",
            "in_server": f"medians over {IN_SERVER_CALLS} sequential misses (ghz, one in "
            f"flight, every document unique) after {_step_timer.SKIP} uncounted, in "
            "longread serve with the steps wrapped by timers (bench._step_timer)",
            "core": SERVER_CPU,
            "l2": l2 or "unknown: sysfs does not describe the core's caches",
        },
    }


if __name__ == "__main__":
    print(json.dumps(main()))
