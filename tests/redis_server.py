"""A real redis-server for tests: started on a free loopback port, killed and restarted on
demand (for fault tests), removed at the end. `.ci/run` installs redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from longread_server.state.gate import GatePolicy, RedisGate
from longread_server.state.redis import RedisClient, connect

# For tests whose subject is shared state, not a slow Redis: on a loaded machine a round trip
# (a cluster client's first burst opens a connection per node and loads scripts) can outlast
# the gateway's default timeouts (0.25 s), which the gate reads as an outage and serves from
# local state.
PATIENT_S = 5.0


def patient_gate() -> RedisGate:
    """A Redis gate with a timeout a busy machine does not outlast."""
    return RedisGate(GatePolicy(timeout_s=PATIENT_S))


def patient_client(url: str) -> RedisClient:
    """A client of ``url`` whose socket timeouts a busy machine does not outlast."""
    return connect(url, socket_timeout_s=PATIENT_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.exe = exe
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="longread-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Kills the server (SIGKILL: as abrupt as a crash)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
