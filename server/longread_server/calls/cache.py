"""The response cache stage: never pay twice for the same answer, never return a wrong one.

Every model call is keyed by the vendor payload the gateway is about to send, canonicalized by
that vendor's rules (``vendors/canonical.py``) and scoped to the tenant (or to everyone, when
``cache.share_across_tenants`` is set). Per-request policy (``CallContext.cache_mode``):

* ``default``: a hit is replayed; a miss goes upstream (through single-flight) and is stored;
* ``bypass``: never read; go upstream alone (no coalescing); store the fresh answer;
* ``no_store``: read; on a miss go upstream, never store the answer;
* ``only_if_cached``: a hit is replayed, a miss is ``CallRejected("NOT_CACHED")``, never a call.

``CallContext.cache_ttl_s`` overrides the TTL (capped by ``cache.max_ttl_s``).

Only complete answers are stored: the single-flight stage (behind this one) writes an answer
after its terminal ``Finish``, never a partial or failed call. A hit carries the original
``Finish`` (usage included) with ``cached=True``: the runner charges nothing for it. On a
streaming request a hit is replayed as the original deltas (an answer stored from a
non-streaming call is cut at word boundaries), not one blob.

Stored values are compact: ``b"j"`` + JSON, or ``b"z"`` + zlib(JSON) above 512 bytes, with the
delta boundaries kept as lengths (not as repeated text).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import struct
import zlib
from array import array
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from longread_server.calls.pipeline import Call, CallContext, Next
from longread_server.config import CacheConfig
from longread_server.domain import (
    CallRejected,
    Embedding,
    Finish,
    LlmEvent,
    LlmRequest,
    Operation,
    TextDelta,
    Usage,
)
from longread_server.memo import OFFLOAD_MIN_CHARS, REMEMBER_MAX_CHARS, Memo
from longread_server.state.cache_store import CacheStore, MemoryCacheStore
from longread_server.state.failover import FailoverStore
from longread_server.state.gate import RedisGate
from longread_server.state.redis import RedisClient
from longread_server.state.redis_cache import RedisCache
from longread_server.telemetry import Telemetry, current_span, disabled
from longread_server.vendors.canonical import KeyParts, cache_key, embedding_key

log = logging.getLogger(__name__)

# Keys of recent small requests are remembered (``remembered_key``); the memo holds the
# requests themselves, so its entry count bounds its memory (REMEMBER_MAX_CHARS each).
_MEMO_KEYS = 256
_COMPRESS_ABOVE = 512
# Replay granularity for answers stored without their deltas (from a non-streaming call).
_REPLAY_PIECE = re.compile(r"\S+\s*|\s+")
_WORDS_PER_PIECE = 4


@dataclass(slots=True)
class CacheStats:
    """Counters the telemetry can export (``to_json`` for a quick look)."""

    hits: int = 0  # answered from the store
    misses: int = 0  # went on to single-flight (and, for its leader, upstream)
    bypassed: int = 0  # cache_mode=bypass
    not_cached: int = 0  # only_if_cached misses, refused
    stores: int = 0  # answers written
    store_skipped: int = 0  # complete answers not written (no_store, too large)
    upstream_calls: int = 0  # calls this process's leaders made upstream
    coalesced: int = 0  # callers that joined an in-flight identical call in this process
    remote_waits: int = 0  # leaders that waited for another replica's call
    remote_hits: int = 0  # ...and got its answer
    remote_errors: int = 0  # ...and got its error
    takeovers: int = 0  # ...and took over after that replica's lease expired
    wait_abandoned: int = 0  # ...and gave up waiting (flight_wait_s) to call alone
    key_errors: int = 0  # payloads that could not be keyed (served uncached)
    decode_errors: int = 0  # stored values that could not be read (treated as misses)
    health: RedisGate | None = field(default=None, repr=False)

    @property
    def redis_errors(self) -> int:
        """Redis failures (each one served from local state or uncached, never failed): the
        count of the Redis gate the cache shares with the gateway's other shared state."""
        return self.health.errors if self.health is not None else 0

    def to_json(self) -> dict[str, int]:
        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "health"
        }
        out["redis_errors"] = self.redis_errors
        return out


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A complete answer as stored: the text, where its deltas were cut, and its Finish."""

    text: str
    pieces: tuple[int, ...]  # lengths of the original deltas (sum == len(text))
    finish_reason: str
    model: str
    response_id: str
    usage: Usage

    @classmethod
    def of(cls, deltas: list[str], finish: Finish) -> CachedAnswer:
        return cls(
            text="".join(deltas),
            pieces=tuple(len(d) for d in deltas if d),
            finish_reason=finish.finish_reason,
            model=finish.model,
            response_id=finish.response_id,
            usage=dataclasses.replace(finish.usage),
        )


class CodecError(ValueError):
    """A stored value is not an answer this version can read."""


def encode_answer(a: CachedAnswer) -> bytes:
    u = a.usage
    doc = {
        "t": a.text,
        "p": list(a.pieces),
        "r": a.finish_reason,
        "m": a.model,
        "i": a.response_id,
        "u": [u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens],
    }
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )
    if len(data) > _COMPRESS_ABOVE:
        return b"z" + zlib.compress(data, 6)
    return b"j" + data


def decode_answer(raw: bytes) -> CachedAnswer:
    try:
        if raw[:1] == b"z":
            data = zlib.decompress(raw[1:])
        elif raw[:1] == b"j":
            data = raw[1:]
        else:
            raise CodecError(f"unknown format {raw[:1]!r}")
        doc = json.loads(data.decode("utf-8", "surrogatepass"))
        text, pieces, u = doc["t"], tuple(doc["p"]), doc["u"]
        if not isinstance(text, str) or sum(pieces) != len(text) or len(u) != 4:
            raise CodecError("inconsistent answer")
        return CachedAnswer(
            text=text,
            pieces=pieces,
            finish_reason=str(doc["r"]),
            model=str(doc["m"]),
            response_id=str(doc["i"]),
            usage=Usage(
                input_tokens=int(u[0]),
                output_tokens=int(u[1]),
                cached_input_tokens=int(u[2]),
                cache_write_tokens=int(u[3]),
                calls=1,
            ),
        )
    except CodecError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, zlib.error) as e:
        raise CodecError(str(e)) from e


def _replay_pieces(answer: CachedAnswer) -> Iterator[str]:
    if len(answer.pieces) > 1:
        at = 0
        for n in answer.pieces:
            yield answer.text[at : at + n]
            at += n
        return
    yield from word_pieces(answer.text)


def word_pieces(text: str) -> Iterator[str]:
    """``text`` in pieces of a few words each: how an answer kept without its original deltas
    is replayed as a stream (a cached answer from a non-streaming call, a semantic reuse)."""
    words = _REPLAY_PIECE.findall(text)
    for i in range(0, len(words), _WORDS_PER_PIECE):
        yield "".join(words[i : i + _WORDS_PER_PIECE])


def replay(answer: CachedAnswer, *, stream: bool, cached: bool = True) -> list[LlmEvent]:
    """The events of a stored answer: deltas (one per original delta when streaming; the
    whole text at once otherwise, as an adapter does), then its Finish."""
    events: list[LlmEvent] = []
    if stream:
        events.extend(TextDelta(p) for p in _replay_pieces(answer) if p)
    elif answer.text:
        events.append(TextDelta(answer.text))
    events.append(
        Finish(
            finish_reason=answer.finish_reason,
            usage=dataclasses.replace(answer.usage),
            model=answer.model,
            response_id=answer.response_id,
            cached=cached,
        )
    )
    return events


@dataclass(frozen=True, slots=True)
class KeyedCall(Call):
    """A call with its cache key, as the cache stage hands it to single-flight."""

    cache_key: str = ""

    @classmethod
    def of(cls, call: Call, key: str) -> KeyedCall:
        values = {f.name: getattr(call, f.name) for f in dataclasses.fields(call)}
        values["cache_key"] = key
        return cls(**values)


class ResponseCache:
    """What the cache and single-flight stages share: config, keys, store, leases, stats.
    With ``remote``, ``stats.health`` is the Redis gate its operations go through."""

    def __init__(
        self,
        cfg: CacheConfig,
        store: CacheStore,
        remote: RedisCache | None = None,
        stats: CacheStats | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.remote = remote
        self.stats = stats or CacheStats()
        self.local_store: MemoryCacheStore | None = None  # the in-process LRU, for metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self._keys: Memo[tuple[object, str, str, LlmRequest], str] = Memo(_MEMO_KEYS)

    @property
    def gate(self) -> RedisGate | None:
        """The Redis gate of ``remote`` (None without Redis)."""
        return self.stats.health

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Runs ``work`` (a single-flight leader) in a task of its own, kept until done."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Cancels the calls still in flight (gateway shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- keys ----

    def namespace(self, tenant: str) -> str:
        return "shared" if self.cfg.share_across_tenants else f"tenant:{tenant}"

    def scope(self, tenant: str) -> str:
        """What separates in-flight calls on top of the key: the tenant when answers are shared
        (one tenant's limits, budget or deadline must never fail another's request)."""
        return f":{tenant}" if self.cfg.share_across_tenants else ""

    def key_now(self, call: Call) -> str:
        """The cache key of ``call`` (raises ValueError/TypeError for an unkeyable payload)."""
        parts = KeyParts(
            namespace=self.namespace(call.ctx.tenant),
            upstream=call.vendor,
            key_version=self.cfg.key_version,
            strict_whitespace=self.cfg.strict_whitespace,
        )
        payload = call.adapter.build_payload(call.req)
        if call.req.operation is Operation.EMBEDDING:
            return embedding_key(payload, parts)
        return cache_key(call.adapter.kind, payload, parts).key

    def remembered_key(self, call: Call) -> str:
        """``key_now``, remembered for recent small requests: the same request (a hit, a
        retry) is keyed by a dict lookup instead of building, normalizing and hashing its
        vendor payload again. The request itself is the dict key, so equal means equal."""
        memo_key = (call.adapter.kind, call.vendor, call.ctx.tenant, call.req)
        return self._keys.get_or_make(memo_key, lambda: self.key_now(call))

    async def key(self, call: Call) -> str | None:
        """The key, or None when the payload cannot be keyed (the call is then served
        uncached and counted)."""
        try:
            size = len(call.req.system) + sum(len(m.content) for m in call.req.messages)
            if size > OFFLOAD_MIN_CHARS:
                return await asyncio.to_thread(self.key_now, call)
            if size > REMEMBER_MAX_CHARS:
                return self.key_now(call)
            return self.remembered_key(call)
        except (ValueError, TypeError, RecursionError) as e:
            self.stats.key_errors += 1
            log.warning("cache: cannot key a %s call, serving uncached: %s", call.vendor, e)
            return None

    def ttl(self, ctx: CallContext) -> float:
        ttl = ctx.cache_ttl_s if ctx.cache_ttl_s else self.cfg.ttl_s
        return min(ttl, self.cfg.max_ttl_s)

    # ---- values ----

    async def read(self, key: str) -> CachedAnswer | None:
        raw = await self.store.get(key)
        if raw is None:
            return None
        return self.decode(raw)

    def decode(self, raw: bytes) -> CachedAnswer | None:
        try:
            return decode_answer(raw)
        except CodecError as e:
            self.stats.decode_errors += 1
            log.warning("cache: unreadable entry treated as a miss: %s", e)
            return None

    def encode_for_store(self, answer: CachedAnswer) -> bytes | None:
        """The stored bytes, or None when the answer is too large to store."""
        raw = encode_answer(answer)
        if len(raw) > self.cfg.max_entry_bytes:
            self.stats.store_skipped += 1
            return None
        return raw

    async def write(self, key: str, raw: bytes, ttl_s: float) -> None:
        await self.store.put(key, raw, ttl_s)
        self.stats.stores += 1

    async def keep(self, ctx: CallContext, key: str, deltas: list[str], finish: Finish) -> None:
        """Stores a complete answer under ``key``, as the call's policy allows."""
        if ctx.cache_mode == "no_store":
            self.stats.store_skipped += 1
            return
        raw = self.encode_for_store(CachedAnswer.of(deltas, finish))
        if raw is not None:
            await self.write(key, raw, self.ttl(ctx))


def not_cached(call: Call) -> CallRejected:
    return CallRejected(
        "NOT_CACHED",
        f"no cached answer for this {call.req.model} call and the cache policy is only-if-cached",
        metadata={"model": call.req.model, "upstream": call.vendor},
    )


class CacheStage:
    """Reads: replays hits, refuses only-if-cached misses, passes the rest on keyed. Each
    lookup is a ``cache lookup`` span and a ``longread.cache.requests`` count by result."""

    def __init__(self, cache: ResponseCache, telemetry: Telemetry | None = None) -> None:
        self._cache = cache
        self._tel = telemetry or disabled()

    async def _lookup(self, call: Call) -> tuple[str | None, CachedAnswer | None, str]:
        """The key, the stored answer if it is to be used, and the lookup's result name."""
        cache, stats = self._cache, self._cache.stats
        mode = call.ctx.cache_mode
        key = await cache.key(call) if cache.cfg.enabled else None
        if key is None:
            if mode == "only_if_cached":
                stats.not_cached += 1
                return None, None, "not_cached"
            return None, None, "disabled"
        if mode == "bypass":
            stats.bypassed += 1
            return key, None, "bypass"
        answer = await cache.read(key)
        if answer is not None:
            stats.hits += 1
            return key, answer, "hit"
        if mode == "only_if_cached":
            stats.not_cached += 1
            return key, None, "not_cached"
        stats.misses += 1
        return key, None, "miss"

    def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        if call.req.operation is Operation.EMBEDDING:
            return self._embedding(call, nxt)
        if call.req.operation is not Operation.CHAT:  # a count is not an answer
            return nxt(call)
        return self._cached(call, nxt)

    async def _cached(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        lookup = self._tel.tracer.start_span("cache lookup")
        with current_span(lookup, current=self._tel.client_spans) as span:  # Redis spans below
            key, answer, result = await self._lookup(call)
            span.set_attribute("longread.cache.result", result)
            span.set_attribute("longread.cache.hit", answer is not None)
        self._tel.instruments.cache_requests.add(1, {"result": result})
        if result == "not_cached":
            raise not_cached(call)
        if answer is not None:
            for ev in replay(answer, stream=call.req.stream):
                yield ev
            return
        async for ev in nxt(call if key is None else KeyedCall.of(call, key)):
            yield ev

    async def _embedding(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        """An embedding is kept like an answer, under its payload's key (no single-flight: a
        question is embedded once per lookup, and a vector is cheap)."""
        cache, stats = self._cache, self._cache.stats
        key = await cache.key(call) if cache.cfg.enabled else None
        if key is not None and call.ctx.cache_mode != "bypass":
            raw = await cache.store.get(key)
            stored = decode_embedding(raw) if raw is not None else None
            if stored is not None:
                stats.hits += 1
                self._tel.instruments.cache_requests.add(1, {"result": "hit"})
                values, finish = stored
                yield Embedding(values)
                yield finish
                return
        values_out: tuple[float, ...] | None = None
        async for ev in nxt(call):
            if isinstance(ev, Embedding):
                values_out = ev.values
            elif (
                isinstance(ev, Finish)
                and key is not None
                and values_out is not None
                and call.ctx.cache_mode != "no_store"
            ):
                await cache.write(key, encode_embedding(values_out, ev), cache.ttl(call.ctx))
            yield ev


_EMBEDDING_HEAD = struct.Struct(">cII")  # b"e", input tokens, length of the model name


def encode_embedding(values: tuple[float, ...], finish: Finish) -> bytes:
    model = finish.model.encode("utf-8", "surrogatepass")
    head = _EMBEDDING_HEAD.pack(b"e", finish.usage.input_tokens, len(model))
    return head + model + array("f", values).tobytes()


def decode_embedding(raw: bytes) -> tuple[tuple[float, ...], Finish] | None:
    """The stored vector and a cached Finish, or None for bytes that are not one."""
    try:
        kind, tokens, n = _EMBEDDING_HEAD.unpack_from(raw)
        if kind != b"e":
            return None
        at = _EMBEDDING_HEAD.size
        model = raw[at : at + n].decode("utf-8", "surrogatepass")
        vector = array("f")
        vector.frombytes(raw[at + n :])
    except (struct.error, ValueError, UnicodeDecodeError):
        return None
    if not vector:
        return None
    usage = Usage(input_tokens=tokens, calls=1)
    return tuple(vector), Finish("stop", usage, model=model, cached=True)


def observe_cache(cache: ResponseCache, telemetry: Telemetry) -> None:
    """Exports the cache's size (a gauge), its evictions and Redis errors (counters: totals
    since start)."""
    store = cache.local_store

    def size() -> list[tuple[float, dict[str, str]]]:
        if store is None:
            return []
        return [(float(store.bytes), {"store": "memory"})]

    def evictions() -> list[tuple[float, dict[str, str]]]:
        if store is None:
            return []
        return [(float(store.evictions), {"store": "memory"})]

    def redis_errors() -> list[tuple[float, dict[str, str]]]:
        return [(float(cache.stats.redis_errors), {})]

    inst = telemetry.instruments
    inst.observe("longread.cache.bytes", size, "By", "Bytes held by the in-process cache")
    inst.observe(
        "longread.cache.evictions", evictions, "{entry}", "Entries evicted (LRU)", total=True
    )
    inst.observe(
        "longread.cache.redis_errors",
        redis_errors,
        "{error}",
        "Redis errors of the shared state (one gate), served uncached or from local state",
        total=True,
    )


def build_response_cache(
    cfg: CacheConfig, redis: RedisClient | None = None, gate: RedisGate | None = None
) -> ResponseCache:
    """The in-process store, or Redis first with the in-process store as its fallback.
    ``gate``: the Redis gate the gateway's other shared state uses (one view of Redis's
    health); alone, the cache gets one of its own."""
    local = MemoryCacheStore(cfg.max_bytes)
    stats = CacheStats()
    if redis is None or not cfg.redis:
        cache = ResponseCache(cfg, local, None, stats)
    else:
        health = gate or RedisGate()
        stats.health = health
        remote = RedisCache(redis, cfg.redis_prefix)
        store = FailoverStore(remote, local if cfg.local_fallback else None, health)
        cache = ResponseCache(cfg, store, remote, stats)
    cache.local_store = local if (redis is None or not cfg.redis or cfg.local_fallback) else None
    return cache
