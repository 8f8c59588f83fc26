"""The offline demo: gateway + embedded sandbox + analysis of a generated long report.

Starts the gateway as a child process (``longread serve`` on a free loopback port, with no
vendor key in its environment, so it serves from the sandbox it embeds), waits until its gRPC
health service says SERVING, then acts as a user would: Estimate with a cost preference, then
Stream a map-reduce analysis with a model whose context is too small for the whole report,
printing progress and the answer. The gateway also serves its page (``http.ui``) on a second
port, so the same analysis can be tried in a browser; run from a terminal, the demo keeps the
gateway up for that until Ctrl-C. Needs the ``longread`` distribution (client and gateway).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from longread.client import Client, Options
from longread.v1 import types_pb2 as pb

from longread_sandbox.sample import DEMO_QUESTION, FACTS, generate_report

DEMO_MODEL = "gpt-4o-mini"  # 128K context: the report needs map-reduce
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _gateway_env() -> dict[str, str]:
    """This environment without vendor keys (``*_API_KEY``) or gateway settings
    (``LONGREAD_*``), whatever the shell has set: the child gateway runs on its defaults, so it
    serves from the sandbox. It logs warnings only, as text."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith("LONGREAD_")
    }
    env["LONGREAD_TELEMETRY__JSON_LOGS"] = "false"
    env["LONGREAD_TELEMETRY__LOG_LEVEL"] = "WARNING"
    return env


class _Gateway:
    """``longread serve`` in a child process, on a free loopback port."""

    def __init__(self) -> None:
        self.target = f"127.0.0.1:{_free_port()}"
        self.page = f"http://127.0.0.1:{_free_port()}/"
        host, port = self.target.split(":")
        env = _gateway_env()
        env["LONGREAD_HTTP__LISTEN"] = self.page.removeprefix("http://").rstrip("/")
        env["LONGREAD_HTTP__UI"] = "true"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "longread.cli", "serve", "--host", host, "--port", port],
            env=env,
            stdout=subprocess.DEVNULL,  # its "serving on" line; the demo prints its own
        )
        try:
            self._wait_serving()
        except BaseException:
            self.close()
            raise

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        # Short reconnect backoff: the port is refused until the child listens, and the
        # default backoff (1 s, growing) would leave the channel idle long after that.
        opts = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
        with grpc.insecure_channel(self.target, options=opts) as ch:
            stub: Any = health_pb2_grpc.HealthStub(ch)  # the stubs' types omit Check
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the gateway exited with status {self.proc.returncode}")
                try:
                    r = stub.Check(
                        health_pb2.HealthCheckRequest(), timeout=1.0, wait_for_ready=True
                    )
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not start within {START_TIMEOUT_S:.0f}s")
                time.sleep(0.1)

    def close(self) -> None:
        """SIGTERM: the gateway drains and exits; killed if it does not in time."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> int:
    out = sys.stdout
    print("longread demo: gateway + sandbox on loopback, offline\n", file=out)
    gateway = _Gateway()
    try:
        report = generate_report(700_000)
        target = gateway.target
        print(f"gateway on {target}; sample report: {len(report):,} characters", file=out)
        print(f"the page to try it in a browser: {gateway.page}", file=out)
        print(f'question: "{DEMO_QUESTION}"\n', file=out)
        with Client(target, timeout=120) as client:
            est = client.estimate(report, DEMO_QUESTION, options=Options(preference="cheapest"))
            p = est.plan
            print(
                f"Estimate: {p.document_tokens:,} tokens; cheapest model that fits in one call:"
                f" {p.model.vendor}/{p.model.model} at ~${p.estimated_cost.total_usd:.4f}",
                file=out,
            )
            for f in list(est.candidates)[:6]:
                how = "one call" if f.fits_single_pass else f"{f.calls} calls (map-reduce)"
                print(
                    f"  {f.model.vendor + '/' + f.model.model:32} {how:>24}"
                    f"  ${f.estimated_cost.total_usd:.4f}",
                    file=out,
                )
            print(f"\nStream with {DEMO_MODEL} (128K context -> map-reduce):", file=out)
            answer = ""
            started = time.monotonic()
            maps_done = 0
            for ev in client.stream(report, DEMO_QUESTION, options=Options(model=DEMO_MODEL)):
                kind = ev.WhichOneof("event")
                if kind == "plan":
                    print(
                        f"  plan: {len(ev.plan.chunks)} chunks, {ev.plan.map_calls} map + "
                        f"{ev.plan.reduce_calls} reduce calls",
                        file=out,
                    )
                elif kind == "chunk_done" and ev.chunk_done.stage == pb.STAGE_MAP:
                    maps_done += 1
                    r = ev.chunk_done.result
                    print(
                        f"  map {maps_done:>2}: chunk {r.index} [{r.start:,}:{r.end:,}] "
                        f"{r.usage.input_tokens:,} tokens in",
                        file=out,
                    )
                elif kind == "delta":
                    if not answer:
                        print("  answer: ", end="", file=out)
                    answer += ev.delta.text
                    print(ev.delta.text, end="", flush=True, file=out)
                elif kind == "result":
                    res = ev.result
                    print(
                        f"\n  done in {time.monotonic() - started:.2f}s: "
                        f"{res.usage.calls} calls, {res.usage.input_tokens:,} tokens in, "
                        f"{res.usage.output_tokens:,} out, ${res.cost.total_usd:.4f}",
                        file=out,
                    )
        found = "turbine bearings" in answer
        fact = FACTS["northfield_delay"]
        print(f"\nplanted fact {'found' if found else 'NOT found'} in the answer: {fact}", file=out)
        if sys.stdin.isatty():  # someone is there to open the page
            print(f"\nthe gateway stays up for the page at {gateway.page}; Ctrl-C stops", file=out)
            with contextlib.suppress(KeyboardInterrupt):
                gateway.proc.wait()
        return 0 if found else 1
    finally:
        gateway.close()


if __name__ == "__main__":
    sys.exit(main())
