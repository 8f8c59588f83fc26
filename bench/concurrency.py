"""Many slow streams at once: concurrent Stream calls against an upstream paced like a real
model, through the gateway, the bare relay floor, LiteLLM and the Portkey gateway, at rising N.

The upstream is the sandbox with ``--ttft-ms 500 --tokens-per-s 20 --delta-tokens 2``: the
first event half a second after the request, then a delta of two tokens every 100 ms, about
200 tokens per answer (the document holds three long sentences that answer the question, the
sandbox's whole answer). The sandbox sends deltas of a fixed size, so "1-3 tokens" is its mean.

Systems (each row is one process under test, the others stopped or idle):

* ``direct``: the clients stream from the sandbox themselves. It measures the harness (sandbox
  and clients on one core) and tells the N above which the harness, not a relay, is late.
* ``ours``: the gateway's Stream RPC over gRPC, defaults (``python -m bench._lag_probe``:
  ``longread serve`` plus a task on its loop that records the loop's lag).
* ``ours_uncapped``: the same with ``server.upstream_max_connections = 0``; the default cap
  (1,000 upstream connections) queues every stream beyond it, a setting, not the relay's cost.
* ``ours_every_delta`` (on request): the same with ``server.stream_coalesce_after_ms = 0``, every
  delta its own message however far the Stream is behind: what coalescing is worth.
* ``ours_asyncio`` (on request): the gateway on asyncio's own event loop
  (``server.event_loop = "asyncio"``) instead of uvloop; ``ours_python_gc`` (on request) with
  Python's own garbage-collector thresholds (``server.gc_thresholds = []``).
* ``floor``: ``bench._floor``'s Stream (grpc.aio + a minimal HTTP/1.1 client, no pool cap), on
  the gateway's default event loop; ``floor_asyncio`` (on request) on asyncio's own;
  ``floor_vendor`` (on request) with its hop through the gateway's vendor layer (the OpenAI
  adapter over ``UpstreamHttp`` and ``LeanTransport``), none of the gateway's mechanisms: what
  that layer costs per delta; ``floor_python_gc`` (on request) with Python's own
  garbage-collector thresholds where the floor otherwise takes the gateway's
  (``server.gc_thresholds``): what that setting is worth to a bare relay.
* ``litellm`` and ``portkey``: their OpenAI-compatible endpoints, streamed over HTTP/1.1.

Each system first gets an unreported warm-up of ``WARMUP_STREAMS``. A level starts N streams
over ``RAMP_S`` (a start, not a burst of connects) and waits until each has ended or hit
``STREAM_TIMEOUT_S``; the client is one process (``--worker``) on the load
core, so it never shares the core of the process it measures. Per level and system:

* completed share: streams that ended normally with the whole answer;
* RSS of the process under test: peak during the level, and (peak - idle) / N per open stream;
* loop lag p99 (ours): the probe's samples during the level;
* added TTFT: time to the first text minus the sandbox's 500 ms;
* relay delay: each delta's lateness against its stream's own schedule (delta k is due k x
  100 ms after the stream's most punctual delta), so a relay that holds a delta back shows,
  while a constant shift (already in TTFT) does not; coalesced deltas count as the last one
  they carry;
* CPU per delta: the process's CPU during the level over the deltas the sandbox sent for it.

The harness (sandbox and client sharing one core) is itself late beyond some N, so each
relay's TTFT and delay percentiles are also given net of the
``direct`` row at the same N (``*_net``: this row's statistic minus direct's), as
``bench.overhead`` subtracts the direct call. Headline per system: the largest N at which
every stream completes with net added TTFT p99 and net relay delay p99 both <= 100 ms. A
system stops at its first failing level; then, unless ``--no-refine``, levels between it and
the last passing one are tried, halving the gap until it is within ``REFINE_TO`` of the
passing N, so that a ratio of two systems' N is not an artefact of the levels' spacing (500
and 1,000 are 2x apart, where the target is 0.7). Direct runs at every level any system
reached, and one beyond.
Placement (2 cores): the process under test on CPU 0; sandbox and client on CPU 1. Prints one
JSON object.
Run: python -m bench.concurrency [--quick] [--levels 1000,2000] [--systems ours,floor]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import _lag_probe, _load, _peers, _servers
from bench._floor import RawHttp, streamed_chat_body
from bench._load import LOADGEN_CPU, SERVER_CPU, log

TTFT_MS = 500.0
TOKENS_PER_S = 20.0
DELTA_TOKENS = 2
DT_S = DELTA_TOKENS / TOKENS_PER_S
# The levels and on, with steps below and between them: on a 2-core machine the harness
# itself (sandbox and client on one core) falls behind well before the levels. The last
# stays below the open-file limit a process gets here (one socket per HTTP stream).
LEVELS = (50, 100, 250, 500, 1000, 1500, 2000, 5000, 10000, 15000)
WARMUP_STREAMS = 20
QUICK_LEVELS = (100, 500)
# Between a system's last passing level and its first failing one, levels are tried until the
# gap is within this share of the passing N.
REFINE_TO = 0.1
RAMP_S = 5.0
STREAM_TIMEOUT_S = 40.0  # a stream lasts ~10 s; beyond this the level has failed anyway
STREAMS_PER_CHANNEL = 100  # gRPC streams per HTTP/2 connection of the client
BOUND_MS = 100.0
MODEL = "gpt-4.1-mini"
QUESTION = "When does the harbour close?"
# Three sentences that answer the question, the sandbox's whole answer (~200 tokens); the rest
# does not, so the answer is the same whatever unique suffix a stream's document carries.
DOC = " ".join(
    [
        "The tide turns at four.",
        "The harbour closes at nine in the evening on weekdays, when the last ferry from the "
        "northern islands has tied up at the stone quay and the harbour master has walked the "
        "length of the breakwater to check every mooring line, every lamp and every gate "
        "before the chain is drawn across the entrance.",
        "Ferries leave hourly.",
        "On Saturdays the harbour closes an hour later, at ten, because the summer market "
        "keeps the fishing boats, the pleasure craft and the little water taxis busy well "
        "into the night, and the town council decided years ago that the harbour should close "
        "only when the market stalls along the quay are folded away.",
        "In winter storms the harbour may close early, whenever the wind at the lighthouse "
        "passes forty knots, and then the harbour master sounds the horn three times so that "
        "every skipper still outside knows the entrance will close within the hour and that "
        "no boat may leave the harbour until the morning tide has turned and the pilot has "
        "rowed out to read the swell again.",
    ]
)
SYSTEMS = ("direct", "ours", "ours_uncapped", "floor", "litellm", "portkey")
# The floor's variants: the event loop each runs on, its HTTP hop and its garbage collector's
# thresholds (``bench._floor --event-loop``, ``--http``, ``--gc-thresholds``; None: the
# gateway's default, "": Python's own).
FLOORS: dict[str, tuple[str, str, str | None]] = {
    "floor": ("auto", "raw", None),
    "floor_asyncio": ("asyncio", "raw", None),
    "floor_vendor": ("auto", "vendor", None),
    "floor_python_gc": ("auto", "raw", ""),
}
# The gateway's variants: the settings each runs with (environment variables).
OURS: dict[str, dict[str, str]] = {
    "ours": {},
    "ours_uncapped": {"LONGREAD_SERVER__UPSTREAM_MAX_CONNECTIONS": "0"},
    "ours_every_delta": {"LONGREAD_SERVER__STREAM_COALESCE_AFTER_MS": "0"},
    "ours_asyncio": {"LONGREAD_SERVER__EVENT_LOOP": "asyncio"},
    "ours_python_gc": {"LONGREAD_SERVER__GC_THRESHOLDS": "[]"},
}


def doc(i: int, run: str) -> str:
    return f"{DOC}\n\n(run {run}, stream {i})"


def chat_body(text: str) -> bytes:
    return streamed_chat_body(MODEL, text, QUESTION)


def _content(line: bytes) -> str | None:
    if not line.startswith(b"data: {"):
        return None
    choices = json.loads(line[6:]).get("choices") or [{}]
    content = (choices[0].get("delta") or {}).get("content")
    return content if isinstance(content, str) else None


async def sse(http: RawHttp, body: bytes) -> Any:
    """(text, done) pairs of an SSE chat completion stream: each content delta, then the end."""
    buf = b""
    async for chunk in http.stream(body):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.startswith(b"data: [DONE]"):
                yield "", True
                continue
            text = _content(line)
            if text:
                yield text, False


async def answer_boundaries(sandbox_port: int) -> list[int]:
    """Cumulative lengths of the sandbox's deltas for our request, unpaced."""
    http = RawHttp(
        f"http://127.0.0.1:{sandbox_port}/v1/chat/completions",
        {"x-sandbox-ttft-ms": "0", "x-sandbox-tokens-per-s": "0"},
    )
    cum, total = [], 0
    async for text, end in sse(http, chat_body(doc(0, "boundaries"))):
        if not end:
            total += len(text)
            cum.append(total)
    await http.aclose()
    return cum


# -- the client, one process per level ---------------------------------------------------------


async def worker(spec: dict[str, Any]) -> dict[str, Any]:
    n, ramp, run = spec["n"], spec["ramp_s"], spec["run"]
    cum: list[int] = spec["cum"]
    ttft: list[float] = []
    delays: list[float] = []
    errors: Counter[str] = Counter()
    ok = 0
    stubs: list[Any] = []
    channels: list[Any] = []
    http: RawHttp | None = None
    if spec["kind"] == "grpc":
        import grpc
        from longread.v1 import analysis_service_pb2 as svc
        from longread.v1 import analysis_service_pb2_grpc as svc_grpc
        from longread.v1 import types_pb2 as pb

        for _ in range(max(1, math.ceil(n / STREAMS_PER_CHANNEL))):
            ch = grpc.aio.insecure_channel(
                spec["target"], options=[("grpc.use_local_subchannel_pool", 1)]
            )
            channels.append(ch)
            stubs.append(svc_grpc.AnalysisServiceStub(ch))

        async def events(i: int) -> Any:
            req = svc.StreamRequest(
                document=pb.Document(text=doc(i, run)),
                instruction=QUESTION,
                model=pb.ModelSelection(model=MODEL),
            )
            async for ev in stubs[i % len(stubs)].Stream(req):
                if ev.HasField("delta") and ev.delta.text:
                    yield ev.delta.text, False
                elif ev.HasField("result"):
                    yield "", True
    else:
        http = RawHttp(spec["target"], spec.get("headers") or {})

        async def events(i: int) -> Any:
            assert http is not None
            async for item in sse(http, chat_body(doc(i, run))):
                yield item

    async def one(i: int) -> None:
        nonlocal ok
        await asyncio.sleep(ramp * i / n)
        t0 = time.perf_counter()
        arrivals: list[tuple[float, int]] = []
        chars = 0
        done = False
        try:
            async with asyncio.timeout(spec["timeout_s"]):
                async for text, end in events(i):
                    if end:
                        done = True
                    else:
                        chars += len(text)
                        arrivals.append((time.perf_counter(), chars))
        except Exception as exc:  # every failure is counted, by kind
            errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
        if done and chars == cum[-1]:
            ok += 1
        elif done:
            errors[f"answer of {chars} chars, expected {cum[-1]}"] += 1
        if not arrivals:
            return
        ttft.append((arrivals[0][0] - t0) * 1000 - TTFT_MS)
        # The upstream delta an event ends with (several when the relay coalesced them).
        offsets = [t - max(0, bisect.bisect_right(cum, c) - 1) * DT_S for t, c in arrivals]
        anchor = min(offsets)
        delays.extend(round((o - anchor) * 1000, 2) for o in offsets)

    await asyncio.gather(*(one(i) for i in range(n)))
    for ch in channels:
        await ch.close()
    if http is not None:
        await http.aclose()
    return {"ok": ok, "ttft": ttft, "delays": delays, "errors": dict(errors.most_common(5))}


# -- the parent --------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float | None:
    v = _load._pct(sorted(xs), q)
    return None if math.isnan(v) else round(v, 1)


class Target:
    """One system under test: its process, how the client reaches it, its loop-lag file."""

    def __init__(
        self,
        name: str,
        proc: _servers.Proc,
        kind: str,
        target: str,
        headers: dict[str, str] | None = None,
        lag_file: str | None = None,
    ) -> None:
        self.name, self.proc, self.kind, self.target = name, proc, kind, target
        self.headers = headers or {}
        self.lag_file = lag_file


def level(
    t: Target, sb: _servers.Proc, n: int, cum: list[int], tmp: Path, ramp_s: float = RAMP_S
) -> dict[str, Any]:
    run = f"{t.name}-{n}-{time.monotonic():.0f}"
    spec = {
        "kind": t.kind,
        "target": t.target,
        "headers": t.headers,
        "n": n,
        "ramp_s": ramp_s,
        "timeout_s": STREAM_TIMEOUT_S,
        "cum": cum,
        "run": run,
    }
    spec_file, out_file = tmp / f"{run}.spec.json", tmp / f"{run}.out.json"
    spec_file.write_text(json.dumps(spec))
    _load.wait_idle([t.proc, sb])
    rss0 = t.proc.rss_mb()
    cpu0, sb0 = t.proc.cpu_s(), sb.cpu_s()
    t0 = time.monotonic()
    client = _servers.Proc(
        [sys.executable, "-m", "bench.concurrency", "--worker", str(spec_file), str(out_file)],
        cpu=LOADGEN_CPU,
    )
    deadline = t0 + ramp_s + STREAM_TIMEOUT_S + 30
    rss_peak = rss0
    client_cpu = 0.0
    while client.p.poll() is None and time.monotonic() < deadline:
        rss_peak = max(rss_peak, t.proc.rss_mb())
        client_cpu = client.cpu_s()
        time.sleep(0.25)
    client.stop()
    wall = time.monotonic() - t0
    cpu, sb_cpu = t.proc.cpu_s() - cpu0, sb.cpu_s() - sb0
    if not out_file.exists():
        return {"n": n, "passed": False, "error": "client did not finish in time"}
    res = json.loads(out_file.read_text())
    deltas = n * len(cum)
    row: dict[str, Any] = {
        "n": n,
        "completed": round(res["ok"] / n, 4),
        "added_ttft_ms": {"p50": pct(res["ttft"], 50), "p99": pct(res["ttft"], 99)},
        "relay_delay_ms": {"p50": pct(res["delays"], 50), "p99": pct(res["delays"], 99)},
        "rss_mb": round(rss_peak, 1),
        "rss_idle_mb": round(rss0, 1),
        "rss_kb_per_stream": round((rss_peak - rss0) * 1024 / n, 1),
        "cpu_us_per_delta": round(cpu / deltas * 1e6, 1) if t.name != "direct" else None,
        "server_cores": round(cpu / wall, 2),
        "sandbox_cores": round(sb_cpu / wall, 2),
        "client_cores": round(client_cpu / wall, 2),
        "wall_s": round(wall, 1),
    }
    if t.lag_file:
        lag = _lag_probe.read(t.lag_file, t0, t0 + wall)
        row["loop_lag_ms"] = {"p50": pct(lag, 50), "p99": pct(lag, 99), "samples": len(lag)}
    if res["errors"]:
        row["errors"] = res["errors"]
    p99s = (row["added_ttft_ms"]["p99"], row["relay_delay_ms"]["p99"])
    row["passed_raw"] = res["ok"] == n and all(p is not None and p <= BOUND_MS for p in p99s)
    return row


def judge(row: dict[str, Any], direct: dict[str, Any]) -> None:
    """Adds the figures net of the harness (this row's minus the direct row's at the same N,
    statistic by statistic) and the verdict on them."""
    for key in ("added_ttft_ms", "relay_delay_ms"):
        mine, base = row.get(key) or {}, direct.get(key) or {}
        row[f"{key}_net"] = {
            q: round(mine[q] - base[q], 1)
            if mine.get(q) is not None and base.get(q) is not None
            else None
            for q in ("p50", "p99")
        }
    p99s = (row["added_ttft_ms_net"]["p99"], row["relay_delay_ms_net"]["p99"])
    row["passed"] = row.get("completed") == 1.0 and all(
        p is not None and p <= BOUND_MS for p in p99s
    )


def _brief(row: dict[str, Any]) -> str:
    keys = ("completed", "added_ttft_ms", "added_ttft_ms_net", "relay_delay_ms_net", "rss_mb")
    verdict = {True: "PASS", False: "FAIL", None: "-"}[row.get("passed", row.get("passed_raw"))]
    return (
        f"{verdict} "
        + " ".join(f"{k}={row.get(k)}" for k in keys if k in row)
        + (f" lag={row['loop_lag_ms']}" if "loop_lag_ms" in row else "")
    )


def start(
    name: str, sb: _servers.Proc, sp: int, api_base: str, tmp: Path, reasons: dict[str, str]
) -> tuple[Target | None, Any]:
    """Starts system ``name``; returns its Target and what to stop afterwards."""
    port = _servers.free_port()
    if name in OURS:
        lag = str(tmp / f"{name}.lag")
        env = OURS[name] or None
        proc = _servers.gateway(
            port,
            sp,
            cpu=SERVER_CPU,
            env=env,
            serve=("bench._lag_probe", "--lag-file", lag),
        )
        return Target(name, proc, "grpc", f"127.0.0.1:{port}", lag_file=lag), proc
    if name in FLOORS:
        event_loop, http, gc_thresholds = FLOORS[name]
        proc = _peers.floor(
            port,
            upstream=api_base,
            http=http,
            cpu=SERVER_CPU,
            event_loop=event_loop,
            gc_thresholds=gc_thresholds,
        )
        return Target(name, proc, "grpc", f"127.0.0.1:{port}"), proc
    if name == "litellm":
        try:
            _peers.ensure_litellm()
            llm = _peers.LiteLLM(port, api_base, MODEL, cpu=SERVER_CPU)
            llm.wait_ready()
        except Exception as exc:
            reasons[name] = f"{type(exc).__name__}: {exc}"
            return None, None
        auth = {"authorization": f"Bearer {llm.key}"}
        return Target(name, llm.proc, "http", llm.url, auth), llm
    if name == "portkey":
        try:
            _peers.ensure_portkey()
            pk = _peers.Portkey(port, api_base, cpu=SERVER_CPU)
            pk.wait_ready()
        except Exception as exc:
            reasons[name] = f"{type(exc).__name__}: {exc}"
            return None, None
        return Target(name, pk.proc, "http", pk.url, pk.headers), pk
    raise ValueError(name)


def between(passed: int, failed: int) -> int | None:
    """The next level to try between a passing N and a failing one above it (None: the gap is
    within ``REFINE_TO`` of the passing N), a multiple of 5 for legibility."""
    if failed - passed <= REFINE_TO * passed:
        return None
    mid = 5 * round((passed + failed) / 10)
    return mid if passed < mid < failed else None


def main(levels: tuple[int, ...], systems: tuple[str, ...], refine: bool = True) -> dict[str, Any]:
    _load.exit_on_sigterm()
    machine = _load.MachineLoad()
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="longread-bench-conc-"))
    sp = _servers.free_port()
    sb = _servers.sandbox(
        sp,
        "--ttft-ms",
        f"{TTFT_MS:g}",
        "--tokens-per-s",
        f"{TOKENS_PER_S:g}",
        "--delta-tokens",
        str(DELTA_TOKENS),
        cpu=LOADGEN_CPU,
    )
    api_base = f"http://127.0.0.1:{sp}/v1"
    rows: dict[str, list[dict[str, Any]]] = {}
    reasons: dict[str, str] = {}
    try:
        cum = asyncio.run(answer_boundaries(sp))
        log(f"answer: {len(cum)} deltas, {cum[-1]} chars")
        direct = Target("direct", sb, "http", f"{api_base}/chat/completions")
        baseline: dict[int, dict[str, Any]] = {}

        def base(n: int) -> dict[str, Any]:
            if n not in baseline:
                baseline[n] = level(direct, sb, n, cum, tmp)
                log(f"direct N={n}: {_brief(baseline[n])}")
            return baseline[n]

        def passes(target: Target, n: int) -> bool:
            """Runs level ``n`` of ``target``, recorded; whether it passed."""
            direct_row = base(n)
            row = level(target, sb, n, cum, tmp)
            judge(row, direct_row)
            rows[target.name].append(row)
            log(f"{target.name} N={n}: {_brief(row)}")
            return bool(row["passed"])

        for name in systems:
            if name == "direct":
                continue
            target, stopper = start(name, sb, sp, api_base, tmp, reasons)
            if target is None:
                log(f"{name}: unavailable ({reasons[name]})")
                continue
            rows[name] = []
            try:
                # Warm-up, not reported: lazy imports, JIT (Node), first connections.
                level(target, sb, WARMUP_STREAMS, cum, tmp, ramp_s=0.5)

                passed = 0
                failed = None
                for n in levels:
                    if not passes(target, n):
                        failed = n
                        break
                    passed = n
                while refine and passed and failed is not None:
                    n_next = between(passed, failed)
                    if n_next is None:
                        break
                    if passes(target, n_next):
                        passed = n_next
                    else:
                        failed = n_next
            finally:
                if stopper is not None:
                    stopper.stop()
        if "direct" in systems:  # alone, or where the relays stopped: the next level too
            reached = max(baseline, default=0)
            for n in [x for x in levels if x > reached][:1] if baseline else levels:
                base(n)
    finally:
        sb.stop()
    rows = {"direct": [baseline[n] for n in sorted(baseline)], **rows}
    for rs in rows.values():
        rs.sort(key=lambda r: r["n"])
    for r in rows["direct"]:
        r["passed"] = r["passed_raw"]
    best = {name: max((r["n"] for r in rs if r["passed"]), default=0) for name, rs in rows.items()}

    def ratio(a: str, b: str) -> float | None:
        return round(best[a] / best[b], 2) if best.get(a) and best.get(b) else None

    def at_least(a: str, b: str, factor: float, strict: bool = False) -> bool | None:
        """None when either failed its lowest level (no N to compare) or did not run."""
        if not best.get(a) or not best.get(b):
            return None
        return best[a] > factor * best[b] if strict else best[a] >= factor * best[b]

    ours_rows = rows.get("ours") or []
    at_best = next((r for r in ours_rows if r["n"] == best.get("ours")), None)
    tried_max = max(levels)
    out: dict[str, Any] = {
        "max_n_all_complete_p99_le_100ms": best,
        "harness_limit_n": best.get("direct"),
        "ratios": {
            "ours_over_floor": ratio("ours", "floor"),
            "ours_over_litellm": ratio("ours", "litellm"),
            "ours_over_portkey": ratio("ours", "portkey"),
            "ours_uncapped_over_floor": ratio("ours_uncapped", "floor"),
        },
        "targets": {
            "ours_ge_0_7_of_floor": at_least("ours", "floor", 0.7),
            "ours_ge_3x_litellm": at_least("ours", "litellm", 3),
            "ours_above_portkey": at_least("ours", "portkey", 1, strict=True),
            "ours_rss_le_100kb_per_stream": (at_best["rss_kb_per_stream"] <= 100)
            if at_best
            else None,
            "note": "null: a side failed its lowest level or did not run; a figure equal to the "
            f"largest N tried ({tried_max}) is a floor of that system's capacity",
        },
        "levels": rows,
        "unavailable": reasons,
        "setup": {
            "upstream": f"sandbox --ttft-ms {TTFT_MS:g} --tokens-per-s {TOKENS_PER_S:g} "
            f"--delta-tokens {DELTA_TOKENS} (fixed delta size), {len(cum)} deltas, "
            f"{cum[-1]} chars per answer",
            "levels": list(levels),
            "refined_to": REFINE_TO if refine else None,
            "ramp_s": RAMP_S,
            "stream_timeout_s": STREAM_TIMEOUT_S,
            "client": "one process per level (python -m bench.concurrency --worker): grpc.aio "
            f"over ceil(N/{STREAMS_PER_CHANNEL}) channels, or bench._floor.RawHttp (one "
            "HTTP/1.1 connection per open stream)",
            "placement": f"process under test on CPU {SERVER_CPU}; sandbox and client on CPU "
            f"{LOADGEN_CPU} (taskset)",
            "litellm": f"{_peers.LITELLM_VERSION}, one worker",
            "portkey": f"@portkey-ai/gateway {_peers.PORTKEY_VERSION} on Node, headless, "
            f"overrides {_peers.PORTKEY_OVERRIDES}",
            **_peers.env_note(),
        },
        "bench_wall_s": round(time.monotonic() - t_start, 1),
        "machine": machine.report(),
    }
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help=f"levels {QUICK_LEVELS}")
    parser.add_argument("--levels", default="", help="comma-separated N, e.g. 1000,2000")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument(
        "--no-refine",
        action="store_true",
        help="stop at each system's first failing level, with no levels tried below it",
    )
    a = parser.parse_args()
    if a.worker:
        spec = json.loads(Path(a.worker[0]).read_text())
        res = asyncio.run(worker(spec))
        Path(a.worker[1]).write_text(json.dumps(res))
        return
    levels: tuple[int, ...] = LEVELS
    if a.quick or os.environ.get("BENCH_QUICK"):
        levels = QUICK_LEVELS
    if a.levels:
        levels = tuple(int(x) for x in a.levels.split(","))
    systems = tuple(s for s in a.systems.split(",") if s)
    unknown = set(systems) - set(SYSTEMS) - set(OURS) - set(FLOORS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    print(json.dumps(main(levels, systems, refine=not a.no_refine)))


if __name__ == "__main__":
    cli()
