"""The in-process LRU (bytes bound, TTL on a fake clock), the Redis fail-over, the value codec,
and the price of cache reads and writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from longread_server.calls.cache import (
    CachedAnswer,
    CodecError,
    decode_answer,
    encode_answer,
    replay,
)
from longread_server.domain import Finish, ModelInfo, TextDelta, Usage
from longread_server.plan.catalog import Catalog, price
from longread_server.state.cache_store import ENTRY_OVERHEAD, MemoryCacheStore
from longread_server.state.failover import FailoverStore
from longread_server.state.gate import GatePolicy, RedisGate

from tests.clock import FakeClock


def entry(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD


def test_lru_expires_entries_on_the_clock() -> None:
    clock = FakeClock()
    store = MemoryCacheStore(10_000, clock)
    store.put_now("a", b"1", ttl_s=10)
    store.put_now("b", b"2", ttl_s=60)
    clock.advance(9.99)
    assert store.get_now("a") == b"1"
    clock.advance(0.01)
    assert store.get_now("a") is None and store.expirations == 1
    assert store.get_now("b") == b"2"
    assert store.bytes == entry("b", b"2")


def test_lru_is_bounded_in_bytes_and_evicts_least_recently_used() -> None:
    size = entry("k0", b"x" * 100)
    store = MemoryCacheStore(3 * size, FakeClock())
    for i in range(3):
        store.put_now(f"k{i}", b"x" * 100, 60)
    assert store.get_now("k0") is not None  # k0 is now the most recently used
    store.put_now("k3", b"x" * 100, 60)
    assert store.get_now("k1") is None and store.evictions == 1
    assert [store.get_now(k) is not None for k in ("k0", "k2", "k3")] == [True, True, True]
    assert store.bytes == 3 * size <= store.max_bytes


def test_lru_refuses_what_can_never_fit_and_replaces_in_place() -> None:
    store = MemoryCacheStore(500, FakeClock())
    assert not store.put_now("big", b"x" * 500, 60)
    assert store.put_now("k", b"a" * 10, 60) and store.put_now("k", b"b" * 20, 60)
    assert store.get_now("k") == b"b" * 20 and store.bytes == entry("k", b"b" * 20)
    assert not store.put_now("k2", b"v", 0)


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.binary(max_size=200)), max_size=60))
def test_lru_never_exceeds_its_bound(ops: list[tuple[str, bytes]]) -> None:
    store = MemoryCacheStore(1000, FakeClock())
    for k, v in ops:
        store.put_now(k, v, 60)
        assert store.bytes <= 1000
        kept = [k2 for k2, _ in ops if store.get_now(k2) is not None]
        assert store.bytes == sum(entry(k2, store.get_now(k2) or b"") for k2 in set(kept))


class DeadRemote:
    def __init__(self) -> None:
        self.calls = 0

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        raise ConnectionError("refused")

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self.calls += 1
        raise ConnectionError("refused")


async def test_failover_serves_locally_and_backs_off() -> None:
    clock = FakeClock()
    health = RedisGate(GatePolicy(retry_s=1.0, retry_max_s=4.0), clock)
    remote = DeadRemote()
    store = FailoverStore(remote, MemoryCacheStore(10_000, clock), health)
    await store.put("k", b"v", 60)  # Redis fails: written locally
    assert remote.calls == 1 and health.errors == 1
    assert await store.get("k") == b"v"  # within the back-off: Redis not even tried
    assert remote.calls == 1
    clock.advance(1.0)
    assert await store.get("k") == b"v"  # tried again, failed again, local answer
    assert remote.calls == 2 and not health.available()
    clock.advance(1.99)  # the back-off doubled to 2 s
    assert not health.available()
    health.succeeded()
    assert health.available()


@given(
    st.lists(st.text(max_size=20), max_size=8),
    st.sampled_from(["stop", "length", "content_filter"]),
    st.integers(0, 10**7),
)
def test_codec_round_trips(deltas: list[str], reason: str, n: int) -> None:
    finish = Finish(reason, Usage(n, n // 2, n // 3, n // 4, 1), model="m", response_id="r")
    answer = CachedAnswer.of(deltas, finish)
    assert decode_answer(encode_answer(answer)) == answer
    events = replay(answer, stream=True)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "".join(deltas)
    last = events[-1]
    assert isinstance(last, Finish) and last.cached and last.usage == finish.usage


def test_codec_is_compact_and_rejects_garbage() -> None:
    answer = CachedAnswer.of(["word "] * 400, Finish("stop", Usage(1, 2, calls=1)))
    raw = encode_answer(answer)
    assert raw[:1] == b"z" and len(raw) < len(answer.text) // 4  # compressed, deltas as lengths
    inconsistent = b'j{"t":"ab","p":[1],"r":"","m":"","i":"","u":[0,0,0,0]}'
    for bad in (b"", b"q{}", b"j{}", inconsistent):
        with pytest.raises(CodecError):
            decode_answer(bad)


def test_replay_of_a_one_blob_answer_is_still_a_stream() -> None:
    text = "The lamp was converted to electricity in 1926, and the keeper left in 1950."
    answer = CachedAnswer.of([text], Finish("stop", Usage(calls=1)))
    deltas = [e.text for e in replay(answer, stream=True) if isinstance(e, TextDelta)]
    assert len(deltas) > 3 and "".join(deltas) == text
    whole = [e for e in replay(answer, stream=False) if isinstance(e, TextDelta)]
    assert [d.text for d in whole] == [text]


def test_cache_writes_and_reads_are_priced() -> None:
    haiku = Catalog.builtin().get("anthropic", "claude-haiku-4-5")
    assert haiku is not None and haiku.cache_write_per_mtok == 1.25  # 1.25x input (5 minutes)
    # Anthropic normalized: 1M input of which 200K written to and 300K read from the cache.
    u = Usage(
        input_tokens=1_000_000,
        output_tokens=0,
        cached_input_tokens=300_000,
        cache_write_tokens=200_000,
    )
    p = price(haiku, u)
    assert p.input_usd == pytest.approx(0.5 * 1.00 + 0.2 * 1.25)
    assert p.cached_input_usd == pytest.approx(0.3 * 0.10)
    # No write price in the catalog: writes cost the input price (OpenAI, DeepSeek).
    plain = ModelInfo("openai", "m", 1000, 100, 2.0, 8.0, 0.5)
    assert price(plain, u).input_usd == pytest.approx(0.7 * 2.0)
