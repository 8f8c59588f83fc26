"""Instructions per cache-miss Analyze: a figure the machine's noise does not move.

Wall and CPU time on a shared 2-core machine vary by tens of percent between runs, more than
most changes to the request path are worth; the number of user-space instructions a request
costs the process under test varies by about 0.2 %. Each system (the gateway, the floor's bare
grpc.aio relay with its raw HTTP hop, and the floor with its hop through the gateway's vendor
layer, as in ``bench.overhead``) runs under valgrind's callgrind with counting off; after a
warm-up of sequential Analyze calls, counting is switched on for ``CALLS`` more (ghz, one in
flight, every document unique, so every call misses the cache and goes upstream to the
sandbox), then off, and the count is read from callgrind's dump. All threads are counted (the
gateway's and grpc's); the kernel's work (system calls, the loopback network) is not, which is
why these ratios are larger than the CPU-time ratios of ``bench.overhead``: the floor spends
most of its time in the kernel.

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

CALLS = 300
WARMUP = 50
START_S = 600.0  # a server's start-up under valgrind, counting off


def _counted(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]


def _instructions(out: Path) -> int:
    """The instructions in callgrind's dump (its ``totals:`` line)."""
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                total = max(total, int(line.split()[1]))
    return total


def _per_call(start: Callable[[int, Sequence[str]], _servers.Proc], tmp: Path, name: str) -> float:
    port = _servers.free_port()
    out = tmp / f"{name}.out"
    proc = start(port, _counted(out))
    try:
        _load.ghz(port, analyze_data(), total=WARMUP, concurrency=1, timeout_s=60.0)
        pid = str(proc.p.pid)
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        stats = _load.ghz(port, analyze_data(), total=CALLS, concurrency=1, timeout_s=60.0)
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
        if stats.ok != CALLS:
            raise RuntimeError(f"{name}: {CALLS - stats.ok} of {CALLS} calls failed")
        deadline = time.monotonic() + 30
        while not (count := _instructions(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.stop()
    log(f"{name}: {count / CALLS:,.0f} instructions per call")
    return count / CALLS


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
        per_call = {name: round(_per_call(start, tmp, name)) for name, start in starts.items()}
    finally:
        sb.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ours, floor, vendor = per_call["ours"], per_call["floor"], per_call["floor_vendor"]
    return {
        "instructions_per_miss": per_call,
        "ratios": {
            "ours_over_floor": round(ours / floor, 2),
            "ours_over_floor_vendor": round(ours / vendor, 2),
            "floor_vendor_over_floor": round(vendor / floor, 2),
        },
        "mechanisms_per_miss": ours - vendor,
        "setup": {
            "calls": CALLS,
            "warmup": WARMUP,
            "counted": "user-space instructions of the process under test, all threads "
            "(valgrind --tool=callgrind, counting switched on for the timed calls only)",
            "placement": "process under test on CPU 0; sandbox and ghz on CPU 1",
        },
    }


if __name__ == "__main__":
    print(json.dumps(main()))
