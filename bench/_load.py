"""Load generators and the statistics every benchmark reports.

The servers under test run on CPU ``SERVER_CPU``; the load generators (and the sandbox, which
every request path shares) run on ``LOADGEN_CPU``, so a generator never eats the core of the
process it measures. gRPC load is ghz (Go, ``--async --rps``: open loop, a request is sent on
schedule whether or not earlier ones have finished); HTTP load is vegeta (Go, constant-rate
open loop). Both report every request's latency, from which we compute our own percentiles.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._servers import ROOT, Proc

TOOLS = ROOT / ".tools"
SERVER_CPU = 0
LOADGEN_CPU = 1
GHZ_VERSION = "v0.121.0"
VEGETA_VERSION = "v12.13.0"
_GO_PACKAGES = {
    "ghz": f"github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}",
    "vegeta": f"github.com/tsenart/vegeta/v12@{VEGETA_VERSION}",
}
PROTO = "protos/longread/v1/analysis_service.proto"
ANALYZE = "longread.v1.AnalysisService.Analyze"


_T0 = time.monotonic()


def log(*parts: object) -> None:
    """Progress goes to stderr (with seconds since start); stdout carries only the JSON."""
    print(f"[{time.monotonic() - _T0:6.1f}s]", *parts, file=sys.stderr, flush=True)


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so a benchmark's ``finally`` still stops its processes."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def tool(name: str) -> str:
    """Path of a Go load generator in .tools, installed from the Go module proxy if missing."""
    path = TOOLS / name
    if not path.exists():
        log(f"installing {_GO_PACKAGES[name]} into {TOOLS}")
        subprocess.run(
            ["go", "install", _GO_PACKAGES[name]],
            env={**os.environ, "GOBIN": str(TOOLS)},
            cwd=tempfile.gettempdir(),
            check=True,
            timeout=600,
        )
    return str(path)


class MachineLoad:
    """Busy and stolen CPU of the whole machine (/proc/stat) since creation: other work on a
    shared box shows up as busy cores well above what the benchmark's own processes use."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0, self.steal0 = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(vals) - vals[3] - vals[4] - vals[7], vals[7]

    def report(self) -> dict[str, float]:
        busy, steal = self._read()
        ticks = os.sysconf("SC_CLK_TCK") * (time.monotonic() - self.t0)
        return {
            "busy_cores_avg": round((busy - self.busy0) / ticks, 2),
            "steal_cores_avg": round((steal - self.steal0) / ticks, 3),
        }


def cache_geometry(cpu: int) -> dict[str, str]:
    """The caches of ``cpu`` as valgrind takes them (``size,ways,line`` in bytes), by level
    and type: ``I1``, ``D1`` and ``L2``. Empty when sysfs does not describe them all in a form
    valgrind can simulate."""
    found = {}
    for index in sorted(Path(f"/sys/devices/system/cpu/cpu{cpu}/cache").glob("index*")):
        try:
            level, kind, size, ways, line = (
                (index / f).read_text().strip()
                for f in ("level", "type", "size", "ways_of_associativity", "coherency_line_size")
            )
        except OSError:
            continue
        name = {("1", "Data"): "D1", ("1", "Instruction"): "I1", ("2", "Unified"): "L2"}.get(
            (level, kind)
        )
        if not (name and size.endswith("K")):
            continue
        size_bytes = int(size[:-1]) * 1024
        sets = size_bytes // (int(ways) * int(line))
        if sets & (sets - 1) == 0:  # valgrind simulates only a power of two of sets
            found[name] = f"{size_bytes},{ways},{line}"
    return found if len(found) == 3 else {}


def pinned(cpu: int | None, cmd: Sequence[str]) -> list[str]:
    return list(cmd) if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def _pct(sorted_ms: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_ms:
        return math.nan
    k = max(0, math.ceil(q / 100 * len(sorted_ms)) - 1)
    return sorted_ms[k]


@dataclass
class Stats:
    """One load run: latencies of successful requests (ms) and the outcome of every request."""

    sent: int
    ok: int
    latencies_ms: list[float] = field(repr=False)
    wall_s: float
    errors: dict[str, int] = field(default_factory=dict)
    server_cpu_s: float = 0.0  # CPU of the process under test during the run
    sandbox_cpu_s: float = 0.0

    @property
    def success(self) -> float:
        return self.ok / self.sent if self.sent else 0.0

    def pct(self, q: float) -> float:
        return _pct(sorted(self.latencies_ms), q)

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies_ms)
        return {
            "mean": round(statistics.fmean(lat), 3) if lat else math.nan,
            "p50": round(_pct(lat, 50), 3),
            "p90": round(_pct(lat, 90), 3),
            "p99": round(_pct(lat, 99), 3),
        }

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sent": self.sent,
            "success": round(self.success, 4),
            "achieved_rps": round(self.sent / self.wall_s, 1) if self.wall_s else 0.0,
            "latency_ms": self.summary(),
            "server_cpu_ms_per_req": round(self.server_cpu_s / self.sent * 1000, 3)
            if self.sent
            else None,
        }
        if self.sandbox_cpu_s:
            out["sandbox_cpu_ms_per_req"] = round(self.sandbox_cpu_s / self.sent * 1000, 3)
        if self.errors:
            out["errors"] = dict(list(self.errors.items())[:5])
        return out


def overhead(ours: Stats, base: Stats) -> dict[str, float]:
    """Our latency minus the baseline's, statistic by statistic."""
    a, b = ours.summary(), base.summary()
    return {k: round(a[k] - b[k], 3) for k in a}


def merge(runs: Sequence[Stats]) -> Stats:
    """Pools several runs (e.g. interleaved rounds) into one."""
    errors: dict[str, int] = {}
    for r in runs:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    return Stats(
        sent=sum(r.sent for r in runs),
        ok=sum(r.ok for r in runs),
        latencies_ms=[x for r in runs for x in r.latencies_ms],
        wall_s=sum(r.wall_s for r in runs),
        errors=errors,
        server_cpu_s=sum(r.server_cpu_s for r in runs),
        sandbox_cpu_s=sum(r.sandbox_cpu_s for r in runs),
    )


def _measured(fn: Callable[[], Stats], server: Proc | None, sandbox: Proc | None = None) -> Stats:
    c0 = server.cpu_s() if server else 0.0
    s0 = sandbox.cpu_s() if sandbox else 0.0
    st = fn()
    st.server_cpu_s = server.cpu_s() - c0 if server else 0.0
    st.sandbox_cpu_s = sandbox.cpu_s() - s0 if sandbox else 0.0
    return st


def ghz(
    port: int,
    data: Mapping[str, Any] | bytes,
    *,
    total: int,
    rps: float | None = None,
    concurrency: int = 1,
    call: str = ANALYZE,
    server: Proc | None = None,
    sandbox: Proc | None = None,
    timeout_s: float = 20.0,
    cpu: int | None = LOADGEN_CPU,
) -> Stats:
    """``total`` calls with ghz. ``rps`` None: closed loop with ``concurrency`` in flight
    (1 = sequential); else open loop (``--async``) at ``rps``. ``data`` may use ghz templates
    (``{{.RequestNumber}}``) to make every request unique; bytes are a serialized request,
    sent as is (``-B``: ghz skips JSON-to-proto work on every call, a third of its CPU)."""
    binary = write_temp(data, ".bin") if isinstance(data, bytes) else None
    payload = ["-B", str(binary)] if binary else ["-d", json.dumps(data)]
    cmd = [
        tool("ghz"),
        "--insecure",
        "--proto",
        PROTO,
        "--import-paths",
        "protos",
        "--call",
        call,
        *payload,
        "-n",
        str(total),
        "--timeout",
        f"{timeout_s}s",
        "--cpus",
        "1",
        "--format",
        "json",
    ]
    if rps is None:
        cmd += ["-c", str(concurrency)]
    else:
        cmd += ["--async", "--rps", str(int(rps)), "-c", str(max(1, concurrency))]
    cmd.append(f"127.0.0.1:{port}")

    def run() -> Stats:
        t0 = time.perf_counter()
        out = subprocess.run(
            pinned(cpu, cmd),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s + total / (rps or 50) + 60,
        )
        wall = time.perf_counter() - t0
        if out.returncode != 0 and not out.stdout.strip():
            raise RuntimeError(f"ghz failed: {out.stderr.strip()[:500]}")
        rep = json.loads(out.stdout)
        lat: list[float] = []
        errors: dict[str, int] = {}
        for d in rep.get("details") or []:
            if d.get("status") == "OK" and not d.get("error"):
                lat.append(d["latency"] / 1e6)
            else:
                key = (d.get("error") or d.get("status") or "?")[:120]
                errors[key] = errors.get(key, 0) + 1
        dur = rep.get("total", 0) / 1e9 or wall
        return Stats(
            sent=int(rep.get("count", 0)), ok=len(lat), latencies_ms=lat, wall_s=dur, errors=errors
        )

    try:
        return _measured(run, server, sandbox)
    finally:
        if binary:
            binary.unlink(missing_ok=True)


def vegeta(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    rate: float,
    duration_s: float,
    server: Proc | None = None,
    sandbox: Proc | None = None,
    timeout_s: float = 10.0,
    workers: int = 1,
    cpu: int | None = LOADGEN_CPU,
) -> Stats:
    """HTTP POSTs of ``body`` with vegeta: open loop at ``rate``/s for ``duration_s``, or
    with ``rate`` 0 closed loop with ``workers`` in flight (1: sequential)."""
    target = {
        "method": "POST",
        "url": url,
        "body": base64.b64encode(body).decode(),
        "header": {"Content-Type": ["application/json"]}
        | {k: [v] for k, v in (headers or {}).items()},
    }
    cmd = [
        tool("vegeta"),
        "attack",
        "-format=json",
        f"-duration={duration_s}s",
        f"-timeout={timeout_s}s",
        "-max-body=0",
    ]
    if rate:
        cmd.append(f"-rate={max(1, round(rate * 10))}/10s")
    else:
        cmd += ["-rate=0", f"-workers={workers}", f"-max-workers={workers}"]

    def run() -> Stats:
        t0 = time.perf_counter()
        attack = subprocess.run(
            pinned(cpu, cmd),
            input=json.dumps(target).encode() + b"\n",
            capture_output=True,
            timeout=duration_s + timeout_s + 60,
        )
        wall = time.perf_counter() - t0
        if attack.returncode != 0:
            raise RuntimeError(f"vegeta failed: {attack.stderr.decode()[:500]}")
        enc = subprocess.run(
            [tool("vegeta"), "encode", "--to", "json"],
            input=attack.stdout,
            capture_output=True,
            check=True,
            timeout=60,
        )
        lat: list[float] = []
        errors: dict[str, int] = {}
        first = last = None
        for line in enc.stdout.splitlines():
            r = json.loads(line)
            if 200 <= r["code"] < 300 and not r.get("error"):
                lat.append(r["latency"] / 1e6)
            else:
                key = (r.get("error") or f"HTTP {r['code']}")[:120]
                errors[key] = errors.get(key, 0) + 1
            ts = r["timestamp"]
            first = ts if first is None or ts < first else first
            last = ts if last is None or ts > last else last
        sent = len(lat) + sum(errors.values())
        return Stats(
            sent=sent, ok=len(lat), latencies_ms=lat, wall_s=duration_s or wall, errors=errors
        )

    return _measured(run, server, sandbox)


def wait_idle(procs: Sequence[Proc], *, below: float = 0.05, max_s: float = 15.0) -> None:
    """Waits until every process uses less than ``below`` of a core (a previous overloaded run
    has drained its backlog), for at most ``max_s``."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        before = [p.cpu_s() for p in procs]
        time.sleep(0.3)
        if all((p.cpu_s() - b) / 0.3 < below for p, b in zip(procs, before, strict=True)):
            return


@dataclass
class Step:
    rps: float
    ok: bool
    stats: Stats

    def report(self) -> dict[str, Any]:
        return {
            "rps": int(self.rps),
            "sustained": self.ok,
            "achieved_rps": round(self.stats.sent / self.stats.wall_s, 1),
            "success": round(self.stats.success, 4),
            "p99_ms": round(self.stats.pct(99), 2),
            "server_cores": round(self.stats.server_cpu_s / self.stats.wall_s, 2),
            "sandbox_cores": round(self.stats.sandbox_cpu_s / self.stats.wall_s, 2),
        }


def max_sustained(
    run_at: Callable[[float], Stats],
    *,
    start: float,
    p99_ms: float,
    cap: float,
    factor: float = 1.5,
    bisections: int = 3,
    settle: Callable[[], None] = lambda: None,
    lowest: float = 0.0,
) -> tuple[float, list[Step]]:
    """The highest offered rate with 100 % success, p99 <= ``p99_ms`` and at least 95 % of the
    rate achieved: grow by ``factor`` from ``start`` until a rate fails (or ``cap``), then
    bisect between the last pass and the first failure. Bounded: at most
    log(cap/start)/log(factor) + bisections + 1 runs. Returns 0 if even ``start`` fails."""
    steps: list[Step] = []

    def trial(rate: float) -> bool:
        st = run_at(rate)
        ok = (
            st.ok == st.sent
            and st.sent > 0
            and st.pct(99) <= p99_ms
            and st.sent / st.wall_s >= 0.95 * rate
        )
        steps.append(Step(rate, ok, st))
        log(
            f"  {rate:.0f}/s: {'ok' if ok else 'FAIL'} p99={st.pct(99):.2f} ms "
            f"success={st.success:.3f}"
        )
        settle()
        return ok

    good, bad = 0.0, math.inf
    rate = start
    while True:
        if trial(rate):
            good = rate
            if rate >= cap:
                return good, steps
            rate = min(cap, rate * factor)
        else:
            bad = rate
            break
    if good == 0.0:
        # Even the first rate failed: walk down instead, not below ``lowest``.
        rate = start
        for _ in range(bisections + 1):
            rate /= factor
            if rate < lowest:
                break
            if trial(rate):
                good = rate
                break
            bad = rate
    for _ in range(bisections):
        if good == 0.0 or bad / good < 1.08:
            break
        mid = math.sqrt(good * bad)
        if trial(mid):
            good = mid
        else:
            bad = mid
    return good, steps


def write_temp(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="longread-bench-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


def which(name: str) -> str | None:
    return shutil.which(name)
