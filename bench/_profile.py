"""Where a server process spends its CPU: py-spy samples it while a load runs, and the stacks
are folded into a compact summary by the gateway's own parts (api, run, calls/<stage>,
vendors, telemetry...) and the libraries under them (grpc, httpx and h11, asyncio...).

py-spy runs on the load generator's core and reads the process without pausing it
(``--nonblocking``), so sampling costs the process under test next to nothing; the profiled
run is still a run of its own, never one whose figures are reported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench._load import LOADGEN_CPU, pinned
from bench._servers import ROOT

RATE_HZ = 250
# The innermost frame the event loop calls back from: asyncio's own loop runs each callback in
# Handle._run; uvloop's loop is C, so its callbacks sit right above the frame that started it.
_LOOP_CALLBACKS = frozenset({"asyncio:events.Handle._run", "asyncio:runners.Runner.run"})
_NATIVE = "native:event-loop callbacks with no Python frame above"
TOP = 25

# (substring of a frame's file, group): the first match names the frame's group.
_LIBS = (
    ("/grpc/", "grpc"),
    ("/grpc_status/", "grpc"),
    ("/httpx/", "httpx"),
    ("/httpcore/", "httpx"),
    ("/h11/", "httpx"),
    ("/anyio/", "httpx"),
    ("/asyncio/", "asyncio"),
    ("/google/protobuf/", "protobuf"),
    ("/opentelemetry/", "telemetry"),
    ("/json/", "json"),
    ("/logging/", "logging"),
)


def group_of(path: str) -> str:
    """The group of a source file: ``calls/<module>`` for the pipeline's stages, the folder
    for the rest of the gateway, the library for third-party and standard library code."""
    i = path.find("/longread_server/")
    if i >= 0:
        rel = path[i + len("/longread_server/") :].removesuffix(".py")
        folder, _, module = rel.partition("/")
        if folder == "calls":
            return f"calls/{module}"
        return folder if module else "gateway/" + folder  # app.py, memo.py... at the top
    for needle, name in _LIBS:
        if needle in path:
            return name
    return "other"


def _frame(raw: str) -> tuple[str, str, bool]:
    """(function as ``group:module.function``, group, whether it is the gateway's) of one raw
    frame ``fn (path)``."""
    fn, _, rest = raw.rpartition(" (")
    path = rest.rstrip(")")
    if not fn:
        return raw, "other", False
    group = group_of(path)
    name = f"{group}:{Path(path).stem}.{fn}"
    if name == "other:threading.Thread.run":
        group = "threads"  # a thread running native code (grpc's poller, a worker's C call)
    return name, group, "/longread_server/" in path


def summarize(raw_path: Path) -> dict[str, Any]:
    """Folds py-spy's raw output (``frame;frame;... count`` per line, root first).

    * ``self_by_group``: share of samples whose innermost frame is in the group;
    * ``by_stage``: share of samples whose innermost frame *of the gateway* is in the group
      (the library work a stage asks for counted as that stage's), library groups only for
      samples with no gateway frame at all (grpc's own server loop, asyncio's scheduling);
    * ``by_module``: the same by the gateway's module (``vendors:transport``);
    * ``cumulative_by_group``: share of samples with the group anywhere on the stack;
    * ``top_self`` / ``top_cumulative``: the functions with the most samples, likewise."""
    total = 0
    self_g: Counter[str] = Counter()
    stage: Counter[str] = Counter()
    module: Counter[str] = Counter()
    cum_g: Counter[str] = Counter()
    self_f: Counter[str] = Counter()
    cum_f: Counter[str] = Counter()
    for line in raw_path.read_text().splitlines():
        stack, _, n_str = line.rpartition(" ")
        if not stack or not n_str.isdigit():
            continue
        n = int(n_str)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        # Below the event loop's callback frame sit the process's entry frames (cli, app.main,
        # run_until_complete): on every loop sample, so they are not a stage's.
        loop = max((i for i, (f, _, _) in enumerate(frames) if f in _LOOP_CALLBACKS), default=-1)
        frames = frames[loop:] if loop >= 0 else frames
        fn, grp, _ = frames[-1]
        if fn in _LOOP_CALLBACKS:
            # No Python frame above the callback: native code, most of it grpc.aio's Cython
            # core (its completion queue and call handling make no Python frames), and under
            # uvloop the loop's own polling, scheduling and socket work.
            fn, grp = _NATIVE, "native"
            frames[-1] = (fn, grp, False)
        self_f[fn] += n
        self_g[grp] += n
        inner = next((f for f in reversed(frames) if f[2]), None) if loop >= 0 else None
        stage[inner[1] if inner else grp] += n
        module[inner[0].partition(".")[0] if inner else grp] += n
        for f in {f for f, _, _ in frames}:
            cum_f[f] += n
        for g in {g for _, g, _ in frames}:
            cum_g[g] += n

    def shares(c: Counter[str], k: int | None = None) -> dict[str, float]:
        return {name: round(v / total, 3) for name, v in c.most_common(k)} if total else {}

    return {
        "samples": total,
        "by_stage": shares(stage),
        "by_module": shares(module, TOP),
        "self_by_group": shares(self_g),
        "cumulative_by_group": shares(cum_g),
        "top_self": shares(self_f, TOP),
        "top_cumulative": shares(cum_f, TOP),
    }


class Profile:
    """py-spy recording ``pid`` while the ``with`` block runs; the summary after."""

    def __init__(self, pid: int) -> None:
        fd, name = tempfile.mkstemp(suffix=".txt", prefix="longread-bench-pyspy-")
        os.close(fd)
        self.out = Path(name)
        self.cmd = [
            str(ROOT / ".venv" / "bin" / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(RATE_HZ),
            "--format",
            "raw",
            "--full-filenames",
            "--nolineno",
            "--nonblocking",
            "--output",
            str(self.out),
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def __enter__(self) -> Profile:
        self.proc = subprocess.Popen(
            pinned(LOADGEN_CPU, self.cmd),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode != 0:
            self.error = err.decode(errors="replace").strip()[-300:]

    def summary(self) -> dict[str, Any]:
        try:
            if self.error is not None:
                return {"unavailable": self.error}
            return summarize(self.out)
        finally:
            self.out.unlink(missing_ok=True)
