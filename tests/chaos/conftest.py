"""The chaos harness: real gateways over loopback, a real sandbox, real Redis, real faults.

Each scenario records a row (requests sent, succeeded, failed by gRPC status, upstream
attempts as the sandbox counted them, and notes such as measured latencies); the table is
printed at the end of the run. ``fire`` sends requests with a client deadline and a harness
timeout above it, so a hung request fails the test instead of hanging it; ``settled`` checks
that nothing is left running upstream (the sandbox's ``active`` gauge) or in the gateway
(its tasks) once the requests are over.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from longread.client import AsyncClient, ErrorDetails, Options, error_details
from longread_sandbox import Sandbox, SandboxConfig
from longread_server.app import Gateway, start
from longread_server.config import (
    AttemptConfig,
    BreakerConfig,
    ConcurrencyConfig,
    Config,
    ResilienceConfig,
    RetryConfig,
)
from longread_server.telemetry import Telemetry
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.conftest import gateway_config
from tests.redis_cluster import RedisClusterServer
from tests.redis_server import RedisServer
from tests.waiting import until

QUESTION = "When was the harbour dredged?"
BODY = (
    "The harbour was dredged in 1998 to take larger ferries. "
    "Ferries now dock at the east quay, next to the old customs house. "
    "The customs house became a museum of fishing in 2004. "
    "A storm in 2011 damaged the breakwater, which was rebuilt the following year. "
)
BYPASS = Options(cache="bypass")


def doc(tag: str = "", fault: str = "", repeat: int = 2) -> str:
    """A document no other request shares (so no cache or single-flight interferes)."""
    marker = f" [[sandbox-fault:{fault}]]" if fault else ""
    return f"Report {tag} {uuid.uuid4().hex}. " + BODY * repeat + marker


def resilience(
    *,
    breaker: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    concurrency: dict[str, Any] | None = None,
    attempt: dict[str, Any] | None = None,
    **top: Any,
) -> ResilienceConfig:
    """Chaos defaults: a breaker that only opens when a scenario asks, fast retries."""
    b = {"min_calls": 1000, "window_size": 1000, **(breaker or {})}
    r = {"base_s": 0.02, "cap_s": 0.2, **(retry or {})}
    return ResilienceConfig(
        breaker=BreakerConfig(**b),
        retry=RetryConfig(**r),
        concurrency=ConcurrencyConfig(**(concurrency or {})),
        attempt=AttemptConfig(**(attempt or {})),
        **top,
    )


@dataclass
class Result:
    ok: bool
    code: str  # "OK" or the gRPC status name
    elapsed_s: float
    details: ErrorDetails | None = None
    text: str = ""
    cost_usd: float = 0.0  # what the answer says it cost


@dataclass
class Row:
    scenario: str
    sent: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    upstream: int = 0
    notes: str = ""

    def add(self, results: Sequence[Result]) -> None:
        self.sent += len(results)
        self.ok += sum(r.ok for r in results)
        self.failed.update(r.code for r in results if not r.ok)


ROWS: list[Row] = []


@pytest.fixture
def row(request: pytest.FixtureRequest) -> Iterator[Row]:
    r = Row(request.node.name.removeprefix("test_"))
    yield r
    ROWS.append(r)


@dataclass
class Transitions:
    """What a health watcher saw for one service name while a scenario ran."""

    scenario: str
    service: str
    seen: list[str]
    cause: str


TRANSITIONS: list[Transitions] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tr = terminalreporter
    if TRANSITIONS:
        tr.section("health transitions")
        tr.write_line(f"{'scenario':<36} {'service':<30} {'cause':<36} seen")
        for t in TRANSITIONS:
            service = repr(t.service)
            tr.write_line(f"{t.scenario:<36} {service:<30} {t.cause:<36} {' -> '.join(t.seen)}")
    if not ROWS:
        return
    tr.section("chaos scenarios")
    head = f"{'scenario':<44} {'sent':>5} {'ok':>5} {'upstream':>8}  failed by status / notes"
    tr.write_line(head)
    for r in sorted(ROWS, key=lambda r: r.scenario):
        failed = ", ".join(f"{k} {v}" for k, v in sorted(r.failed.items())) or "-"
        tr.write_line(f"{r.scenario:<44} {r.sent:>5} {r.ok:>5} {r.upstream:>8}  {failed}")
        if r.notes:
            tr.write_line(f"{'':<66}{r.notes}")


async def one(
    client: AsyncClient,
    text: str,
    *,
    timeout: float = 5.0,
    options: Options = BYPASS,
    stream: bool = False,
) -> Result:
    """One Analyze (or, with ``stream``, one Stream collected to its result: the upstream call
    is then streamed too) with a deadline; a harness timeout (deadline + 2 s) catches a hang."""
    t0 = time.monotonic()

    async def call() -> tuple[str, float]:
        if not stream:
            r = await client.analyze(text, QUESTION, options=options, timeout=timeout)
            return r.text, r.cost.total_usd
        last, cost = "", 0.0
        async for ev in client.stream(text, QUESTION, options=options, timeout=timeout):
            if ev.HasField("result"):
                last, cost = ev.result.text, ev.result.cost.total_usd
        return last, cost

    try:
        answer, cost = await asyncio.wait_for(call(), timeout + 2.0)
    except grpc.aio.AioRpcError as e:
        return Result(False, e.code().name, time.monotonic() - t0, error_details(e))
    except TimeoutError:
        pytest.fail(f"request hung past its {timeout}s deadline")
    return Result(True, "OK", time.monotonic() - t0, text=answer, cost_usd=cost)


async def fire(
    client: AsyncClient,
    texts: Sequence[str],
    *,
    concurrency: int = 1,
    timeout: float = 5.0,
    options: Options = BYPASS,
) -> list[Result]:
    """Sends every text (bounded concurrency), returns the results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def run(t: str) -> Result:
        async with gate:
            return await one(client, t, timeout=timeout, options=options)

    return list(await asyncio.gather(*(run(t) for t in texts)))


def gateway_tasks(sandbox: Sandbox) -> set[asyncio.Task[Any]]:
    """Tasks in this loop that are neither the sandbox's connections nor the test itself."""
    sandbox_conns = set(sandbox._server._tasks)
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} - sandbox_conns


async def settled(sandbox: Sandbox, baseline: int, within: float = 2.0) -> None:
    """Nothing left running upstream, no task left behind in the gateway."""
    await until(lambda: sandbox.stats.active == 0, within)
    try:
        await until(lambda: len(gateway_tasks(sandbox)) <= baseline, within, poll=0.01)
    except pytest.fail.Exception:
        left = "\n".join(repr(t) for t in gateway_tasks(sandbox))
        pytest.fail(f"tasks left running after the requests ended:\n{left}")


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    """A sandbox of the scenario's own (faults never leak into other tests)."""
    sandbox = Sandbox(SandboxConfig(host="127.0.0.1", port=0, retry_after_ms=20))
    await sandbox.start()
    yield sandbox
    await sandbox.stop()


@pytest.fixture
async def gateways(sb: Sandbox) -> AsyncIterator[Callable[..., Any]]:
    """``await make(**config changes)``: a gateway on the scenario's sandbox, stopped after."""
    started: list[Gateway] = []

    async def make(telemetry: Telemetry | None = None, **changes: Any) -> Gateway:
        cfg: Config = gateway_config(sb, **changes)
        gw = await start(cfg, telemetry=telemetry)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop(0.2)


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisServer]:
    """A redis-server the scenario may kill and restart."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["node", "cluster"])
async def fresh_redis(
    request: pytest.FixtureRequest,
) -> AsyncIterator[RedisServer | RedisClusterServer]:
    """An empty Redis, one node (the scenario's own) then the session's cluster, flushed: for
    scenarios about sharing state that do not kill it."""
    if request.param == "node":
        server = RedisServer()
        server.start()
        yield server
        server.close()
        return
    cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")
    await asyncio.to_thread(cluster.flush)
    yield cluster


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], float]]:
    """(attributes, value) of every data point of metric ``name``."""
    data = reader.get_metrics_data()
    out: list[tuple[dict[str, Any], float]] = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    for p in m.data.data_points:
                        out.append((dict(p.attributes or {}), getattr(p, "value", 0.0)))
    return out


def client_for(gw: Gateway, api_key: str | None = None) -> AsyncClient:
    return AsyncClient(f"127.0.0.1:{gw.port}", api_key=api_key)
