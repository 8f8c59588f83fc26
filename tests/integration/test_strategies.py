"""Long documents through gRPC: each strategy on a ~200K-token report, Chinese text, a
1M-token Estimate, and conversation history trimmed to fit."""

from __future__ import annotations

import pytest
from longread.client import AsyncClient, Options
from longread.v1 import types_pb2 as pb
from longread_sandbox import Sandbox
from longread_sandbox.sample import (
    DEMO_QUESTION,
    FACTS,
    ZH_FACT,
    ZH_QUESTION,
    generate_chinese_report,
    generate_report,
)

FACT = FACTS["northfield_delay"]


@pytest.fixture(scope="module")
def report_200k() -> str:
    text = generate_report(1_000_000)  # ~200K cl100k tokens
    return text


@pytest.mark.parametrize(
    ("strategy", "model"),
    [
        ("single_pass", "gpt-4.1-mini"),  # 1M context: fits in one call
        ("map_reduce", "gpt-4o-mini"),
        ("refine", "claude-haiku-4-5"),
        ("select", "gpt-4o-mini"),
    ],
)
async def test_each_strategy_on_a_200k_token_report(
    client: AsyncClient, sandbox: Sandbox, report_200k: str, strategy: str, model: str
) -> None:
    before = sandbox.stats.requests
    events = [
        ev
        async for ev in client.stream(
            # bypass: count this strategy's own calls (reports of other tests share chunks)
            report_200k,
            DEMO_QUESTION,
            options=Options(model=model, strategy=strategy, cache="bypass"),
        )
    ]
    plan, result = events[0].plan, events[-1].result
    assert plan.document_tokens > 190_000
    assert plan.strategy == getattr(pb, f"STRATEGY_{strategy.upper()}")
    assert "turbine bearings" in result.text, result.text[:500]
    upstream_calls = sandbox.stats.requests - before
    assert result.usage.calls == upstream_calls
    if strategy == "single_pass":
        assert upstream_calls == 1 and len(plan.chunks) == 1
    elif strategy == "map_reduce":
        assert upstream_calls == plan.map_calls + plan.collapse_calls + 1
    elif strategy == "refine":
        # Sequential: one step per chunk, each chunk result traceable to its span.
        assert upstream_calls == len(plan.chunks) > 1
        steps = [ev.chunk_done.result for ev in events if ev.HasField("chunk_done")]
        assert [s.index for s in steps] == list(range(len(plan.chunks)))
        assert all(
            s.start == c.start and s.end == c.end for s, c in zip(steps, plan.chunks, strict=True)
        )
    else:
        assert upstream_calls == 1
        selected = list(plan.selected_chunks)
        assert selected == sorted(selected) and 0 < len(selected) < len(plan.chunks)
        fact_at = report_200k.index(FACT)
        assert any(plan.chunks[i].start <= fact_at < plan.chunks[i].end for i in selected)
        assert result.usage.input_tokens < plan.document_tokens // 2  # the cheap path


async def test_chinese_document_without_newlines(client: AsyncClient) -> None:
    text = generate_chinese_report(120_000)
    opts = Options(model="gpt-4o-mini", strategy="map_reduce", max_chunk_tokens=4000)
    r = await client.analyze(text, ZH_QUESTION, options=opts)
    assert "涡轮轴承" in r.text, r.text
    chunks = r.plan.chunks
    assert len(chunks) > 5 and all(c.tokens <= 4000 for c in chunks)
    # Chunks end at CJK sentence ends: never mid-sentence, never a broken character.
    ends = [text[c.end - 1] for c in chunks[:-1]]
    assert sum(e in "。！？；」" for e in ends) >= 0.94 * len(ends), ends
    assert all("\ufffd" not in cr.text for cr in r.chunk_results)
    hits = [cr for cr in r.chunk_results if cr.start <= text.index(ZH_FACT) < cr.end]
    assert hits and "涡轮轴承" in hits[0].text


async def test_estimate_of_a_1m_token_document(client: AsyncClient, sandbox: Sandbox) -> None:
    text = generate_report(5_100_000)
    before = sandbox.stats.requests
    r = await client.estimate(text, DEMO_QUESTION, options=Options(model="gpt-4o-mini"))
    p = r.plan
    assert p.document_tokens >= 1_000_000
    assert p.strategy == pb.STRATEGY_MAP_REDUCE and p.map_calls == len(p.chunks) > 50
    assert p.chunks[0].start == 0 and p.chunks[-1].end == len(text)
    assert max(c.tokens for c in p.chunks) <= p.effective_input_limit
    assert p.collapse_calls >= 0 and p.reduce_calls == 1
    assert p.estimated_cost.total_usd > 0 and sandbox.stats.requests == before  # no model call
    fitting = [c for c in r.candidates if c.fits_single_pass]
    assert all(c.model.context_window > 1_000_000 for c in fitting)


async def test_history_is_trimmed_oldest_first(client: AsyncClient) -> None:
    doc = generate_report(400_000)  # ~80K tokens: gpt-4o-mini has room for only part of it
    turns = [
        ("user" if i % 2 == 0 else "assistant", f"turn {i}: " + "words " * 4000) for i in range(20)
    ]
    r = await client.analyze(
        doc, DEMO_QUESTION, options=Options(model="gpt-4o-mini", history=turns)
    )
    kept = r.plan.history_turns_kept
    assert 0 < kept < 20
    assert [w.code for w in r.warnings] == ["HISTORY_TRIMMED"]
    assert r.plan.strategy == pb.STRATEGY_SINGLE_PASS


async def test_exact_count_from_the_vendor_endpoint(client: AsyncClient, sandbox: Sandbox) -> None:
    from longread.client import build_request
    from longread.v1 import analysis_service_pb2 as svc

    text = generate_report(20_000)
    req = build_request(svc.EstimateRequest, text, DEMO_QUESTION, Options(model="claude-haiku-4-5"))
    rough = await client.estimate(request=req)
    assert not rough.plan.tokens_exact and rough.warnings[0].code == "TOKENS_ESTIMATED"
    before = sandbox.stats.by_endpoint.copy()
    req.exact_token_count = True
    exact = await client.estimate(request=req)
    assert exact.plan.tokens_exact and exact.plan.token_error == 0
    assert not [w for w in exact.warnings if w.code == "TOKENS_ESTIMATED"]
    counted = sandbox.stats.by_endpoint - before
    assert sum(counted.values()) == 1 and next(iter(counted)).endswith("count_tokens")
    # The sandbox counts with cl100k plus message framing: a few tokens more than the text.
    assert 0 < exact.plan.document_tokens - rough.plan.document_tokens < 16


async def test_the_exact_count_is_limited_like_any_model_call(sandbox: Sandbox) -> None:
    """The vendor's count goes through the call pipeline: a tenant allowed one request a
    minute gets one exact count, and the next is refused by its rate limit, not sent."""
    import grpc
    from longread.client import build_request, error_details
    from longread.v1 import analysis_service_pb2 as svc
    from longread_server.app import start
    from longread_server.config import TenantConfig

    from tests.conftest import gateway_config

    tenant = TenantConfig(
        name="counted", api_keys=["k-counted"], requests_per_minute=1, burst_requests=1
    )
    gw = await start(gateway_config(sandbox, tenants=[tenant]))
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}", api_key="k-counted", timeout=5) as c:
            text = generate_report(8_000) + "(counted once)"
            req = build_request(
                svc.EstimateRequest, text, DEMO_QUESTION, Options(model="claude-haiku-4-5")
            )
            req.exact_token_count = True
            before = sandbox.stats.by_endpoint.copy()
            first = await c.estimate(request=req)
            assert first.plan.tokens_exact
            with pytest.raises(grpc.RpcError) as refused:
                await c.estimate(request=req)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_details(refused.value).reason == "RATE_LIMITED"
            counted = sandbox.stats.by_endpoint - before
            assert sum(counted.values()) == 1  # the refused count never reached the vendor
            req.exact_token_count = False  # an estimate without the vendor is not a call
            assert not (await c.estimate(request=req)).plan.tokens_exact
    finally:
        await gw.stop(0)
