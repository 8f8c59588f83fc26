"""Resilience config (file, environment, validation) and how it becomes pipeline stages."""

from __future__ import annotations

from pathlib import Path

import pytest
from longread_server.calls.breaker import BreakerStage
from longread_server.calls.fallback import FallbackStage
from longread_server.calls.limits import RateLimitStage
from longread_server.calls.resilience import build_resilience
from longread_server.calls.retry import RetryStage
from longread_server.calls.stages import pipeline_stages
from longread_server.calls.timeouts import AttemptTimeouts
from longread_server.config import (
    Config,
    ConfigError,
    TenantConfig,
    UpstreamConfig,
    load_config,
)
from longread_server.domain import VendorKind
from longread_server.plan.catalog import Catalog
from longread_server.state.breakers import LocalBreakers
from longread_server.state.buckets import LocalBuckets

from tests.unit.calls.support import make_call


def test_defaults_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[resilience]\nfail_open = false\n[resilience.breaker]\nwindow = 'time'\n"
        "[resilience.retry]\nmax_attempts = 2\n"
    )
    cfg = load_config(path, env={"LONGREAD_RESILIENCE__BREAKER__MIN_CALLS": "7"})
    r = cfg.resilience
    assert (r.fail_open, r.breaker.window, r.breaker.min_calls, r.retry.max_attempts) == (
        False,
        "time",
        7,
        2,
    )
    assert r.retry.budget_ratio == 0.2 and r.breaker.half_open_calls == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("LONGREAD_RESILIENCE__BREAKER__WINDOW", "sliding"),
        ("LONGREAD_RESILIENCE__BREAKER__FAILURE_RATE", "1.5"),
        ("LONGREAD_RESILIENCE__RETRY__MAX_ATTEMPTS", "0"),
        ("LONGREAD_RESILIENCE__LOCAL_LIMIT_SHARE", "0"),
    ],
)
def test_invalid_values_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match="resilience"):
        load_config(env={key: value})


def test_stage_order_and_in_process_state() -> None:
    cfg = Config(tenants=[TenantConfig("acme", api_keys=["k"], requests_per_minute=60)])
    cfg.upstreams = _with_fallback()
    res = build_resilience(cfg, {}, Catalog.builtin())
    kinds = [type(s) for s in pipeline_stages(res)]
    assert kinds == [
        RateLimitStage,
        FallbackStage,
        RetryStage,
        RateLimitStage,
        BreakerStage,
        AttemptTimeouts,
    ]
    tenant, upstream = res.tenant_limit, res.upstream_limit
    assert isinstance(tenant, RateLimitStage) and not tenant.feedback
    assert isinstance(upstream, RateLimitStage) and upstream.feedback
    assert isinstance(res.buckets, LocalBuckets) and isinstance(res.breakers, LocalBreakers)
    assert res.health is None
    assert set(res.tenant_quotas) == {"acme"}


def _with_fallback() -> list[UpstreamConfig]:
    return [
        UpstreamConfig("openai", VendorKind.OPENAI, "http://x", fallback="anthropic"),
        UpstreamConfig("anthropic", VendorKind.ANTHROPIC, "http://y"),
    ]


def test_breaker_can_be_turned_off() -> None:
    cfg = Config()
    cfg.resilience.breaker.enabled = False
    kinds = [type(s) for s in pipeline_stages(build_resilience(cfg, {}, Catalog.builtin()))]
    assert BreakerStage not in kinds and FallbackStage not in kinds
    # A chain still serves 429s, 5xx and overflows without a breaker.
    cfg.upstreams = _with_fallback()
    kinds = [type(s) for s in pipeline_stages(build_resilience(cfg, {}, Catalog.builtin()))]
    assert BreakerStage not in kinds and FallbackStage in kinds


async def test_upstream_buckets_per_model_when_asked() -> None:
    cfg = Config()
    up = UpstreamConfig("openai", VendorKind.OPENAI, "http://x", requests_per_minute=60)
    cfg.upstreams = [up]
    cfg.resilience.upstream_limits_per_model = True
    res = build_resilience(cfg, {}, Catalog.builtin())
    stage = res.upstream_limit
    assert isinstance(stage, RateLimitStage)
    a = stage.quota_for(make_call(model="gpt-4.1-mini"))
    b = stage.quota_for(make_call(model="gpt-4o"))
    assert a is not None and b is not None and a.requests is not None and b.requests is not None
    assert a.requests.key != b.requests.key and a.holds != b.holds
    assert a.subject == "upstream:openai/gpt-4.1-mini"


def test_the_whole_pipeline_order() -> None:
    from longread_server.calls.budget import BudgetLedger, BudgetStage
    from longread_server.calls.cache import CacheStage, build_response_cache
    from longread_server.calls.singleflight import SingleFlightStage
    from longread_server.config import CacheConfig

    catalog = Catalog.builtin()
    res = build_resilience(Config(upstreams=_with_fallback()), {}, catalog)
    budget = BudgetStage(BudgetLedger({}), catalog)
    stages = pipeline_stages(res, cache=build_response_cache(CacheConfig()), budget=budget)
    assert [type(s) for s in stages] == [
        CacheStage,
        SingleFlightStage,
        BudgetStage,
        RateLimitStage,
        FallbackStage,
        RetryStage,
        RateLimitStage,
        BreakerStage,
        AttemptTimeouts,
    ]
    assert stages[3] is res.tenant_limit and stages[6] is res.upstream_limit


def test_the_hedge_stage_sits_just_inside_retry_when_configured() -> None:
    from longread_server.calls.hedge import HedgeStage
    from longread_server.config import AttemptOverride

    cfg = Config()
    assert build_resilience(cfg, {}, Catalog.builtin()).hedge is None  # off by default
    cfg.resilience.attempt.overrides.append(AttemptOverride(models=["x*"], hedge_after_s=3))
    res = build_resilience(cfg, {}, Catalog.builtin())
    kinds = [type(s) for s in pipeline_stages(res)]
    assert kinds[kinds.index(RetryStage) + 1] is HedgeStage
    assert kinds[kinds.index(HedgeStage) + 1] is RateLimitStage
