"""Instructions per cache-miss Analyze and Stream: figures the machine's noise does not move.

Wall and CPU time on a shared 2-core machine vary by tens of percent between runs, more than
most changes to the request path are worth; the number of user-space instructions a call
costs the process under test varies by about 0.2 %. Each system (the gateway, the floor's bare
grpc.aio relay with its raw HTTP hop, and the floor with its hop through the gateway's vendor
layer, as in ``bench.overhead``) runs under valgrind's callgrind with counting off; after a
warm-up of sequential calls, counting is switched on for ``CALLS`` more (ghz, one in flight,
every document unique, so every call misses the cache and goes upstream to the sandbox), then
off, and the count is read from callgrind's dump: Analyze, then Stream (the sandbox streams
its answer at full speed). All threads are counted (the gateway's and grpc's); the kernel's
work (system calls, the loopback network) is not, which is why these ratios are larger than
the CPU-time ratios of ``bench.overhead``: the floor spends most of its time in the kernel.

Prints one JSON object (``{"unavailable": ...}`` without valgrind: ``apt-get install
valgrind``). Run: python -m bench.instructions
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import _load, _peers, _servers
from bench._load import LOADGEN_CPU, SERVER_CPU, log
from bench.overhead import analyze_data

STREAM = "longread.v1.AnalysisService.Stream"

CALLS = 300
WARMUP = 50
START_S = 600.0  # a server's start-up under valgrind, counting off


def _counted(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]


def _dumps(out: Path) -> set[Path]:
    return set(out.parent.glob(out.name + "*"))


def _count(pid: str, out: Path, port: int, call: str, data: dict[str, Any]) -> float:
    """Instructions per call of ``CALLS`` sequential ``call``s, counted from zero and dumped
    by callgrind (a dump of its own, read from its ``totals:`` line)."""
    before = _dumps(out)
    control = ["callgrind_control"]
    subprocess.run([*control, "-z", pid], check=True, capture_output=True)
    subprocess.run([*control, "-i", "on", pid], check=True, capture_output=True)
    stats = _load.ghz(port, data, total=CALLS, concurrency=1, call=call, timeout_s=60.0)
    subprocess.run([*control, "-i", "off", pid], check=True, capture_output=True)
    subprocess.run([*control, "-d", pid], check=True, capture_output=True)
    if stats.ok != CALLS:
        raise RuntimeError(f"{call}: {CALLS - stats.ok} of {CALLS} calls failed")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for dump in _dumps(out) - before:
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1]) / CALLS
        time.sleep(0.2)
    raise TimeoutError("callgrind wrote no dump")


def _per_call(
    start: Callable[[int, Sequence[str]], _servers.Proc], tmp: Path, name: str
) -> dict[str, int]:
    port = _servers.free_port()
    out = tmp / f"{name}.out"
    proc = start(port, _counted(out))
    counts = {}
    try:
        # (A StreamRequest has the fields of an AnalyzeRequest: the same JSON serves both.)
        for rpc, call in (("analyze", _load.ANALYZE), ("stream", STREAM)):
            _load.ghz(port, analyze_data(), total=WARMUP, concurrency=1, call=call, timeout_s=60.0)
            counts[rpc] = round(_count(str(proc.p.pid), out, port, call, analyze_data()))
            log(f"{name}: {counts[rpc]:,} instructions per {rpc}")
    finally:
        proc.stop()
    return counts


def main() -> dict[str, Any]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return {"unavailable": "valgrind is not installed (apt-get install valgrind)"}
    tmp = Path(tempfile.mkdtemp(prefix="longread-instructions-"))
    sp = _servers.free_port()
    sb = _servers.sandbox(sp, cpu=LOADGEN_CPU)
    upstream = f"http://127.0.0.1:{sp}/v1"
    starts: dict[str, Callable[[int, Sequence[str]], _servers.Proc]] = {
        "ours": lambda port, wrap: _servers.gateway(
            port, sp, cpu=SERVER_CPU, wrapper=wrap, start_s=START_S
        ),
        "floor": lambda port, wrap: _peers.floor(
            port, upstream=upstream, cpu=SERVER_CPU, wrapper=wrap, start_s=START_S
        ),
        "floor_vendor": lambda port, wrap: _peers.floor(
            port, upstream=upstream, http="vendor", cpu=SERVER_CPU, wrapper=wrap, start_s=START_S
        ),
    }
    try:
        counts = {name: _per_call(start, tmp, name) for name, start in starts.items()}
    finally:
        sb.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {}
    for rpc in ("analyze", "stream"):
        ours, floor, vendor = (counts[s][rpc] for s in ("ours", "floor", "floor_vendor"))
        out[rpc] = {
            "instructions_per_call": {"ours": ours, "floor": floor, "floor_vendor": vendor},
            "ours_over_floor": round(ours / floor, 2),
            "ours_over_floor_vendor": round(ours / vendor, 2),
            "floor_vendor_over_floor": round(vendor / floor, 2),
            "mechanisms_per_call": ours - vendor,
        }
    return {
        **out,
        "setup": {
            "calls": f"{CALLS} sequential cache-miss Analyze calls, then {CALLS} Stream calls "
            f"(each after {WARMUP} of its own uncounted)",
            "stream": "the sandbox streams its answer at full speed",
            "counted": "user-space instructions of the process under test, all threads "
            "(valgrind --tool=callgrind, counting switched on for the timed calls only)",
            "placement": "process under test on CPU 0; sandbox and ghz on CPU 1",
        },
    }


if __name__ == "__main__":
    print(json.dumps(main()))
