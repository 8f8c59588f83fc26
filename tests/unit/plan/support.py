"""Invariant checks shared by the chunker tests: every chunk list must pass all of them."""

from __future__ import annotations

import hashlib

from longread_server.plan.chunker import TextChunk
from longread_server.plan.tokenizers import Tokenizer


def check_chunks(
    text: str, chunks: list[TextChunk], tokenizer: Tokenizer, limit: int, overlap: int = 0
) -> None:
    """Asserts what chunk_text promises, re-encoding every sent text on its own."""
    if not text:
        assert chunks == []
        return
    assert chunks[0].start == 0
    assert chunks[0].overlap_start == 0
    assert chunks[-1].end == len(text)
    bodies = []
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert chunk.start < chunk.end
        if i:
            prev = chunks[i - 1]
            assert prev.end == chunk.start
            assert prev.start <= chunk.overlap_start <= chunk.start
            # The overlap is a suffix of the previous body, within its own budget.
            assert prev.body(text).endswith(text[chunk.overlap_start : chunk.start])
            assert tokenizer.count(text[chunk.overlap_start : chunk.start]) <= overlap
        sent = chunk.sent(text)
        assert sent == text[chunk.overlap_start : chunk.end]
        assert chunk.body(text) == text[chunk.start : chunk.end]
        assert chunk.tokens == tokenizer.count(sent) <= limit
        assert chunk.content_hash == hashlib.sha256(sent.encode("utf-8")).hexdigest()
        bodies.append(chunk.body(text))
    assert "".join(bodies) == text
    if "\ufffd" not in text:
        assert not any("\ufffd" in c.sent(text) for c in chunks)
