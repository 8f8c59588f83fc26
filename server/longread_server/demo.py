"""The offline demo: gateway + built-in sandbox + analysis of a generated long report.

Runs the gateway in a background thread (its own event loop, sandbox in-process), then acts as
a user would: Estimate with a cost preference, then Stream a map-reduce analysis with a model
whose context is too small for the whole report, printing progress and the answer.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from longread.client import Client, Options
from longread.v1 import types_pb2 as pb

from longread_server.app import Gateway, start
from longread_server.config import load_config
from longread_server.sample import DEMO_QUESTION, FACTS, generate_report

DEMO_MODEL = "gpt-4o-mini"  # 128K context: the report needs map-reduce


class _Background:
    """A gateway on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        cfg = load_config(env={})
        cfg.listen = "127.0.0.1:0"
        self.gw: Gateway = asyncio.run_coroutine_threadsafe(start(cfg), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.gw.stop(1.0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def main() -> int:
    out = sys.stdout
    print("longread demo: gateway + sandbox on loopback, offline\n", file=out)
    bg = _Background()
    try:
        report = generate_report(700_000)
        target = f"127.0.0.1:{bg.gw.port}"
        print(f"gateway on {target}; sample report: {len(report):,} characters", file=out)
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
        return 0 if found else 1
    finally:
        bg.close()


if __name__ == "__main__":
    sys.exit(main())
