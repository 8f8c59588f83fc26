"""Vendor prompt caching through the real gateway against the emulator: a first and a second
question on one ~100K-token document, per vendor. The second question reads the document from
the vendor's cache (the prompts put it first); the table says how much, and what each cost.

Run alone to see the table: ``pytest -s tests/integration/test_prompt_caching.py``.
"""

from __future__ import annotations

import uuid

import pytest
from longread.client import AsyncClient, Options
from longread_sandbox import Sandbox
from longread_sandbox.sample import generate_report
from longread_server.app import start
from longread_server.config import CacheConfig
from longread_server.plan.catalog import Catalog

from tests.conftest import gateway_config

# One model per upstream the emulator serves; each fits a 100K-token document in one call.
MODELS = [
    ("openai", "gpt-5"),
    ("anthropic", "claude-sonnet-4-5"),
    ("deepseek", "deepseek-chat"),
    ("moonshot", "kimi-k2-0905-preview"),
    ("gemini", "gemini-2.5-flash"),
]
QUESTIONS = ("When was the budget approved?", "Who took the minutes?")


def _document(target_tokens: int) -> str:
    # A line of its own first, so that every run starts from the vendor's empty cache.
    head = f"Archive copy {uuid.uuid4().hex}.\n\n"
    return head + generate_report(target_tokens * 5)


async def test_a_second_question_on_a_document_reads_it_from_the_vendor_cache(
    client: AsyncClient,
) -> None:
    catalog = Catalog.builtin()
    rows: list[str] = []
    for vendor, model in MODELS:
        info = catalog.get(vendor, model)
        assert info is not None
        doc = _document(100_000)
        opts = Options(model=model, max_output_tokens=200)
        first = await client.analyze(doc, QUESTIONS[0], options=opts)
        second = await client.analyze(doc, QUESTIONS[1], options=opts)
        tokens = first.plan.document_tokens
        assert 90_000 <= tokens <= 130_000, tokens
        assert len(first.chunk_results) == len(second.chunk_results) == 0  # single pass
        u1, u2 = first.usage, second.usage
        assert u1.cached_input_tokens == 0
        # the document and the system prompt before it, give or take the last 128 tokens
        assert u2.cached_input_tokens >= tokens - 128, (vendor, u2.cached_input_tokens)
        assert u2.cached_input_tokens <= u2.input_tokens
        if vendor == "anthropic":
            assert u1.cache_write_tokens >= tokens and u2.cache_write_tokens == 0
        assert second.cost.total_usd < first.cost.total_usd / 3
        for r in (first, second):
            u = r.usage
            plain = u.input_tokens - u.cached_input_tokens - u.cache_write_tokens
            write = info.cache_write_per_mtok or info.input_per_mtok
            expected = (
                plain * info.input_per_mtok
                + u.cache_write_tokens * write
                + u.cached_input_tokens * info.cached_input_per_mtok
                + u.output_tokens * info.output_per_mtok
            ) / 1e6
            assert r.cost.total_usd == pytest.approx(expected)
        rows.append(
            f"| {vendor} | {model} | {u1.input_tokens:,} | {u1.cached_input_tokens:,} | "
            f"{u1.cache_write_tokens:,} | ${first.cost.total_usd:.4f} | {u2.input_tokens:,} | "
            f"{u2.cached_input_tokens:,} | {u2.cache_write_tokens:,} | "
            f"${second.cost.total_usd:.4f} | {first.cost.total_usd / second.cost.total_usd:.1f}x |"
        )
    print(
        "\n| vendor | model | Q1 input | Q1 read from cache | Q1 written to cache | Q1 cost "
        "| Q2 input | Q2 read from cache | Q2 written | Q2 cost | Q1/Q2 |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        + "\n".join(rows)
    )


async def test_one_hour_breakpoints_by_configuration_are_priced_at_twice_the_input(
    sandbox: Sandbox,
) -> None:
    gw = await start(gateway_config(sandbox, cache=CacheConfig(vendor_ttl="1h")))
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}", timeout=60) as c:
            doc = _document(5_000)
            opts = Options(model="claude-sonnet-4-5", max_output_tokens=200)
            first = await c.analyze(doc, QUESTIONS[0], options=opts)
            second = await c.analyze(doc, QUESTIONS[1], options=opts)
    finally:
        await gw.stop(0.5)
    info = Catalog.builtin().get("anthropic", "claude-sonnet-4-5")
    assert info is not None
    u1, u2 = first.usage, second.usage
    assert u1.cache_write_tokens >= first.plan.document_tokens and u1.cached_input_tokens == 0
    plain = u1.input_tokens - u1.cache_write_tokens
    assert first.cost.input_usd == pytest.approx(
        (plain * info.input_per_mtok + u1.cache_write_tokens * 2 * info.input_per_mtok) / 1e6
    )
    assert u2.cached_input_tokens == u1.cache_write_tokens and u2.cache_write_tokens == 0
