"""The planner and the BM25 ranking: pure functions, no I/O."""

from __future__ import annotations

import pytest
from longread_sandbox.sample import DEMO_QUESTION, generate_report
from longread_server.domain import Message, ModelInfo
from longread_server.plan.catalog import Catalog
from longread_server.plan.planner import (
    JobSpec,
    PlanDefaults,
    PlanError,
    Strategy,
    plan_job,
    quick_fit,
)
from longread_server.plan.rank import bm25_scores, select
from longread_server.plan.tokenizers import get_tokenizer

TOK = get_tokenizer("cl100k_base")
CAT = Catalog.builtin()
SMALL = ModelInfo("x", "small", 8000, 1000, 1.0, 2.0, 0.5, tokens_exact=True)


def model(name: str) -> ModelInfo:
    m = next(m for m in CAT.models() if m.model == name)
    return m


def test_effective_limit_reserves_prompt_output_and_error() -> None:
    spec = JobSpec(text="short text. " * 10, instruction="What?", max_output_tokens=500)
    exact = plan_job(spec, SMALL, TOK)
    assert exact.strategy is Strategy.SINGLE_PASS and exact.fits_single_pass
    assert exact.effective_input_limit == 8000 - 500 - exact.overhead_tokens
    estimated = plan_job(spec, model("claude-haiku-4-5"), TOK)
    assert not estimated.tokens_exact and estimated.token_error == pytest.approx(0.2)
    assert estimated.effective_input_limit < 200_000 - 500


def test_map_reduce_plan_counts_calls_and_collapses() -> None:
    text = generate_report(200_000)
    spec = JobSpec(text=text, instruction=DEMO_QUESTION, max_chunk_tokens=500, overlap_tokens=50)
    tiny = ModelInfo("x", "tiny", 4000, 300, 1.0, 2.0, 0.5, tokens_exact=True)
    plan = plan_job(spec, tiny, TOK, PlanDefaults(output_tokens=300, map_output_tokens=300))
    assert plan.strategy is Strategy.MAP_REDUCE
    assert plan.map_calls == len(plan.chunks) > 50
    assert all(c.tokens <= 500 for c in plan.chunks)
    assert plan.collapse_calls > 0 and plan.reduce_calls == 1  # notes do not fit one call
    assert plan.calls == plan.map_calls + plan.collapse_calls + 1
    assert plan.estimated_output_tokens == 300 * plan.calls
    assert plan.estimated_cost.total_usd > 0


def test_single_pass_that_does_not_fit_names_the_field() -> None:
    spec = JobSpec(text="word " * 20_000, instruction="Q?", strategy=Strategy.SINGLE_PASS)
    with pytest.raises(PlanError) as info:
        plan_job(spec, SMALL, TOK)
    assert info.value.field == "chunking.strategy"


def test_chunk_larger_than_the_model_takes_is_rejected() -> None:
    spec = JobSpec(text="word " * 20_000, instruction="Q?", max_chunk_tokens=9000)
    with pytest.raises(PlanError) as info:
        plan_job(spec, SMALL, TOK)
    assert info.value.field == "chunking.max_chunk_tokens"


def test_history_trimmed_oldest_first() -> None:
    turns = tuple(Message("user", f"turn {i} " + "x " * 1500) for i in range(6))
    spec = JobSpec(text="A short document.", instruction="Q?", history=turns, max_output_tokens=500)
    plan = plan_job(spec, SMALL, TOK)
    assert 0 < plan.history_kept < 6
    all_fit = plan_job(
        JobSpec(
            text="A short document.", instruction="Q?", history=turns[-1:], max_output_tokens=500
        ),
        SMALL,
        TOK,
    )
    assert all_fit.history_kept == 1


def test_budget_flag() -> None:
    spec = JobSpec(text="Some text.", instruction="Q?", max_cost_usd=1e-9)
    assert not plan_job(spec, model("gpt-4o"), TOK).within_budget
    spec = JobSpec(text="Some text.", instruction="Q?", max_cost_usd=10.0)
    assert plan_job(spec, model("gpt-4o"), TOK).within_budget


def test_select_picks_relevant_chunks_in_order() -> None:
    text = generate_report(100_000)
    spec = JobSpec(
        text=text, instruction=DEMO_QUESTION, strategy=Strategy.SELECT, max_chunk_tokens=300
    )
    plan = plan_job(spec, SMALL, TOK, PlanDefaults(output_tokens=500))
    assert plan.selected == sorted(plan.selected) and plan.calls == 1
    fact = text.index("turbine bearings")
    assert any(plan.chunks[i].start <= fact < plan.chunks[i].end for i in plan.selected)
    assert plan.estimated_input_tokens <= plan.effective_input_limit + plan.overhead_tokens


def test_bm25_and_select() -> None:
    docs = ["the cat sat", "dogs bark loudly at night", "a cat and a dog", "nothing here"]
    scores = bm25_scores("cat", docs)
    assert scores[0] > 0 and scores[2] > 0 and scores[1] == scores[3] == 0
    assert select(scores, [5, 5, 5, 5], 10) == [0, 2]
    assert select(scores, [5, 5, 8, 5], 10) == [0]
    assert select([0.0, 0.0], [3, 3], 3) == [0]  # nothing relevant: the opening
    zh = bm25_scores("涡轮轴承", ["今天天气很好。", "涡轮轴承未通过测试。"])
    assert zh[1] > zh[0]


def test_quick_fit_matches_plan_for_single_pass() -> None:
    spec = JobSpec(text=generate_report(20_000), instruction=DEMO_QUESTION)
    m = model("gpt-4.1-mini")
    own = get_tokenizer(m.tokenizer)  # as planning does: the model's own encoding
    n = own.count(spec.text)
    plan = plan_job(spec, m, own)
    fit = quick_fit(spec, m, n, plan.overhead_tokens, PlanDefaults())
    assert fit.fits_single_pass and fit.calls == 1
    assert fit.estimated_cost.total_usd == pytest.approx(plan.estimated_cost.total_usd)
