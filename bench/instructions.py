"""Instructions per cache-miss Analyze and Stream: figures the machine's noise does not move.

Wall and CPU time on a shared 2-core machine vary by tens of percent between runs, more than
most changes to the request path are worth; the number of user-space instructions a call
costs the process under test varies by about 0.5 %. Each system (the gateway, the floor's bare
grpc.aio relay with its raw HTTP hop, and the floor with its hop through the gateway's vendor
layer, as in ``bench.overhead``) runs under valgrind's callgrind with counting off; after a
warm-up of sequential calls, counting is switched on for ``CALLS`` more (ghz, one in flight,
every document unique, so every call misses the cache and goes upstream to the sandbox), then
off, and the count is read from callgrind's dump: Analyze, then Stream (the sandbox streams
its answer at full speed). Per relayed delta: Streams of a long answer (``bench.concurrency``'s
document, ~190 tokens) against a sandbox paced like a slow model, sending one token a delta,
then eight, the difference in instructions over the difference in deltas. The pace leaves
each delta its own read and wake-up even under valgrind, as a model's deltas come: at full
speed several would share one, and their count would look cheaper than a stream's. The
gateway runs with Stream coalescing off here (``server.stream_coalesce_after_ms = 0``), so its
deltas are counted one message each, as the floor's are, however slow valgrind makes it.
All threads are counted (the gateway's and grpc's); the kernel's
work (system calls, the loopback network) is not, which is why these ratios are larger than
the CPU-time ratios of ``bench.overhead``: the floor spends most of its time in the kernel.

Callgrind also simulates the caches of the core the process runs on, as sysfs gives them: its
first level, and its second as the last (``l2_misses_per_call``: the lines a call fetches from
beyond the core's own caches, its code and data alike): the gateway's own steps run two to
four times as slow once something has pushed them out of the second level (``bench.cold_cache``,
``docs/performance-history.md``).

Prints one JSON object (``{"unavailable": ...}`` without valgrind: ``apt-get install
valgrind``). Run: python -m bench.instructions
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc

from bench import _load, _peers, _servers
from bench._load import LOADGEN_CPU, SERVER_CPU, cache_geometry, log
from bench.concurrency import DOC, MODEL, QUESTION
from bench.overhead import analyze_data

STREAM = "longread.v1.AnalysisService.Stream"

CALLS = 300
WARMUP = 50
DELTA_CALLS = 6
DELTA_WARMUP = 3
DELTA_TOKENS = ("1", "8")  # tokens a delta: many deltas, then few, for the same answer
PACE = "50"  # tokens a second: each delta comes by itself, even to a process under valgrind
START_S = 600.0  # a server's start-up under valgrind, counting off


def _counted(out: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *_cache_sim(),
    ]


def _cache_sim() -> list[str]:
    """Callgrind's cache simulation with the server core's first level and, as its last
    level, the core's own second (the third is shared by every core and process)."""
    g = cache_geometry(SERVER_CPU)
    if not g:
        return []
    return ["--cache-sim=yes", f"--I1={g['I1']}", f"--D1={g['D1']}", f"--LL={g['L2']}"]


def _dumps(out: Path) -> set[Path]:
    return set(out.parent.glob(out.name + "*"))


def _count(
    pid: str, out: Path, port: int, call: str, calls: int, data: dict[str, Any]
) -> dict[str, float]:
    """Callgrind's events per call (``Ir``: instructions; with the cache simulated, its
    misses too) of ``calls`` sequential ``call``s of the request ``data`` (proto JSON),
    counted from zero and dumped by callgrind (a dump of its own, read from its ``events:``
    and ``totals:`` lines)."""
    before = _dumps(out)
    control = ["callgrind_control"]
    subprocess.run([*control, "-z", pid], check=True, capture_output=True)
    subprocess.run([*control, "-i", "on", pid], check=True, capture_output=True)
    stats = _load.ghz(port, data, total=calls, concurrency=1, call=call, timeout_s=60.0)
    subprocess.run([*control, "-i", "off", pid], check=True, capture_output=True)
    subprocess.run([*control, "-d", pid], check=True, capture_output=True)
    if stats.ok != calls:
        raise RuntimeError(f"{call}: {calls - stats.ok} of {calls} calls failed")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for dump in _dumps(out) - before:
            lines = dump.read_text(errors="replace").splitlines()
            events = next((ln.split()[1:] for ln in lines if ln.startswith("events:")), None)
            totals = next((ln.split()[1:] for ln in lines if ln.startswith("totals:")), None)
            if events and totals:
                return {e: int(n) / calls for e, n in zip(events, totals, strict=False)}
        time.sleep(0.2)
    raise TimeoutError("callgrind wrote no dump")


def _warm(port: int, call: str, calls: int, data: dict[str, Any]) -> None:
    _load.ghz(port, data, total=calls, concurrency=1, call=call, timeout_s=60.0)


_runs = itertools.count()


def long_answer_data(unique: bool = True) -> dict[str, Any]:
    """A request the sandbox answers at length (``bench.concurrency``'s); ``unique``: a run-
    and request-unique suffix (ghz template), so every call misses the cache."""
    suffix = f" (run {next(_runs)}, request {{{{.RequestNumber}}}})" if unique else ""
    return {"document": {"text": DOC + suffix}, "instruction": QUESTION, "model": {"model": MODEL}}


def _deltas(port: int) -> int:
    """How many answer deltas one Stream of the long-answer request sends."""
    request = json_format.ParseDict(long_answer_data(unique=False), svc.StreamRequest())
    request.document.text += f" (deltas {time.time()})"  # a miss, as every counted call
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = svc_grpc.AnalysisServiceStub(channel)
        return sum(1 for m in stub.Stream(request, timeout=60) if m.HasField("delta"))


Start = Callable[[int, Sequence[str], int], _servers.Proc]  # port, wrapper, sandbox port


def _l2_misses(events: dict[str, float]) -> int | None:
    """Lines fetched from beyond the second level, code and data (None: not simulated)."""
    if "ILmr" not in events:
        return None
    return round(events["ILmr"] + events["DLmr"] + events["DLmw"])


def _per_call(
    start: Start, tmp: Path, name: str, sandbox_port: int
) -> dict[str, tuple[int, int | None]]:
    port = _servers.free_port()
    out = tmp / f"{name}.out"
    proc = start(port, _counted(out), sandbox_port)
    counts = {}
    try:
        # (A StreamRequest has the fields of an AnalyzeRequest: the same JSON serves both.)
        for rpc, call in (("analyze", _load.ANALYZE), ("stream", STREAM)):
            _warm(port, call, WARMUP, analyze_data())
            events = _count(str(proc.p.pid), out, port, call, CALLS, analyze_data())
            counts[rpc] = (round(events["Ir"]), _l2_misses(events))
            log(f"{name}: {counts[rpc][0]:,} instructions, {counts[rpc][1]} L2 misses per {rpc}")
    finally:
        proc.stop()
    return counts


def _per_delta(start: Start, tmp: Path, name: str) -> int:
    """Instructions per relayed delta: the same Streams of a long answer against a sandbox
    sending one token a delta and one sending eight (paced, so each delta arrives by itself),
    the difference in instructions over the difference in deltas."""
    runs = []
    for tokens in DELTA_TOKENS:
        sp = _servers.free_port()
        sb = _servers.sandbox(sp, "--tokens-per-s", PACE, "--delta-tokens", tokens, cpu=LOADGEN_CPU)
        port = _servers.free_port()
        out = tmp / f"{name}-{tokens}.out"
        proc = start(port, _counted(out), sp)
        try:
            _warm(port, STREAM, DELTA_WARMUP, long_answer_data())
            deltas = _deltas(port)
            counted = _count(str(proc.p.pid), out, port, STREAM, DELTA_CALLS, long_answer_data())
            runs.append((counted["Ir"], deltas))
        finally:
            proc.stop()
            sb.stop()
    (many, n_many), (few, n_few) = runs
    per_delta = round((many - few) / (n_many - n_few))
    log(f"{name}: {per_delta:,} instructions per delta ({n_many} and {n_few} a Stream)")
    return per_delta


def _ratios(ours: int, floor: int, vendor: int) -> dict[str, Any]:
    return {
        "ours_over_floor": round(ours / floor, 2),
        "ours_over_floor_vendor": round(ours / vendor, 2),
        "floor_vendor_over_floor": round(vendor / floor, 2),
    }


def main() -> dict[str, Any]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return {"unavailable": "valgrind is not installed (apt-get install valgrind)"}
    tmp = Path(tempfile.mkdtemp(prefix="longread-instructions-"))

    def url(sp: int) -> str:
        return f"http://127.0.0.1:{sp}/v1"

    starts: dict[str, Start] = {
        # Coalescing off: slowed down by valgrind, the gateway would otherwise join deltas
        # that waited, and count fewer messages than the floor sends.
        "ours": lambda port, wrap, sp: _servers.gateway(
            port,
            sp,
            cpu=SERVER_CPU,
            wrapper=wrap,
            start_s=START_S,
            env={"LONGREAD_SERVER__STREAM_COALESCE_AFTER_MS": "0"},
        ),
        "floor": lambda port, wrap, sp: _peers.floor(
            port, upstream=url(sp), cpu=SERVER_CPU, wrapper=wrap, start_s=START_S
        ),
        "floor_vendor": lambda port, wrap, sp: _peers.floor(
            port, upstream=url(sp), http="vendor", cpu=SERVER_CPU, wrapper=wrap, start_s=START_S
        ),
    }
    sp = _servers.free_port()
    sb = _servers.sandbox(sp, cpu=LOADGEN_CPU)
    try:
        counts = {name: _per_call(start, tmp, name, sp) for name, start in starts.items()}
    finally:
        sb.stop()
    try:
        per_delta = {name: _per_delta(start, tmp, name) for name, start in starts.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {}
    systems = ("ours", "floor", "floor_vendor")
    for rpc in ("analyze", "stream"):
        ours, floor, vendor = (counts[s][rpc][0] for s in systems)
        out[rpc] = {
            "instructions_per_call": {"ours": ours, "floor": floor, "floor_vendor": vendor},
            **_ratios(ours, floor, vendor),
            "mechanisms_per_call": ours - vendor,
        }
        m_ours, m_floor, m_vendor = (counts[s][rpc][1] for s in systems)
        if m_ours is not None and m_floor is not None and m_vendor is not None:
            out[rpc]["l2_misses_per_call"] = {
                "ours": m_ours,
                "floor": m_floor,
                "floor_vendor": m_vendor,
            }
            out[rpc]["l2_misses_ours_over_floor"] = round(m_ours / max(m_floor, 1), 2)
            out[rpc]["l2_misses_ours_over_floor_vendor"] = round(m_ours / max(m_vendor, 1), 2)
    ours, floor, vendor = (per_delta[s] for s in ("ours", "floor", "floor_vendor"))
    out["delta"] = {"instructions_per_delta": per_delta, **_ratios(ours, floor, vendor)}
    return {
        **out,
        "setup": {
            "calls": f"{CALLS} sequential cache-miss Analyze calls, then {CALLS} Stream calls "
            f"(each after {WARMUP} of its own uncounted)",
            "stream": "the sandbox streams its answer at full speed",
            "delta": f"{DELTA_CALLS} Streams of a long answer against a sandbox at {PACE} "
            f"tokens/s sending {' and then '.join(DELTA_TOKENS)} tokens a delta (each after "
            f"{DELTA_WARMUP} uncounted); (instructions difference) / (deltas difference)",
            "gateway": "server.stream_coalesce_after_ms = 0 (every delta its own message)",
            "counted": "user-space instructions of the process under test, all threads "
            "(valgrind --tool=callgrind, counting switched on for the timed calls only)",
            "placement": "process under test on CPU 0; sandbox and ghz on CPU 1",
            "caches_simulated": cache_geometry(SERVER_CPU)
            or "none: sysfs does not describe the server core's caches",
        },
    }


if __name__ == "__main__":
    print(json.dumps(main()))
