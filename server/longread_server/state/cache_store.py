"""Where cached answers live: an in-process LRU (the default) or Redis, behind one small interface.

Values are opaque bytes with a time to live. The in-process store is bounded in bytes and
evicts the least recently used entry first; expired entries are dropped when met. With Redis
configured, ``failover.FailoverStore`` puts Redis first and this process's LRU behind it,
through the gateway's one Redis gate (``gate.RedisGate``): a Redis error never fails a request.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from longread_server.state.clock import SYSTEM_CLOCK, Clock

# Bookkeeping bytes charged per entry on top of key and value (dict slot, tuple, floats).
ENTRY_OVERHEAD = 96


class CacheStore(Protocol):
    """Opaque values by key, each with its own time to live."""

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired (never raises for a lookup)."""
        ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        """Stores ``value`` for ``ttl_s`` seconds (best effort; never raises)."""
        ...


class MemoryCacheStore:
    """An LRU bounded in bytes, with a TTL per entry. ``clock`` is injectable for tests."""

    def __init__(self, max_bytes: int, clock: Clock = SYSTEM_CLOCK) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.bytes = 0
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _size(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD

    def get_now(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= self._clock.now():
            self._drop(key)
            self.expirations += 1
            return None
        self._entries.move_to_end(key)
        return value

    def put_now(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Stores the entry; False when it can never fit or ``ttl_s`` is not positive."""
        size = self._size(key, value)
        if size > self.max_bytes or ttl_s <= 0:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, self._clock.now() + ttl_s)
        self.bytes += size
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1
        return True

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self.bytes -= self._size(key, value)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self.put_now(key, value, ttl_s)
