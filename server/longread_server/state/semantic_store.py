"""The semantic index's entries and answers shared by every replica through Redis.

Keys (``{...}`` is a Redis Cluster hash tag: a scope's two keys live in one slot)::

    {prefix}sem:{<scope>}          hash: question id -> entry (question, facts, embedding)
    {prefix}sem:{<scope>}:answers  hash: question id -> the answer

Values are opaque bytes here (``semantic/index.py`` encodes them). Adding is one script: the
entry and its answer land together or not at all, at most ``max_questions`` per scope (the
first answered stay), and both keys live ``ttl`` from the scope's latest answer.

Every method raises Redis's own errors; callers go through the gateway's one Redis gate.
"""

from __future__ import annotations

from longread_server.state.redis import RedisClient

_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""


class RedisSemanticStore:
    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._add = redis.register_script(_ADD)

    def entries_key(self, scope: str) -> str:
        return f"{self._prefix}sem:{{{scope}}}"

    def answers_key(self, scope: str) -> str:
        return f"{self._prefix}sem:{{{scope}}}:answers"

    async def entries(self, scope: str) -> list[bytes]:
        values = await self._redis.hvals(self.entries_key(scope))
        return [v for v in values if isinstance(v, bytes)]

    async def answer(self, scope: str, qid: str) -> bytes | None:
        value = await self._redis.hget(self.answers_key(scope), qid)
        return value if isinstance(value, bytes) else None

    async def add(
        self, scope: str, qid: str, entry: bytes, answer: bytes, ttl_s: float, max_questions: int
    ) -> int:
        """1: added; 0: the question is there already; -1: the scope is full."""
        keys = [self.entries_key(scope), self.answers_key(scope)]
        ttl_ms = max(1, round(ttl_s * 1000))
        done = await self._add(keys=keys, args=[qid, entry, answer, ttl_ms, max_questions])
        return int(done)
