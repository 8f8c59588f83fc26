"""The response cache and single-flight end to end: real gateways (in process and as separate
``longread serve`` processes) on loopback, the sandbox as the vendor, a real redis-server.

Upstream calls are counted where they land, at the sandbox. Concurrent calls overlap because
the sandbox is given latency; the assertions hold whatever the interleaving (a caller that
arrives after the answer landed is a hit, not a second call).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import grpc
import httpx
import pytest
from longread.client import AsyncClient, Options, error_details
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import types_pb2 as pb
from longread_sandbox import Sandbox
from longread_sandbox.sample import DEMO_QUESTION, FACTS, generate_report
from longread_server.api.auth import LOCAL_TENANT
from longread_server.app import Gateway, start
from longread_server.calls.pipeline import Call, CallContext
from longread_server.config import CacheConfig, TenantConfig
from longread_server.domain import LlmRequest
from longread_server.plan import prompts
from longread_server.plan.catalog import Catalog
from longread_server.state.cache_store import MemoryCacheStore
from longread_server.state.redis import connect
from longread_server.vendors.openai import OpenAIAdapter

from tests.conftest import TENANT_KEYS, gateway_config
from tests.redis_cluster import RedisClusterServer
from tests.redis_server import RedisServer
from tests.replicas import Replica, serve_replicas
from tests.waiting import until

Q = "When was the lamp converted to electricity?"


def doc() -> str:
    """A short document no other test sends (so its answers are not cached yet)."""
    return (
        f"Record {uuid.uuid4().hex}. The lighthouse on Gull Rock was built in 1871. "
        "Its lamp was converted to electricity in 1926. The keeper's cottage is a museum."
    )


@contextmanager
def latency(sandbox: Sandbox, ms: float) -> Iterator[None]:
    """Slow upstream answers so that concurrent calls overlap."""
    sandbox.configure(latency_ms=ms)
    try:
        yield
    finally:
        sandbox.configure(latency_ms=0)


# ---- single-flight ----


async def test_100_concurrent_identical_calls_make_one_upstream_call(
    gateway: Gateway, client: AsyncClient, sandbox: Sandbox
) -> None:
    text = doc()
    opts = Options(model="gpt-4.1-mini")
    before = sandbox.stats.requests
    assert gateway.cache is not None
    coalesced = gateway.cache.stats.coalesced
    with latency(sandbox, 300):
        results = await asyncio.gather(*(client.analyze(text, Q, options=opts) for _ in range(100)))
    upstream = sandbox.stats.requests - before
    print(f"\n100 concurrent identical Analyze calls, one gateway: {upstream} upstream call(s)")
    assert upstream == 1
    assert len({r.text for r in results}) == 1 and "1926" in results[0].text
    statuses = [r.cache_status for r in results]
    assert statuses.count(pb.CACHE_STATUS_MISS) == 1
    assert statuses.count(pb.CACHE_STATUS_HIT) == 99
    assert sum(r.cost.total_usd for r in results) == pytest.approx(
        next(r.cost.total_usd for r in results if r.cache_status == pb.CACHE_STATUS_MISS)
    )
    assert gateway.cache.stats.coalesced - coalesced > 0  # they did overlap


@asynccontextmanager
async def replicas(
    tmp_path: Path, sandbox: Sandbox, redis_url: str, n: int, **cache: object
) -> AsyncIterator[list[Replica]]:
    """``n`` gateways as separate ``longread serve`` processes sharing ``redis_url``."""
    settings = "\n".join(f"{k} = {json.dumps(v)}" for k, v in cache.items())
    config = tmp_path / "replica.toml"
    config.write_text(
        f"""
listen = "127.0.0.1:0"
redis_url = "{redis_url}"
[server]
grace_s = 0.5
[sandbox]
enabled = false
[cache]
{settings}
[[upstreams]]
name = "openai"
kind = "openai"
base_url = "{sandbox.base_url}/v1"
api_key_env = "TEST_SANDBOX_KEY"
"""
    )
    async with serve_replicas(config, n, tmp_path / "replicas.log") as procs:
        yield procs


@pytest.fixture(scope="module", params=["node", "cluster"])
async def three_replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox
) -> AsyncIterator[list[Replica]]:
    """Three ``longread serve`` processes sharing the sandbox and Redis, one node then a
    cluster (a short lease, so a crashed replica's lease expires quickly; live owners renew
    theirs)."""
    redis: RedisServer | RedisClusterServer = request.getfixturevalue(
        "redis_server" if request.param == "node" else "redis_cluster"
    )
    tmp = tmp_path_factory.mktemp("replicas")
    async with replicas(tmp, sandbox, redis.url, 3, lock_ttl_s=0.5) as procs:
        yield procs


async def test_100_concurrent_calls_across_3_replica_processes_make_one_upstream_call(
    three_replicas: list[Replica], sandbox: Sandbox
) -> None:
    text = doc()
    opts = Options(model="gpt-4.1-mini")
    clients = [r.client() for r in three_replicas]
    before = sandbox.stats.requests
    with latency(sandbox, 300):
        results = await asyncio.gather(
            *(clients[i % 3].analyze(text, Q, options=opts) for i in range(100))
        )
    upstream = sandbox.stats.requests - before
    print(f"\n100 concurrent identical Analyze calls, 3 replica processes: {upstream}")
    assert upstream == 1
    assert len({r.text for r in results}) == 1 and "1926" in results[0].text
    assert [r.cache_status for r in results].count(pb.CACHE_STATUS_MISS) == 1
    for c in clients:
        await c.close()


async def test_a_crashed_replicas_lease_expires_and_another_replica_takes_over(
    three_replicas: list[Replica], sandbox: Sandbox
) -> None:
    """Kills replica 0 (so it runs after the other test of the three replicas)."""
    text = doc()
    opts = Options(model="gpt-4.1-mini")
    clients = [r.client() for r in three_replicas]
    before = sandbox.stats.requests
    with latency(sandbox, 400):
        doomed = asyncio.create_task(clients[0].analyze(text, Q, options=opts))
        await until(lambda: sandbox.stats.requests > before)  # replica 0 is mid-call
        three_replicas[0].proc.kill()  # SIGKILL: it never releases its lease
        with pytest.raises(grpc.aio.AioRpcError):
            await doomed
        survivors = await asyncio.gather(
            *(clients[1 + i % 2].analyze(text, Q, options=opts) for i in range(10))
        )
    assert sandbox.stats.requests - before == 2  # the crashed call, then one takeover
    assert len({r.text for r in survivors}) == 1 and "1926" in survivors[0].text
    for c in clients:
        await c.close()


# ---- tenants and policy ----


async def test_tenants_are_isolated_by_default(auth_gateway: Gateway, sandbox: Sandbox) -> None:
    text = doc()
    target = f"127.0.0.1:{auth_gateway.port}"
    async with (
        AsyncClient(target, api_key=TENANT_KEYS["acme"]) as acme,
        AsyncClient(target, api_key=TENANT_KEYS["globex"]) as globex,
    ):
        before = sandbox.stats.requests
        a = await acme.analyze(text, Q)
        g = await globex.analyze(text, Q)
        assert a.cache_status == g.cache_status == pb.CACHE_STATUS_MISS
        assert sandbox.stats.requests - before == 2
        assert (await acme.analyze(text, Q)).cache_status == pb.CACHE_STATUS_HIT


async def test_tenants_share_answers_when_configured(sandbox: Sandbox) -> None:
    tenants = [TenantConfig(name=n, api_keys=[k]) for n, k in TENANT_KEYS.items()]
    gw = await start(
        gateway_config(sandbox, tenants=tenants, cache=CacheConfig(share_across_tenants=True))
    )
    text = doc()
    try:
        target = f"127.0.0.1:{gw.port}"
        async with (
            AsyncClient(target, api_key=TENANT_KEYS["acme"]) as acme,
            AsyncClient(target, api_key=TENANT_KEYS["globex"]) as globex,
        ):
            assert (await acme.analyze(text, Q)).cache_status == pb.CACHE_STATUS_MISS
            assert (await globex.analyze(text, Q)).cache_status == pb.CACHE_STATUS_HIT
    finally:
        await gw.stop(0.5)


async def test_policy_modes(client: AsyncClient, sandbox: Sandbox) -> None:
    text = doc()
    before = sandbox.stats.requests

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.analyze(text, Q, options=Options(cache="only_if_cached"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(err.value).reason == "NOT_CACHED"
    assert sandbox.stats.requests == before  # a miss is an error, not an upstream call

    r = await client.analyze(text, Q, options=Options(cache="no_store"))
    assert r.cache_status == pb.CACHE_STATUS_MISS and sandbox.stats.requests == before + 1
    with pytest.raises(grpc.aio.AioRpcError):
        await client.analyze(text, Q, options=Options(cache="only_if_cached"))

    r = await client.analyze(text, Q)  # default: miss, stored
    assert r.cache_status == pb.CACHE_STATUS_MISS and r.cost.total_usd > 0
    hit = await client.analyze(text, Q, options=Options(cache="only_if_cached"))
    assert hit.cache_status == pb.CACHE_STATUS_HIT and hit.text == r.text
    assert hit.cost.total_usd == 0 and hit.usage.calls == 0  # hits cost nothing
    assert sandbox.stats.requests == before + 2

    fresh = await client.analyze(text, Q, options=Options(cache="bypass"))
    assert fresh.cache_status == pb.CACHE_STATUS_BYPASS and fresh.cost.total_usd > 0
    assert sandbox.stats.requests == before + 3


async def test_ttl_override_is_the_stored_entrys_ttl(
    sandbox: Sandbox, shared_redis: RedisServer | RedisClusterServer
) -> None:
    prefix = f"ttl-test:{uuid.uuid4().hex[:8]}:"
    gw = await start(
        gateway_config(sandbox, redis_url=shared_redis.url, cache=CacheConfig(redis_prefix=prefix))
    )
    raw = connect(shared_redis.url)
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            await c.analyze(doc(), Q, options=Options(cache_ttl_s=42))
            await c.analyze(doc(), Q)
        ttls = sorted([await raw.pttl(k) async for k in raw.scan_iter(match=prefix + "*")])
        assert len(ttls) == 2
        assert 40_000 < ttls[0] <= 42_000  # the request's own TTL, native in Redis
        assert ttls[1] > 23 * 3600 * 1000  # the configured default (24 h)
    finally:
        await raw.aclose()
        await gw.stop(0.5)


# ---- streams ----


async def test_a_hit_on_stream_is_replayed_as_deltas(client: AsyncClient) -> None:
    text = doc()
    opts = Options(model="claude-haiku-4-5")
    first = [ev async for ev in client.stream(text, Q, options=opts)]
    again = [ev async for ev in client.stream(text, Q, options=opts)]
    deltas = [[ev.delta.text for ev in evs if ev.HasField("delta")] for evs in (first, again)]
    r1, r2 = first[-1].result, again[-1].result
    assert r1.cache_status == pb.CACHE_STATUS_MISS and r2.cache_status == pb.CACHE_STATUS_HIT
    assert len(deltas[1]) > 1  # a stream of deltas, not one blob
    assert deltas[1] == deltas[0]  # the original deltas
    assert "".join(deltas[1]) == r2.text == r1.text
    assert r2.usage.calls == 0 and r2.cost.total_usd == 0
    assert [c.text for c in r2.chunk_results] == [c.text for c in r1.chunk_results]


async def test_concurrent_streams_all_get_deltas(client: AsyncClient, sandbox: Sandbox) -> None:
    text = doc()
    before = sandbox.stats.requests
    with latency(sandbox, 200):
        runs = await asyncio.gather(*(_collect(client, text) for _ in range(10)))
    assert sandbox.stats.requests - before == 1
    for events in runs:
        deltas = [ev.delta.text for ev in events if ev.HasField("delta")]
        assert len(deltas) > 1 and "".join(deltas) == events[-1].result.text


async def _collect(client: AsyncClient, text: str) -> list[svc.StreamResponse]:
    return [ev async for ev in client.stream(text, Q)]


# ---- chunk-level reuse ----


async def test_reanalysing_an_edited_200k_token_document_calls_only_for_what_changed(
    client: AsyncClient, sandbox: Sandbox
) -> None:
    """Map calls are keyed by chunk content (no "part i of n" in the prompt), so only chunks
    whose text changed go upstream again, then the reduce if the notes it reads changed.
    How many chunks an edit changes is the chunker's business (it realigns its cuts after an
    edit within a few chunks); this test checks that no unchanged chunk is called again."""
    # A seed of its own: other tests' map calls over the default report (same model) must not
    # have cached any of its chunks already.
    report = generate_report(1_000_000, seed=4242) + f"\n\nReference {uuid.uuid4().hex}.\n"
    opts = Options(model="gpt-4o-mini", strategy="map_reduce")
    seen: set[str] = set()

    async def analyse(text: str) -> tuple[svc.AnalyzeResponse, int, int]:
        before = sandbox.stats.requests
        r = await client.analyze(text, DEMO_QUESTION, options=opts)
        calls = sandbox.stats.requests - before
        assert r.usage.calls == calls and "turbine bearings" in r.text
        new = [c.index for c in r.plan.chunks if c.content_hash not in seen]
        missed = [c.index for c in r.chunk_results if c.cache_status == pb.CACHE_STATUS_MISS]
        assert missed == new  # exactly the chunks with new text went upstream
        seen.update(c.content_hash for c in r.plan.chunks)
        return r, calls, len(new)

    def edit(text: str, paragraph_with: str, extra: str) -> str:
        """Adds a sentence to the paragraph holding ``paragraph_with`` (a different length:
        every later offset shifts)."""
        at = text.index(paragraph_with)
        end = text.index("\n\n", at)
        return text[:end] + " " + extra + text[end:]

    first, first_calls, chunks = await analyse(report)
    assert first.plan.document_tokens > 190_000 and first_calls == chunks + 1

    # An edit that matters to the question: its chunk's note changes, so the reduce runs.
    fact = FACTS["northfield_delay"]
    relevant = edit(
        report, fact, "The commissioning at the Northfield plant was delayed by a crane."
    )
    r, relevant_calls, relevant_changed = await analyse(relevant)
    assert r.cache_status == pb.CACHE_STATUS_PARTIAL
    assert 1 <= relevant_changed < chunks and relevant_calls == relevant_changed + 1

    # An edit elsewhere that does not matter: its chunk(s) go upstream again; the reduce
    # reads the same notes as before, so it is reused as well.
    far = report.index("\n\n", len(report) // 5)
    unrelated = edit(relevant, report[far + 2 : far + 60], "Minutes were taken by the clerk.")
    _, unrelated_calls, unrelated_changed = await analyse(unrelated)
    assert 1 <= unrelated_changed < chunks
    assert unrelated_changed <= unrelated_calls <= unrelated_changed + 1
    print(
        f"\n~{first.plan.document_tokens:,}-token report, {chunks} chunks: {first_calls} "
        f"upstream calls; one relevant paragraph edited: {relevant_calls} calls "
        f"({relevant_changed} changed chunk(s) + reduce); one unrelated paragraph edited: "
        f"{unrelated_calls} calls ({unrelated_changed} changed chunk(s)"
        f"{' + reduce' if unrelated_calls > unrelated_changed else ', reduce reused'})"
    )


# ---- vendor prompt caching ----


async def test_a_second_question_reads_every_chunk_from_the_vendor_prompt_cache(
    client: AsyncClient,
) -> None:
    """Map prompts put the chunk first and mark it with Anthropic cache_control: the first
    question writes each chunk (at 1.25x input), a second question on the same document reads
    each one back (at the cached-input price) and pays full price only for its own words."""
    report = generate_report(120_000)
    system = f"You analyse documents for audit {uuid.uuid4().hex}. Answer only from the text."
    opts = Options(
        model="claude-haiku-4-5",
        max_chunk_tokens=6000,  # above Haiku 4.5's 4096-token minimum cacheable prefix
        strategy="map_reduce",
        system_prompt=system,
        max_output_tokens=300,
    )
    first = await client.analyze(report, DEMO_QUESTION, options=opts)
    second = await client.analyze(report, "Who took the minutes?", options=opts)
    haiku = Catalog.builtin().get("anthropic", "claude-haiku-4-5")
    assert haiku is not None
    maps1 = [c.usage for c in first.chunk_results]
    maps2 = [c.usage for c in second.chunk_results]
    assert len(maps1) == len(maps2) > 2
    # Every chunk the size asked for is cached; a short last chunk (under the minimum) is not
    # marked at all, since the vendor would not cache it.
    cached = [u.cache_write_tokens > 0 for u in maps1]
    assert all(cached[:-1])
    assert all(u.cached_input_tokens == 0 for u in maps1)
    assert [u.cached_input_tokens for u in maps2] == [u.cache_write_tokens for u in maps1]
    assert all(u.cache_write_tokens == 0 for u in maps2)
    for r in (first, second):
        u = r.usage
        plain = u.input_tokens - u.cached_input_tokens - u.cache_write_tokens
        assert r.cost.input_usd == pytest.approx(
            (plain * haiku.input_per_mtok + u.cache_write_tokens * haiku.cache_write_per_mtok) / 1e6
        )
        assert r.cost.cached_input_usd == pytest.approx(
            u.cached_input_tokens * haiku.cached_input_per_mtok / 1e6
        )
    assert second.cost.total_usd < first.cost.total_usd / 2


# ---- Redis failures ----


async def test_redis_killed_mid_run_fails_no_request(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    gw = await start(gateway_config(sandbox, redis_url=redis_server.url))
    assert gw.cache is not None
    stored, fresh = [doc() for _ in range(4)], [doc() for _ in range(4)]
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}", timeout=30) as c:

            async def wave(docs: list[str]) -> list[svc.AnalyzeResponse]:
                calls = (c.analyze(d, Q) for d in docs for _ in range(3))
                return list(await asyncio.gather(*calls))

            await wave(stored)  # answers stored in Redis
            with latency(sandbox, 100):
                # hits read from Redis, and misses in flight upstream when Redis dies
                running = asyncio.create_task(wave(stored + fresh))
                await until(lambda: sandbox.stats.active > 0)
                redis_server.stop()  # SIGKILL, mid-run
                results = await running
                results += await wave(stored + fresh)  # Redis down: local state serves
                redis_server.start()  # back (empty: nothing was persisted)
                results += await wave(stored + fresh)
            assert len(results) == 3 * 8 * 3 and all("1926" in r.text for r in results)
            assert gw.cache.stats.redis_errors > 0
            # Once its back-off has passed, the gateway stores in Redis again.
            raw = connect(redis_server.url)
            for _ in range(200):
                await c.analyze(doc(), Q)
                if await raw.dbsize():
                    break
                await asyncio.sleep(0.05)
            assert await raw.dbsize() > 0
            await raw.aclose()
        print(
            f"\nRedis killed mid-run: 0 failed requests, {gw.cache.stats.redis_errors} "
            "redis errors counted"
        )
    finally:
        if redis_server.proc is None:
            redis_server.start()
        await gw.stop(0.5)


# ---- the CLI ----


def _cli(*args: str) -> tuple[int, dict[str, object]]:
    exe = str(Path(sys.executable).with_name("longread"))
    out = subprocess.run([exe, "cache-key", *args], capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else {}


async def test_cache_key_cli_reproduces_the_gateways_key(
    gateway: Gateway, client: AsyncClient, tmp_path: Path
) -> None:
    text = doc()
    await client.analyze(text, Q, options=Options(model="gpt-4.1-mini", max_output_tokens=300))
    # The request the gateway built for that single-pass call, as its adapter sends it.
    req = LlmRequest(
        model="gpt-4.1-mini",
        messages=tuple(prompts.single(text, Q)),
        max_output_tokens=300,
        system=prompts.system_prompt(""),
        prompt_cache_key=prompts.document_cache_key(text),
    )
    assert gateway.cache is not None
    adapter = OpenAIAdapter(httpx.AsyncClient(), name="openai", base_url="http://x/v1", api_key="")
    payload = adapter.build_payload(req)
    a = tmp_path / "a.json"
    a.write_text(json.dumps(payload))
    rc, out = _cli("--vendor", "openai", str(a))
    assert rc == 0 and set(out) >= {"key", "canonical"}
    key = str(out["key"])
    local = CallContext(tenant=LOCAL_TENANT)  # the tenant of a gateway without auth
    assert key == gateway.cache.key_now(Call("openai", adapter, req, local))
    store = gateway.cache.store
    assert isinstance(store, MemoryCacheStore) and store.get_now(key) is not None

    # --explain: an equivalent spelling shares the key; a changed parameter is named.
    same = {**payload, "stream": False, "temperature": 1.0, "user": "someone"}
    other = {**payload, "temperature": 0.2}
    b, c = tmp_path / "b.json", tmp_path / "c.json"
    b.write_text(json.dumps(same))
    c.write_text(json.dumps(other))
    rc, out = _cli("--vendor", "openai", "--explain", str(a), str(b))
    assert rc == 0 and out["same_key"] is True and out["differences"] == []
    rc, out = _cli("--vendor", "openai", "--explain", str(a), str(c))
    assert rc == 1 and out["same_key"] is False
    assert out["differences"] == [{"path": "$.temperature", "a": 1, "b": 0.2}]
