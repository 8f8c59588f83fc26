"""Prompt-cache emulation: which prompt prefixes the "vendor" has seen recently.

Gateways report and price cached input tokens, and choose request shapes (stable prefixes,
``cache_control`` marks) to get them; the sandbox makes that observable offline. Only prefix
hashes are kept, with a time to live and a bounded size, so memory stays flat in long runs.

OpenAI (automatic caching) is approximated: a prompt of at least 1024 tokens is hashed at every
128-token boundary from 1024 on; ``cached_tokens`` is the longest boundary seen before. That
is "the largest multiple of 128 not above the shared prefix", OpenAI's documented behaviour,
minus its routing and eviction randomness.

Anthropic (explicit ``cache_control`` breakpoints, at most 4) follows
https://docs.claude.com/en/docs/build-with-claude/prompt-caching: a marked prefix is cached
only from the model's minimum cacheable length on (shorter ones are processed uncached, with
no error and no write), a later request reads the longest marked prefix it shares exactly, and
an entry lives 5 minutes (or 1 hour with ``"ttl": "1h"``), refreshed by every hit.
"""

from __future__ import annotations

import hashlib
import time
from array import array
from collections.abc import Callable, Sequence

OPENAI_MIN_CACHED = 1024
OPENAI_CACHE_STEP = 128
OPENAI_TTL_S = 600.0  # in-memory retention: "5 to 10 minutes of inactivity"
# ``prompt_cache_retention``: "in_memory" (the default) or "24h", extended retention
# (https://platform.openai.com/docs/guides/prompt-caching).
OPENAI_RETENTION_S = {"in_memory": OPENAI_TTL_S, "24h": 24 * 3600.0}
ANTHROPIC_TTL_S = {"5m": 300.0, "1h": 3600.0}
MAX_ENTRIES = 200_000

# Minimum cacheable prompt length by model family (the vendor's table, "Cache limitations");
# the first matching prefix wins, anything else gets the common 1024.
ANTHROPIC_MIN_CACHEABLE = (
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-sonnet-4-6", 2048),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
    ("claude-haiku-3", 2048),
)
ANTHROPIC_MIN_CACHEABLE_DEFAULT = 1024


def anthropic_min_cacheable(model: str) -> int:
    """The shortest prefix (tokens) the vendor caches for ``model``."""
    for prefix, tokens in ANTHROPIC_MIN_CACHEABLE:
        if model.startswith(prefix):
            return tokens
    return ANTHROPIC_MIN_CACHEABLE_DEFAULT


class PrefixCache:
    """Prefix digests with expiry; looking one up refreshes it, as vendors do on a hit."""

    __slots__ = ("_clock", "_expiry", "_max_entries")

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_entries: int = MAX_ENTRIES
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._expiry: dict[bytes, float] = {}

    def hit(self, key: bytes) -> bool:
        expiry = self._expiry.get(key)
        return expiry is not None and expiry > self._clock()

    def store(self, key: bytes, ttl_s: float) -> None:
        if key not in self._expiry and len(self._expiry) >= self._max_entries:
            del self._expiry[next(iter(self._expiry))]
        self._expiry[key] = max(self._expiry.get(key, 0.0), self._clock() + ttl_s)

    def clear(self) -> None:
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._expiry)

    def openai_cached_tokens(
        self, model: str, token_ids: Sequence[int], ttl_s: float = OPENAI_TTL_S
    ) -> int:
        """Cached prompt tokens for an OpenAI-style prompt, and remember its prefixes."""
        total = len(token_ids)
        if total < OPENAI_MIN_CACHED:
            return 0
        digest = hashlib.blake2b(model.encode(), digest_size=16)
        data = array("I", token_ids).tobytes()
        cached, position, missed = 0, 0, False
        for boundary in range(OPENAI_MIN_CACHED, total + 1, OPENAI_CACHE_STEP):
            digest.update(data[position * 4 : boundary * 4])
            position = boundary
            key = digest.digest()
            if not missed and self.hit(key):
                cached = boundary
            else:
                missed = True
            self.store(key, ttl_s)
        return cached


class Breakpoints:
    """Anthropic ``cache_control`` breakpoints: a running prefix hash and token count.

    Blocks are fed in prompt order (tools, system, messages); ``mark`` records the prefix up to
    and including the last block fed.
    """

    __slots__ = ("_digest", "_min_tokens", "marks", "tokens")

    def __init__(self, model: str) -> None:
        self._digest = hashlib.blake2b(model.encode(), digest_size=16)
        self._min_tokens = anthropic_min_cacheable(model)
        self.tokens = 0
        self.marks: list[tuple[bytes, int, str]] = []  # (digest, prefix tokens, ttl)

    def feed(self, label: str, text: str, tokens: int) -> None:
        self._digest.update(b"\x00" + label.encode() + b"\x00" + text.encode())
        self.tokens += tokens

    def mark(self, ttl: str) -> None:
        # A breakpoint on a prefix below the minimum counts against the limit of 4 (checked by
        # the caller) but caches nothing.
        if self.tokens >= self._min_tokens:
            self.marks.append((self._digest.digest(), self.tokens, ttl))

    def resolve(self, cache: PrefixCache) -> tuple[int, int, bool]:
        """``(read_tokens, write_tokens, write_is_1h)``; remembers every marked prefix."""
        if not self.marks:
            return 0, 0, False
        read = 0
        for key, tokens, _ in self.marks:
            if cache.hit(key):
                read = tokens
        last_key, last_tokens, last_ttl = self.marks[-1]
        write = 0 if cache.hit(last_key) else last_tokens - read
        for key, _, ttl in self.marks:
            cache.store(key, ANTHROPIC_TTL_S.get(ttl, ANTHROPIC_TTL_S["5m"]))
        return read, write, last_ttl == "1h"
