"""The answered questions of each scope (tenant, document, model, options), and the search for
the closest one that states the same facts.

In process the index is bounded twice: ``max_questions`` per scope (the first ones answered
stay; a document asked a thousand ways is not a cache of a thousand answers) and
``max_entries`` in all, the least recently used scope leaving first. Entries expire with the
answer cache's time to live. The same entries travel through Redis (``state/semantic_store.py``)
encoded by ``encode_entry``/``encode_answer`` here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from longread_server.semantic.facts import agree

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]
else:
    Vector = Any


def question_id(question: str) -> str:
    """A short stable id of a question's exact text (its entry's field in Redis)."""
    return hashlib.blake2b(question.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Answer:
    """What a reuse replays: the answer's text and how its call ended."""

    text: str
    finish_reason: str


@dataclass(frozen=True, slots=True)
class Entry:
    """An answered question: its text, its facts' signature and its embedding."""

    question: str
    facts: str
    vector: Vector

    @property
    def id(self) -> str:
        return question_id(self.question)


@dataclass(frozen=True, slots=True)
class Match:
    entry: Entry
    similarity: float


@dataclass(slots=True)
class Search:
    """A search's outcome: the match (if any), and the best similarity among the entries whose
    facts differ (what the facts turned away, for the metrics)."""

    match: Match | None = None
    turned_away: float | None = None
    candidates: int = 0


_ROUNDING = 1e-6


def search(entries: list[Entry], facts: str, vector: Vector, min_similarity: float) -> Search:
    """The entry with the same facts whose embedding is closest to ``vector``, if it reaches
    ``min_similarity``."""
    import numpy as np

    out = Search(candidates=len(entries))
    if not entries:
        return out
    matrix = np.stack([e.vector for e in entries])
    sims = matrix @ vector
    best = -2.0
    for i, e in enumerate(entries):
        # A cosine of float32 unit vectors: a question against itself can come out a hair
        # above 1 or below it. Reported within [-1, 1] and compared with that hair to spare,
        # so that min_similarity = 1 reuses the same question.
        sim = min(1.0, max(-1.0, float(sims[i])))
        reaches = sim + _ROUNDING >= min_similarity
        if not agree(e.facts, facts):
            if reaches and (out.turned_away is None or sim > out.turned_away):
                out.turned_away = sim
            continue
        if reaches and sim > best:
            best = sim
            out.match = Match(e, sim)
    return out


# ---- encoding (Redis) ----

_ENTRY_VERSION = b"1"


def encode_entry(entry: Entry) -> bytes:
    import numpy as np

    head = json.dumps({"q": entry.question, "f": entry.facts}, ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )
    vector = np.asarray(entry.vector, dtype="<f4").tobytes()
    return _ENTRY_VERSION + len(head).to_bytes(4, "big") + head + vector


def decode_entry(raw: bytes) -> Entry | None:
    """The entry, or None for bytes this version cannot read."""
    import numpy as np

    try:
        if raw[:1] != _ENTRY_VERSION:
            return None
        n = int.from_bytes(raw[1:5], "big")
        head = json.loads(raw[5 : 5 + n].decode("utf-8", "surrogatepass"))
        vector = np.frombuffer(raw[5 + n :], dtype="<f4").astype(np.float32)
        if not isinstance(head.get("q"), str) or not isinstance(head.get("f"), str):
            return None
        if vector.size == 0:
            return None
        return Entry(head["q"], head["f"], vector)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def encode_answer(answer: Answer) -> bytes:
    return json.dumps({"t": answer.text, "r": answer.finish_reason}, ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def decode_answer(raw: bytes) -> Answer | None:
    try:
        doc = json.loads(raw.decode("utf-8", "surrogatepass"))
        if not isinstance(doc.get("t"), str) or not isinstance(doc.get("r"), str):
            return None
        return Answer(doc["t"], doc["r"])
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


# ---- in process ----


@dataclass(slots=True)
class _Scope:
    entries: list[Entry] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)
    expires: dict[str, float] = field(default_factory=dict)


class MemoryIndex:
    """Scopes of answered questions, bounded in questions per scope and entries in all."""

    def __init__(
        self, max_questions: int, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_questions = max_questions
        self.max_entries = max_entries
        self._now = clock
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()
        self.size = 0
        self.evictions = 0

    def entries(self, scope: str) -> list[Entry]:
        s = self._scopes.get(scope)
        if s is None:
            return []
        self._scopes.move_to_end(scope)
        now = self._now()
        expired = [qid for qid, t in s.expires.items() if t <= now]
        for qid in expired:
            self._drop(s, qid)
        return s.entries

    def answer(self, scope: str, qid: str) -> Answer | None:
        s = self._scopes.get(scope)
        return None if s is None else s.answers.get(qid)

    def add(self, scope: str, entry: Entry, answer: Answer, ttl_s: float) -> bool:
        """Stores the entry; False when its scope is full or it is there already."""
        s = self._scopes.get(scope)
        if s is None:
            s = self._scopes[scope] = _Scope()
        self._scopes.move_to_end(scope)
        qid = entry.id
        if qid in s.answers or len(s.entries) >= self.max_questions:
            return False
        s.entries = [*s.entries, entry]  # searches in flight keep the list they read
        s.answers[qid] = answer
        s.expires[qid] = self._now() + ttl_s
        self.size += 1
        while self.size > self.max_entries and self._scopes:
            oldest_key, oldest = next(iter(self._scopes.items()))
            self.size -= len(oldest.entries)
            self.evictions += len(oldest.entries)
            del self._scopes[oldest_key]
        return True

    def _drop(self, s: _Scope, qid: str) -> None:
        s.entries = [e for e in s.entries if e.id != qid]
        s.answers.pop(qid, None)
        s.expires.pop(qid, None)
        self.size -= 1
