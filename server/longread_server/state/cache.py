"""Where cached answers live: an in-process LRU (the default) or Redis, behind one small interface.

Values are opaque bytes with a time to live. The in-process store is bounded in bytes and
evicts the least recently used entry first; expired entries are dropped when met. With Redis
configured, ``FailoverStore`` puts Redis first and this process's LRU behind it: a Redis error
never fails a request, it sends reads and writes to the local store for a back-off period
(``Availability``) and is counted there.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

# Bookkeeping bytes charged per entry on top of key and value (dict slot, tuple, floats).
ENTRY_OVERHEAD = 96


class StoreUnavailable(Exception):
    """Shared state could not be reached; callers serve without it."""


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

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
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
        if expires <= self._clock():
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
        self._entries[key] = (value, self._clock() + ttl_s)
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


class Availability:
    """Whether a shared backend is worth trying now: after a failure it is skipped for a
    back-off period (doubling per consecutive failure, up to ``max_backoff_s``), so a dead
    Redis costs one failed round trip per period instead of one per request."""

    def __init__(
        self,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._min = min_backoff_s
        self._max = max_backoff_s
        self._clock = clock
        self._retry_at = 0.0
        self._backoff = 0.0
        self.errors = 0  # every failure, for metrics
        self.last_error = ""

    def available(self) -> bool:
        return self._clock() >= self._retry_at

    def failed(self, error: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(error).__name__}: {error}"
        self._backoff = min(self._max, self._backoff * 2) if self._backoff else self._min
        self._retry_at = self._clock() + self._backoff

    def succeeded(self) -> None:
        self._backoff = 0.0
        self._retry_at = 0.0


class RemoteStore(Protocol):
    """A shared store that may fail: raises StoreUnavailable instead of answering."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...


class FailoverStore:
    """``primary`` (shared) while it answers; ``fallback`` (this process) while it does not."""

    def __init__(
        self, primary: RemoteStore, fallback: MemoryCacheStore | None, health: Availability
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.health = health

    async def get(self, key: str) -> bytes | None:
        if self.health.available():
            try:
                return await self.primary.get(key)
            except StoreUnavailable:
                pass
        return self.fallback.get_now(key) if self.fallback is not None else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        if self.health.available():
            try:
                await self.primary.put(key, value, ttl_s)
                return
            except StoreUnavailable:
                pass
        if self.fallback is not None:
            self.fallback.put_now(key, value, ttl_s)
