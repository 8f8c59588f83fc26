"""The order of the call pipeline's stages, outermost first: written here and nowhere else.

    cache -> single-flight -> tenant budget -> tenant rate limit -> fallback -> retry
      -> hedge -> upstream rate limit -> circuit breaker -> attempt timeouts
      -> (the vendor adapter)

Why this order:

* the cache answers before anything is spent or counted, and single-flight makes identical
  misses wait for one call rather than each paying for its own;
* the tenant's budget and rate limit count what the tenant asked for: once per call, whatever
  the retries below;
* the fallback decides before the upstream's limits and breaker, so a rerouted call meets the
  fallback's own, and outside retry, so it takes over only once the retries are spent. It is
  inside the cache, which keyed the primary's request: the fallback reads and stores its
  answer under the key of the request that answered (it is given the cache for that), and
  single-flight does not store an answer another model gave under the primary's key;
* retry sits outside the upstream's limits and breaker, so every attempt is paid for in the
  upstream's buckets (the vendor counts it), every 429 slows the upstream down, every attempt
  is an outcome for the breaker, and a retry never slips past an open circuit (resilience4j's
  recommended order also puts Retry outside CircuitBreaker);
* the hedge (off by default) is a second attempt beside a silent first one, so it sits
  where retry does, just inside it: each hedged attempt is paid for in the upstream's
  buckets, meets the breaker and has its own timeouts, and hedges draw on the retry budget;
* timeouts are per attempt, innermost, so that a hung attempt is a TIMEOUT the breaker
  counts.
"""

from __future__ import annotations

import dataclasses

from longread_server.calls.budget import BudgetStage
from longread_server.calls.cache import CacheStage, ResponseCache
from longread_server.calls.fallback import FallbackStage
from longread_server.calls.pipeline import CallStage
from longread_server.calls.resilience import Resilience
from longread_server.calls.singleflight import SingleFlightStage
from longread_server.telemetry import Telemetry


def pipeline_stages(
    resilience: Resilience,
    *,
    cache: ResponseCache | None = None,
    budget: BudgetStage | None = None,
    telemetry: Telemetry | None = None,
) -> list[CallStage]:
    """Every configured stage in the pipeline's order (``cache``: with the cache and
    single-flight stages; ``budget``: with the tenant budget stage)."""
    order: list[CallStage | None] = [
        CacheStage(cache, telemetry) if cache is not None else None,
        SingleFlightStage(cache) if cache is not None else None,
        budget,
        resilience.tenant_limit,
        _with_cache(resilience.fallback, cache),
        resilience.retry,
        resilience.hedge,
        resilience.upstream_limit,
        resilience.breaker,
        resilience.timeouts,
    ]
    return [stage for stage in order if stage is not None]


def _with_cache(stage: FallbackStage | None, cache: ResponseCache | None) -> FallbackStage | None:
    """The fallback stage reading and storing its answers in this pipeline's cache."""
    if stage is None or cache is None:
        return stage
    return dataclasses.replace(stage, cache=cache)
