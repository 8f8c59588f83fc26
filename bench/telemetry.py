"""Telemetry overhead: server CPU per Analyze with tracing + metrics on (100 % sampling,
exporting over OTLP to a receiver) vs everything off, in the same run.

Two gateway processes per variant (REPLICAS), all sharing one sandbox process. The load goes to
every gateway at once: each worker sends the same request to each gateway in turn (in a new
order each time), so all of them serve the same requests over the same seconds and machine
noise (which drifts by 10-30 % over minutes on a shared 2-core VM) hits them alike. A variant's
CPU is the mean of its processes: one process alone carries a bias of its own of about +-2 %
(memory layout, hash seeds), which is close to the 5 % being measured. A second "off" variant
is the control: its difference from "off" is the noise floor of the comparison. Server CPU
comes from /proc/PID/task/*/schedstat (nanoseconds; the 10 ms ticks of /proc/PID/stat are 1.6 %
of a request's CPU at 300 requests a round).
Spans are exported in batches, every few seconds (the batcher's default, as in production),
so a round's spans may be sent during the next one: the overheads are therefore the ratios
of each variant's CPU over all rounds, counted until the last round's spans have been sent
(DRAIN_S after it), to the same for "off". Per-round ratios are shown beside them; a median
of those would miss the rounds that happened to send.
Two workloads over the same gateways: a short document (a few hundred characters, the worst
case: the least work for the spans to be measured against) and ``long_document``, a report of
about 60K characters in one call, the size this service is mostly sent.
Prints one JSON object. Run: python -m bench.telemetry
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from longread.client import AsyncClient, Options
from longread_sandbox.sample import generate_report
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench import _servers

ROUNDS = 7
REPLICAS = 2
# Longer than the batcher's export delay (5 s, telemetry.export.OtlpBatcher), so that every
# span queued when a workload ends is sent before its CPU is read.
DRAIN_S = 6.0
# A report of ~60K characters (~13K tokens), one call: the size this service is mostly sent.
LONG_DOC = generate_report(60_000)
LONG_REQUESTS = 60
LONG_ROUNDS = 5
REQUESTS = 300
CONCURRENCY = 4
DOC = "The tide turns at four. The harbour closes at nine. Ferries leave hourly. " * 6
_serial = itertools.count()
_order = random.Random(7)
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


async def _load(ports: list[int], requests: int = REQUESTS, doc: str = DOC) -> None:
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
            text = f"{doc}(request {next(_serial)})"
            # In a new order each time: the gateway served first after a pause would
            # otherwise always be the same one (it read about 1 % dearer than its twin).
            for c in _order.sample(clients, len(clients)):
                await c.analyze(text, Q, options=opts)

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
        short = await _rounds(gws, ports, DOC, REQUESTS, ROUNDS)
        long = await _rounds(gws, ports, LONG_DOC, LONG_REQUESTS, LONG_ROUNDS)
    finally:
        for reps in gws.values():
            for proc, _ in reps:
                proc.stop()
        sb.stop()
        rx.stop(0)
    parts = ("off_control", "traces_only", "metrics_only", "on_with_client_spans")
    return {
        "requests_per_round": REQUESTS,
        "rounds": ROUNDS,
        "processes_per_variant": REPLICAS,
        "server_cpu_ms_per_req": short.per_request(),
        "rounds_ms": {k: [round(x, 3) for x in v] for k, v in short.rounds.items()},
        "overhead_pct": short.overhead("on"),
        "overhead_pct_by_part": {k: short.overhead(k) for k in parts},
        "overhead_pct_by_process": {
            k: short.process_overheads(k)
            for k in ("off_control", "traces_only", "metrics_only", "on")
        },
        "overhead_pct_by_round": {
            k: short.round_overheads(k) for k in ("off_control", "traces_only", "on")
        },
        # The same gateways, sent a document of the size this service is for (one call).
        "long_document": {
            "chars": len(LONG_DOC),
            "requests_per_round": LONG_REQUESTS,
            "rounds": LONG_ROUNDS,
            "server_cpu_ms_per_req": long.per_request(),
            "overhead_pct": long.overhead("on"),
            "overhead_pct_by_part": {k: long.overhead(k) for k in parts},
        },
        "spans_exported": receiver.spans,
    }


@dataclass
class Measured:
    """Server CPU of each variant's processes over a workload, and per round (ms a request)."""

    requests: int
    totals_s: dict[str, list[float]]  # by variant, by process: all rounds and the drain
    rounds: dict[str, list[float]]  # by variant: the mean over its processes, each round

    def per_request(self) -> dict[str, float]:
        return {
            k: round(statistics.fmean(v) / self.requests * 1000, 3)
            for k, v in self.totals_s.items()
        }

    def _pct(self, cpu_s: float) -> float:
        """``cpu_s`` against the mean of the "off" processes, in % more."""
        return round((cpu_s / statistics.fmean(self.totals_s["off"]) - 1) * 100, 1)

    def overhead(self, name: str) -> float:
        return self._pct(statistics.fmean(self.totals_s[name]))

    def process_overheads(self, name: str) -> list[float]:
        # Each process of the variant on its own: the spread shows how much one process
        # alone would mislead.
        return [self._pct(t) for t in self.totals_s[name]]

    def round_overheads(self, name: str) -> list[float]:
        return [
            round((x / base - 1) * 100, 1)
            for x, base in zip(self.rounds[name], self.rounds["off"], strict=True)
        ]


async def _rounds(
    gws: dict[str, list[tuple[_servers.Proc, int]]],
    ports: list[int],
    doc: str,
    requests: int,
    rounds: int,
) -> Measured:
    """Server CPU of each process over ``rounds`` rounds of ``requests`` each, from a quiet
    start (spans of earlier work sent) to the export of the last round's spans."""

    def cpu_s() -> dict[str, list[float]]:
        return {name: [p.cpu_s_precise() for p, _ in reps] for name, reps in gws.items()}

    await asyncio.sleep(DRAIN_S)
    start = cpu_s()
    per_round: dict[str, list[float]] = {name: [] for name in gws}
    for _ in range(rounds):
        before = cpu_s()
        await _load(ports, requests, doc)
        after = cpu_s()
        for name in gws:
            ms = [(a - b) / requests * 1000 for a, b in zip(after[name], before[name], strict=True)]
            per_round[name].append(statistics.fmean(ms))
    await asyncio.sleep(DRAIN_S)
    end = cpu_s()
    totals = {name: [e - s for e, s in zip(end[name], start[name], strict=True)] for name in gws}
    return Measured(requests * rounds, totals, per_round)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
