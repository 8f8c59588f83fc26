"""The three RPCs over loopback against the sandbox, in both vendor protocols."""

from __future__ import annotations

import pytest
from longread.client import AsyncClient, Options
from longread.v1 import types_pb2 as pb
from longread_sandbox import Sandbox
from longread_sandbox.sample import DEMO_QUESTION, FACTS, generate_report
from longread_server.app import Gateway
from longread_server.plan.catalog import Catalog
from longread_server.plan.tokenizers import get_tokenizer

SHORT_DOC = (
    "The lighthouse on Gull Rock was built in 1871 from granite quarried nearby. "
    "Its lamp was converted to electricity in 1926. "
    "The keeper's cottage now houses a small museum about shipwrecks on the coast. "
    "Visitors can climb the 112 steps to the gallery in summer."
)
QUESTION = "When was the lamp converted to electricity?"


async def test_estimate_counts_plans_and_prices(client: AsyncClient) -> None:
    r = await client.estimate(SHORT_DOC, QUESTION, options=Options(model="gpt-4-turbo"))
    p = r.plan
    assert p.document_tokens == get_tokenizer("cl100k_base").count(SHORT_DOC)
    assert p.tokens_exact  # gpt-4-turbo uses cl100k_base
    assert p.strategy == pb.STRATEGY_SINGLE_PASS and p.fits_single_pass
    assert p.model.vendor == "openai" and p.model.context_window == 128000
    assert p.effective_input_limit < p.model.context_window
    assert [c.start for c in p.chunks] == [0] and p.chunks[0].end == len(SHORT_DOC)
    assert p.estimated_cost.total_usd > 0
    costs = [c.estimated_cost.total_usd for c in r.candidates if c.calls]
    assert costs == sorted(costs)
    assert {c.model.vendor for c in r.candidates} >= {"openai", "anthropic", "deepseek"}
    assert not [w for w in r.warnings if w.code == "TOKENS_ESTIMATED"]


async def test_estimate_states_error_of_estimated_counts(client: AsyncClient) -> None:
    r = await client.estimate(SHORT_DOC, QUESTION, options=Options(model="claude-haiku-4-5"))
    assert not r.plan.tokens_exact and r.plan.token_error > 0
    assert [w.code for w in r.warnings] == ["TOKENS_ESTIMATED"]


async def test_preference_cheapest_picks_cheapest_fitting_model(client: AsyncClient) -> None:
    r = await client.estimate(SHORT_DOC, QUESTION, options=Options(preference="cheapest"))
    fitting = [c for c in r.candidates if c.fits_single_pass]
    assert r.plan.model.model == fitting[0].model.model
    assert r.plan.estimated_cost.total_usd <= min(c.estimated_cost.total_usd for c in fitting)


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "claude-haiku-4-5", "deepseek-chat"])
async def test_analyze_single_pass(client: AsyncClient, sandbox: Sandbox, model: str) -> None:
    before = sandbox.stats.requests
    r = await client.analyze(SHORT_DOC, QUESTION, options=Options(model=model))
    assert "converted to electricity in 1926" in r.text
    assert r.plan.strategy == pb.STRATEGY_SINGLE_PASS
    assert r.usage.calls == 1 and sandbox.stats.requests == before + 1
    assert r.usage.input_tokens > r.plan.document_tokens and r.usage.output_tokens > 0
    m = Catalog.builtin().get(r.model.vendor, model)
    assert m is not None
    expected = r.usage.input_tokens * m.input_per_mtok + r.usage.output_tokens * m.output_per_mtok
    assert r.cost.total_usd == pytest.approx(expected / 1e6)
    assert r.finish_reason == "stop" and r.cache_status == pb.CACHE_STATUS_MISS
    assert r.timings.total.ToNanoseconds() > 0


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "claude-haiku-4-5"])
async def test_stream_events_in_order_and_equal_to_analyze(client: AsyncClient, model: str) -> None:
    opts = Options(model=model, cache="bypass")  # both upstream: usage and cost comparable
    events = [ev async for ev in client.stream(SHORT_DOC, QUESTION, options=opts)]
    kinds = [ev.WhichOneof("event") for ev in events]
    assert kinds[0] == "plan" and kinds[-1] == "result"
    assert kinds[1] == "chunk_started" and "delta" in kinds
    assert kinds.index("chunk_done") > max(i for i, k in enumerate(kinds) if k == "delta")
    result = events[-1].result
    assert "".join(ev.delta.text for ev in events if ev.HasField("delta")) == result.text
    analyzed = await client.analyze(SHORT_DOC, QUESTION, options=opts)
    for name in ("text", "usage", "cost", "plan", "model", "finish_reason", "chunk_results"):
        assert getattr(result, name) == getattr(analyzed, name), name


@pytest.mark.parametrize(
    ("model", "doc_chars", "chunk_tokens"),
    [("gpt-4o-mini", 700_000, 0), ("claude-haiku-4-5", 120_000, 6000)],
)
async def test_map_reduce_finds_planted_fact(
    client: AsyncClient, sandbox: Sandbox, model: str, doc_chars: int, chunk_tokens: int
) -> None:
    report = generate_report(doc_chars)
    # bypass: count upstream calls (other tests' reports share chunks with this one)
    opts = Options(
        model=model, max_chunk_tokens=chunk_tokens, strategy="map_reduce", cache="bypass"
    )
    before = sandbox.stats.requests
    events = [ev async for ev in client.stream(report, DEMO_QUESTION, options=opts)]
    plan, result = events[0].plan, events[-1].result
    assert plan.strategy == pb.STRATEGY_MAP_REDUCE and plan.map_calls == len(plan.chunks) > 1
    # Chunk bodies tile the document, in order.
    assert plan.chunks[0].start == 0 and plan.chunks[-1].end == len(report)
    assert all(a.end == b.start for a, b in zip(plan.chunks, plan.chunks[1:], strict=False))
    assert "turbine bearings" in result.text, result.text
    calls = plan.map_calls + plan.collapse_calls + plan.reduce_calls
    assert result.usage.calls == calls == sandbox.stats.requests - before
    # Each chunk result names the span it read; the planted fact is in one of them.
    fact_at = report.index(FACTS["northfield_delay"])
    hits = [c for c in result.chunk_results if c.start <= fact_at < c.end]
    assert len(hits) == 1 and "turbine bearings" in hits[0].text
    started = [ev.chunk_started for ev in events if ev.HasField("chunk_started")]
    assert sum(s.stage == pb.STAGE_MAP for s in started) == plan.map_calls
    assert started[-1].stage == pb.STAGE_REDUCE
    assert result.usage.input_tokens >= plan.document_tokens


async def test_labels_history_and_generation_options_accepted(client: AsyncClient) -> None:
    opts = Options(
        model="gpt-4.1-mini",
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop=["museum"],
        max_output_tokens=200,
        system_prompt="Be brief.",
        labels={"team": "docs"},
        history=[("user", "Hello"), ("assistant", "Hi, what document?")],
    )
    r = await client.analyze(SHORT_DOC, "Tell me about the keeper's cottage museum.", options=opts)
    assert "museum" not in r.text  # the stop sequence cut the answer
    assert r.finish_reason == "stop"


async def test_truncated_answer_warns(client: AsyncClient) -> None:
    opts = Options(model="gpt-4.1-mini", max_output_tokens=3)
    r = await client.analyze(SHORT_DOC, QUESTION, options=opts)
    assert r.finish_reason == "length" and r.usage.output_tokens <= 3
    assert [w.code for w in r.warnings] == ["OUTPUT_TRUNCATED"]


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "claude-haiku-4-5"])
async def test_upstream_connections_are_reused(
    client: AsyncClient, sandbox: Sandbox, model: str
) -> None:
    """Streamed calls end at the vendor's end marker; the gateway must still read the body to
    its end so the connection goes back to the pool rather than a new one per call."""
    before = sandbox.connections_accepted
    for i in range(10):
        r = await client.analyze(
            f"{SHORT_DOC} Note {i}.", QUESTION, options=Options(model=model, cache="bypass")
        )
        assert "1926" in r.text
    assert sandbox.connections_accepted - before <= 1


async def test_remembered_plans_answer_like_fresh_ones(client: AsyncClient) -> None:
    """Plans of recent requests are remembered by the request's digest: asking again, with
    one option changed, then the first request again, each gets its own plan."""
    doc = generate_report(30_000)
    small = Options(model="gpt-4o-mini", strategy="map_reduce", max_chunk_tokens=2000)
    large = Options(model="gpt-4o-mini", strategy="map_reduce", max_chunk_tokens=4000)
    first = await client.estimate(doc, DEMO_QUESTION, options=small)
    other = await client.estimate(doc, DEMO_QUESTION, options=large)
    again = await client.estimate(doc, DEMO_QUESTION, options=small)
    longer = await client.estimate(doc, DEMO_QUESTION + " Answer in detail.", options=small)
    assert len(other.plan.chunks) < len(first.plan.chunks)
    assert again == first
    assert longer.plan.estimated_input_tokens > first.plan.estimated_input_tokens


async def test_estimate_then_analyze_of_a_long_document_tokenizes_it_once(
    gateway: Gateway, client: AsyncClient
) -> None:
    """The usual flow for a long document: Estimate, then Analyze (here with another model and
    chunk size). The second plans from the remembered encoding: same counts, same cuts. A model
    of another encoding (o200k_base) counts the document once more, with its own."""
    report = generate_report(300_000) + "(estimate then analyze)"
    memo = gateway.encodings
    assert memo is not None
    hits, misses = memo.hits, memo.misses
    small = Options(model="claude-haiku-4-5", max_chunk_tokens=6000, strategy="map_reduce")
    est = await client.estimate(report, DEMO_QUESTION, options=small)
    assert (memo.hits, memo.misses) == (hits, misses + 1)
    analyzed = await client.analyze(
        report, DEMO_QUESTION, options=Options(model="claude-sonnet-4-5", strategy="map_reduce")
    )
    assert (memo.hits, memo.misses) == (hits + 1, misses + 1)
    fresh = get_tokenizer("cl100k_base").count(report)
    assert est.plan.document_tokens == analyzed.plan.document_tokens == fresh
    assert "turbine bearings" in analyzed.text
    again = await client.estimate(report, DEMO_QUESTION, options=small)
    assert [(c.start, c.end, c.tokens) for c in again.plan.chunks] == [
        (c.start, c.end, c.tokens) for c in est.plan.chunks
    ]
    o200k = await client.analyze(
        report, DEMO_QUESTION, options=Options(model="gpt-4o-mini", strategy="map_reduce")
    )
    assert o200k.plan.tokens_exact
    assert o200k.plan.document_tokens == get_tokenizer("gpt-4o-mini").count(report) != fresh
