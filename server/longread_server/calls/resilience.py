"""Builds the resilience stages (rate limits, fallback, retry, hedge, breaker, attempt
timeouts) and their state from the config; ``calls/stages.py`` puts them in the pipeline's order."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace

from longread_server.calls.breaker import BreakerStage
from longread_server.calls.concurrency import AdaptiveConcurrency, ConcurrencyParams
from longread_server.calls.fallback import FallbackStage, chains_from
from longread_server.calls.hedge import HedgeStage
from longread_server.calls.limits import Quota, RateLimitStage, make_quota
from longread_server.calls.pipeline import Call
from longread_server.calls.resilience_metrics import (
    NULL_OBSERVER,
    MetricsObserver,
    ResilienceObserver,
)
from longread_server.calls.retry import RetryPolicy, RetryStage
from longread_server.calls.timeouts import (
    AttemptLimits,
    AttemptPolicy,
    AttemptTimeouts,
    LimitsOverride,
    override,
)
from longread_server.config import AttemptOverride, Config, ResilienceConfig
from longread_server.plan.catalog import Catalog
from longread_server.state.breakers import BreakerParams, BreakerStore, LocalBreakers
from longread_server.state.buckets import BucketStore, LocalBuckets
from longread_server.state.clock import SYSTEM_CLOCK, Clock
from longread_server.state.failover import FailoverBreakers, FailoverBuckets
from longread_server.state.gate import GatePolicy, RedisGate
from longread_server.state.redis import RedisClient
from longread_server.state.redis_breakers import RedisBreakers
from longread_server.state.redis_buckets import RedisBuckets
from longread_server.telemetry import Telemetry
from longread_server.vendors.base import VendorAdapter


def breaker_params(r: ResilienceConfig) -> BreakerParams:
    b = r.breaker
    return BreakerParams(
        window=b.window,
        window_size=b.window_size,
        min_calls=b.min_calls,
        failure_rate=b.failure_rate,
        slow_rate=b.slow_call_rate,
        open_s=b.open_s,
        open_backoff=b.open_backoff,
        open_max_s=b.open_max_s,
        half_open_calls=b.half_open_calls,
        half_open_max_s=b.half_open_max_s,
    )


# Config names -> AttemptLimits fields (the two ceilings keep their older config names).
_LIMIT_FIELDS = {
    "first_event_base_s": "first_event_base_s",
    "first_event_per_1k_prompt_s": "first_event_per_1k_prompt_s",
    "first_event_per_1k_output_s": "first_event_per_1k_output_s",
    "first_event_timeout_s": "first_event_max_s",
    "idle_timeout_s": "idle_s",
    "hedge_after_s": "hedge_after_s",
}


def attempt_policy(r: ResilienceConfig) -> AttemptPolicy:
    """The per-attempt limits of every (upstream, model), from ``[resilience]`` and
    ``[resilience.attempt]`` with its overrides."""
    a = r.attempt
    default = AttemptLimits(
        first_event_base_s=a.first_event_base_s,
        first_event_per_1k_prompt_s=a.first_event_per_1k_prompt_s,
        first_event_per_1k_output_s=a.first_event_per_1k_output_s,
        first_event_max_s=r.first_event_timeout_s,
        idle_s=r.idle_timeout_s,
        hedge_after_s=a.hedge_after_s,
    )
    return AttemptPolicy(default, [_override(o) for o in a.overrides])


def _override(o: AttemptOverride) -> LimitsOverride:
    changes = {
        field: value
        for name, field in _LIMIT_FIELDS.items()
        if (value := getattr(o, name)) is not None
    }
    return override(o.upstream, o.models, **changes)


@dataclass(slots=True)
class Resilience:
    """The resilience stages (put in order by ``calls/stages.py``) and their state, which
    operators and tests look at."""

    tenant_limit: RateLimitStage
    fallback: FallbackStage | None  # None without a fallback chain
    upstream_limit: RateLimitStage
    breaker: BreakerStage | None
    timeouts: AttemptTimeouts
    buckets: BucketStore
    breakers: BreakerStore
    breaker_params: BreakerParams
    concurrency: AdaptiveConcurrency
    retry: RetryStage
    hedge: HedgeStage | None  # None unless some upstream or model hedges
    health: RedisGate | None  # None without Redis
    tenant_quotas: dict[str, Quota]
    upstream_quotas: dict[str, Quota]  # filled as calls arrive: "upstream" or "upstream/model"
    observer: ResilienceObserver


def redis_gate(cfg: Config, clock: Clock = SYSTEM_CLOCK) -> RedisGate:
    """The gate every piece of Redis-backed state goes through (the cache, rate limits,
    breakers, budgets): timeouts, fail-over, when to try Redis again."""
    r = cfg.resilience
    policy = GatePolicy(timeout_s=r.redis_timeout_s, retry_s=r.redis_retry_s, fail_open=r.fail_open)
    return RedisGate(policy, clock)


def build_resilience(
    cfg: Config,
    adapters: Mapping[str, VendorAdapter],
    catalog: Catalog,
    redis: RedisClient | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
    telemetry: Telemetry | None = None,
    health: RedisGate | None = None,
) -> Resilience:
    """``health``: the Redis gate to share with other state (the cache, the budget ledger);
    by default one is made from ``cfg`` (see :func:`redis_gate`)."""
    r = cfg.resilience
    observer = NULL_OBSERVER if telemetry is None else MetricsObserver(telemetry.instruments)
    tracer = trace.NoOpTracer() if telemetry is None else telemetry.tracer
    buckets: BucketStore
    breakers: BreakerStore
    if redis is None:
        health = None
        buckets, breakers = LocalBuckets(clock), LocalBreakers(clock)
    else:
        health = health or redis_gate(cfg, clock)
        buckets = FailoverBuckets(
            RedisBuckets(redis), health, local=LocalBuckets(clock), local_share=r.local_limit_share
        )
        breakers = FailoverBreakers(RedisBreakers(redis), health, local=LocalBreakers(clock))

    tenant_quotas = {
        t.name: make_quota(
            f"tenant:{t.name}",
            requests_per_minute=t.requests_per_minute,
            tokens_per_minute=t.tokens_per_minute,
            burst_requests=t.burst_requests,
            burst_tokens=t.burst_tokens,
        )
        for t in cfg.tenants
        if t.requests_per_minute > 0 or t.tokens_per_minute > 0
    }
    upstreams = {u.name: u for u in cfg.upstreams}
    upstream_quotas: dict[str, Quota] = {}

    def upstream_quota(call: Call) -> Quota:
        key = f"{call.vendor}/{call.req.model}" if r.upstream_limits_per_model else call.vendor
        quota = upstream_quotas.get(key)
        if quota is None:
            up = upstreams.get(call.vendor)
            quota = upstream_quotas[key] = make_quota(
                f"upstream:{key}",
                requests_per_minute=up.requests_per_minute if up else 0.0,
                tokens_per_minute=up.tokens_per_minute if up else 0.0,
                burst_requests=up.burst_requests if up else 0.0,
                burst_tokens=up.burst_tokens if up else 0.0,
                hold=True,
            )
        return quota

    concurrency = AdaptiveConcurrency(
        ConcurrencyParams(
            adaptive=r.concurrency.adaptive,
            min_limit=r.concurrency.min,
            backoff=r.concurrency.backoff,
            latency_tolerance=r.concurrency.latency_tolerance,
            cooldown_s=r.concurrency.cooldown_s,
        ),
        {u.name: u.max_concurrency for u in cfg.upstreams},
        clock,
    )
    params = breaker_params(r)
    attempts = attempt_policy(r)
    retry = RetryStage(
        RetryPolicy(r.retry.max_attempts, r.retry.base_s, r.retry.cap_s),
        budget_ratio=r.retry.budget_ratio,
        budget_min_retries=r.retry.budget_min_retries,
        budget_window_s=r.retry.budget_window_s,
        min_call_s=r.min_call_s,
        clock=clock,
        rng=rng or random.Random(),
        observer=observer,
    )
    tenant_limit = RateLimitStage(
        buckets,
        lambda call: tenant_quotas.get(call.ctx.tenant),
        clock=clock,
        max_wait_s=r.max_limit_wait_s,
        min_call_s=r.min_call_s,
        limit="tenant",
        observer=observer,
        tracer=tracer,
    )
    upstream_limit = RateLimitStage(
        buckets,
        upstream_quota,
        clock=clock,
        max_wait_s=r.max_limit_wait_s,
        min_call_s=r.min_call_s,
        feedback=True,
        throttle_default_s=r.throttle_default_s,
        throttle_max_s=r.throttle_max_s,
        listeners=(concurrency.pushback,),
        limit="upstream",
        observer=observer,
        tracer=tracer,
    )
    breaker = None
    if r.breaker.enabled:
        breaker = BreakerStage(breakers, params, r.breaker.slow_call_s, clock, observer)
    chains = chains_from(cfg.upstreams, r.fallback)
    fallback = (
        FallbackStage(
            breakers,
            params,
            upstreams,
            adapters,
            catalog,
            chains,
            breaker_on=breaker is not None,
            observer=observer,
        )
        if chains
        else None
    )
    if isinstance(observer, MetricsObserver):
        _gauges(observer, concurrency, health)
    return Resilience(
        tenant_limit=tenant_limit,
        fallback=fallback,
        upstream_limit=upstream_limit,
        breaker=breaker,
        timeouts=AttemptTimeouts(attempts),
        buckets=buckets,
        breakers=breakers,
        breaker_params=params,
        concurrency=concurrency,
        retry=retry,
        hedge=HedgeStage(attempts, retry.budget, r.min_call_s, observer)
        if attempts.may_hedge
        else None,
        health=health,
        tenant_quotas=tenant_quotas,
        upstream_quotas=upstream_quotas,
        observer=observer,
    )


def _gauges(
    observer: MetricsObserver, concurrency: AdaptiveConcurrency, health: RedisGate | None
) -> None:
    observer.observe(
        "longread.concurrency.limit",
        lambda: [
            (float(lim.limit), {"longread.upstream": name})
            for name, lim in concurrency.limits.items()
        ],
        "Adaptive map concurrency per upstream",
    )
    if health is not None:
        observer.observe(
            "longread.state.degraded",
            lambda: [(float(health.degraded), {})],
            "1 while Redis is failing and local state stands in for it",
        )
        observer.observe(
            "longread.state.redis_errors",
            lambda: [(float(health.errors), {})],
            "Redis operations of the shared state (one gate) that failed or timed out",
            unit="{error}",
            total=True,
        )
