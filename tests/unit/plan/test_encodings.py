"""Remembered encodings: the same lengths as encoding afresh, once per document, bounded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from longread_server.plan.chunker import chunk_text, text_token_lengths, token_lengths
from longread_server.plan.encodings import EncodingMemo
from longread_server.plan.tokenizers import TooManyTokens, get_tokenizer

TOK = get_tokenizer("cl100k_base")
TEXT = "The harbour closes at nine. 港口九点关闭。Ferries leave hourly.\n\n" * 400
LIMIT = 1_000_000


def test_lengths_are_the_encodings_and_a_document_is_encoded_once() -> None:
    memo = EncodingMemo(4)
    first = memo.token_lengths(TOK, TEXT, LIMIT)
    assert list(first) == [len(TOK.decode_bytes([t])) for t in TOK.encode(TEXT)]
    assert memo.token_lengths(TOK, TEXT, LIMIT) is first
    assert (memo.hits, memo.misses) == (1, 1)
    # Chunks cut from remembered lengths are the chunks cut from a fresh encoding.
    assert chunk_text(TEXT, TOK, 300, 30, first) == chunk_text(TEXT, TOK, 300, 30)
    # The same text under another model name of the same encoding is the same entry.
    assert memo.token_lengths(get_tokenizer("gpt-4"), TEXT, LIMIT) is first


def test_other_documents_miss_and_the_oldest_goes_first() -> None:
    memo = EncodingMemo(2)
    texts = [f"{TEXT}(copy {i})" for i in range(3)]
    for t in texts:
        memo.token_lengths(TOK, t, LIMIT)
    assert len(memo) == 2 and memo.misses == 3
    memo.token_lengths(TOK, texts[2], LIMIT)
    memo.token_lengths(TOK, texts[0], LIMIT)  # evicted: encoded again
    assert (memo.hits, memo.misses) == (1, 4)


def test_threads_get_the_same_lengths() -> None:
    memo = EncodingMemo(4)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: memo.token_lengths(TOK, TEXT, LIMIT), range(8)))
    expected = token_lengths(TOK, TOK.encode(TEXT))
    assert all(r == expected for r in results)
    assert memo.hits + memo.misses == 8 and len(memo) == 1


def test_a_document_over_the_limit_is_refused_and_not_remembered() -> None:
    memo = EncodingMemo(4)
    tokens = len(TOK.encode(TEXT))
    with pytest.raises(TooManyTokens):
        memo.token_lengths(TOK, TEXT, tokens - 1)
    assert len(memo) == 0
    assert len(memo.token_lengths(TOK, TEXT, tokens)) == tokens
    # Remembered under a larger limit, still refused under a smaller one.
    with pytest.raises(TooManyTokens):
        memo.token_lengths(TOK, TEXT, tokens - 1)


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_lengths_piece_by_piece_are_the_whole_encodings(name: str) -> None:
    """A document long enough to be encoded in several pieces: the lengths looked up piece by
    piece are those of the whole text's tokens, and the limit still stops the count."""
    tok = get_tokenizer(name)
    text = TEXT * 30  # 696,000 characters: 3 pieces
    tokens = tok.encode(text)
    assert len(list(tok.encode_pieces_at_most(text, LIMIT))) > 1
    assert text_token_lengths(tok, text, LIMIT) == token_lengths(tok, tokens)
    with pytest.raises(TooManyTokens):
        text_token_lengths(tok, text, len(tokens) - 1)
    assert len(text_token_lengths(tok, text, len(tokens))) == len(tokens)
