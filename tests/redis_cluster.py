"""A real Redis Cluster for tests: 3 masters and 3 replicas on free loopback ports, created with
``redis-cli --cluster create``, with helpers to kill the master that owns a key and to wait
for its replica to take over; removed at the end. `.ci/run` installs redis-server and
redis-cli (redis-tools)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redis.crc import key_slot

from tests.redis_server import free_port

# Low, so that a killed master is declared failed and replaced in a few seconds, not 15.
NODE_TIMEOUT_MS = 1000


@dataclass
class Node:
    port: int
    bus_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class RedisClusterServer:
    """Six redis-server processes in cluster mode; ``url`` is the gateway's ``redis_url``."""

    def __init__(self, masters: int = 3) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed (apt-get install redis)")
        self.server, self.cli = server, cli
        self.dir = Path(tempfile.mkdtemp(prefix="longread-redis-cluster-"))
        # The bus port is set explicitly: the default (port + 10000) may not exist.
        self.nodes = [Node(free_port(), free_port(), self.dir / str(i)) for i in range(2 * masters)]
        self.masters = masters

    @property
    def url(self) -> str:
        # Two start nodes: the client finds the others, and either may be the one killed.
        return f"redis+cluster://{self.nodes[0].address},{self.nodes[1].address}"

    def start(self) -> None:
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self._wait_ping(node)
        out = self._cli(
            "--cluster",
            "create",
            *(n.address for n in self.nodes),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
            timeout=60,
        )
        if "[OK] All 16384 slots covered" not in out:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out}")
        self.wait_healthy()

    def _spawn(self, node: Node) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        node.proc = subprocess.Popen(
            [
                self.server,
                "--port",
                str(node.port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(node.bus_port),
                "--cluster-config-file",
                str(node.dir / "nodes.conf"),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--save",
                "",
                "--appendonly",
                "no",
                # A replica syncs as soon as it attaches, not after the default 5 s wait.
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                str(node.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _cli(self, *args: str, port: int | None = None, timeout: float = 10) -> str:
        cmd = [self.cli, "-h", "127.0.0.1"]
        if port is not None:
            cmd += ["-p", str(port)]
        done = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        return done.stdout + done.stderr

    def command(self, node: Node, *args: str) -> str:
        """One command on one node (redis-cli), its reply as text."""
        return self._cli(*args, port=node.port)

    def _wait_ping(self, node: Node) -> None:
        self._until(lambda: self.command(node, "PING").strip() == "PONG", f"{node.address} up")

    @staticmethod
    def _until(check: Callable[[], bool], what: str, within: float = 60.0) -> None:
        """Polls ``check``; the bound only turns a hang into an error."""
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster: not {what} within {within:.0f}s")
            time.sleep(0.05)

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None]

    def wait_healthy(self) -> None:
        """Every live node says the cluster is ok and sees the same masters, as many as the
        cluster was made with, and every replica's link to its master is up (so that it
        could take over)."""

        def healthy() -> bool:
            live = self.alive()
            if any("cluster_state:ok" not in self.command(n, "CLUSTER", "INFO") for n in live):
                return False
            views = {tuple(sorted(self._masters_seen_by(n))) for n in live}
            if len(views) != 1 or len(views.pop()) != self.masters:
                return False
            replicas = [n for n in live if self.role(n) == "slave"]
            return all(
                "master_link_status:up" in self.command(n, "INFO", "replication") for n in replicas
            )

        self._until(healthy, "healthy")

    def _masters_seen_by(self, node: Node) -> list[str]:
        out = self.command(node, "CLUSTER", "NODES")
        return [
            line.split()[1].split("@")[0]
            for line in out.splitlines()
            if "master" in line.split()[2] and "fail" not in line.split()[2]
        ]

    def role(self, node: Node) -> str:
        lines = self.command(node, "ROLE").split()
        return lines[0] if lines else ""

    def master_of(self, key: str) -> Node:
        """The live master that owns ``key``'s slot."""
        slot = key_slot(key.encode())
        for node in self.alive():
            if self.role(node) == "master" and self._owns(node, slot):
                return node
        raise RuntimeError(f"no live master owns slot {slot}")

    def _owns(self, node: Node, slot: int) -> bool:
        out = self.command(node, "CLUSTER", "NODES")
        for line in out.splitlines():
            fields = line.split()
            if "myself" not in fields[2]:
                continue
            for span in fields[8:]:
                if span.startswith("["):  # a slot being migrated
                    continue
                lo, _, hi = span.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return True
        return False

    def replica_of(self, master: Node) -> Node:
        for node in self.alive():
            if node is not master and self.role(node) == "slave":
                info = self.command(node, "INFO", "replication")
                if f"master_port:{master.port}" in info.split():
                    return node
        raise RuntimeError(f"{master.address} has no live replica")

    def flush(self) -> None:
        """Empties every master (a test that needs fresh state on the session's cluster)."""
        for node in self.alive():
            if self.role(node) == "master":
                self.command(node, "FLUSHALL")

    def kill(self, node: Node) -> None:
        """SIGKILL: as abrupt as a crash. The node stays down."""
        if node.proc is not None:
            node.proc.kill()
            node.proc.wait(10)
            node.proc = None

    def wait_promoted(self, replica: Node) -> None:
        """Until ``replica`` is a master (the cluster's own failover) and the cluster is ok."""
        self._until(lambda: self.role(replica) == "master", f"{replica.address} promoted")
        self._until(
            lambda: all(
                "cluster_state:ok" in self.command(n, "CLUSTER", "INFO") for n in self.alive()
            ),
            "ok after the failover",
        )

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node)
        shutil.rmtree(self.dir, ignore_errors=True)
