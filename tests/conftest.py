"""Shared fixtures: a real sandbox HTTP server and real gateways on loopback.

Everything runs on the session's event loop: the sandbox and the gateway are real servers on
127.0.0.1 ports, and tests talk to the gateway through the async Python client over TCP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from longread.client import AsyncClient
from longread_sandbox import Sandbox, SandboxConfig
from longread_server.app import Gateway, sandbox_upstreams, start
from longread_server.config import Config, TenantConfig

from tests.redis_cluster import RedisClusterServer
from tests.redis_server import RedisServer

TENANT_KEYS = {"acme": "test-key-acme", "globex": "test-key-globex"}


@pytest.fixture(scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    sb = Sandbox(SandboxConfig(host="127.0.0.1", port=0))
    await sb.start()
    yield sb
    await sb.stop()


def gateway_config(sandbox: Sandbox, **changes: object) -> Config:
    cfg = Config(listen="127.0.0.1:0", upstreams=sandbox_upstreams(sandbox.base_url))
    cfg.sandbox.enabled = False
    cfg.server.grace_s = 0.5
    cfg.server.drain_delay_s = 0.0
    # Tests that count a Stream's messages see each delta on its own, however busy the machine.
    cfg.server.stream_coalesce_after_ms = 0.0
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="session")
async def gateway(sandbox: Sandbox) -> AsyncIterator[Gateway]:
    gw = await start(gateway_config(sandbox))
    yield gw
    await gw.stop(0.5)


@pytest.fixture(scope="session")
async def auth_gateway(sandbox: Sandbox) -> AsyncIterator[Gateway]:
    tenants = [TenantConfig(name=n, api_keys=[k]) for n, k in TENANT_KEYS.items()]
    gw = await start(gateway_config(sandbox, tenants=tenants))
    yield gw
    await gw.stop(0.5)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"127.0.0.1:{gateway.port}", timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the whole session."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A real Redis Cluster (3 masters, 3 replicas) on loopback for the whole session, started
    by the first test that asks for it."""
    cluster = RedisClusterServer()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=["node", "cluster"])
def shared_redis(request: pytest.FixtureRequest) -> RedisServer | RedisClusterServer:
    """The session's Redis as one node, then as a cluster: tests of shared state that take
    this run on both (``.url`` is the ``redis_url`` to use)."""
    server: RedisServer | RedisClusterServer = request.getfixturevalue(
        "redis_server" if request.param == "node" else "redis_cluster"
    )
    return server
