"""The shared offline tokenizer: names, error bounds, caching, special tokens as text."""

from __future__ import annotations

import threading

import bpe_openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from longread_server.plan import tokenizers
from longread_server.plan.tokenizers import (
    OTHER_ERROR,
    Tokenizer,
    get_tokenizer,
    offline_encoding,
)


@pytest.mark.parametrize(
    "name", ["cl100k_base", "gpt-4", "gpt-4-turbo", "gpt-3.5-turbo", "openai/gpt-4-0613"]
)
def test_cl100k_models_are_exact(name: str) -> None:
    tok = get_tokenizer(name)
    assert tok.exact and tok.error == 0.0
    assert tok.name == name


@pytest.mark.parametrize(
    "name", ["o200k_base", "gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "gpt-5", "o3-mini", "o1"]
)
def test_o200k_models_are_exact_with_o200k(name: str) -> None:
    tok = get_tokenizer(name)
    assert tok.exact and tok.error == 0.0
    assert tok.encoding_name == "o200k_base"


@pytest.mark.parametrize("name", ["claude-sonnet-4-5", "gemini-2.5-pro", "deepseek-chat", "x"])
def test_other_models_are_rougher_estimates(name: str) -> None:
    tok = get_tokenizer(name)
    assert not tok.exact and tok.error == OTHER_ERROR


def test_tokenizers_are_cached_and_share_one_encoding() -> None:
    assert get_tokenizer("gpt-4") is get_tokenizer("gpt-4")
    assert offline_encoding() is offline_encoding()
    assert get_tokenizer("gpt-4")._encoding is get_tokenizer("claude-3")._encoding


def test_concurrent_first_use_builds_one_table() -> None:
    tables: list[object] = []

    def work() -> None:
        tables.append(Tokenizer("t", exact=False, error=0.2).token_byte_lengths)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(table is tables[0] for table in tables)
    assert tables[0] is tokenizers._byte_lengths[offline_encoding().name]


def test_error_is_a_constructor_parameter() -> None:
    assert Tokenizer("claude", exact=False, error=0.2).error == 0.2
    with pytest.raises(ValueError):
        Tokenizer("x", exact=False, error=-0.1)
    with pytest.raises(ValueError):
        Tokenizer("x", exact=True, error=0.1)
    with pytest.raises(ValueError):
        get_tokenizer("  ")


def test_special_token_strings_are_plain_text() -> None:
    tok = get_tokenizer()
    text = "a <|endoftext|> b <|fim_prefix|><|endofprompt|>"
    ids = tok.encode(text)
    assert tok.count(text) == len(ids) > 5
    assert 100257 not in ids  # the <|endoftext|> special token id
    assert tok.decode_bytes(ids) == text.encode()


def test_counts_and_byte_lengths_agree_with_the_encoding() -> None:
    tok = get_tokenizer()
    enc = offline_encoding()
    text = "Hello, world! 你好，世界。 😀 naïve"
    assert tok.count(text) == len(enc.encode_ordinary(text))
    assert tok.count("") == 0
    lengths = tok.token_byte_lengths
    ids = tok.encode(text)
    assert sum(lengths[t] for t in ids) == len(text.encode())
    assert all(lengths[t] == len(enc.decode_single_token_bytes(t)) for t in ids)
    assert tok.pretokenizer == "cl100k"
    assert get_tokenizer("gpt-4o").pretokenizer == "o200k"


# ---- bounded encoding: pieces cut where the pre-tokenizer splits anyway ----

_ALPHABET = st.sampled_from(
    [
        *"ab Zé\n\r\t .,;:!?'\"-_()0123456789",
        "港",
        "口",
        "。",
        "，",
        "．",
        "\u0301",
        "😀",
        "\u0964",
        "ا",
        "\u00a0",
        "\u3000",
        "\x0c",
    ]
)


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
@settings(max_examples=300, deadline=None)
@given(text=st.lists(_ALPHABET, min_size=1, max_size=400).map("".join))
def test_bounded_encoding_is_the_whole_encoding(encoding: str, text: str) -> None:
    tok = get_tokenizer(encoding)
    with pytest.MonkeyPatch.context() as mp:
        # Pieces of a few characters, so that most texts are cut many times.
        mp.setattr(tokenizers, "_PIECE_CHARS", 3)
        mp.setattr(tokenizers, "_PIECE_SEARCH_CHARS", 8)
        whole = tok.encode(text)
        assert tok.encode_at_most(text, 4 * len(text)) == whole
        if whole:
            with pytest.raises(tokenizers.TooManyTokens):
                tok.encode_at_most(text, len(whole) - 1)


def test_a_long_document_over_the_limit_stops_counting_early() -> None:
    tok = get_tokenizer("cl100k_base")
    text = "Ships leave the harbour at nine.\nTides turn twice a day, and港口九点关闭。\n" * 40_000
    whole = tok.encode(text)
    assert tok.encode_at_most(text, len(whole)) == whole
    seen: list[int] = []
    encode = tok._encode

    def counting(piece: str) -> list[int]:
        seen.append(len(piece))
        return encode(piece)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tok, "_encode", counting)
        with pytest.raises(tokenizers.TooManyTokens):
            tok.encode_at_most(text, len(whole) // 10)
    # It stopped after about a tenth of the text, in pieces.
    assert len(seen) > 1 and sum(seen) < len(text) / 5


# ---- o200k_base against an independent implementation ----

_BPE_O200K = bpe_openai.get_encoding("o200k_base")


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(_ALPHABET, min_size=1, max_size=300).map("".join),
    )
)
def test_o200k_counts_match_bpe_openai(text: str) -> None:
    """Our o200k_base (tiktoken's BPE over the bundled ranks) against bpe-openai's own Rust
    implementation of it: the same tokens for any text."""
    if any("\ud800" <= c <= "\udfff" for c in text):
        return  # lone surrogates are not text either side can encode
    assert get_tokenizer("o200k_base").encode(text) == _BPE_O200K.encode_ordinary(text)


def test_o200k_counts_a_long_chinese_and_english_text_as_bpe_openai_does() -> None:
    english = "The harbour was dredged in 1998; ferries now dock at the east quay. " * 300
    chinese = "港口九点关闭，渡轮每小时一班。第二条生产线推迟了十一周。" * 300
    tok = get_tokenizer("gpt-4.1-mini")
    for text in (english, chinese):
        assert tok.encode(text) == _BPE_O200K.encode_ordinary(text)
    # On Chinese, cl100k_base counts far more than o200k_base: why o200k models need their own.
    assert get_tokenizer("cl100k_base").count(chinese) > 1.3 * tok.count(chinese)
