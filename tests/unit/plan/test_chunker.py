"""The chunker on examples: where it cuts, overlap, limits, arguments, odd inputs."""

from __future__ import annotations

import random
import re

import pytest
import tiktoken
from longread_server.plan.chunker import TextChunk, chunk_text
from longread_server.plan.tokenizers import Tokenizer, get_tokenizer, offline_encoding

from .support import check_chunks

TOK = get_tokenizer("cl100k_base")
_WORDS = (
    "river stone lamp paper garden winter signal market bridge morning quiet narrow "
    "ancient village engine silver letter window station record season method answer"
).split()
_CJK_END = re.compile(r"[。！？；][」』”’）】》\"']*$")


def sentence(rng: random.Random, words: int = 12) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text.capitalize() + rng.choice(".!?")


def paragraph(rng: random.Random, sentences: int = 4) -> str:
    return " ".join(sentence(rng, rng.randint(6, 16)) for _ in range(sentences))


def chunks(text: str, limit: int, overlap: int = 0) -> list[TextChunk]:
    result = chunk_text(text, TOK, limit, overlap)
    check_chunks(text, result, TOK, limit, overlap)
    return result


def test_empty_text_has_no_chunks() -> None:
    assert chunk_text("", TOK, 10) == []


@pytest.mark.parametrize(("limit", "overlap"), [(0, 0), (-3, 0), (10, -1), (10, 10), (10, 11)])
def test_bad_limits_raise(limit: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_text("some text", TOK, limit, overlap)


def test_lone_surrogates_raise_value_error() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        chunk_text("abc\ud800def", TOK, 10)


def test_a_short_text_is_one_chunk() -> None:
    text = "Just one short sentence."
    [only] = chunks(text, 100)
    assert (only.start, only.end, only.overlap_start) == (0, len(text), 0)
    assert only.tokens == TOK.count(text)
    assert only.body(text) == only.sent(text) == text


def test_cuts_at_paragraph_breaks_before_sentences() -> None:
    rng = random.Random(1)
    text = "\n\n".join(paragraph(rng, 3) for _ in range(30))
    result = chunks(text, 200)
    assert len(result) > 5
    for c in result[:-1]:
        assert text[c.end - 2 : c.end] == "\n\n"  # the blank line stays with the chunk before


def test_hard_wrapped_prose_is_cut_at_sentence_ends_not_at_line_wraps() -> None:
    rng = random.Random(2)
    prose = " ".join(sentence(rng, rng.randint(10, 20)) for _ in range(200))
    lines, line = [], ""
    for word in prose.split(" "):
        if line and len(line) + len(word) > 70:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    text = "\n".join([*lines, line])
    for c in chunks(text, 150)[:-1]:
        assert text[: c.end].rstrip()[-1] in ".!?"


def test_headings_start_chunks() -> None:
    rng = random.Random(3)
    sections = [
        f"## Part {i}\n\n" + "\n\n".join(paragraph(rng) for _ in range(6)) for i in range(6)
    ]
    text = "\n\n".join(sections)
    result = chunks(text, 120)
    starts = {c.start for c in result}
    for m in re.finditer(r"^## Part", text, re.M):
        assert m.start() == 0 or m.start() in starts


def test_chinese_without_newlines_ends_chunks_at_sentence_ends() -> None:
    rng = random.Random(4)
    han = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
    parts = []
    for _ in range(600):
        body = "".join(rng.choice(han) for _ in range(rng.randint(4, 20)))
        clause = "，".join([body] * rng.randint(1, 2))
        end = rng.choice(["。", "！", "？", "；", "。」", "！”"])
        parts.append(("「" if end.endswith("」") else "") + clause + end)
    text = "".join(parts)
    assert "\n" not in text
    result = chunks(text, 200)
    assert len(result) > 10
    for c in result[:-1]:
        assert _CJK_END.search(text[c.start : c.end]), text[c.end - 5 : c.end + 5]


def test_overlap_is_whole_sentences_from_the_previous_chunk() -> None:
    rng = random.Random(5)
    text = " ".join(sentence(rng, rng.randint(5, 9)) for _ in range(300))
    result = chunks(text, 160, 40)
    overlapping = [c for c in result[1:] if c.overlap_start < c.start]
    assert len(overlapping) >= len(result) - 2
    for c in overlapping:
        head = text[c.overlap_start : c.start]
        assert head[0].isupper(), head  # starts a sentence
        assert text[: c.overlap_start].rstrip()[-1] in ".!?"
        assert TOK.count(head) <= 40


def test_overlap_falls_back_to_words_when_a_sentence_is_too_long() -> None:
    rng = random.Random(6)
    text = " ".join(rng.choice(_WORDS) for _ in range(3000))  # one endless sentence
    result = chunks(text, 100, 20)
    assert all(c.overlap_start < c.start for c in result[1:])
    for c in result[1:]:
        assert text[c.overlap_start - 1] == " " and text[c.overlap_start] != " "


def test_special_token_strings_are_plain_text() -> None:
    text = "Intro. <|endoftext|> middle <|fim_prefix|>x<|fim_middle|>y<|endofprompt|>. " * 200
    result = chunks(text, 64, 8)
    assert any("<|endoftext|>" in c.sent(text) for c in result)


def test_a_word_longer_than_a_chunk_is_cut_between_characters() -> None:
    text = "start " + "x" * 3000 + "é" * 500 + "界" * 700 + " end."
    result = chunks(text, 50)
    assert len(result) > 20


def test_cuts_never_split_combining_marks_or_emoji_sequences() -> None:
    family = "\U0001f469\u200d\U0001f469\u200d\U0001f467"
    accented = "e\u0301"
    text = (family + accented) * 400
    for c in chunks(text, 30)[1:]:
        assert text[c.start] not in "\u0301\u200d"
        assert text[c.start - 1] != "\u200d"


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_tiny_limits_work_on_ascii_and_refuse_wide_characters(limit: int) -> None:
    chunks("Tiny limits still chunk plain ASCII text exactly.", limit)
    with pytest.raises(ValueError, match="character"):
        chunk_text("ok \U0002a6d6 ok", TOK, limit)  # this 4-byte character takes 4 tokens


def test_small_body_budget_after_a_large_overlap_still_progresses() -> None:
    text = "世界和平。" * 50 + "A long tail of words to close. " * 20
    chunks(text, 5, 4)
    chunks(text, 4, 3)


def test_crlf_and_odd_whitespace() -> None:
    rng = random.Random(7)
    text = "\r\n\r\n".join(paragraph(rng).replace(". ", ".\r\n") for _ in range(40))
    text += "\u3000\u00a0\u2028\x85\x0b\x0c  \t\n \n\n"
    for limit, overlap in [(30, 0), (45, 10), (9, 2)]:
        chunks(text, limit, overlap)


def test_deterministic() -> None:
    rng = random.Random(8)
    text = "\n\n".join(paragraph(rng) for _ in range(50))
    assert chunk_text(text, TOK, 100, 10) == chunk_text(text, TOK, 100, 10)


def test_estimating_tokenizers_chunk_the_same_text_the_same_way() -> None:
    rng = random.Random(9)
    text = "\n\n".join(paragraph(rng) for _ in range(20))
    assert chunk_text(text, get_tokenizer("claude-sonnet-4-5"), 90) == chunk_text(text, TOK, 90)


def test_other_encodings_fall_back_to_encoding_every_span() -> None:
    base = offline_encoding()
    words_only = tiktoken.Encoding(
        name="words_only",
        pat_str=r"[^\n]+|\n+",  # whole lines are pieces: BPE merges across cl100k's splits
        mergeable_ranks=base._mergeable_ranks,
        special_tokens={},
    )
    tok = Tokenizer("words_only", exact=False, error=0.5, encoding=words_only)
    assert tok.pretokenizer is None
    rng = random.Random(10)
    text = "\n\n".join(paragraph(rng) for _ in range(15)) + " 世界和平。" * 30
    for limit, overlap in [(60, 0), (80, 20)]:
        result = chunk_text(text, tok, limit, overlap)
        check_chunks(text, result, tok, limit, overlap)
