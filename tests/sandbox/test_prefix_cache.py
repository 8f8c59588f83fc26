"""The emulator's prompt-cache rules without HTTP: TTLs against a fake clock, minimums."""

from __future__ import annotations

from longread_sandbox.prefix_cache import (
    Breakpoints,
    PrefixCache,
    anthropic_min_cacheable,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def marked(model: str, tokens: int, ttl: str = "5m") -> Breakpoints:
    points = Breakpoints(model)
    points.feed("system", "You answer from the document.", 9)
    points.feed("user", "the document", tokens)
    points.mark(ttl)
    return points


def test_minimum_cacheable_length_by_model() -> None:
    assert anthropic_min_cacheable("claude-sonnet-4-5") == 1024
    assert anthropic_min_cacheable("claude-opus-4-1-20250805") == 1024
    assert anthropic_min_cacheable("claude-sonnet-4-6") == 2048
    assert anthropic_min_cacheable("claude-haiku-4-5") == 4096
    assert anthropic_min_cacheable("claude-opus-4-5") == 4096
    assert anthropic_min_cacheable("claude-3-5-haiku-latest") == 2048


def test_five_minute_entries_expire_and_hits_refresh_them() -> None:
    clock = Clock()
    cache = PrefixCache(clock)
    assert marked("claude-sonnet-4-5", 2000).resolve(cache) == (0, 2009, False)
    clock.now += 299
    assert marked("claude-sonnet-4-5", 2000).resolve(cache) == (2009, 0, False)
    clock.now += 299  # 598 s after the write, 299 after the hit that refreshed it
    assert marked("claude-sonnet-4-5", 2000).resolve(cache)[0] == 2009
    clock.now += 301
    assert marked("claude-sonnet-4-5", 2000).resolve(cache) == (0, 2009, False)


def test_one_hour_entries_outlive_five_minutes() -> None:
    clock = Clock()
    cache = PrefixCache(clock)
    assert marked("claude-sonnet-4-5", 2000, "1h").resolve(cache) == (0, 2009, True)
    clock.now += 3000
    assert marked("claude-sonnet-4-5", 2000, "1h").resolve(cache)[0] == 2009
    clock.now += 3601
    assert marked("claude-sonnet-4-5", 2000, "1h").resolve(cache)[1] == 2009


def test_below_the_minimum_nothing_is_written_or_read() -> None:
    cache = PrefixCache(Clock())
    for _ in range(2):
        assert marked("claude-haiku-4-5", 3000).resolve(cache) == (0, 0, False)
    assert len(cache) == 0


def test_the_model_is_part_of_the_prefix() -> None:
    cache = PrefixCache(Clock())
    marked("claude-sonnet-4-5", 2000).resolve(cache)
    assert marked("claude-opus-4-1", 2000).resolve(cache)[0] == 0
