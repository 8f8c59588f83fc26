"""A master found through Sentinel (``redis+sentinel://``): the shared state's scripts run on
it, and after Sentinel promotes its replica the same client finds the new master.

Real processes on loopback: a master, its replica, and one Sentinel (quorum 1) watching them
with a short down-after period.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from longread_server.state.buckets import BucketSpec, Grant
from longread_server.state.redis import REDIS_FAILURES, connect
from longread_server.state.redis_buckets import RedisBuckets
from redis.asyncio import Redis

from tests.redis_server import free_port

SERVICE = "longread-test"
SPEC = BucketSpec("rl:{sentinel}:rpm", rate_per_s=0.001, burst=10.0)


class Processes:
    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None, "redis-server is not installed"
        self.exe = exe
        self.dir = Path(tempfile.mkdtemp(prefix="longread-sentinel-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def redis(self, port: int, *args: str) -> None:
        cmd = [self.exe, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(self.dir), *args]
        self.procs[port] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

    def sentinel(self, port: int, master: int) -> None:
        conf = self.dir / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        self.procs[port] = subprocess.Popen(
            [self.exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL
        )

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(10)

    def close(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinel_setup() -> Iterator[tuple[Processes, int, int, int]]:
    master, replica, sentinel = free_port(), free_port(), free_port()
    procs = Processes()
    try:
        procs.redis(master, "--repl-diskless-sync-delay", "0")  # the replica syncs at once
        procs.redis(replica, "--replicaof", "127.0.0.1", str(master))
        # Sentinel learns of replicas from the master's INFO, at once and then every 10 s:
        # started once the replica is in sync, it knows it from the start.
        sync = redis.Redis(host="127.0.0.1", port=replica, socket_timeout=1)
        for _ in range(600):
            try:
                if sync.info("replication").get("master_link_status") == "up":
                    break
            except redis.RedisError:
                pass
            time.sleep(0.02)
        sync.close()
        procs.sentinel(sentinel, master)
        yield procs, master, replica, sentinel
    finally:
        procs.close()


async def until_ok(what: str, check: Callable[[], Awaitable[bool]], tries: int = 600) -> None:
    """Polls ``check()`` every 50 ms until it is true; the bound only turns a hang into a
    failure."""
    for _ in range(tries):
        try:
            if await check():
                return
        except REDIS_FAILURES:
            pass
        await asyncio.sleep(0.05)
    pytest.fail(f"not {what}")


async def role(port: int) -> str:
    r = Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        reply = await r.execute_command("ROLE")  # type: ignore[no-untyped-call]
        return str(reply[0].decode())
    finally:
        await r.aclose()


@pytest.fixture
async def client(
    sentinel_setup: tuple[Processes, int, int, int],
) -> AsyncIterator[Redis]:
    _, _, replica, sentinel = sentinel_setup
    url = f"redis+sentinel://127.0.0.1:{sentinel}/{SERVICE}/0"
    r = connect(url, socket_timeout_s=2)
    assert isinstance(r, Redis)

    async def replica_known() -> bool:  # else a killed master has no replica to promote
        s = Redis(host="127.0.0.1", port=sentinel)
        try:
            found = await s.sentinel_slaves(SERVICE)
            return any(f"{r.get('port')}" == str(replica) for r in found)
        finally:
            await s.aclose()

    await until_ok("replica known to Sentinel", replica_known)
    await until_ok("master known to Sentinel", r.ping)
    yield r
    await r.aclose()


async def test_scripts_run_on_the_master_and_follow_a_failover(
    sentinel_setup: tuple[Processes, int, int, int], client: Redis
) -> None:
    procs, master, replica, _ = sentinel_setup
    store = RedisBuckets(client, prefix="sentinel:")
    for _ in range(4):
        assert isinstance(await store.reserve([(SPEC, 1)], [], 0), Grant)
    await client.execute_command("WAIT", "1", "5000")  # type: ignore[no-untyped-call]
    procs.kill(master)

    async def promoted() -> bool:
        return await role(replica) == "master"

    await until_ok("replica promoted by Sentinel", promoted)
    # The same client, asked again, finds the new master (its first try may meet the dead
    # one: the gateway's gate then serves locally, here the poll simply asks again).
    await until_ok("client on the new master", client.ping)
    level = await store.peek(SPEC)
    assert level == pytest.approx(6.0, abs=0.01)  # the 4 tokens taken before the failover
