"""The one bounded memo, and the text sizes that decide how work on a text is done.

Work on a request that comes back (a cache hit, a retry, Estimate then Analyze) is remembered
instead of done again: plans, cache keys, prompt-overhead counts, documents' encodings. Every
memo is a ``Memo``, and every one decides by the same sizes:

* texts up to ``REMEMBER_MAX_CHARS`` are remembered by their content (the memo may hold the
  text itself, so its entry count bounds its memory);
* longer texts are worked on from scratch, except a document's encoding, which is remembered
  by digest (``remembered``: its value is one byte a token, never the text);
* work on texts over ``OFFLOAD_MIN_CHARS`` runs in a worker thread, so one huge request does
  not stall every other RPC on the event loop (tokenizing and hashing release the GIL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

REMEMBER_MAX_CHARS = 64 * 1024
OFFLOAD_MIN_CHARS = 200_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Up to ``size`` recent values by key; the oldest entry goes first. Thread-safe: long
    documents are planned in worker threads. ``make`` runs outside the lock, so two threads
    may make the same value at once (both get a correct one; one is kept)."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("a memo holds at least one entry")
        self._size = size
        self._entries: dict[K, V] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The remembered value for ``key``, or ``make()``'s, remembered (exceptions are not)."""
        value = self._entries.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = make()
        with self._lock:
            if key not in self._entries:
                if len(self._entries) >= self._size:
                    del self._entries[next(iter(self._entries))]  # the oldest
                self._entries[key] = value
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
