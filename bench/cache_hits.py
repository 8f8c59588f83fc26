"""Cache hits: the highest rate at which the gateway answers Analyze from its cache with
p99 <= 5 ms, with the in-process cache and with Redis, beside a bare grpc.aio echo server that
returns the same AnalyzeResponse bytes, all in one run.

Placement (2 cores): the server under test on CPU 0; ghz, redis-server and the sandbox (only
used to fill the cache) on CPU 1. Sequential rounds (1 in flight) give the p50s, so "Redis
adds" is the Redis gateway's p50 minus the in-process gateway's p50.
Prints one JSON object. Run: python -m bench.cache_hits
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc
from longread.v1 import types_pb2 as pb

from bench import _load, _peers, _servers
from bench._load import LOADGEN_CPU, SERVER_CPU, Stats, log

DOC = "The tide turns at four. The harbour closes at nine. Ferries leave hourly. " * 6
QUESTION = "When does the harbour close?"
MODEL = "gpt-4.1-mini"
REQUEST = svc.AnalyzeRequest(
    document=pb.Document(text=DOC), instruction=QUESTION, model=pb.ModelSelection(model=MODEL)
)
DATA = REQUEST.SerializeToString()  # ghz sends it as is (-B)
SEQ_ROUNDS = 3
SEQ_CALLS = 500
STEP_S = 3.0
P99_MS = 5.0


async def prime(port: int) -> bytes:
    """Fills the cache (one miss), checks the next call is a hit, returns that response."""
    req = REQUEST
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = svc_grpc.AnalysisServiceStub(ch)
        await stub.Analyze(req)
        hit = await stub.Analyze(req)
    if hit.cache_status != pb.CACHE_STATUS_HIT:
        raise RuntimeError(f"expected a cache hit, got {pb.CacheStatus.Name(hit.cache_status)}")
    return hit.SerializeToString()


def main() -> dict[str, Any]:
    _load.exit_on_sigterm()
    machine = _load.MachineLoad()
    t_start = time.monotonic()
    sp, rp, gp, grp, fp = (_servers.free_port() for _ in range(5))
    procs: list[_servers.Proc] = []
    template = None
    try:
        sb = _servers.sandbox(sp, cpu=LOADGEN_CPU)
        procs.append(sb)
        rd = _peers.redis_server(rp, cpu=LOADGEN_CPU)
        procs.append(rd)
        local = _servers.gateway(gp, sp, cpu=SERVER_CPU)
        procs.append(local)
        remote = _servers.gateway(
            grp, sp, cpu=SERVER_CPU, env={"LONGREAD_REDIS_URL": f"redis://127.0.0.1:{rp}/0"}
        )
        procs.append(remote)
        hit = asyncio.run(prime(gp))
        asyncio.run(prime(grp))
        template = _load.write_temp(hit, ".pb")
        echo = _peers.floor(fp, response=template, cpu=SERVER_CPU)
        procs.append(echo)
        targets = {"in_process": (gp, local), "redis": (grp, remote), "floor": (fp, echo)}

        def run(name: str, total: int, rps: float | None) -> Stats:
            port, proc = targets[name]
            return _load.ghz(
                port, DATA, total=total, rps=rps, concurrency=1 if rps is None else 50, server=proc
            )

        log("warm-up")
        for name in targets:
            run(name, 500, None)
            run(name, 1000, 500)
        log("sequential")
        seq: dict[str, list[Stats]] = {name: [] for name in targets}
        for _ in range(SEQ_ROUNDS):
            for name in targets:
                seq[name].append(run(name, SEQ_CALLS, None))
        pooled = {k: _load.merge(v) for k, v in seq.items()}
        maxes: dict[str, float] = {}
        steps: dict[str, list[_load.Step]] = {}
        for name, start in (("floor", 800.0), ("in_process", 400.0), ("redis", 300.0)):
            log(f"max sustained: {name}")
            proc = targets[name][1]

            def at(rate: float, name: str = name) -> Stats:
                return run(name, int(rate * STEP_S), rate)

            def settle(proc: _servers.Proc = proc) -> None:
                _load.wait_idle([proc])

            maxes[name], steps[name] = _load.max_sustained(
                at,
                start=start,
                p99_ms=P99_MS,
                cap=8000,
                settle=settle,
                factor=1.4,
                lowest=start / 4,
            )

        def at_max(name: str) -> dict[str, Any]:
            ok = [s for s in steps[name] if s.ok and s.rps == maxes[name]]
            return ok[0].report() if ok else {}

        p50 = {k: v.pct(50) for k, v in pooled.items()}
        floor_rps = maxes["floor"]
        return {
            "in_process": {
                "rps": round(maxes["in_process"]),
                "p99_ms": at_max("in_process").get("p99_ms"),
                "over_floor": round(maxes["in_process"] / floor_rps, 3) if floor_rps else None,
                "seq_p50_ms": round(p50["in_process"], 3),
                "server_cpu_ms_per_req": pooled["in_process"].report()["server_cpu_ms_per_req"],
            },
            "redis": {
                "rps": round(maxes["redis"]),
                "p50_added_ms": round(p50["redis"] - p50["in_process"], 3),
                "p99_ms": at_max("redis").get("p99_ms"),
                "over_floor": round(maxes["redis"] / floor_rps, 3) if floor_rps else None,
                "seq_p50_ms": round(p50["redis"], 3),
                "server_cpu_ms_per_req": pooled["redis"].report()["server_cpu_ms_per_req"],
                "p50_added_ms_per_round": [
                    round(r.pct(50) - i.pct(50), 3)
                    for r, i in zip(seq["redis"], seq["in_process"], strict=True)
                ],
            },
            "floor_rps": round(floor_rps),
            "floor": {
                "seq_p50_ms": round(p50["floor"], 3),
                "server_cpu_ms_per_req": pooled["floor"].report()["server_cpu_ms_per_req"],
            },
            "sequential_latency_ms": {k: v.summary() for k, v in pooled.items()},
            "steps": {k: [s.report() for s in v] for k, v in steps.items()},
            "targets": {
                "in_process_ge_60pct_of_floor": maxes["in_process"] >= 0.6 * floor_rps,
                "redis_p50_added_le_0_5ms": (p50["redis"] - p50["in_process"]) <= 0.5,
            },
            "setup": {
                "response_bytes": len(hit),
                "criterion": f"100% success, p99 <= {P99_MS:g} ms, >= 95% of rate achieved, "
                f"{STEP_S:g} s per rate",
                "placement": f"gateways and echo server on CPU {SERVER_CPU}; ghz (--async --rps, "
                f"-c 50, binary request -B), redis-server and sandbox on CPU {LOADGEN_CPU}",
                "floor": "bench._floor pure echo: grpc.aio, returns the gateway's hit response",
                "redis": "redis-server on loopback, gateway LONGREAD_REDIS_URL (cache in Redis, "
                "in-process store only as fallback)",
                **_peers.env_note(),
            },
            "bench_wall_s": round(time.monotonic() - t_start, 1),
            "machine": machine.report(),
        }
    finally:
        for p in reversed(procs):
            p.stop()
        if template is not None:
            template.unlink(missing_ok=True)


if __name__ == "__main__":
    print(json.dumps(main()))
