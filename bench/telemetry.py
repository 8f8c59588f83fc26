"""Telemetry overhead: server CPU per Analyze with tracing + metrics on (100 % sampling,
exporting over OTLP to a receiver) vs everything off, in the same run.

One gateway process per variant, all sharing one sandbox process. The load goes to every
variant at once: each worker sends the same request to each gateway in turn, so all of them
serve the same requests over the same seconds and machine noise (which drifts by 10-30 % over
minutes on a shared 2-core VM) hits them alike. A second "off" gateway is the control: its
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
    gws: dict[str, tuple[_servers.Proc, int]] = {}
    try:
        for name, env in variants.items():
            port = _servers.free_port()
            gws[name] = (_servers.gateway(port, sb_port, env=env), port)
        ports = [port for _, port in gws.values()]
        await _load(ports, 50)  # warm-up
        per_req: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(ROUNDS):
            before = {name: proc.cpu_s_precise() for name, (proc, _) in gws.items()}
            await _load(ports)
            for name, (proc, _) in gws.items():
                per_req[name].append((proc.cpu_s_precise() - before[name]) / REQUESTS * 1000)
    finally:
        for proc, _ in gws.values():
            proc.stop()
        sb.stop()
        rx.stop(0)
    med = {name: statistics.median(v) for name, v in per_req.items()}

    def overhead(name: str) -> float:
        # Median over rounds of the round's ratio to "off": the machine's drift between
        # rounds cancels out within a round.
        ratios = [x / base for x, base in zip(per_req[name], per_req["off"], strict=True)]
        return round((statistics.median(ratios) - 1) * 100, 1)

    return {
        "requests_per_round": REQUESTS,
        "rounds": ROUNDS,
        "server_cpu_ms_per_req": {k: round(v, 3) for k, v in med.items()},
        "rounds_ms": {k: [round(x, 3) for x in v] for k, v in per_req.items()},
        "overhead_pct": overhead("on"),
        "overhead_pct_by_part": {
            k: overhead(k)
            for k in ("off_control", "traces_only", "metrics_only", "on_with_client_spans")
        },
        "spans_exported": receiver.spans,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
