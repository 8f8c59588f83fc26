"""Prompt-cache usage of each vendor, as its wire reports it, priced by the catalog."""

from __future__ import annotations

import pytest
from longread_server.domain import Usage
from longread_server.plan.catalog import Catalog, price
from longread_server.vendors.anthropic import MessagesParser
from longread_server.vendors.openai import normalize_usage

CATALOG = Catalog.builtin()


@pytest.mark.parametrize(
    ("vendor", "model", "usage"),
    [
        (
            "openai",
            "gpt-5",
            {"prompt_tokens": 100_000, "prompt_tokens_details": {"cached_tokens": 99_840}},
        ),
        (
            "deepseek",
            "deepseek-chat",
            {
                "prompt_tokens": 100_000,
                "prompt_cache_hit_tokens": 99_840,
                "prompt_cache_miss_tokens": 160,
            },
        ),
        ("moonshot", "kimi-k2-0905-preview", {"prompt_tokens": 100_000, "cached_tokens": 99_840}),
        (
            "gemini",
            "gemini-2.5-flash",
            {"prompt_tokens": 100_000, "prompt_tokens_details": {"cached_tokens": 99_840}},
        ),
    ],
)
def test_cache_hits_of_openai_compatible_vendors_are_priced_as_cached_input(
    vendor: str, model: str, usage: dict[str, object]
) -> None:
    info = CATALOG.get(vendor, model)
    assert info is not None and info.cached_input_per_mtok < info.input_per_mtok
    got = normalize_usage({**usage, "completion_tokens": 10})
    assert (got.input_tokens, got.cached_input_tokens) == (100_000, 99_840)
    cost = price(info, got)
    assert cost.cached_input_usd == pytest.approx(99_840 * info.cached_input_per_mtok / 1e6)
    assert cost.input_usd == pytest.approx(160 * info.input_per_mtok / 1e6)


def test_anthropic_one_hour_writes_cost_twice_the_input_price() -> None:
    info = CATALOG.get("anthropic", "claude-sonnet-4-5")
    assert info is not None and info.cache_min_tokens == 1024
    assert info.cache_write_per_mtok == pytest.approx(1.25 * info.input_per_mtok)
    assert info.cache_write_1h_per_mtok == pytest.approx(2 * info.input_per_mtok)
    assert info.cached_input_per_mtok == pytest.approx(0.1 * info.input_per_mtok)
    parser = MessagesParser("anthropic")
    usage = {
        "input_tokens": 20,
        "cache_creation_input_tokens": 100_000,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100_000},
        "output_tokens": 5,
    }
    counts = parser._usage  # the accumulator the stream and the JSON body both feed
    counts.update(usage)
    got = counts.normalized()
    assert got == Usage(100_020, 5, 0, 100_000, cache_write_1h_tokens=100_000, calls=1)
    assert price(info, got).input_usd == pytest.approx((20 * 3.0 + 100_000 * 6.0) / 1e6)
    five = Usage(100_020, 5, 0, 100_000, calls=1)
    assert price(info, five).input_usd == pytest.approx((20 * 3.0 + 100_000 * 3.75) / 1e6)
