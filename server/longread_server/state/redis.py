"""The Redis connection shared by every piece of replicated state (cache, limits, breakers).

One ``redis.asyncio`` client per process, created lazily from ``redis_url``. Timeouts are
short: shared state must never make a request slower than serving without it, so callers
treat a Redis error as "state unavailable" and fall back (fail-open by default).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

DEFAULT_SOCKET_TIMEOUT_S = 0.25


def connect(url: str, *, socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S) -> aioredis.Redis:
    """A pooled client for ``url`` (``redis://host:port/db``); connects on first use."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        health_check_interval=5,
        max_connections=256,
        decode_responses=False,
        # No client-side retries: every caller already bounds its Redis work and falls back
        # to local state, so a retry loop would only stretch a Redis outage into latency.
        retry=Retry(NoBackoff(), 0),
    )
