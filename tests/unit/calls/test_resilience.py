"""Resilience config (file, environment, validation) and how it becomes pipeline stages."""

from __future__ import annotations

from pathlib import Path

import pytest
from longread_server.calls.breaker import BreakerStage
from longread_server.calls.fallback import FallbackStage
from longread_server.calls.limits import RateLimitStage
from longread_server.calls.resilience import build_resilience
from longread_server.calls.retry import RetryStage
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
    res = build_resilience(cfg, {}, Catalog.builtin())
    kinds = [type(s) for s in res.stages]
    assert kinds == [
        RateLimitStage,
        FallbackStage,
        RetryStage,
        RateLimitStage,
        BreakerStage,
        AttemptTimeouts,
    ]
    tenant, upstream = res.stages[0], res.stages[3]
    assert isinstance(tenant, RateLimitStage) and not tenant.feedback
    assert isinstance(upstream, RateLimitStage) and upstream.feedback
    assert isinstance(res.buckets, LocalBuckets) and isinstance(res.breakers, LocalBreakers)
    assert res.health is None
    assert set(res.tenant_quotas) == {"acme"}


def test_breaker_can_be_turned_off() -> None:
    cfg = Config()
    cfg.resilience.breaker.enabled = False
    kinds = [type(s) for s in build_resilience(cfg, {}, Catalog.builtin()).stages]
    assert BreakerStage not in kinds and FallbackStage not in kinds


async def test_upstream_buckets_per_model_when_asked() -> None:
    cfg = Config()
    up = UpstreamConfig("openai", VendorKind.OPENAI, "http://x", requests_per_minute=60)
    cfg.upstreams = [up]
    cfg.resilience.upstream_limits_per_model = True
    res = build_resilience(cfg, {}, Catalog.builtin())
    stage = res.stages[3]
    assert isinstance(stage, RateLimitStage)
    a = stage.quota_for(make_call(model="gpt-4.1-mini"))
    b = stage.quota_for(make_call(model="gpt-4o"))
    assert a is not None and b is not None and a.requests is not None and b.requests is not None
    assert a.requests.key != b.requests.key and a.holds != b.holds
    assert a.subject == "upstream:openai/gpt-4.1-mini"
