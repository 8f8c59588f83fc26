"""Attempt timeouts: limits derived from the request, the deadline, always closing the attempt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from longread_server.calls.resilience import attempt_policy
from longread_server.calls.timeouts import (
    AttemptLimits,
    AttemptPolicy,
    AttemptTimeouts,
    override,
    prompt_tokens,
)
from longread_server.config import AttemptOverride, ConfigError, ResilienceConfig, load_config
from longread_server.domain import ErrorKind, Operation, TextDelta, UpstreamError

from tests.unit.calls.support import Attempt, Upstream, chain, collect, make_call, ok

FIVE = AttemptLimits.fixed(5, 5)


async def test_passes_events_through_and_closes() -> None:
    upstream = Upstream([Attempt(ok())])
    events = await collect(chain([AttemptTimeouts(FIVE)], upstream), make_call())
    assert len(events) == 2 and upstream.closed == 1


async def never(call: object) -> AsyncIterator[TextDelta]:
    await asyncio.Event().wait()
    yield TextDelta("never")  # pragma: no cover


async def test_a_passed_deadline_is_an_upstream_timeout_never_sent() -> None:
    nxt = chain([AttemptTimeouts(FIVE)], never)
    with pytest.raises(UpstreamError) as info:
        await collect(nxt, make_call(deadline=time.monotonic() - 1))
    assert info.value.kind is ErrorKind.TIMEOUT and "deadline" in info.value.message
    assert info.value.unsent


async def test_stopping_early_closes_the_attempt() -> None:
    upstream = Upstream([Attempt([TextDelta("a"), TextDelta("b")])])
    it = chain([AttemptTimeouts(FIVE)], upstream)(make_call())
    assert await anext(it) == TextDelta("a")
    await it.aclose()  # type: ignore[attr-defined]
    assert upstream.closed == 1


def _paced(before_first: float, after_first: float) -> Any:
    async def upstream(call: object) -> AsyncIterator[TextDelta]:
        await asyncio.sleep(before_first)
        yield TextDelta("a")
        await asyncio.sleep(after_first)
        yield TextDelta("b")

    return upstream


async def test_each_timeout_says_which_limit_it_hit_and_whose_it_was() -> None:
    cases = [
        # (first-event limit, idle limit, deadline in s, upstream's pauses, message, by deadline)
        (0.05, 5.0, None, (1.0, 0.0), "no response within 0.05s", False),
        (5.0, 0.05, None, (0.0, 1.0), "the stream stalled for 0.05s", False),
        (5.0, 5.0, 0.05, (1.0, 0.0), "deadline exceeded", True),
        (5.0, 5.0, 0.1, (0.0, 1.0), "deadline exceeded", True),
    ]
    for first_s, idle_s, deadline_s, pauses, message, by_deadline in cases:
        stage = AttemptTimeouts(AttemptLimits.fixed(first_s, idle_s), deadline_margin_s=0.0)
        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        with pytest.raises(UpstreamError) as info:
            await collect(chain([stage], _paced(*pauses)), make_call(deadline=deadline))
        assert info.value.kind is ErrorKind.TIMEOUT
        assert info.value.message.endswith(message), info.value.message
        assert info.value.cut_by_deadline is by_deadline, message
        assert not info.value.unsent


def test_the_first_event_limit_grows_with_the_prompt_and_is_capped() -> None:
    limits = AttemptLimits(
        first_event_base_s=10,
        first_event_per_1k_prompt_s=0.5,
        first_event_per_1k_output_s=20,
        first_event_max_s=100,
    )
    req = make_call(estimated_prompt_tokens=1000, max_output_tokens=1000).req
    assert limits.first_event_s(req) == pytest.approx(10.5)
    assert limits.first_event_s(replace(req, estimated_prompt_tokens=50_000)) == 35
    # Not streamed: the first byte comes after the whole answer.
    assert limits.first_event_s(replace(req, stream=False)) == pytest.approx(30.5)
    assert limits.first_event_s(replace(req, estimated_prompt_tokens=10**6)) == 100
    # A token count is a tokenizer pass, whatever the prompt's size.
    count = replace(req, estimated_prompt_tokens=10**6, operation=Operation.COUNT_TOKENS)
    assert limits.first_event_s(count) == 10
    assert replace(limits, first_event_max_s=0).first_event_s(req) == 0  # no limit


def test_an_uncounted_prompt_is_estimated_from_its_length() -> None:
    assert prompt_tokens(make_call(prompt="x" * 4000).req) == 1000
    assert prompt_tokens(make_call(prompt="x" * 4000, estimated_prompt_tokens=7).req) == 7


def test_overrides_apply_by_upstream_and_model_pattern_later_ones_win() -> None:
    policy = AttemptPolicy(
        AttemptLimits(first_event_base_s=20),
        [
            override("anthropic", idle_s=30),
            override(models=["gpt-5*"], first_event_base_s=120),
            override("azure", ["gpt-5-mini"], first_event_base_s=60, hedge_after_s=5),
        ],
    )
    assert policy.limits("openai", "gpt-4.1") == AttemptLimits(first_event_base_s=20)
    assert policy.limits("anthropic", "claude-sonnet-4-5").idle_s == 30
    assert policy.limits("openai", "gpt-5-mini").first_event_base_s == 120
    azure = policy.limits("azure", "gpt-5-mini")
    assert (azure.first_event_base_s, azure.hedge_after_s) == (60, 5)
    assert policy.may_hedge and not AttemptPolicy().may_hedge
    with pytest.raises(ValueError, match="not attempt limits"):
        override(first_event_s=1)


def test_config_defaults_give_reasoning_models_longer_and_can_be_overridden() -> None:
    policy = attempt_policy(ResilienceConfig())
    plain, reasoning = policy.limits("openai", "gpt-4.1-mini"), policy.limits("openai", "gpt-5")
    assert (plain.first_event_base_s, plain.first_event_max_s, plain.idle_s) == (20, 300, 60)
    assert (reasoning.first_event_base_s, reasoning.first_event_max_s) == (120, 600)
    assert plain.hedge_after_s == 0 and not policy.may_hedge

    r = ResilienceConfig(first_event_timeout_s=50, idle_timeout_s=7)
    r.attempt.first_event_per_1k_prompt_s = 1.0
    r.attempt.overrides = [AttemptOverride(upstream="slow", first_event_timeout_s=90)]
    policy = attempt_policy(r)
    req = make_call(estimated_prompt_tokens=100_000).req
    assert policy.limits("openai", "gpt-5").first_event_s(req) == 50  # overrides replaced
    assert policy.limits("slow", "gpt-5").first_event_s(req) == 90
    assert policy.limits("slow", "gpt-5").idle_s == 7


def test_attempt_settings_from_the_environment_and_checked() -> None:
    cfg = load_config(env={"LONGREAD_RESILIENCE__ATTEMPT__HEDGE_AFTER_S": "2.5"})
    assert cfg.resilience.attempt.hedge_after_s == 2.5
    with pytest.raises(ConfigError, match=r"resilience\.attempt\.first_event_base_s"):
        load_config(env={"LONGREAD_RESILIENCE__ATTEMPT__FIRST_EVENT_BASE_S": "-1"})
