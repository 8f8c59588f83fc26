"""Real server processes for benchmarks: the sandbox and gateways, each in its own process so
their CPU can be read from /proc and does not mix with the load generator's."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class Proc:
    """A child process with its CPU time (user + system seconds) readable at any moment."""

    def __init__(
        self, args: Sequence[str], env: dict[str, str] | None = None, cpu: int | None = None
    ) -> None:
        cmd = list(args)
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.p = subprocess.Popen(
            cmd,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def cpu_s_precise(self) -> float:
        """CPU seconds of the process's live threads, to the nanosecond (schedstat), where
        ``cpu_s`` counts 10 ms ticks. Threads that exit take their time with them, so use it
        for servers whose threads live as long as they do."""
        total = 0
        for task in Path(f"/proc/{self.p.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def sandbox(port: int, *extra: str, cpu: int | None = None) -> Proc:
    proc = Proc([sys.executable, "-m", "longread_sandbox", "--port", str(port), *extra], cpu=cpu)
    wait_port(port)
    return proc


def gateway(
    port: int,
    sandbox_port: int,
    cpu: int | None = None,
    env: dict[str, str] | None = None,
    serve: Sequence[str] = ("longread.cli", "serve"),
    extra_config: str = "",
    wrapper: Sequence[str] = (),
    start_s: float = 30.0,
) -> Proc:
    """A gateway whose upstreams all point at the sandbox on ``sandbox_port``; other settings
    come from ``env`` (``LONGREAD_TELEMETRY__TRACES=true``...) and ``extra_config`` (TOML
    appended to the file, e.g. tenants). ``serve``: the module and arguments that run it
    (``--config FILE`` is added); ``wrapper``: a command it runs under (valgrind...), given
    ``start_s`` seconds to listen."""
    base = f"http://127.0.0.1:{sandbox_port}"
    config = f"""
listen = "127.0.0.1:{port}"
[telemetry]
access_log = false
[[upstreams]]
name = "openai"
kind = "openai"
base_url = "{base}/v1"
api_key_env = "BENCH_KEY"
[[upstreams]]
name = "anthropic"
kind = "anthropic"
base_url = "{base}"
api_key_env = "BENCH_KEY"
{extra_config}
"""
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="longread-bench-")
    with os.fdopen(fd, "w") as f:
        f.write(config)
    proc = Proc(
        [*wrapper, sys.executable, "-m", *serve, "--config", path],
        env={"BENCH_KEY": "bench", **(env or {})},
        cpu=cpu,
    )
    wait_port(port, start_s)
    return proc
