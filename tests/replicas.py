"""Gateways as separate ``longread serve`` processes, for the tests of what replicas share
(Redis, the cluster): each started from one config file, its port read from its first line."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from longread.client import AsyncClient

# The API key the test configs' upstreams name (``api_key_env = "TEST_SANDBOX_KEY"``).
SANDBOX_KEY_ENV = {"TEST_SANDBOX_KEY": "sandbox"}


@dataclass
class Replica:
    proc: asyncio.subprocess.Process
    port: int = 0

    def client(self) -> AsyncClient:
        return AsyncClient(f"127.0.0.1:{self.port}", timeout=60)


@asynccontextmanager
async def serve_replicas(config: Path, n: int, log: Path) -> AsyncIterator[list[Replica]]:
    """``n`` ``longread serve --config config`` processes, their stderr appended to ``log``;
    stopped (SIGTERM, and waited for) at the end, unless a test killed them first."""
    exe = str(Path(sys.executable).with_name("longread"))
    env = {**os.environ, **SANDBOX_KEY_ENV}
    procs = [
        Replica(
            await asyncio.create_subprocess_exec(
                exe,
                "serve",
                "--config",
                str(config),
                stdout=asyncio.subprocess.PIPE,
                stderr=log.open("ab"),
                env=env,
            )
        )
        for _ in range(n)
    ]
    try:
        for r in procs:
            assert r.proc.stdout is not None
            line = await asyncio.wait_for(r.proc.stdout.readline(), 60)
            match = re.search(rb"serving on [\d.]+:(\d+)", line)
            if match is None:
                raise AssertionError((await asyncio.to_thread(log.read_text))[-2000:])
            r.port = int(match.group(1))
        yield procs
    finally:
        for r in procs:
            if r.proc.returncode is None:
                r.proc.terminate()
        for r in procs:
            await r.proc.wait()
