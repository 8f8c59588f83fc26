"""Estimate against the bill: the input tokens Estimate plans for an OpenAI model against the
input tokens the emulator bills for the same job (each model's own encoding, OpenAI's published
chat framing), through the real gateway over loopback."""

from __future__ import annotations

import pytest
from longread.client import AsyncClient, Options
from longread_sandbox.sample import (
    DEMO_QUESTION,
    ZH_QUESTION,
    generate_chinese_report,
    generate_report,
)

# English and Chinese reports of ~40K tokens: over five 8K-token chunks each.
DOCUMENTS = {
    "en": (generate_report(200_000), DEMO_QUESTION),
    "zh": (generate_chinese_report(60_000), ZH_QUESTION),
}
MODELS = ("gpt-4.1-mini", "gpt-4o-mini", "gpt-4-turbo")  # o200k_base, o200k_base, cl100k_base
TOLERANCE = 0.02


@pytest.mark.parametrize("doc", sorted(DOCUMENTS))
@pytest.mark.parametrize("model", MODELS)
async def test_single_pass_estimate_is_the_bill(client: AsyncClient, model: str, doc: str) -> None:
    text, question = DOCUMENTS[doc]
    options = Options(model=model, strategy="single_pass", cache="bypass")
    estimate = await client.estimate(text, question, options=options)
    result = await client.analyze(text, question, options=options)
    planned, billed = estimate.plan.estimated_input_tokens, result.usage.input_tokens
    assert abs(planned - billed) <= TOLERANCE * billed, (planned, billed)


@pytest.mark.parametrize("doc", sorted(DOCUMENTS))
@pytest.mark.parametrize("model", MODELS)
async def test_map_reduce_estimate_is_the_bill(client: AsyncClient, model: str, doc: str) -> None:
    """Map calls are known in advance and estimated exactly; the notes the reduce call reads
    are counted at their output limit, which is set here near what the emulator writes."""
    text, question = DOCUMENTS[doc]
    limit = 128
    options = Options(
        model=model,
        strategy="map_reduce",
        max_chunk_tokens=8000,
        max_output_tokens=limit,
        cache="bypass",
    )
    estimate = await client.estimate(text, question, options=options)
    result = await client.analyze(text, question, options=options)
    plan = estimate.plan
    planned, billed = plan.estimated_input_tokens, result.usage.input_tokens
    assert plan.map_calls > 4 and plan.collapse_calls == 0
    assert abs(planned - billed) <= TOLERANCE * billed, (planned, billed)
    # Every map call costs its chunk plus the same framed prompt: nothing unaccounted (a token
    # either way where a chunk's edge merges with the template's line feed into one token).
    extra = [
        r.usage.input_tokens - c.tokens
        for r, c in zip(result.chunk_results, plan.chunks, strict=True)
    ]
    assert max(extra) - min(extra) <= 2 and 0 < min(extra) < 200, extra
    # The estimate is an upper bound: it counts every note at its limit.
    assert planned >= billed


async def test_map_reduce_estimate_counts_notes_at_their_limit(client: AsyncClient) -> None:
    """At the default note limit (1024 tokens) the estimate stays an upper bound, above the bill
    by at most what the notes fell short of their limit."""
    text, question = DOCUMENTS["en"]
    options = Options(
        model="gpt-4o-mini", strategy="map_reduce", max_chunk_tokens=8000, cache="bypass"
    )
    estimate = await client.estimate(text, question, options=options)
    result = await client.analyze(text, question, options=options)
    plan = estimate.plan
    planned, billed = plan.estimated_input_tokens, result.usage.input_tokens
    written = sum(r.usage.output_tokens for r in result.chunk_results)
    unwritten = plan.map_calls * 1024 - written  # the default limit of a map's output
    assert billed <= planned <= billed + unwritten + 16 * plan.map_calls
