"""Upstream HTTP clients side by side on the gateway's miss path (``bench._client_variants``).

One gateway process per candidate client, identical but for the client, each on CPU 0; the
sandbox, ghz and this process (the Stream clients) on CPU 1. Rounds are interleaved (every
candidate once per round, in a new order each round) so machine noise hits all alike.

* ``short``: Analyze of a short document against a zero-latency sandbox, every request a
  cache miss (unique document): sequential latency (1 in flight), then CPU per call and
  throughput at saturation (``SATURATION_CONC`` in flight). This is where a client's per-call
  cost shows the most, since nothing else takes time.
* ``slow_streams``: ``STREAMS`` concurrent Stream calls against a sandbox that answers like a
  model: first token after ``TTFT_MS``, then ``TOKENS_PER_S`` tokens a second, one token per
  SSE event, the calls arriving evenly over ``ARRIVAL_S``. Time to first answer text and to
  the end of each stream as the caller sees them, gateway CPU per stream and the gateway's
  RSS while they run.

Prints one JSON object. Run: python -m bench.http_client [--rounds N] [--candidates A,B,...]
(by default ``CANDIDATES``; any of ``bench._client_variants.VARIANTS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from typing import Any

import grpc
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc
from longread.v1 import types_pb2 as pb

from bench import _client_variants, _load, _peers, _servers
from bench._load import LOADGEN_CPU, SERVER_CPU, log
from bench.overhead import analyze_data

MODEL = "gpt-4.1-mini"
ROUNDS = 3
# httpx on its default transport (the baseline), AsyncClient over LeanTransport, and the
# gateway's client (the same transport, sent to through UpstreamHttp). The former h11 client,
# measured against these in docs/performance-history.md, is in the repository's history.
CANDIDATES = ("httpx_tuned", "httpx_lean", "gateway")
BASE = "httpx_tuned"
SEQ_CALLS = 200
SATURATION_CONC = 16
SATURATION_CALLS = 1500
STREAMS = 100
ARRIVAL_S = 2.0  # the streams start evenly over this time, all open together at its end
TTFT_MS = 400
TOKENS_PER_S = 20
# Sentences that all share the question's terms, so the sandbox's extractive answer is three
# long sentences (some 100 tokens): a stream of several seconds at the pace above.
STREAM_DOC = (
    "The harbour report says the ferries keep their winter timetable, leaving the north "
    "quay every hour from six in the morning until the harbour closes at nine at night. "
    "According to the harbour report, storms from the west close the harbour early, and the "
    "ferries then wait at the south quay until the harbour master reopens the channel. "
    "The harbour report also says the tides turn at four, so the ferries avoid the shallow "
    "channel for an hour either side of low water, whatever the timetable says. "
    "Gulls nest on the old lighthouse. "
)
STREAM_QUESTION = "What does the harbour report say about the ferries and the harbour?"
_n = 0


def _stream_request() -> svc.StreamRequest:
    global _n
    _n += 1
    return svc.StreamRequest(
        document=pb.Document(text=f"{STREAM_DOC}(stream {_n} pid {os.getpid()})"),
        instruction=STREAM_QUESTION,
        model=pb.ModelSelection(model=MODEL),
    )


def _pcts(xs: list[float]) -> dict[str, float]:
    return _load.Stats(sent=len(xs), ok=len(xs), latencies_ms=xs, wall_s=1.0).summary()


def _range(xs: list[float], digits: int = 3) -> list[float]:
    return [round(min(xs), digits), round(statistics.median(xs), digits), round(max(xs), digits)]


async def _one_stream(stub: Any, delay_s: float) -> tuple[float, float, int] | None:
    """(ms to the first answer text, ms to the end, deltas) of one Stream call started after
    ``delay_s``; None if it failed."""
    await asyncio.sleep(delay_s)
    t0 = time.perf_counter()
    ttft = 0.0
    deltas = 0
    ok = False
    try:
        async for ev in stub.Stream(_stream_request(), timeout=60):
            if ev.HasField("delta") and ev.delta.text:
                deltas += 1
                if not ttft:
                    ttft = (time.perf_counter() - t0) * 1000
            elif ev.HasField("result"):
                ok = bool(ev.result.text)
    except grpc.aio.AioRpcError as exc:
        log(f"stream failed: {exc.code().name} {exc.details()}")
        return None
    return (ttft, (time.perf_counter() - t0) * 1000, deltas) if ok else None


async def _streams(port: int, proc: _servers.Proc, n: int) -> dict[str, Any]:
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(4)
    ]
    stubs = [svc_grpc.AnalysisServiceStub(ch) for ch in channels]
    rss_peak = proc.rss_mb()
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal rss_peak
        while not done.is_set():
            rss_peak = max(rss_peak, proc.rss_mb())
            await asyncio.sleep(0.05)

    rss0 = proc.rss_mb()
    cpu0 = proc.cpu_s()
    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(_one_stream(stubs[i % len(stubs)], i * ARRIVAL_S / n) for i in range(n))
    )
    wall = time.perf_counter() - t0
    done.set()
    await sampler
    cpu = proc.cpu_s() - cpu0
    for ch in channels:
        await ch.close()
    good = [r for r in results if r is not None]
    return {
        "ok": len(good),
        "ttft_ms": [r[0] for r in good],
        "total_ms": [r[1] for r in good],
        "deltas": statistics.median([r[2] for r in good]) if good else 0,
        "wall_s": wall,
        "cpu_ms_per_stream": cpu / n * 1000,
        "rss_mb": rss_peak,
        "rss_growth_mb": rss_peak - rss0,
    }


def _order(names: list[str], rng: random.Random) -> list[str]:
    order = names[:]
    rng.shuffle(order)
    return order


def short_part(names: list[str], rounds: int, rng: random.Random) -> dict[str, Any]:
    sp = _servers.free_port()
    ports = {n: _servers.free_port() for n in names}
    procs: list[_servers.Proc] = []
    try:
        sb = _servers.sandbox(sp, cpu=LOADGEN_CPU)
        procs.append(sb)
        gws = {}
        for n in names:
            gws[n] = _client_variants.gateway(ports[n], sp, n, cpu=SERVER_CPU)
            procs.append(gws[n])
        log("short: warm-up")
        for n in names:
            _load.ghz(ports[n], analyze_data(), total=300, concurrency=4)
        seq: dict[str, list[_load.Stats]] = {n: [] for n in names}
        sat: dict[str, list[_load.Stats]] = {n: [] for n in names}
        for r in range(rounds):
            log(f"short: round {r + 1}")
            for n in _order(names, rng):
                seq[n].append(_load.ghz(ports[n], analyze_data(), total=SEQ_CALLS, server=gws[n]))
            for n in _order(names, rng):
                _load.wait_idle([gws[n]])
                sat[n].append(
                    _load.ghz(
                        ports[n],
                        analyze_data(),
                        total=SATURATION_CALLS,
                        concurrency=SATURATION_CONC,
                        server=gws[n],
                    )
                )
        out: dict[str, Any] = {}
        for n in names:
            pooled = _load.merge(seq[n])
            out[n] = {
                "sequential_latency_ms": pooled.summary(),
                "sequential_p50_ms_per_round": [round(s.pct(50), 3) for s in seq[n]],
                "saturation_cpu_ms_per_call_per_round": [
                    round(s.server_cpu_s / s.sent * 1000, 3) for s in sat[n]
                ],
                "saturation_rps_per_round": [round(s.ok / s.wall_s, 1) for s in sat[n]],
                "errors": _load.merge(seq[n] + sat[n]).errors or None,
            }
        return out
    finally:
        for p in reversed(procs):
            p.stop()


async def streams_part(names: list[str], rounds: int, rng: random.Random) -> dict[str, Any]:
    sp = _servers.free_port()
    ports = {n: _servers.free_port() for n in names}
    procs: list[_servers.Proc] = []
    try:
        sb = _servers.sandbox(
            sp,
            "--ttft-ms",
            str(TTFT_MS),
            "--tokens-per-s",
            str(TOKENS_PER_S),
            "--delta-tokens",
            "1",
            cpu=LOADGEN_CPU,
        )
        procs.append(sb)
        gws = {}
        for n in names:
            gws[n] = _client_variants.gateway(ports[n], sp, n, cpu=SERVER_CPU)
            procs.append(gws[n])
        log("slow streams: warm-up")
        for n in names:
            await _streams(ports[n], gws[n], 20)
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for r in range(rounds):
            log(f"slow streams: round {r + 1}")
            for n in _order(names, rng):
                _load.wait_idle([gws[n]])
                runs[n].append(await _streams(ports[n], gws[n], STREAMS))
        out: dict[str, Any] = {}
        for n in names:
            rs = runs[n]
            ttft = [x for r in rs for x in r["ttft_ms"]]
            total = [x for r in rs for x in r["total_ms"]]
            out[n] = {
                "ok": f"{sum(r['ok'] for r in rs)}/{STREAMS * rounds}",
                "ttft_ms": _pcts(ttft),
                "ttft_p50_ms_per_round": [round(_pcts(r["ttft_ms"])["p50"], 1) for r in rs],
                "total_ms": _pcts(total),
                "total_p99_ms_per_round": [round(_pcts(r["total_ms"])["p99"], 1) for r in rs],
                "cpu_ms_per_stream_per_round": [round(r["cpu_ms_per_stream"], 2) for r in rs],
                "rss_mb_per_round": [round(r["rss_mb"], 1) for r in rs],
                "deltas_per_stream": rs[0]["deltas"],
            }
        return out
    finally:
        for p in reversed(procs):
            p.stop()


def _relative(part: dict[str, Any], key: str, base: str) -> dict[str, list[float]]:
    """Each candidate's per-round figure over the baseline's in the same round: min, median,
    max of the ratios."""
    out = {}
    for n, v in part.items():
        if n != base and key in v:
            ratios = [a / b for a, b in zip(v[key], part[base][key], strict=True) if b]
            out[n] = _range(ratios)
    return out


def main(rounds: int = ROUNDS, candidates: tuple[str, ...] = CANDIDATES) -> dict[str, Any]:
    _load.exit_on_sigterm()
    machine = _load.MachineLoad()
    t_start = time.monotonic()
    os.sched_setaffinity(0, {LOADGEN_CPU})
    rng = random.Random(7)
    names = list(candidates)
    unknown = set(names) - set(_client_variants.VARIANTS)
    if unknown:
        raise SystemExit(f"unknown candidates: {sorted(unknown)}")
    base = BASE if BASE in names else names[0]
    short = short_part(names, rounds, rng)
    streams = asyncio.run(streams_part(names, rounds, rng))
    return {
        "candidates": names,
        "short": short,
        "short_vs_" + base: {
            "sequential_p50": _relative(short, "sequential_p50_ms_per_round", base),
            "saturation_cpu_per_call": _relative(
                short, "saturation_cpu_ms_per_call_per_round", base
            ),
            "saturation_rps": _relative(short, "saturation_rps_per_round", base),
        },
        "slow_streams": streams,
        "slow_streams_vs_" + base: {
            "ttft_p50": _relative(streams, "ttft_p50_ms_per_round", base),
            "cpu_per_stream": _relative(streams, "cpu_ms_per_stream_per_round", base),
            "rss": _relative(streams, "rss_mb_per_round", base),
        },
        "setup": {
            "rounds": rounds,
            "short": f"{SEQ_CALLS} sequential Analyze calls, then {SATURATION_CALLS} with "
            f"{SATURATION_CONC} in flight, per candidate and round; zero-latency sandbox; "
            "unique documents (cache misses)",
            "slow_streams": f"{STREAMS} Stream calls arriving over {ARRIVAL_S:g} s per candidate "
            "and round; sandbox "
            f"--ttft-ms {TTFT_MS} --tokens-per-s {TOKENS_PER_S} --delta-tokens 1",
            "placement": f"gateways on CPU {SERVER_CPU}; sandbox, ghz and the Stream clients on "
            f"CPU {LOADGEN_CPU}",
            **_peers.env_note(),
        },
        "bench_wall_s": round(time.monotonic() - t_start, 1),
        "machine": machine.report(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    args = parser.parse_args()
    print(json.dumps(main(args.rounds, tuple(args.candidates.split(",")))))
