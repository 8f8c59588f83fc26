"""Fuzz target: the chunker (``plan/chunker.py``).

Input: two header bytes, then the document as UTF-8. The first byte picks the chunk limit
(1..128 tokens), the second the overlap (below the limit). The document is decoded with
``surrogatepass``, so an encoded lone surrogate reaches the chunker as one; bytes that are not
UTF-8 at all become U+FFFD.

The guarantees checked are the docstring's (``tests/unit/plan/support.check_chunks``): bodies
tile the text by offsets, every sent text recounted on its own fits the limit, overlaps are
suffixes of the previous body within their budget; the result is deterministic and the same
with the caller's token lengths. ValueError only for a lone surrogate or a limit below one
character's tokens (possible under 4 tokens).
"""

from __future__ import annotations

from longread_server.plan.chunker import chunk_text, token_lengths
from longread_server.plan.tokenizers import get_tokenizer

from tests.unit.plan.support import check_chunks

TOKENIZER = get_tokenizer("cl100k_base")
# Every character is at most 4 UTF-8 bytes, so at most 4 tokens.
MAX_CHAR_TOKENS = 4


def parse(data: bytes) -> tuple[str, int, int]:
    """(text, limit, overlap) from an input."""
    head = data[:2].ljust(2, b"\0")
    limit = 1 + head[0] // 2
    overlap = head[1] % limit
    try:
        text = data[2:].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        text = data[2:].decode("utf-8", "replace")
    return text, limit, overlap


def encode(text: str, limit: int, overlap: int) -> bytes:
    """The input that ``parse`` reads back as ``(text, limit, overlap)`` (limit 1..128)."""
    return bytes([(limit - 1) * 2, overlap]) + text.encode("utf-8", "surrogatepass")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fuzz(data: bytes) -> None:
    text, limit, overlap = parse(data)
    try:
        chunks = chunk_text(text, TOKENIZER, limit, overlap)
    except ValueError as exc:
        if not _is_unicode(text):
            assert "lone surrogate" in str(exc), exc
            return
        assert limit < MAX_CHAR_TOKENS and "is smaller than the" in str(exc), (limit, exc)
        return
    assert text == "" or _is_unicode(text), "a lone surrogate must be refused"
    check_chunks(text, chunks, TOKENIZER, limit, overlap)
    assert chunk_text(text, TOKENIZER, limit, overlap) == chunks, "deterministic"
    if text:
        lens = token_lengths(TOKENIZER, TOKENIZER.encode(text))
        assert chunk_text(text, TOKENIZER, limit, overlap, lens) == chunks, "lens given"
