"""Cached answers and single-flight leases shared by every replica through Redis.

Keys (``{...}`` is a Redis Cluster hash tag, so one answer's keys live in one slot)::

    {prefix}{<key>}                the answer (opaque bytes), TTL native (SET PX)
    {prefix}{<key>}:lock<scope>    the lease of the replica calling upstream: an owner token
    {prefix}{<key>}:err<scope>     "<owner token>|<error>": why that owner's call failed

A replica that misses takes the lease with ``SET NX PX`` and an owner token, renews it while
its call runs, stores the answer, then releases the lease with compare-and-delete, so it never
deletes a lease another replica took after its own expired. Others poll ``join``, one atomic
script that returns the answer once it lands, the owner's error once it is published, or the
lease itself when the owner is gone (crashed: its lease expired), so a waiter takes over.

Every method raises Redis's own errors (``RedisError``, ``OSError``, ``TimeoutError``) when
Redis cannot be reached: callers go through the gateway's one Redis gate (``gate.RedisGate``),
which counts them, decides when Redis is worth trying again and what stands in meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis.exceptions import ResponseError

from longread_server.state.redis import RedisClient

DEFAULT_PREFIX = "longread:cache:"

_JOIN = """
local v = redis.call('GET', KEYS[1])
if v then return {'value', v} end
if ARGV[3] ~= '' then
  local e = redis.call('GET', KEYS[3])
  if e then
    local sep = string.find(e, '|', 1, true)
    if sep and string.sub(e, 1, sep - 1) == ARGV[3] then
      return {'error', string.sub(e, sep + 1)}
    end
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'acquired', ARGV[1]}
end
return {'held', redis.call('GET', KEYS[2]) or ''}
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_FAIL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
  return redis.call('DEL', KEYS[1])
end
return 0
"""

JoinState = Literal["value", "error", "acquired", "held"]


@dataclass(frozen=True, slots=True)
class Joined:
    """What ``join`` found: the answer, the watched owner's error, the lease (ours now), or
    the lease held by ``holder``."""

    state: JoinState
    data: bytes = b""  # the answer, or the encoded error
    holder: str = ""  # the owner token of a held lease


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisCache:
    """The Redis side of the response cache: a ``RemoteStore`` plus single-flight leases."""

    def __init__(self, redis: RedisClient, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._join = redis.register_script(_JOIN)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._fail = redis.register_script(_FAIL)

    def _value_key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    def _lock_key(self, key: str, scope: str) -> str:
        return f"{self._prefix}{{{key}}}:lock{scope}"

    def _err_key(self, key: str, scope: str) -> str:
        return f"{self._prefix}{{{key}}}:err{scope}"

    # ---- RemoteStore ----

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self._value_key(key))
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.set(self._value_key(key), value, px=_ms(ttl_s))

    # ---- single-flight leases ----

    async def join(
        self, key: str, scope: str, token: str, lease_s: float, watched: str = ""
    ) -> Joined:
        """One atomic look: answer landed? watched owner failed? else take the lease if free."""
        keys = [self._value_key(key), self._lock_key(key, scope), self._err_key(key, scope)]
        raw = await self._join(keys=keys, args=[token, _ms(lease_s), watched])
        if not isinstance(raw, list) or len(raw) != 2:
            raise ResponseError(f"redis join: unexpected reply {raw!r}")
        state = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
        data = raw[1] if isinstance(raw[1], bytes) else str(raw[1]).encode()
        if state == "value":
            return Joined("value", data)
        if state == "error":
            return Joined("error", data)
        if state == "acquired":
            return Joined("acquired")
        return Joined("held", holder=data.decode())

    async def renew(self, key: str, scope: str, token: str, lease_s: float) -> bool:
        """Extends our lease; False when it is no longer ours."""
        done = await self._renew(keys=[self._lock_key(key, scope)], args=[token, _ms(lease_s)])
        return bool(done)

    async def release(self, key: str, scope: str, token: str) -> None:
        """Deletes the lease if it is still ours (compare-and-delete)."""
        await self._release(keys=[self._lock_key(key, scope)], args=[token])

    async def fail(self, key: str, scope: str, token: str, error: bytes, keep_s: float) -> None:
        """Publishes why our call failed (for ``keep_s``) and releases the lease, atomically."""
        keys = [self._lock_key(key, scope), self._err_key(key, scope)]
        await self._fail(keys=keys, args=[token, error, _ms(keep_s)])
