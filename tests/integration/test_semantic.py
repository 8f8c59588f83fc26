"""Semantic reuse end to end: a question that means the same as one already answered about the
same document gets that answer without a model call (run/semantic.py). Real gateways on
loopback, the sandbox as the vendor (and as the embeddings upstream), a real redis-server.

Upstream calls are counted where they land, at the sandbox. Each test sends a document no
other test sends, so no earlier answer is in scope.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from longread.client import AsyncClient, Options, error_details
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import types_pb2 as pb
from longread_sandbox import Sandbox
from longread_server.app import Gateway, start
from longread_server.config import Config, TenantConfig
from longread_server.telemetry import setup
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.conftest import gateway_config
from tests.metric_points import data_points
from tests.redis_cluster import RedisClusterServer
from tests.redis_server import PATIENT_S, RedisServer

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"

# The same facts in other words (the local model scores them ~0.95 alike).
Q = "How many tonnes of steel did the Northfield plant produce in 2023?"
REWORDED = "How much steel, in tonnes, did the Northfield plant make in 2023?"
# Close in words, another plant: other facts.
OTHER_PLANT = "How many tonnes of steel did the Southfield plant produce in 2023?"
# Another question, and a rewording of it.
STAFF = "How many people does the Northfield plant employ?"
STAFF_REWORDED = "How many people work at the Northfield plant?"

SEMANTIC = Options(semantic=True)


def doc() -> str:
    """A document with two plants that no other test sends."""
    return (
        f"Operations record {uuid.uuid4().hex}. The company runs two steel plants. "
        "The Northfield plant produced 1,200 tonnes of steel in 2023 and employs 340 people. "
        "The Southfield plant produced 900 tonnes of steel in 2023 and employs 210 people. "
        "Both plants were audited in March 2024."
    )


def chat_calls(sandbox: Sandbox) -> int:
    return sandbox.stats.by_endpoint.get(CHAT, 0)


def embedding_calls(sandbox: Sandbox) -> int:
    return sandbox.stats.by_endpoint.get(EMBEDDINGS, 0)


@asynccontextmanager
async def serving(cfg: Config) -> AsyncIterator[Gateway]:
    gw = await start(cfg)
    try:
        yield gw
    finally:
        await gw.stop(0.5)


def assert_semantic_hit(hit: svc.AnalyzeResponse, first: svc.AnalyzeResponse, asked: str) -> None:
    assert hit.cache_status == pb.CACHE_STATUS_SEMANTIC_HIT
    assert hit.HasField("semantic_match")
    assert hit.semantic_match.question == asked
    assert 0 < hit.semantic_match.similarity <= 1
    assert hit.text == first.text
    assert hit.usage.calls == 0 and hit.usage.input_tokens == 0
    assert hit.usage.output_tokens == 0 and hit.cost.total_usd == 0


# ---- reuse, and what is not reused ----


async def test_a_reworded_question_gets_the_first_answer_without_a_model_call(
    client: AsyncClient, sandbox: Sandbox
) -> None:
    text = doc()
    first = await client.analyze(text, Q, options=SEMANTIC)
    assert first.cache_status == pb.CACHE_STATUS_MISS and first.text
    assert not first.HasField("semantic_match")
    before = sandbox.stats.requests
    hit = await client.analyze(text, REWORDED, options=SEMANTIC)
    assert_semantic_hit(hit, first, Q)
    assert sandbox.stats.requests == before  # no upstream request at all


async def test_the_same_question_about_the_other_plant_is_not_reused(
    client: AsyncClient, sandbox: Sandbox
) -> None:
    text = doc()
    await client.analyze(text, Q, options=SEMANTIC)
    before = chat_calls(sandbox)
    other = await client.analyze(text, OTHER_PLANT, options=SEMANTIC)
    assert other.cache_status == pb.CACHE_STATUS_MISS
    assert not other.HasField("semantic_match")
    assert chat_calls(sandbox) == before + 1


async def test_semantic_reuse_is_off_by_default(client: AsyncClient, sandbox: Sandbox) -> None:
    text = doc()
    await client.analyze(text, Q, options=SEMANTIC)
    before = chat_calls(sandbox)
    r = await client.analyze(text, REWORDED)  # neither the request nor its tenant asks
    assert r.cache_status == pb.CACHE_STATUS_MISS
    assert not r.HasField("semantic_match")
    assert chat_calls(sandbox) == before + 1


# ---- streams ----


async def test_a_semantic_hit_on_stream_is_plan_then_deltas_then_the_result(
    client: AsyncClient, sandbox: Sandbox
) -> None:
    text = doc()
    first = await client.analyze(text, Q, options=SEMANTIC)
    before = sandbox.stats.requests
    events = [ev async for ev in client.stream(text, REWORDED, options=SEMANTIC)]
    assert sandbox.stats.requests == before
    kinds = [ev.WhichOneof("event") for ev in events]
    assert kinds[0] == "plan" and kinds[-1] == "result"
    assert set(kinds[1:-1]) <= {"delta", "warning"} and "delta" in kinds
    deltas = [ev.delta.text for ev in events if ev.HasField("delta")]
    result = events[-1].result
    assert "".join(deltas) == result.text == first.text
    assert_semantic_hit(result, first, Q)


# ---- the cache policy ----


async def test_bypass_does_not_read_but_stores(client: AsyncClient, sandbox: Sandbox) -> None:
    text = doc()
    await client.analyze(text, Q, options=SEMANTIC)  # stored: a read would find it
    before = chat_calls(sandbox)
    fresh = await client.analyze(text, REWORDED, options=Options(semantic=True, cache="bypass"))
    assert fresh.cache_status == pb.CACHE_STATUS_BYPASS
    assert not fresh.HasField("semantic_match")
    assert chat_calls(sandbox) == before + 1

    # What a bypass answers is stored: a later request finds it.
    text = doc()
    stored = await client.analyze(text, Q, options=Options(semantic=True, cache="bypass"))
    before = sandbox.stats.requests
    hit = await client.analyze(text, REWORDED, options=SEMANTIC)
    assert_semantic_hit(hit, stored, Q)
    assert sandbox.stats.requests == before


async def test_no_store_reads_but_does_not_store(client: AsyncClient, sandbox: Sandbox) -> None:
    text = doc()
    first = await client.analyze(text, Q, options=SEMANTIC)
    before = sandbox.stats.requests
    hit = await client.analyze(text, REWORDED, options=Options(semantic=True, cache="no_store"))
    assert_semantic_hit(hit, first, Q)
    assert sandbox.stats.requests == before

    new = await client.analyze(text, STAFF, options=Options(semantic=True, cache="no_store"))
    assert new.cache_status == pb.CACHE_STATUS_MISS
    before = chat_calls(sandbox)
    again = await client.analyze(text, STAFF_REWORDED, options=SEMANTIC)
    assert again.cache_status == pb.CACHE_STATUS_MISS  # the no_store answer was not kept
    assert chat_calls(sandbox) == before + 1

    # The control: stored (by default), the same pair is reused.
    before = sandbox.stats.requests
    hit = await client.analyze(text, STAFF, options=SEMANTIC)
    assert_semantic_hit(hit, again, STAFF_REWORDED)
    assert sandbox.stats.requests == before


async def test_only_if_cached_takes_a_semantic_hit_and_otherwise_is_not_cached(
    client: AsyncClient, sandbox: Sandbox
) -> None:
    text = doc()
    first = await client.analyze(text, Q, options=SEMANTIC)
    before = sandbox.stats.requests
    hit = await client.analyze(
        text, REWORDED, options=Options(semantic=True, cache="only_if_cached")
    )
    assert_semantic_hit(hit, first, Q)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.analyze(text, STAFF, options=Options(semantic=True, cache="only_if_cached"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(err.value).reason == "NOT_CACHED"
    assert sandbox.stats.requests == before  # neither was an upstream call


# ---- tenants ----


async def test_a_tenants_opt_in_reuses_within_that_tenant_only(sandbox: Sandbox) -> None:
    keys = {"acme": "sem-key-acme", "globex": "sem-key-globex", "initech": "sem-key-initech"}
    tenants = [
        TenantConfig(name="acme", api_keys=[keys["acme"]], semantic_cache=True),
        TenantConfig(name="globex", api_keys=[keys["globex"]], semantic_cache=True),
        TenantConfig(name="initech", api_keys=[keys["initech"]]),
    ]
    text = doc()
    async with serving(gateway_config(sandbox, tenants=tenants)) as gw:
        target = f"127.0.0.1:{gw.port}"
        async with (
            AsyncClient(target, api_key=keys["acme"], timeout=60) as acme,
            AsyncClient(target, api_key=keys["globex"], timeout=60) as globex,
            AsyncClient(target, api_key=keys["initech"], timeout=60) as initech,
        ):
            first = await acme.analyze(text, Q)  # the request does not ask
            assert first.cache_status == pb.CACHE_STATUS_MISS
            before = sandbox.stats.requests
            hit = await acme.analyze(text, REWORDED)
            assert_semantic_hit(hit, first, Q)
            assert sandbox.stats.requests == before

            # The tenant's request turns it off.
            before = chat_calls(sandbox)
            off = await acme.analyze(text, REWORDED.lower(), options=Options(semantic=False))
            assert off.cache_status == pb.CACHE_STATUS_MISS
            assert not off.HasField("semantic_match")
            assert chat_calls(sandbox) == before + 1

            # Other tenants, opted in or asking themselves, never get acme's answer.
            for other, opts in ((globex, Options()), (initech, SEMANTIC)):
                before = chat_calls(sandbox)
                r = await other.analyze(text, REWORDED, options=opts)
                assert r.cache_status == pb.CACHE_STATUS_MISS
                assert not r.HasField("semantic_match")
                assert chat_calls(sandbox) == before + 1


# ---- bad input ----


async def test_a_min_similarity_above_one_is_an_invalid_argument(
    client: AsyncClient, sandbox: Sandbox
) -> None:
    before = sandbox.stats.requests
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.analyze(doc(), Q, options=Options(semantic=True, min_similarity=1.5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in error_details(err.value).field_violations]
    assert "cache.semantic.min_similarity" in fields
    assert sandbox.stats.requests == before


# ---- across replicas ----


async def test_a_question_answered_on_one_replica_is_reused_on_another(
    sandbox: Sandbox, shared_redis: RedisServer | RedisClusterServer
) -> None:
    cfg = gateway_config(sandbox, redis_url=shared_redis.url)
    # Shared state, not a slow Redis, is the subject: a loaded machine must not look like an
    # outage (the gate would then serve each replica from its own index).
    cfg.resilience.redis_timeout_s = PATIENT_S
    text = doc()
    async with (
        serving(cfg) as a,
        serving(cfg) as b,
        AsyncClient(f"127.0.0.1:{a.port}", timeout=60) as on_a,
        AsyncClient(f"127.0.0.1:{b.port}", timeout=60) as on_b,
    ):
        first = await on_a.analyze(text, Q, options=SEMANTIC)
        assert first.cache_status == pb.CACHE_STATUS_MISS
        before = sandbox.stats.requests
        hit = await on_b.analyze(text, REWORDED, options=SEMANTIC)
        assert_semantic_hit(hit, first, Q)
        assert sandbox.stats.requests == before


# ---- embeddings from an upstream ----


async def test_embeddings_from_an_upstream_are_called_and_kept_in_the_response_cache(
    sandbox: Sandbox,
) -> None:
    cfg = gateway_config(sandbox)
    cfg.cache.semantic.embeddings = "openai"  # the sandbox's OpenAI upstream
    text = doc()
    async with serving(cfg) as gw, AsyncClient(f"127.0.0.1:{gw.port}", timeout=60) as c:
        embeds, chats = embedding_calls(sandbox), chat_calls(sandbox)
        first = await c.analyze(text, Q, options=SEMANTIC)
        assert first.cache_status == pb.CACHE_STATUS_MISS
        assert embedding_calls(sandbox) == embeds + 1
        assert chat_calls(sandbox) == chats + 1

        # The sandbox's vectors are feature hashes, not a trained model: they score this
        # rewording ~0.58 alike, so the request sets its own threshold.
        close = Options(semantic=True, min_similarity=0.5)
        hit = await c.analyze(text, REWORDED, options=close)
        assert_semantic_hit(hit, first, Q)
        assert embedding_calls(sandbox) == embeds + 2  # the new question's embedding
        assert chat_calls(sandbox) == chats + 1

        # The same question again: its embedding is the response cache's.
        again = await c.analyze(text, REWORDED, options=close)
        assert again.cache_status == pb.CACHE_STATUS_SEMANTIC_HIT and again.text == first.text
        assert embedding_calls(sandbox) == embeds + 2
        assert chat_calls(sandbox) == chats + 1


# ---- the reported similarity ----


async def test_the_same_question_asked_again_reports_a_similarity_of_at_most_one(
    client: AsyncClient,
) -> None:
    """A cosine similarity is at most 1, as the contract's min_similarity (0, 1] assumes."""
    text = doc()
    first = await client.analyze(text, Q, options=SEMANTIC)
    again = await client.analyze(text, Q, options=SEMANTIC)  # looked up before the exact cache
    assert_semantic_hit(again, first, Q)


async def test_min_similarity_one_reuses_the_same_question(client: AsyncClient) -> None:
    """min_similarity 1 (allowed: the range is (0, 1]) asks for the same meaning exactly: the
    same question has it."""
    text = doc()
    first = await client.analyze(text, REWORDED, options=SEMANTIC)
    exact = Options(semantic=True, min_similarity=1.0)
    again = await client.analyze(text, REWORDED, options=exact)
    assert again.cache_status == pb.CACHE_STATUS_SEMANTIC_HIT  # not the exact cache's HIT
    assert again.text == first.text


# ---- counted apart ----


def cache_requests(reader: InMemoryMetricReader) -> dict[str, int]:
    """``longread.cache.requests`` by result."""
    out: dict[str, int] = {}
    for p in data_points(reader, "longread.cache.requests"):
        result = str(dict(p.attributes or {}).get("result", ""))
        out[result] = out.get(result, 0) + int(p.value)
    return out


async def test_a_semantic_hit_is_counted_apart_from_an_exact_hit(sandbox: Sandbox) -> None:
    reader = InMemoryMetricReader()
    cfg = gateway_config(sandbox)
    gw = await start(cfg, telemetry=setup(cfg.telemetry, metric_readers=[reader]))
    text = doc()
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}", timeout=60) as c:
            await c.analyze(text, Q, options=SEMANTIC)
            before = cache_requests(reader)
            hit = await c.analyze(text, REWORDED, options=SEMANTIC)
            assert hit.cache_status == pb.CACHE_STATUS_SEMANTIC_HIT
            after = cache_requests(reader)
    finally:
        await gw.stop(0.5)
    assert after.get("semantic_hit", 0) == before.get("semantic_hit", 0) + 1
    assert after.get("hit", 0) == before.get("hit", 0)  # not an exact hit
    assert after.get("semantic_miss", 0) == before.get("semantic_miss", 0)


# ---- without the local model ----


async def test_without_the_semantic_extra_a_request_is_answered_with_a_warning(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server installed without the `semantic` extra (the image) answers a request that asks
    for semantic reuse as an exact-reuse request, and says so; a tenant that opts in stops the
    start instead, naming the extra."""
    import importlib.util

    from longread_server.config import ConfigError

    real = importlib.util.find_spec

    def without_wordllama(name: str, *args: object) -> object:
        return None if name == "wordllama" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_wordllama)
    async with serving(gateway_config(sandbox)) as gw, AsyncClient(f"127.0.0.1:{gw.port}") as c:
        text = doc()
        first = await c.analyze(text, Q, options=SEMANTIC)
        again = await c.analyze(text, REWORDED, options=SEMANTIC)
    for r in (first, again):
        assert r.cache_status == pb.CACHE_STATUS_MISS and r.text
        assert [w.code for w in r.warnings] == ["SEMANTIC_UNAVAILABLE"]
    tenants = [TenantConfig(name="acme", api_keys=["k-acme"], semantic_cache=True)]
    with pytest.raises(ConfigError, match="semantic"):
        await start(gateway_config(sandbox, tenants=tenants))
