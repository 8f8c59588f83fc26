"""Semantic reuse: a job whose question means the same as one already answered about the same
document, with the same model and options, gets that answer without a model call.

Opt-in: a tenant (``tenants[].semantic_cache``) or a request (``cache.semantic``) turns it on.
The scope of a reuse is exact: the tenant (or everyone, with ``cache.share_across_tenants``),
the model that runs the job, the document's content, the strategy and chunking, the system
prompt, the conversation, the output limit and the sampling options, and the embedding model.
Only the question may differ, and only in words: its facts (``semantic/facts.py``: numbers,
units, periods, dates, negation, comparisons, names, read with the document's own names) must
be the same before the similarity of the two questions' embeddings is weighed at all.

The cache policy applies as to exact reuse: ``bypass`` does not look up but stores,
``no_store`` looks up but does not store, ``only_if_cached`` takes a semantic hit and otherwise
leaves it to the exact cache (whose miss is NOT_CACHED). Answers are stored when a job ends
with one; the index is in process, or shared through Redis with this process's index behind
the one Redis gate when Redis is down.

Embeddings come from the offline model (``semantic/local_model.py``) or from an upstream's
``/v1/embeddings``, as a model call through the pipeline (limits, breaker, retries, cache,
budget, telemetry) like any other.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from longread_server.calls.cache import word_pieces
from longread_server.calls.pipeline import CallContext, Pipeline
from longread_server.config import CacheConfig, SemanticCacheConfig
from longread_server.domain import (
    CallRejected,
    Embedding,
    LlmRequest,
    Message,
    ModelCallFailed,
    Operation,
    UpstreamError,
    Usage,
)
from longread_server.memo import OFFLOAD_MIN_CHARS, Memo
from longread_server.plan.catalog import Price
from longread_server.run.events import (
    AnswerDelta,
    CacheStatus,
    JobResult,
    JobStage,
    JobWarning,
    PlanReady,
    RunEvent,
    SemanticMatch,
    Timings,
)
from longread_server.semantic.facts import Lexicon, question_facts
from longread_server.semantic.index import (
    Answer,
    Entry,
    MemoryIndex,
    Search,
    decode_answer,
    decode_entry,
    encode_answer,
    encode_entry,
    search,
)
from longread_server.semantic.local_model import Embedder, LocalEmbedder, Vector
from longread_server.state.gate import RedisGate
from longread_server.state.semantic_store import RedisSemanticStore
from longread_server.telemetry import Telemetry, current_span, disabled

if TYPE_CHECKING:
    from longread_server.run.analysis import PreparedJob

log = logging.getLogger(__name__)

_LEXICONS = 64  # documents whose names are remembered


@dataclass(slots=True)
class SemanticStats:
    lookups: int = 0
    hits: int = 0
    misses: int = 0
    turned_away: int = 0  # lookups where a question close enough stated other facts
    stores: int = 0
    skipped: int = 0  # questions too long, or instructions with no question to compare
    errors: int = 0  # embedding calls that failed (the job went on without reuse)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lookup found: the question's embedding (None: it could not be made) and, on a
    hit, the answer and the question it answered."""

    vector: Vector | None
    answer: Answer | None = None
    match: SemanticMatch | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    """One job's use of semantic reuse: where to look, what to compare, how close."""

    scope: str
    question: str
    facts: str
    min_similarity: float
    read: bool
    write: bool


class UpstreamEmbedder:
    """An OpenAI-compatible upstream's ``/v1/embeddings``, called through the pipeline."""

    def __init__(self, pipeline: Pipeline, upstream: str, model: str) -> None:
        self.name = f"upstream:{upstream}/{model}"
        self._pipeline = pipeline
        self._upstream = upstream
        self._model = model

    async def embed(self, text: str, ctx: CallContext) -> Vector:
        import numpy as np

        req = LlmRequest(
            model=self._model,
            messages=(Message("user", text),),
            max_output_tokens=0,
            stream=False,
            operation=Operation.EMBEDDING,
        )
        values: tuple[float, ...] | None = None
        async for ev in self._pipeline.call(self._upstream, req, ctx):
            if isinstance(ev, Embedding):
                values = ev.values
        if values is None:
            raise RuntimeError(f"{self._upstream} ended an embeddings call without a vector")
        vector = np.asarray(values, dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector


class SemanticReuse:
    """Looks up and stores answers by the meaning of their question."""

    def __init__(
        self,
        cfg: SemanticCacheConfig,
        cache: CacheConfig,
        tenants_on: frozenset[str],
        *,
        local: Callable[[], Embedder] | None = None,
        upstream: UpstreamEmbedder | None = None,
        remote: RedisSemanticStore | None = None,
        gate: RedisGate | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        """``local``: loads the offline model (None: not installed); ``upstream``: embeddings
        from an upstream instead."""
        self.cfg = cfg
        self._cache = cache
        self._tenants_on = tenants_on
        self._load_local = local
        self._local: Embedder | None = None
        self._loading = asyncio.Lock()
        self._upstream = upstream
        self.embedder_name = upstream.name if upstream is not None else LocalEmbedder.name
        self.index = MemoryIndex(cfg.max_questions, cfg.max_entries)
        self._remote = remote
        self._gate = gate
        self._tel = telemetry or disabled()
        self._lexicons: Memo[bytes, Lexicon] = Memo(_LEXICONS)
        self.stats = SemanticStats()

    @property
    def available(self) -> bool:
        return self._upstream is not None or self._load_local is not None

    async def load(self) -> None:
        """Loads the offline model now (in a worker thread), if it is the one used and not
        loaded yet: at start-up when a tenant uses reuse, else on the first job that asks."""
        if self._upstream is not None or self._local is not None or self._load_local is None:
            return
        async with self._loading:
            if self._local is None:
                self._local = await asyncio.to_thread(self._load_local)

    # ---- the job's ask ----

    def wanted(self, prep: PreparedJob) -> bool:
        """Whether this job asked for semantic reuse (itself, or through its tenant)."""
        asked = prep.request.semantic
        return asked if asked is not None else prep.tenant in self._tenants_on

    async def ask(self, prep: PreparedJob) -> Ask | None:
        """The job's lookup and store, or None when it does not use semantic reuse (not asked
        for; asked for where there is no embedding model, which the job is warned of; or an
        instruction too long to be a question)."""
        if not self.wanted(prep):
            return None
        if not self.available:
            prep.warnings.append(
                JobWarning(
                    "SEMANTIC_UNAVAILABLE",
                    "semantic reuse is not available on this server (no embedding model): "
                    "only exact answers are reused",
                )
            )
            return None
        request = prep.request
        question = request.spec.instruction.strip()
        if not question or len(question) > self.cfg.max_question_chars:
            self.stats.skipped += 1
            return None
        mode = request.cache_mode
        text = request.spec.text
        digest = _document_id(prep)
        lexicon = self._lexicons.get(digest)
        if lexicon is None:
            read = functools.partial(self._lexicons.get_or_make, digest, lambda: Lexicon.of(text))
            big = len(text) > OFFLOAD_MIN_CHARS  # read a long document off the event loop
            lexicon = await asyncio.to_thread(read) if big else read()
        facts = question_facts(question, lexicon).signature()
        return Ask(
            scope=self._scope(prep, digest),
            question=question,
            facts=facts,
            min_similarity=request.min_similarity or self.cfg.threshold,
            read=mode != "bypass",
            write=mode != "no_store",
        )

    def _scope(self, prep: PreparedJob, document: bytes) -> str:
        r, s, plan = prep.request, prep.request.spec, prep.plan
        tenant = "*" if self._cache.share_across_tenants else prep.tenant
        parts = (
            self._cache.key_version,
            self.embedder_name,
            tenant,
            plan.model.vendor,
            plan.model.model,
            plan.strategy.value,
            document.hex(),
            s.system,
            s.history,
            s.max_output_tokens,
            s.max_chunk_tokens,
            s.overlap_tokens,
            r.sampling,
        )
        digest = hashlib.blake2b(repr(parts).encode("utf-8", "surrogatepass"), digest_size=16)
        return digest.hexdigest()

    # ---- lookup ----

    async def lookup(self, ask: Ask, prep: PreparedJob) -> Lookup:
        """The stored answer whose question states the same facts and is close enough, and
        the question's embedding (to store the job's own answer under, on a miss)."""
        self.stats.lookups += 1
        with current_span(self._tel.tracer.start_span("semantic lookup"), current=False) as span:
            vector = await self._vector(ask.question, prep)
            if vector is None:
                span.set_attribute("longread.cache.result", "error")
                return Lookup(None)
            if not ask.read:
                span.set_attribute("longread.cache.result", "bypass")
                return Lookup(vector)
            entries, where = await self._entries(ask.scope)
            found: Search = search(entries, ask.facts, vector, ask.min_similarity)
            answer = None
            if found.match is not None:
                answer = await self._answer(ask.scope, found.match.entry.id, where)
                span.set_attribute("longread.semantic.similarity", found.match.similarity)
            result = "semantic_hit" if answer is not None else "semantic_miss"
            span.set_attribute("longread.cache.result", result)
            span.set_attribute("longread.semantic.candidates", found.candidates)
            if found.turned_away is not None:
                span.set_attribute("longread.semantic.turned_away", found.turned_away)
        inst = self._tel.instruments
        inst.cache_requests.add(1, {"result": result})
        if found.turned_away is not None:
            self.stats.turned_away += 1
            inst.cache_requests.add(1, {"result": "semantic_turned_away"})
        if answer is None or found.match is None:
            self.stats.misses += 1
            return Lookup(vector)
        self.stats.hits += 1
        match = SemanticMatch(found.match.entry.question, found.match.similarity)
        return Lookup(vector, answer, match)

    async def _vector(self, question: str, prep: PreparedJob) -> Vector | None:
        try:
            if self._upstream is not None:
                ctx = CallContext(tenant=prep.tenant, deadline=prep.deadline)
                return await self._upstream.embed(question, ctx)
            await self.load()
            assert self._local is not None
            return self._local.embed_now(question)
        except (UpstreamError, ModelCallFailed, CallRejected) as e:
            # The answer does not need the embedding: a failed or refused embedding call costs
            # the reuse, never the job. The pipeline has counted and traced it already.
            self.stats.errors += 1
            log.warning("semantic reuse: embedding failed, going on without it: %s", e)
            return None

    async def _entries(self, scope: str) -> tuple[list[Entry], str]:
        remote, gate = self._remote, self._gate
        if remote is None or gate is None:
            return self.index.entries(scope), "local"

        async def shared() -> list[Entry]:
            raws = await remote.entries(scope)
            return [e for e in (decode_entry(r) for r in raws) if e is not None]

        async def local() -> list[Entry]:
            return self.index.entries(scope)

        return await gate.run(shared, local)

    async def _answer(self, scope: str, qid: str, where: str) -> Answer | None:
        remote, gate = self._remote, self._gate
        if where != "shared" or remote is None or gate is None:
            return self.index.answer(scope, qid)
        raw = await gate.settle(where, lambda: remote.answer(scope, qid))
        return None if raw is None else decode_answer(raw)

    # ---- store ----

    async def remember(self, ask: Ask, vector: Vector, result: JobResult, ttl_s: float) -> None:
        """Stores the job's answer under its question (as its policy allows)."""
        if not ask.write or result.cache_status is CacheStatus.SEMANTIC_HIT:
            return
        entry = Entry(ask.question, ask.facts, vector)
        answer = Answer(result.text, result.finish_reason)
        ttl = min(ttl_s or self._cache.ttl_s, self._cache.max_ttl_s)
        added = self.index.add(ask.scope, entry, answer, ttl)
        remote, gate = self._remote, self._gate
        if remote is not None and gate is not None:
            raw_entry, raw_answer = encode_entry(entry), encode_answer(answer)

            async def shared() -> bool:
                done = await remote.add(
                    ask.scope, entry.id, raw_entry, raw_answer, ttl, self.cfg.max_questions
                )
                return done == 1

            async def local() -> bool:
                return added

            added, _ = await gate.run(shared, local)
        if added:
            self.stats.stores += 1


def _document_id(prep: PreparedJob) -> bytes:
    """The document's content, by the hashes the plan already took of its chunks: their bodies
    follow one another over the whole text, so equal hashes in the same scope (same model and
    chunking) are the same document, without hashing the text once more."""
    chunks = prep.plan.chunks
    if not chunks:  # no plan of chunks to go by: the text itself
        return hashlib.blake2b(
            prep.request.spec.text.encode("utf-8", "surrogatepass"), digest_size=16
        ).digest()
    joined = ",".join(c.content_hash for c in chunks).encode()
    return hashlib.blake2b(joined, digest_size=16).digest()


async def hit_events(
    prep: PreparedJob, answer: Answer, match: SemanticMatch, *, streaming: bool
) -> AsyncGenerator[RunEvent, None]:
    """The events of a semantic hit: the plan, the answer (as deltas when streaming), the
    result. No call was made: no usage, no cost."""
    plan = prep.plan
    yield PlanReady(plan)
    first_token = 0.0
    if streaming and answer.text:
        first_token = time.monotonic() - prep.started
        for piece in word_pieces(answer.text):
            yield AnswerDelta(JobStage.SINGLE, 0, piece)
    yield JobResult(
        text=answer.text,
        plan=plan,
        model=plan.model,
        chunk_outputs=[],
        usage=Usage(),
        cost=Price(),
        cache_status=CacheStatus.SEMANTIC_HIT,
        finish_reason=answer.finish_reason,
        timings=Timings(
            total_s=time.monotonic() - prep.started,
            planning_s=prep.planning_s,
            first_token_s=first_token,
        ),
        warnings=list(prep.warnings),
        semantic=match,
    )
