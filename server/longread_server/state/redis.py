"""The Redis connection shared by every piece of replicated state (cache, limits, breakers).

One ``redis.asyncio`` client per process, created lazily from ``redis_url``, whose scheme says
what kind of Redis it is:

- ``redis://host:port/db`` (``rediss://`` for TLS): one Redis node;
- ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://``): a Redis Cluster, through
  redis-py's cluster client. The nodes listed are only where to start: the client learns the
  others and which node owns which slot from the cluster itself, and learns again when a
  master fails and its replica takes over. Every script and transaction of the shared state
  keeps its keys in one slot (hash tags, ``{...}``), which is what a cluster requires;
- ``redis+sentinel://host:port[,host:port...]/service[/db]`` (``rediss+sentinel://``): a
  master found through Sentinel, asked again after a failover.

Query parameters (``?ssl_cert_reqs=none``...) and ``user:password@`` apply to the data nodes.

Timeouts are short: shared state must never make a request slower than serving without it, so
callers treat a Redis error as "state unavailable" and fall back (fail-open by default).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from longread_server.preflight import RedisTarget, redis_target

log = logging.getLogger(__name__)

DEFAULT_SOCKET_TIMEOUT_S = 0.25
# How long start-up waits for a cluster's slot map; past that, the gateway starts anyway.
WARM_UP_S = 5.0

# Either client runs the same commands and scripts; a cluster routes each by its keys' slot.
RedisClient: TypeAlias = aioredis.Redis | RedisCluster

# What a Redis operation raises when Redis cannot serve it. The cluster client's own
# exceptions (no node reachable, a slot no node covers while a master fails over) are not
# ``RedisError``s, yet mean the same: state unavailable.
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
)


def _options(socket_timeout_s: float) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": socket_timeout_s,
        "health_check_interval": 5,
        "max_connections": 256,
        "decode_responses": False,
        # No client-side retries: every caller already bounds its Redis work and falls back
        # to local state, so a retry loop would only stretch a Redis outage into latency. A
        # cluster client still follows MOVED and ASK redirections (they are not retries), and
        # after a connection error it reloads the slot map before its next command.
        "retry": Retry(NoBackoff(), 0),
    }


def connect(url: str, *, socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S) -> RedisClient:
    """A pooled client for ``url`` (see the module's docstring); connects on first use."""
    target = redis_target(url)
    options = _options(socket_timeout_s)
    if target.kind == "cluster":
        return _cluster(target, options)
    if target.kind == "sentinel":
        return _sentinel(target, options)
    return aioredis.Redis.from_url(url, **options)


async def warm_up(client: RedisClient, timeout_s: float = WARM_UP_S) -> None:
    """Loads a cluster's slot map and command table now, at start-up.

    The cluster client does it on first use, which takes several round trips and parsing
    the server's COMMAND table: under a first burst of requests that first use queues every
    operation behind it and outlasts the shared state's short timeout, so each replica would
    start on local state. A cluster that cannot be reached now is not an error: the gateway
    starts on local state and the client tries again on use.
    """
    if not isinstance(client, RedisCluster):
        return
    try:
        async with asyncio.timeout(timeout_s):
            await client.initialize()
    except REDIS_FAILURES as e:
        log.warning("shared state: the Redis Cluster is not reachable yet (%r)", e)


def _cluster(target: RedisTarget, options: dict[str, Any]) -> RedisCluster:
    (host, port), others = target.nodes[0], target.nodes[1:]
    return RedisCluster.from_url(
        target.node_url(host, port),
        startup_nodes=[ClusterNode(h, p) for h, p in others],
        # Slot map reloads come at most this often: during a failover every command that
        # meets the dead master asks for one, and they would only repeat each other.
        topology_refresh_min_interval=0.1,
        **options,
    )


def _sentinel(target: RedisTarget, options: dict[str, Any]) -> aioredis.Redis:
    data: dict[str, Any] = dict(aioredis.connection.parse_url(target.node_url(*target.nodes[0])))
    data.pop("host", None)
    data.pop("port", None)
    if data.pop("connection_class", None) is aioredis.SSLConnection:
        data["ssl"] = True  # the pool picks its own (Sentinel-managed) TLS connection
    timeouts = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs=timeouts, **options)
    master: aioredis.Redis = sentinel.master_for(target.service, redis_class=aioredis.Redis, **data)
    return master
