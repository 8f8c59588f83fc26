"""Circuit breakers shared by every replica: ``breakers._Machine`` in one Lua script.

Each operation (acquire a permit, record an outcome, view) is one atomic script run over the
breaker's state hash and its window (a list of the last N outcome codes for a count window, a
hash of per-second counters for a time window), with times from Redis ``TIME`` in ms. The
keys expire a day after the last write: an idle breaker forgets and starts closed. Tests pass
``now_ms`` to drive the script with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable

from longread_server.state.breakers import (
    HALF_OPEN_RETRY_S,
    BreakerParams,
    BreakerView,
    Outcome,
    Permit,
)
from longread_server.state.redis import RedisClient

# KEYS: state hash, window. ARGV: op, now_ms|'', window type, window size, effective min calls,
# failure rate, slow rate, open_ms, backoff, open_max_ms, half-open calls, half-open max ms,
# then for "record": epoch, outcome code (0 ok, 1 failed, 2 slow, 3 slow+failed, 4 ignored).
_SCRIPT = """
local op = ARGV[1]
local now
if ARGV[2] ~= '' then now = tonumber(ARGV[2]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 end
local wtype, wsize, minc = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local fr, sr = tonumber(ARGV[6]), tonumber(ARGV[7])
local open_ms, backoff, open_max = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local hoc, ho_max = tonumber(ARGV[11]), tonumber(ARGV[12])
local HALF_RETRY, EPS, TTL = tonumber(ARGV[13]), 1e-9, 86400000
local S, W = KEYS[1], KEYS[2]

local f = redis.call('HMGET', S, 's', 'e', 'o', 'u', 'h', 'p', 'hc', 'hf', 'hs', 'wc', 'wf', 'ws')
local st = f[1] or 'closed'
local epoch, opens = tonumber(f[2]) or 0, tonumber(f[3]) or 0
local untl, hsince, permits = tonumber(f[4]) or 0, tonumber(f[5]) or 0, tonumber(f[6]) or 0
local hc, hf, hs = tonumber(f[7]) or 0, tonumber(f[8]) or 0, tonumber(f[9]) or 0
local wc, wf, ws = tonumber(f[10]) or 0, tonumber(f[11]) or 0, tonumber(f[12]) or 0

local function to_open()
  st = 'open'; epoch = epoch + 1; opens = opens + 1
  untl = now + math.min(open_max, open_ms * backoff ^ (opens - 1))
end
local function to_half()
  st = 'half_open'; epoch = epoch + 1; hsince = now; permits = hoc; hc, hf, hs = 0, 0, 0
end
local function to_closed()
  st = 'closed'; epoch = epoch + 1; opens = 0; wc, wf, ws = 0, 0, 0
  redis.call('DEL', W)
end
local function save()
  redis.call('HSET', S, 's', st, 'e', epoch, 'o', opens, 'u', tostring(untl),
    'h', tostring(hsince), 'p', permits, 'hc', hc, 'hf', hf, 'hs', hs, 'wc', wc, 'wf', wf, 'ws', ws)
  redis.call('PEXPIRE', S, TTL)
  if redis.call('EXISTS', W) == 1 then redis.call('PEXPIRE', W, TTL) end
end
local function ho_expired() return ho_max > 0 and now - hsince >= ho_max end
local function trips(c, fl, sl)
  if c < minc or c == 0 then return false end
  return fl / c >= fr - EPS or sl / c >= sr - EPS
end
local function time_totals()
  local oldest = math.floor(now / 1000) - wsize
  local all = redis.call('HGETALL', W)
  local c, fl, sl, dead = 0, 0, 0, {}
  for i = 1, #all, 2 do
    local k = all[i]
    local v = tonumber(all[i + 1])
    if tonumber(string.sub(k, 2)) <= oldest then
      dead[#dead + 1] = k
    else
      local kind = string.sub(k, 1, 1)
      if kind == 'c' then c = c + v elseif kind == 'f' then fl = fl + v else sl = sl + v end
    end
  end
  if #dead > 0 then redis.call('HDEL', W, unpack(dead)) end
  return c, fl, sl
end

if op == 'acquire' then
  if st == 'open' then
    if now < untl then return {0, epoch, st, tostring(untl - now)} end
    to_half()
  end
  if st == 'half_open' then
    if ho_expired() then
      to_open(); save()
      return {0, epoch, st, tostring(untl - now)}
    end
    if permits <= 0 then save(); return {0, epoch, st, tostring(HALF_RETRY)} end
    permits = permits - 1; save()
    return {1, epoch, st, '0'}
  end
  return {1, epoch, st, '0'}
elseif op == 'record' then
  local pe, oc = tonumber(ARGV[14]), tonumber(ARGV[15])
  if pe ~= epoch then return {st, epoch} end
  local failed, slow = 0, 0
  if oc == 1 or oc == 3 then failed = 1 end
  if oc == 2 or oc == 3 then slow = 1 end
  if st == 'closed' then
    if oc == 4 then return {st, epoch} end
    local c, fl, sl
    if wtype == 'count' then
      redis.call('RPUSH', W, oc)
      wc, wf, ws = wc + 1, wf + failed, ws + slow
      if redis.call('LLEN', W) > wsize then
        local old = tonumber(redis.call('LPOP', W))
        wc = wc - 1
        if old == 1 or old == 3 then wf = wf - 1 end
        if old == 2 or old == 3 then ws = ws - 1 end
      end
      c, fl, sl = wc, wf, ws
    else
      local sec = math.floor(now / 1000)
      redis.call('HINCRBY', W, 'c' .. sec, 1)
      if failed == 1 then redis.call('HINCRBY', W, 'f' .. sec, 1) end
      if slow == 1 then redis.call('HINCRBY', W, 's' .. sec, 1) end
      c, fl, sl = time_totals()
    end
    if trips(c, fl, sl) then to_open() end
  elseif st == 'half_open' then
    if oc == 4 then
      permits = permits + 1
    else
      hc, hf, hs = hc + 1, hf + failed, hs + slow
      if hf >= fr * hoc - EPS or hs >= sr * hoc - EPS then to_open()
      elseif hc >= hoc then to_closed() end
    end
  else
    return {st, epoch}
  end
  save()
  return {st, epoch}
else
  local c, fl, sl = wc, wf, ws
  if wtype == 'time' then c, fl, sl = time_totals() end
  local rejecting, retry = 0, 0
  if st == 'open' then
    if untl > now then rejecting, retry = 1, untl - now end
  elseif st == 'half_open' then
    if permits <= 0 and not ho_expired() then rejecting, retry = 1, HALF_RETRY end
  end
  return {st, rejecting, tostring(retry), c, fl, sl, opens}
end
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBreakers:
    """Breakers in Redis, shared by every replica that uses the same ``prefix``."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "longread:",
        now_ms: Callable[[], float] | None = None,
    ) -> None:
        self._script = redis.register_script(_SCRIPT)
        self._prefix = prefix
        self._now_ms = now_ms

    def _keys(self, name: str) -> list[str]:
        # The hash tag (Redis Cluster) keeps both keys in one slot; it starts with "cb:" so
        # that no name, not even one starting with "}", makes it empty (an empty tag is no
        # tag: each key would be hashed whole, to different slots).
        base = f"{self._prefix}{{cb:{name}}}"
        return [base, base + ":w"]

    def _args(self, op: str, params: BreakerParams) -> list[str]:
        now = "" if self._now_ms is None else repr(float(self._now_ms()))
        return [
            op,
            now,
            params.window,
            str(params.window_size),
            str(params.effective_min_calls),
            repr(params.failure_rate),
            repr(params.slow_rate),
            repr(params.open_s * 1000),
            repr(params.open_backoff),
            repr(params.open_max_s * 1000),
            str(params.half_open_calls),
            repr(params.half_open_max_s * 1000),
            repr(HALF_OPEN_RETRY_S * 1000),
        ]

    async def acquire(self, name: str, params: BreakerParams) -> Permit:
        reply = await self._script(keys=self._keys(name), args=self._args("acquire", params))
        return Permit(
            granted=int(reply[0]) == 1,
            epoch=int(reply[1]),
            state=_text(reply[2]),
            retry_after_s=float(_text(reply[3])) / 1000,
        )

    async def record(
        self, name: str, params: BreakerParams, permit: Permit, outcome: Outcome
    ) -> str:
        args = [*self._args("record", params), str(permit.epoch), str(int(outcome))]
        reply = await self._script(keys=self._keys(name), args=args)
        return _text(reply[0])

    async def view(self, name: str, params: BreakerParams) -> BreakerView:
        reply = await self._script(keys=self._keys(name), args=self._args("view", params))
        return BreakerView(
            state=_text(reply[0]),
            rejecting=int(reply[1]) == 1,
            retry_after_s=float(_text(reply[2])) / 1000,
            calls=int(reply[3]),
            failures=int(reply[4]),
            slow=int(reply[5]),
            opens=int(reply[6]),
        )
