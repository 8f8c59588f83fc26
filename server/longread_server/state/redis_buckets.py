"""Token buckets shared by every replica: the arithmetic of ``buckets.LocalBuckets`` in Lua.

One script per operation (reserve, adjust, hold, peek), each atomic, each reading the time
from Redis (``TIME``, in milliseconds with microsecond precision), so replicas with skewed
clocks still share one timeline. A bucket is a hash ``{l: level, t: stamp_ms}`` that expires
when it would be full again, so an expired key and a full bucket are the same thing. Numbers
come back as strings: Lua would truncate them to integers. Keys that must be updated together
share a Redis Cluster hash tag (the caller puts ``{subject}`` in them).

Tests pass ``now_ms`` to drive the scripts with a fake clock; in production it is None and
the scripts read ``TIME``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from longread_server.state.buckets import (
    BucketSpec,
    Decision,
    Grant,
    Items,
    Limited,
    Never,
)
from longread_server.state.redis import RedisClient

# Shared by every script: the clock and the refill rule.
_PRELUDE = """
local function now_ms(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function load(key, rate, burst, now)
  local v = redis.call('HMGET', key, 'l', 't')
  local level, stamp = tonumber(v[1]), tonumber(v[2])
  if level == nil or stamp == nil then return burst, now end
  if now > stamp then
    level = math.min(burst, level + rate * (now - stamp))
    stamp = now
  end
  return level, stamp
end
local function store(key, level, stamp, rate, burst, now)
  redis.call('HSET', key, 'l', tostring(level), 't', tostring(stamp))
  local ttl = math.max(0, stamp - now) + math.max(0, (burst - level) / rate)
  redis.call('PEXPIRE', key, math.ceil(ttl) + 1000)
end
"""

# KEYS: nb bucket keys, then hold keys.
# ARGV: nb, max_wait_ms, now_ms|'', then (rate_per_ms, burst, cost) per bucket.
# -> {0, wait_ms} | {1, wait_ms, key} | {2, key, cost, burst}
_RESERVE = (
    _PRELUDE
    + """
local nb = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local now = now_ms(ARGV[3])
for i = 1, nb do
  local burst, cost = tonumber(ARGV[3 + 3 * i - 1]), tonumber(ARGV[3 + 3 * i])
  if cost > burst then return {2, KEYS[i], tostring(cost), tostring(burst)} end
end
local wait, worst = 0, ''
for j = nb + 1, #KEYS do
  local untl = tonumber(redis.call('GET', KEYS[j]))
  if untl ~= nil and untl - now > wait then wait, worst = untl - now, KEYS[j] end
end
local held = worst
local levels, stamps = {}, {}
for i = 1, nb do
  local rate, burst, cost = tonumber(ARGV[3 + 3 * i - 2]), tonumber(ARGV[3 + 3 * i - 1]),
    tonumber(ARGV[3 + 3 * i])
  local level, stamp = load(KEYS[i], rate, burst, now)
  levels[i], stamps[i] = level, stamp
  local w = math.max(0, stamp - now) + math.max(0, (cost - level) / rate)
  if w > wait then
    wait, worst = w, KEYS[i]
    -- drained by a hold (a vendor's 429): the hold is the reason, as in LocalBuckets
    if held ~= '' and stamp > now then worst = held end
  end
end
if wait > max_wait then return {1, tostring(wait), worst} end
for i = 1, nb do
  local rate, burst, cost = tonumber(ARGV[3 + 3 * i - 2]), tonumber(ARGV[3 + 3 * i - 1]),
    tonumber(ARGV[3 + 3 * i])
  store(KEYS[i], levels[i] - cost, stamps[i], rate, burst, now)
end
return {0, tostring(wait)}
"""
)

# KEYS: bucket keys. ARGV: now_ms|'', then (rate_per_ms, burst, amount) per bucket.
_ADJUST = (
    _PRELUDE
    + """
local now = now_ms(ARGV[1])
for i = 1, #KEYS do
  local rate, burst, amount = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]),
    tonumber(ARGV[3 * i + 1])
  local level, stamp = load(KEYS[i], rate, burst, now)
  store(KEYS[i], math.min(burst, level + amount), stamp, rate, burst, now)
end
return 1
"""
)

# KEYS: the hold key (its value: the instant it ends), then buckets to drain.
# ARGV: now_ms|'', hold_ms, then (rate_per_ms, burst) per bucket.
_HOLD = (
    _PRELUDE
    + """
local now = now_ms(ARGV[1])
local hold = tonumber(ARGV[2])
local untl = tonumber(redis.call('GET', KEYS[1]))
if untl == nil or untl < now + hold then
  redis.call('SET', KEYS[1], tostring(now + hold), 'PX', math.ceil(hold) + 1000)
end
for i = 2, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local level, stamp = load(KEYS[i], rate, burst, now)
  store(KEYS[i], math.min(level, 0), math.max(stamp, now + hold), rate, burst, now)
end
return 1
"""
)

# KEYS[1]: a bucket. ARGV: now_ms|'', rate_per_ms, burst. -> level
_PEEK = (
    _PRELUDE
    + """
local now = now_ms(ARGV[1])
local level = load(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now)
return tostring(level)
"""
)


def _num(value: float) -> str:
    return repr(float(value))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBuckets:
    """Buckets in Redis, shared by every replica that uses the same ``prefix``."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "longread:",
        now_ms: Callable[[], float] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._now_ms = now_ms
        self._reserve = redis.register_script(_RESERVE)
        self._adjust = redis.register_script(_ADJUST)
        self._hold = redis.register_script(_HOLD)
        self._peek = redis.register_script(_PEEK)

    def _now(self) -> str:
        return "" if self._now_ms is None else _num(self._now_ms())

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def reserve(self, items: Items, holds: Sequence[str], max_wait_s: float) -> Decision:
        keys = [self._key(s.key) for s, _ in items] + [self._key(h) for h in holds]
        args: list[str] = [str(len(items)), _num(max_wait_s * 1000), self._now()]
        for spec, cost in items:
            args += [_num(spec.rate_per_s / 1000), _num(spec.burst), _num(cost)]
        reply = await self._reserve(keys=keys, args=args)
        code = int(reply[0])
        if code == 0:
            return Grant(float(_text(reply[1])) / 1000)
        if code == 1:
            return Limited(float(_text(reply[1])) / 1000, self._unkey(_text(reply[2])))
        return Never(self._unkey(_text(reply[1])), float(_text(reply[2])), float(_text(reply[3])))

    def _unkey(self, key: str) -> str:
        return key[len(self._prefix) :] if key.startswith(self._prefix) else key

    async def adjust(self, items: Items, grant: Grant | None = None) -> None:
        if not items:
            return
        args = [self._now()]
        for spec, amount in items:
            args += [_num(spec.rate_per_s / 1000), _num(spec.burst), _num(amount)]
        await self._adjust(keys=[self._key(s.key) for s, _ in items], args=args)

    async def hold(self, key: str, seconds: float, drain: Sequence[BucketSpec]) -> None:
        args = [self._now(), _num(seconds * 1000)]
        for spec in drain:
            args += [_num(spec.rate_per_s / 1000), _num(spec.burst)]
        await self._hold(keys=[self._key(key)] + [self._key(s.key) for s in drain], args=args)

    async def peek(self, spec: BucketSpec) -> float:
        args = [self._now(), _num(spec.rate_per_s / 1000), _num(spec.burst)]
        reply = await self._peek(keys=[self._key(spec.key)], args=args)
        return float(_text(reply))
