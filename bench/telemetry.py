"""Telemetry overhead: server CPU per Analyze with tracing + metrics on (100 % sampling,
exporting over OTLP to a receiver) vs everything off, in the same run.

Two gateway processes per variant (REPLICAS), all sharing one sandbox process. The load goes
to every gateway at once: each worker sends the same request to each gateway in turn, so all of
them serve the same requests over the same seconds and machine noise (which drifts by 10-30 %
over minutes on a shared 2-core VM) hits them alike. A variant's CPU is the mean of its
processes: one process alone carries a bias of its own of about +-2 % (memory layout, hash
seeds), which is close to the 5 % being measured. A second "off" variant is the control: its
difference from "off" is the noise floor of the comparison. Server CPU comes from
/proc/PID/task/*/schedstat (nanoseconds; the 10 ms ticks of /proc/PID/stat are 1.6 % of a
request's CPU at 300 requests a round).
Prints one JSON object. Run: python -m bench.telemetry
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
from collections.abc import Iterable
from concurrent import futures
from typing import Any

import grpc
from longread.client import AsyncClient, Options
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench import _servers

ROUNDS = 7
REPLICAS = 2
REQUESTS = 300
CONCURRENCY = 4
DOC = "The tide turns at four. The harbour closes at nine. Ferries leave hourly. " * 6
_serial = itertools.count()
Q = "When does the harbour close?"


class _Receiver(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self.spans += sum(
                len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
            )
            return trace_service_pb2.ExportTraceServiceResponse()
        return metrics_service_pb2.ExportMetricsServiceResponse()


async def _load(ports: list[int], requests: int = REQUESTS) -> None:
    """``requests`` Analyze calls to each gateway, CONCURRENCY at a time per gateway."""
    clients = [AsyncClient(f"127.0.0.1:{port}", timeout=30) for port in ports]
    opts = Options(model="gpt-4.1-mini", cache="bypass")
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            # A document of its own per request: nothing is remembered from an earlier one
            # (plans, cache keys), as for a real cache miss. Each gateway gets the same ones.
            doc = f"{DOC}(request {next(_serial)})"
            for c in clients:
                await c.analyze(doc, Q, options=opts)

    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        for c in clients:
            await c.close()


async def main() -> dict[str, object]:
    receiver = _Receiver()
    rx = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, rx)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, rx)  # type: ignore[no-untyped-call]
    rx_port = rx.add_insecure_port("127.0.0.1:0")
    rx.start()
    otlp = {
        "LONGREAD_TELEMETRY__SAMPLING_RATIO": "1.0",
        "LONGREAD_TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{rx_port}",
    }
    variants = {
        "off": {},
        "off_control": {},
        "on": {**otlp, "LONGREAD_TELEMETRY__TRACES": "true", "LONGREAD_TELEMETRY__METRICS": "true"},
        "traces_only": {**otlp, "LONGREAD_TELEMETRY__TRACES": "true"},
        "metrics_only": {**otlp, "LONGREAD_TELEMETRY__METRICS": "true"},
        # Opt-in extras: a span per upstream HTTP request and Redis command. These come from
        # the httpx instrumentation, so this variant also calls upstream through httpx
        # instead of the lean client: most of its difference is httpx itself.
        "on_with_client_spans": {
            **otlp,
            "LONGREAD_TELEMETRY__TRACES": "true",
            "LONGREAD_TELEMETRY__METRICS": "true",
            "LONGREAD_TELEMETRY__CLIENT_SPANS": "true",
        },
    }
    sb_port = _servers.free_port()
    sb = _servers.sandbox(sb_port)
    gws: dict[str, list[tuple[_servers.Proc, int]]] = {name: [] for name in variants}
    try:
        for _ in range(REPLICAS):
            for name, env in variants.items():
                port = _servers.free_port()
                gws[name].append((_servers.gateway(port, sb_port, env=env), port))
        ports = [port for reps in gws.values() for _, port in reps]
        await _load(ports, 50)  # warm-up
        per_req: dict[str, list[float]] = {name: [] for name in variants}
        by_process: dict[str, list[list[float]]] = {name: [] for name in variants}

        def cpu_s() -> dict[str, list[float]]:
            return {name: [p.cpu_s_precise() for p, _ in reps] for name, reps in gws.items()}

        for _ in range(ROUNDS):
            before = cpu_s()
            await _load(ports)
            after = cpu_s()
            for name in variants:
                ms = [
                    (a - b) / REQUESTS * 1000
                    for a, b in zip(after[name], before[name], strict=True)
                ]
                by_process[name].append(ms)
                per_req[name].append(statistics.fmean(ms))
    finally:
        for reps in gws.values():
            for proc, _ in reps:
                proc.stop()
        sb.stop()
        rx.stop(0)
    med = {name: statistics.median(v) for name, v in per_req.items()}

    def pct(ratios: Iterable[float]) -> float:
        # Median over rounds of the round's ratio to "off": the machine's drift between
        # rounds cancels out within a round.
        return round((statistics.median(ratios) - 1) * 100, 1)

    def overhead(name: str) -> float:
        return pct(x / base for x, base in zip(per_req[name], per_req["off"], strict=True))

    def process_overheads(name: str) -> list[float]:
        # Each process of the variant on its own against the mean of the "off" processes:
        # the spread shows how much one process alone would mislead.
        rounds = list(zip(by_process[name], per_req["off"], strict=True))
        return [pct(r[i] / base for r, base in rounds) for i in range(REPLICAS)]

    return {
        "requests_per_round": REQUESTS,
        "rounds": ROUNDS,
        "processes_per_variant": REPLICAS,
        "server_cpu_ms_per_req": {k: round(v, 3) for k, v in med.items()},
        "rounds_ms": {k: [round(x, 3) for x in v] for k, v in per_req.items()},
        "overhead_pct": overhead("on"),
        "overhead_pct_by_part": {
            k: overhead(k)
            for k in ("off_control", "traces_only", "metrics_only", "on_with_client_spans")
        },
        "overhead_pct_by_process": {
            k: process_overheads(k) for k in ("off_control", "traces_only", "metrics_only", "on")
        },
        "spans_exported": receiver.spans,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
