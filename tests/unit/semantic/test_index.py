"""The in-process index: bounds, expiry, the search, and the bytes shared through Redis."""

from __future__ import annotations

import numpy as np
from longread_server.semantic.index import (
    Answer,
    Entry,
    MemoryIndex,
    decode_answer,
    decode_entry,
    encode_answer,
    encode_entry,
    search,
)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


FACTS = "|||||northfield||"


def test_search_takes_the_closest_entry_with_the_same_facts() -> None:
    entries = [
        Entry("a", FACTS, unit(1, 0, 0)),
        Entry("b", FACTS, unit(1, 1, 0)),
        Entry("other plant", "|||||southfield||", unit(1, 0.1, 0)),
    ]
    found = search(entries, FACTS, unit(1, 0.2, 0), 0.5)
    assert found.match is not None and found.match.entry.question == "a"
    # The closest vector states other facts: counted as turned away, never served.
    assert found.turned_away is not None and found.turned_away > found.match.similarity
    assert search(entries, FACTS, unit(0, 0, 1), 0.5).match is None


def test_a_scope_keeps_its_first_questions_and_the_oldest_scope_leaves_first() -> None:
    now = [0.0]
    index = MemoryIndex(max_questions=2, max_entries=3, clock=lambda: now[0])
    answer = Answer("text", "stop")
    assert index.add("s1", Entry("q1", FACTS, unit(1, 0)), answer, 60)
    assert index.add("s1", Entry("q2", FACTS, unit(0, 1)), answer, 60)
    assert not index.add("s1", Entry("q3", FACTS, unit(1, 1)), answer, 60)  # scope full
    assert not index.add("s1", Entry("q1", FACTS, unit(1, 0)), answer, 60)  # there already
    assert index.add("s2", Entry("q1", FACTS, unit(1, 0)), answer, 60)
    index.entries("s2")  # s2 is now the most recently used
    assert index.add("s3", Entry("q1", FACTS, unit(1, 0)), answer, 60)
    assert index.entries("s1") == []  # evicted whole, the least recently used
    assert index.size == 2 and index.evictions == 2
    now[0] = 61.0
    assert index.entries("s2") == [] and index.size == 1  # expired


def test_entries_and_answers_round_trip_and_garbage_is_none() -> None:
    e = Entry("Why was 北田 delayed?", FACTS, unit(3, 4))
    back = decode_entry(encode_entry(e))
    assert back is not None and back.question == e.question and back.facts == FACTS
    assert np.allclose(back.vector, e.vector)
    assert decode_answer(encode_answer(Answer("答案", "length"))) == Answer("答案", "length")
    for junk in (b"", b"1", b"2abc", b"1\x00\x00\x00\x05{bad}", b"1\x00\x00\x00\x02{}"):
        assert decode_entry(junk) is None
    assert decode_answer(b"{") is None and decode_answer(b'{"t": 1, "r": ""}') is None
