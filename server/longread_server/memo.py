"""A bounded memo of recent results (plans, cache keys): the oldest entry goes first."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The remembered value for ``key``, or ``make()``'s, remembered (exceptions are not)."""
        value = self._entries.get(key)
        if value is None:
            value = make()
            if len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]  # the oldest
            self._entries[key] = value
        return value
