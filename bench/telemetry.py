"""Telemetry overhead: server CPU per Analyze with tracing + metrics on (100 % sampling,
exporting over OTLP to a receiver) vs everything off, in the same run.

Two gateway processes share one sandbox process; rounds alternate between them so machine
noise hits both alike. Server CPU comes from /proc. Prints one JSON object.
Run: python -m bench.telemetry
"""

from __future__ import annotations

import asyncio
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

ROUNDS = 5
REQUESTS = 300
CONCURRENCY = 4
DOC = "The tide turns at four. The harbour closes at nine. Ferries leave hourly. " * 6
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


async def _load(port: int) -> None:
    async with AsyncClient(f"127.0.0.1:{port}", timeout=30) as c:
        left = REQUESTS

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await c.analyze(DOC, Q, options=Options(model="gpt-4.1-mini", cache="bypass"))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def main() -> dict[str, object]:
    receiver = _Receiver()
    rx = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, rx)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, rx)  # type: ignore[no-untyped-call]
    rx_port = rx.add_insecure_port("127.0.0.1:0")
    rx.start()
    sb_port, off_port, on_port = (_servers.free_port() for _ in range(3))
    sb = _servers.sandbox(sb_port)
    off = _servers.gateway(off_port, sb_port)
    on = _servers.gateway(
        on_port,
        sb_port,
        env={
            "LONGREAD_TELEMETRY__TRACES": "true",
            "LONGREAD_TELEMETRY__METRICS": "true",
            "LONGREAD_TELEMETRY__SAMPLING_RATIO": "1.0",
            "LONGREAD_TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{rx_port}",
            "LONGREAD_TELEMETRY__METRICS_INTERVAL_MS": "1000",
        },
    )
    try:
        await _load(off_port)  # warm-up both
        await _load(on_port)
        per_req: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(ROUNDS):
            for name, proc, port in (("off", off, off_port), ("on", on, on_port)):
                before = proc.cpu_s()
                await _load(port)
                per_req[name].append((proc.cpu_s() - before) / REQUESTS * 1000)
    finally:
        for p in (on, off, sb):
            p.stop()
        rx.stop(0)
    off_ms = statistics.median(per_req["off"])
    on_ms = statistics.median(per_req["on"])
    return {
        "requests_per_round": REQUESTS,
        "rounds": ROUNDS,
        "server_cpu_ms_per_req": {"off": round(off_ms, 3), "on": round(on_ms, 3)},
        "rounds_ms": {k: [round(x, 3) for x in v] for k, v in per_req.items()},
        "overhead_pct": round((on_ms / off_ms - 1) * 100, 1),
        "spans_exported": receiver.spans,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
