"""Fallback chains against the real gateway and sandbox, over HTTP: for each trigger (a 429
storm and a 5xx outage outlasting the retries, a context-window overflow, an open circuit),
which model answered, that the cost is priced at its rates, and under which cache key the
answer was stored (the answering request's, never the primary's).

The faults come from the sandbox's script (the next N model requests fail, whichever vendor
they go to), so the primary's attempts fail and the fallback's request is answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from longread.client import AsyncClient, Options
from longread_sandbox import Sandbox
from longread_server.app import Gateway, sandbox_upstreams
from longread_server.calls.cache import decode_answer
from longread_server.config import FallbackChainConfig, TelemetryConfig
from longread_server.domain import Usage
from longread_server.plan.catalog import Catalog, price
from longread_server.telemetry import setup
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.chaos.conftest import QUESTION, Row, client_for, doc, points, resilience

Make = Callable[..., Any]
PRIMARY = ("openai", "gpt-4o-mini")  # a 128K window: claude-haiku-4-5's 200K fits more
FALLBACK = ("anthropic", "claude-haiku-4-5")
ASK = Options(vendor=PRIMARY[0], model=PRIMARY[1], cache="default")
CATALOG = Catalog.builtin()
CACHE_STATUS = {1: "MISS", 2: "HIT", 3: "PARTIAL", 4: "BYPASS"}


@dataclass
class Answer:
    model: str
    cost_usd: float
    input_tokens: int
    output_tokens: int
    cache: str
    fallback: str  # the FALLBACK warning's message ("" when none)
    streamed_fallback: bool = False  # a FALLBACK warning event came before the result


async def ask(client: AsyncClient, text: str, *, stream: bool = False) -> Answer:
    warned = False
    if stream:
        r = None
        async for ev in client.stream(text, QUESTION, options=ASK, timeout=10):
            if ev.HasField("warning") and ev.warning.code == "FALLBACK":
                warned = True
            if ev.HasField("result"):
                r = ev.result
        assert r is not None
    else:
        r = await client.analyze(text, QUESTION, options=ASK, timeout=10)
    notes = [w.message for w in r.warnings if w.code == "FALLBACK"]
    return Answer(
        f"{r.model.vendor}/{r.model.model}",
        r.cost.total_usd,
        r.usage.input_tokens,
        r.usage.output_tokens,
        CACHE_STATUS.get(r.cache_status, str(r.cache_status)),
        notes[0] if notes else "",
        warned,
    )


def stored(gw: Gateway) -> dict[str, str]:
    """The keys in the gateway's in-process cache and the model each answer came from."""
    assert gw.cache is not None and gw.cache.local_store is not None
    entries = gw.cache.local_store._entries  # a test's look inside the LRU
    return {k: decode_answer(v).model for k, (v, _) in entries.items()}


def priced_at(model: tuple[str, str], a: Answer) -> float:
    info = CATALOG.get(*model)
    assert info is not None
    return price(info, Usage(a.input_tokens, a.output_tokens)).total_usd


TABLE: list[str] = []


def table_row(
    trigger: str, reason: str, first: Answer, key: str, later: Answer, later2: Answer
) -> None:
    TABLE.append(
        f"{trigger:<22} {first.model:<28} {reason:<17} ${first.cost_usd:.8f} "
        f"(primary's rates ${priced_at(PRIMARY, first):.8f})  key {key[:12]}  "
        f"again -> {later.model} {later.cache}, then {later2.model} {later2.cache}"
    )


def print_table() -> str:
    head = (
        f"{'trigger':<22} {'answered by':<28} {'why':<17} {'cost':<11} "
        f"{'':<30}  {'cache key':<16}  identical request later"
    )
    text = "\n".join([head, *TABLE])
    print("\n" + text)
    return text


async def fallen_back(
    gw: Gateway, client: AsyncClient, text: str, *, stream: bool = False
) -> tuple[Answer, str]:
    """One request that falls back: its answer and the one key it added to the cache."""
    before = stored(gw)
    first = await ask(client, text, stream=stream)
    added = {k: m for k, m in stored(gw).items() if k not in before}
    assert list(added.values()) == [FALLBACK[1]], added  # one key, holding the fallback's answer
    assert first.model == "/".join(FALLBACK) and first.cache == "MISS"
    assert first.cost_usd == pytest.approx(priced_at(FALLBACK, first))
    assert first.cost_usd != pytest.approx(priced_at(PRIMARY, first))
    return first, next(iter(added))


async def test_fallback_table(sb: Sandbox, gateways: Make, row: Row) -> None:
    chain = FallbackChainConfig(chain=["/".join(FALLBACK)], upstream="openai")
    # Retries with room to spare (the budget would otherwise cut a storm short), a breaker that
    # does not open here: each trigger is the one under test.
    cfg = resilience(retry={"max_attempts": 3, "budget_ratio": 1.0, "budget_min_retries": 100})
    cfg.fallback = [chain]
    reader = InMemoryMetricReader()
    tel = setup(TelemetryConfig(metrics=True), metric_readers=[reader])
    gw = await gateways(upstreams=sandbox_upstreams(sb.base_url), resilience=cfg, telemetry=tel)
    cases = [
        ("429 x3 (after retries)", ["429"] * 3, "rate_limited", False),
        ("503 x3 (after retries)", ["503"] * 3, "upstream_error", True),
        ("context overflow (400)", ["400"], "context_overflow", False),
    ]
    async with client_for(gw) as client:
        for trigger, script, reason, stream in cases:
            text = doc(reason)
            sb.configure(script=script)
            before = dict(sb.stats.by_model)
            first, key = await fallen_back(gw, client, text, stream=stream)
            tried = sb.stats.by_model[PRIMARY[1]] - before.get(PRIMARY[1], 0)
            assert tried == len(script)  # the primary's attempts, then the fallback
            assert f"({reason}" in first.fallback
            if stream:
                assert first.streamed_fallback  # the Stream said so before its result
            # The fault is over: the same request goes to the primary (its key was never
            # written), then is a HIT from the primary's own answer.
            later = await ask(client, text)
            assert later.model == "/".join(PRIMARY) and later.cache == "MISS"
            later2 = await ask(client, text)
            assert later2.model == "/".join(PRIMARY) and later2.cache == "HIT"
            table_row(trigger, reason, first, key, later, later2)
            row.sent += 3
            row.ok += 3

    # The telemetry says so too: one reroute per trigger, from the model asked to the one sent.
    taken = points(reader, "longread.resilience.fallbacks")
    assert sorted((a["longread.reason"], v) for a, v in taken) == [
        ("context_overflow", 1),
        ("rate_limited", 1),
        ("upstream_error", 1),
    ]
    assert all(a["longread.fallback.model"] == "/".join(FALLBACK) for a, _ in taken)
    assert all(a["gen_ai.request.model"] == "/".join(PRIMARY) for a, _ in taken)

    # An open circuit: trip openai's breaker (those calls opt out of the fallback), then ask.
    cfg = resilience(breaker={"window_size": 4, "min_calls": 4}, retry={"max_attempts": 1})
    cfg.fallback = [chain]
    gw2 = await gateways(upstreams=sandbox_upstreams(sb.base_url), resilience=cfg)
    pinned = Options(vendor=PRIMARY[0], model=PRIMARY[1], labels={"fallback": "off"})
    async with client_for(gw2) as client:
        sb.configure(script=["503"] * 4)
        for i in range(4):
            with pytest.raises(Exception):  # noqa: B017 - the gRPC error of a 503
                await client.analyze(doc(f"trip{i}"), QUESTION, options=pinned, timeout=10)
        assert gw2.resilience is not None
        view = await gw2.resilience.breakers.view("openai", gw2.resilience.breaker_params)
        assert view.state == "open"
        text = doc("circuit")
        primary_calls = sb.stats.by_model[PRIMARY[1]]
        first, key = await fallen_back(gw2, client, text)
        assert "(circuit_open" in first.fallback
        # Still open: the primary is not called, its key misses, the fallback's key is a HIT.
        later = await ask(client, text)
        assert later.model == "/".join(FALLBACK) and later.cache == "HIT" and later.cost_usd == 0
        assert sb.stats.by_model[PRIMARY[1]] == primary_calls  # the open circuit was never crossed
        assert PRIMARY[1] not in set(stored(gw2).values())  # nothing under the primary's name
        table_row("open circuit", "circuit_open", first, key, later, later)
        row.sent += 2  # the four that tripped the breaker are not counted
        row.ok += 2
        print("FALLBACK warning:", first.fallback)
    row.upstream = sb.stats.requests
    row.notes = print_table().replace("\n", "\n" + " " * 66)
