"""The HTTP face against the gRPC face: latency of the same small Analyze (a cache hit, so the
figure is the gateway and its protocol, not the upstream) over gRPC, Connect JSON and Connect
binary, and the gateway's CPU per request for each.

One gateway process (gRPC and HTTP listeners) pinned to one core, the sandbox and the load
generator to the other; the load generator sends
one request at a time, taking the three protocols in turn (a new order each round), so that
machine noise hits them alike. gRPC goes through the Python client (grpc.aio, HTTP/2), Connect
through httpx (HTTP/1.1, keep-alive), as curl or a browser would, and through connectrpc's own
client (JSON): the server's CPU separates what the gateway spends from what each client does.
Prints one JSON object.
Run: python -m bench.connect
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
from connectrpc.compat import google_protobuf_json_codec
from longread.client import AsyncClient
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import types_pb2 as pb
from longread.v1.analysis_service_connect import AnalysisServiceClient

from bench import _servers

SERVER_CPU, LOADGEN_CPU = 0, 1
ROUNDS = 400
WARMUP = 30
DOC = "The tide turns at four. The harbour closes at nine. Ferries leave hourly. " * 6
Q = "When does the harbour close?"
PATH = "/longread.v1.AnalysisService/Analyze"


async def main() -> dict[str, object]:
    sb_port, port, http_port = _servers.free_port(), _servers.free_port(), _servers.free_port()
    sandbox = _servers.sandbox(sb_port)
    gw = _servers.gateway(port, sb_port, env={"LONGREAD_HTTP__LISTEN": f"127.0.0.1:{http_port}"})
    _servers.wait_port(http_port)
    body_json = json.dumps({"document": {"text": DOC}, "instruction": Q}).encode()
    request = svc.AnalyzeRequest(document=pb.Document(text=DOC), instruction=Q)
    body_proto = request.SerializeToString()
    try:
        async with (
            AsyncClient(f"127.0.0.1:{port}", timeout=30) as grpc_client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as http,
            AnalysisServiceClient(
                f"http://127.0.0.1:{http_port}", codec=google_protobuf_json_codec()
            ) as connect_client,
        ):

            async def grpc_call() -> None:
                await grpc_client.analyze(DOC, Q)

            async def connect_json() -> None:
                r = await http.post(
                    PATH, content=body_json, headers={"content-type": "application/json"}
                )
                r.raise_for_status()

            async def connect_proto() -> None:
                r = await http.post(
                    PATH, content=body_proto, headers={"content-type": "application/proto"}
                )
                r.raise_for_status()

            async def connectrpc_json() -> None:
                await connect_client.analyze(request)

            calls: dict[str, Callable[[], Awaitable[None]]] = {
                "grpc": grpc_call,
                "connect_json": connect_json,
                "connect_proto": connect_proto,
                "connectrpc_client_json": connectrpc_json,
            }
            for _ in range(WARMUP):
                for call in calls.values():
                    await call()
            times: dict[str, list[float]] = {k: [] for k in calls}
            cpu: dict[str, float] = dict.fromkeys(calls, 0.0)
            order = list(calls)
            rng = random.Random(7)
            for _ in range(ROUNDS):
                rng.shuffle(order)
                for name in order:
                    c0 = gw.cpu_s_precise()
                    t0 = time.perf_counter()
                    await calls[name]()
                    times[name].append(time.perf_counter() - t0)
                    cpu[name] += gw.cpu_s_precise() - c0
    finally:
        gw.stop()
        sandbox.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    out: dict[str, object] = {
        "benchmark": "connect",
        "requests_per_protocol": ROUNDS,
        "load_avg": os.getloadavg()[0],
        "median_ms": {k: round(v * 1000, 3) for k, v in med.items()},
        "p90_ms": {k: round(statistics.quantiles(v, n=10)[-1] * 1000, 3) for k, v in times.items()},
        "server_cpu_ms_per_request": {k: round(v / ROUNDS * 1000, 3) for k, v in cpu.items()},
        "median_ratio_to_grpc": {k: round(med[k] / med["grpc"], 3) for k in med if k != "grpc"},
        "server_cpu_ratio_to_grpc": {k: round(cpu[k] / cpu["grpc"], 3) for k in cpu if k != "grpc"},
    }
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
