"""Planning: one count, the model, the plan; small requests' plans remembered, long documents'
encodings remembered, huge ones planned off the event loop; too-large documents refused."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from longread_server.domain import InvalidRequest, ModelPreference
from longread_server.memo import OFFLOAD_MIN_CHARS, REMEMBER_MAX_CHARS
from longread_server.plan.catalog import Catalog
from longread_server.plan.planner import JobPlan, JobSpec, ModelFit, PlanDefaults, Strategy
from longread_server.plan.tokenizers import get_tokenizer
from longread_server.run.models import ModelResolver
from longread_server.run.planning import Planning
from longread_server.run.request import JobRequest

from tests.unit.run.support import model, numbered_words

Q = "What is listed?"
SMALL = model("small", "openai", context=2000, max_output=500)
CATALOG = Catalog.builtin([SMALL])


def planning(max_tokens: int = 2_000_000, cls: type[Planning] = Planning) -> Planning:
    models = ModelResolver(CATALOG, {"openai": (), "anthropic": ()}, "gpt-4.1-mini")
    return cls(models, PlanDefaults(), max_tokens)


def request(text: str, **kw: Any) -> JobRequest:
    spec_kw = {k: kw.pop(k) for k in ("instruction", "strategy") if k in kw}
    spec_kw.setdefault("instruction", Q)
    return JobRequest(spec=JobSpec(text=text, **spec_kw), **kw)


def text_of(chars: int) -> str:
    words = numbered_words(chars // 6 + 1)
    return words[:chars]


class ThreadNoting(Planning):
    """Notes which thread plans: the event loop's, or a worker's."""

    threads: list[threading.Thread]

    def plan_now(self, request: JobRequest, with_fits: bool) -> tuple[JobPlan, list[ModelFit]]:
        self.threads.append(threading.current_thread())
        return super().plan_now(request, with_fits)


async def test_a_small_request_is_planned_once() -> None:
    p = planning()
    req = request(text_of(2000))
    first, _ = await p.plan(req, with_fits=False)
    again, _ = await p.plan(request(text_of(2000)), with_fits=False)
    assert again is first  # an equal request: the remembered plan
    other, _ = await p.plan(request(text_of(2000), instruction="Another question?"), False)
    assert other is not first
    with_fits, fits = await p.plan(req, with_fits=True)
    assert with_fits is not first and fits  # fits are part of what is remembered
    assert len(p.encodings) == 0  # short documents' encodings are not kept


async def test_a_long_request_is_planned_anew_but_tokenized_once() -> None:
    text = text_of(REMEMBER_MAX_CHARS + 1000)
    p = planning()
    first, _ = await p.plan(request(text), with_fits=False)
    again, _ = await p.plan(request(text), with_fits=False)
    assert again is not first and again == first
    assert (p.encodings.misses, p.encodings.hits, len(p.encodings)) == (1, 1, 1)


@pytest.mark.parametrize(
    ("chars", "offloaded"),
    [(REMEMBER_MAX_CHARS + 10, False), (OFFLOAD_MIN_CHARS + 10, True)],
)
async def test_only_huge_documents_are_planned_in_a_worker_thread(
    chars: int, offloaded: bool
) -> None:
    p = planning(cls=ThreadNoting)
    assert isinstance(p, ThreadNoting)
    p.threads = []
    await p.plan(request(text_of(chars)), with_fits=False)
    (thread,) = p.threads
    assert (thread is not threading.current_thread()) == offloaded


async def test_a_document_over_the_token_limit_is_refused_with_the_limit() -> None:
    text = text_of(600)
    tokens = get_tokenizer("cl100k_base").count(text)
    with pytest.raises(InvalidRequest) as info:
        await planning(max_tokens=tokens - 1).plan(request(text), with_fits=False)
    e = info.value
    assert e.reason == "DOCUMENT_TOO_LARGE"
    assert [(v.field, v.reason) for v in e.violations] == [("document.text", "DOCUMENT_TOO_LARGE")]
    # Counting stops at the limit, so the error knows "more than", not the count; it is
    # worded as the character limit is.
    assert e.metadata == {"limit": str(tokens - 1), "unit": "tokens"}
    assert e.violations[0].description == (
        f"is more than {tokens - 1} tokens; the limit is {tokens - 1} tokens"
    )
    # At the limit exactly, it is planned.
    plan, _ = await planning(max_tokens=tokens).plan(request(text), with_fits=False)
    assert plan.document_tokens == tokens


async def test_a_plan_that_cannot_run_as_asked_names_the_field() -> None:
    req = request(text_of(20_000), model="small", strategy=Strategy.SINGLE_PASS)
    with pytest.raises(InvalidRequest) as info:
        await planning().plan(req, with_fits=False)
    assert info.value.reason == "DOES_NOT_FIT"
    assert [v.field for v in info.value.violations] == ["chunking.strategy"]


async def test_fits_come_cheapest_first_and_the_models_that_cannot_run_last() -> None:
    _, fits = await planning().plan(request(text_of(3000)), with_fits=True)
    runnable = [f for f in fits if f.calls]
    assert fits[: len(runnable)] == runnable
    costs = [f.estimated_cost.total_usd for f in runnable]
    assert costs == sorted(costs)
    assert {f.model.vendor for f in fits} == {"openai", "anthropic"}


async def test_cheapest_is_chosen_from_the_fits() -> None:
    p = planning()
    plan, fits = await p.plan(
        request(text_of(3000), preference=ModelPreference.CHEAPEST), with_fits=False
    )
    assert fits  # needed to choose, even when not asked for
    assert plan.model == next(f.model for f in fits if f.fits_single_pass)


async def test_replanning_with_the_vendors_count_makes_the_plan_exact() -> None:
    p = planning()
    req = request(text_of(3000), vendor="anthropic", model="claude-haiku-4-5")
    plan, _ = await p.plan(req, with_fits=False)
    assert not plan.tokens_exact and plan.token_error > 0
    exact = await p.replan_exact(req, plan, plan.document_tokens + 77)
    assert exact.tokens_exact and exact.token_error == 0.0
    assert exact.document_tokens == plan.document_tokens + 77
    assert exact.estimated_input_tokens > plan.estimated_input_tokens
    assert not plan.tokens_exact  # the remembered plan is left as it was


CHINESE = "港口九点关闭，渡轮每小时一班。第二条生产线推迟了十一周，因为轴承没有通过验收。" * 4000


async def test_the_plan_counts_with_the_models_own_encoding() -> None:
    """gpt-4.1-mini counts with o200k_base, exactly; on Chinese that is far fewer tokens than
    cl100k_base, so plan, cost and limits would otherwise be off by the difference."""
    plan, _ = await planning().plan(request(CHINESE, model="gpt-4.1-mini"), with_fits=False)
    assert plan.tokens_exact and plan.token_error == 0.0
    assert plan.document_tokens == get_tokenizer("o200k_base").count(CHINESE)
    assert plan.document_tokens < 0.8 * get_tokenizer("cl100k_base").count(CHINESE)
    claude, _ = await planning().plan(request(CHINESE, model="claude-haiku-4-5"), with_fits=False)
    assert claude.document_tokens == get_tokenizer("cl100k_base").count(CHINESE)


async def test_fits_of_the_other_encoding_come_from_the_sampled_ratio() -> None:
    """Estimate's fits come from one count: a model of the other encoding gets it scaled by
    the encodings' ratio on samples of the document, close to its own count."""
    p = planning()
    text = CHINESE[: len(CHINESE) // 2]  # sampled (longer than the slices), far from any limit
    _, from_o200k = await p.plan(request(text, model="gpt-4.1-mini"), with_fits=True)
    _, from_cl100k = await p.plan(request(text, model="claude-haiku-4-5"), with_fits=True)
    by_model = {f.model.model: f for f in from_cl100k}
    # Within the margin the scaled fit adds (a tighter limit: a few more map calls at most).
    for fit in from_o200k:
        other = by_model[fit.model.model]
        assert fit.fits_single_pass == other.fits_single_pass, fit.model.model
        assert abs(fit.calls - other.calls) <= max(1, 0.1 * other.calls), fit.model.model
        cost, cost_other = fit.estimated_cost.total_usd, other.estimated_cost.total_usd
        assert cost == pytest.approx(cost_other, rel=0.1), fit.model.model
