"""Properties of the chunker on generated text: limits, offsets, overlap, UTF-8, locality."""

from __future__ import annotations

import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from longread_server.plan import chunker
from longread_server.plan.chunker import TextChunk, chunk_text
from longread_server.plan.tokenizers import get_tokenizer

from .support import check_chunks

TOK = get_tokenizer("cl100k_base")
O200K = get_tokenizer("o200k_base")

# Pieces that stress the tokenizer's pre-splitting: words, contractions, digits, punctuation
# runs, every kind of whitespace, CJK text and punctuation, closing quotes, emoji with joiners,
# combining marks, and special-token strings that must stay plain text.
# fmt: off
PIECES = [
    "the", " cat", "Sat", "on", "123", "45678", "3.5", "'s", "'ll", "\u00e9", "e\u0301", "\u00df",
    " ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\u3000", "\u00a0", "\u2028", "\x85",
    "\x0b", "\x1c", ".", ",", "!", "?", ";", ":", "...", '."', "'", '"', "(", ")", "-", "#", "## ",
    "\u4e16\u754c", "\u548c\u5e73", "\u4e00\u4e8c", "\u3002", "\uff01", "\uff1f", "\uff1b",
    "\uff0c", "\u3001", "\uff1a", "\u300c", "\u300d", "\u201d", "\u2019", "\u0e01\u0e32",
    "\u05d0\u05d1", "\U0001f600", "\U0001f469\u200d\U0001f4bb", "\ufe0f", "\U0002a6d6",
    "\u00bd", "\u2167", "<|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>",
]
# fmt: on
soup = st.lists(st.sampled_from(PIECES), max_size=120).map("".join)
texts = st.one_of(soup, st.text(max_size=250), st.text(alphabet="ab .\n\u3002\u4e16", max_size=250))


@st.composite
def limits(draw: st.DrawFn, low: int = 4, high: int = 60) -> tuple[int, int]:
    limit = draw(st.integers(low, high))
    overlap = draw(st.one_of(st.just(0), st.integers(0, limit - 1)))
    return limit, overlap


@settings(max_examples=300, deadline=None)
@given(text=texts, sizes=limits())
def test_every_chunk_keeps_every_promise(text: str, sizes: tuple[int, int]) -> None:
    limit, overlap = sizes
    result = chunk_text(text, TOK, limit, overlap)
    check_chunks(text, result, TOK, limit, overlap)
    assert chunk_text(text, TOK, limit, overlap) == result  # deterministic


@settings(max_examples=300, deadline=None)
@given(text=texts, sizes=limits())
def test_every_o200k_chunk_keeps_every_promise(text: str, sizes: tuple[int, int]) -> None:
    """The same promises under o200k_base, whose pattern lets a word run on into its marks
    and contraction (where cl100k_base splits): counts are proven from one encoding there
    too, and every chunk is re-counted here."""
    limit, overlap = sizes
    check_chunks(text, chunk_text(text, O200K, limit, overlap), O200K, limit, overlap)


@settings(max_examples=60, deadline=None)
@given(text=soup, specials=st.lists(st.integers(0, 10_000), max_size=6), sizes=limits(8, 40))
def test_special_token_strings_are_plain_text(
    text: str, specials: list[int], sizes: tuple[int, int]
) -> None:
    for at in specials:
        i = at % (len(text) + 1)
        text = text[:i] + "<|endoftext|>" + text[i:]
    check_chunks(text, chunk_text(text, TOK, *sizes), TOK, *sizes)


@settings(max_examples=150, deadline=None)
@given(text=texts)
def test_counts_between_split_points_are_exact(text: str) -> None:
    """The whole-document token count between two split points is the span's own count."""
    data = text.encode()
    assume(data)
    doc = chunker._Doc(text, data, TOK)
    starts, pos = {}, 0
    for k, length in enumerate(doc.lens):
        starts[pos] = k
        pos += length
    starts[pos] = doc.ntok
    points = []
    for b in range(len(data) + 1):
        if b < len(data) and 0x80 <= data[b] < 0xC0:
            continue  # inside a character
        kind = doc.split_kind(b)
        if kind == chunker._HARD:
            assert b in starts, (text, b)  # hard points are always token boundaries
        if kind and b in starts:
            points.append(b)
    for i, h in enumerate(points):
        for t in points[i + 1 : i + 6]:
            assert starts[t] - starts[h] == TOK.count(data[h:t].decode()), (data[h:t], text)


# -- CJK ---------------------------------------------------------------------------------------

HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
CJK_END = re.compile("[\u3002\uff01\uff1f\uff1b][\u300d\u300f\u201d\u2019\uff09\u3011\u300b]*$")


@st.composite
def cjk_sentences(draw: st.DrawFn, max_bytes: int) -> str:
    clauses = draw(st.lists(st.text(alphabet=HAN, min_size=1, max_size=8), min_size=1, max_size=3))
    end = draw(st.sampled_from(["\u3002", "\uff01", "\uff1f", "\uff1b"]))
    close = draw(st.sampled_from(["", "", "\u300d", "\u201d"]))
    sentence = "\uff0c".join(clauses) + end + close
    assume(len(sentence.encode()) <= max_bytes)
    return sentence


@settings(max_examples=60, deadline=None)
@given(data=st.data(), limit=st.integers(40, 160))
def test_chinese_without_newlines_ends_chunks_at_sentence_ends(
    data: st.DataObject, limit: int
) -> None:
    # Sentences of at most half a chunk's bytes always leave one in the window's upper half.
    text = "".join(data.draw(st.lists(cjk_sentences(limit // 2), min_size=1, max_size=80)))
    result = chunk_text(text, TOK, limit)
    check_chunks(text, result, TOK, limit)
    for c in result[:-1]:
        assert CJK_END.search(c.body(text)), (c, text[c.end - 8 : c.end + 8])


# -- Edit locality -------------------------------------------------------------------------------

WORDS = (
    "river stone lamp paper garden winter signal market bridge morning quiet narrow ancient "
    "village engine silver letter window station record season method answer orbit cedar"
).split()
sentences = st.builds(
    lambda ws, end: " ".join(ws).capitalize() + end,
    st.lists(st.sampled_from(WORDS), min_size=3, max_size=14),
    st.sampled_from([".", ".", "!", "?"]),
)
paragraphs = st.lists(sentences, min_size=1, max_size=5).map(" ".join)


def _key(c: TextChunk, shift: int = 0) -> tuple[object, ...]:
    return (c.start + shift, c.end + shift, c.overlap_start + shift, c.tokens, c.content_hash)


def _check_prefix_is_stable(
    old: list[TextChunk], new: list[TextChunk], text: str, edit_at: int, limit: int
) -> None:
    """Chunks whose whole lookahead (a chunk of tokens past their start) ends before the
    edit are unchanged: packing goes left to right and never looks further."""
    new_keys = {_key(c) for c in new}
    for c in old:
        if TOK.count(text[c.start : edit_at]) > limit + 16:
            assert _key(c) in new_keys, c


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    limit=st.integers(24, 64),
    overlap=st.sampled_from([0, 0, 8]),
    n_sections=st.integers(4, 7),
)
def test_an_edit_changes_only_the_chunks_of_its_section(
    data: st.DataObject, limit: int, overlap: int, n_sections: int
) -> None:
    # Sections big enough to be hard cuts, whatever the edit does to one paragraph.
    need = chunker._HARD_SECTION_BYTES_PER_TOKEN * limit
    sections: list[list[str]] = []
    for _ in range(n_sections):
        paras = data.draw(st.lists(paragraphs, min_size=3, max_size=7))
        while sum(len(p) + 2 for p in paras[1:]) < need:
            paras.append(data.draw(paragraphs))
        sections.append(paras)
    victim = n_sections // 2
    replacement = data.draw(paragraphs)
    assume(replacement != sections[victim][0])

    def render(secs: list[list[str]]) -> str:
        return "\n\n".join(f"## Section {i}\n\n" + "\n\n".join(p) for i, p in enumerate(secs))

    text = render(sections)
    edited = [list(p) for p in sections]
    edited[victim][0] = replacement
    new_text = render(edited)
    shift = len(new_text) - len(text)
    sec_start = text.index(f"## Section {victim}\n")
    sec_end = text.index(f"## Section {victim + 1}\n")
    edit_at = sec_start + len(f"## Section {victim}\n\n")

    old = chunk_text(text, TOK, limit, overlap)
    new = chunk_text(new_text, TOK, limit, overlap)
    check_chunks(new_text, new, TOK, limit, overlap)
    new_keys = {_key(c) for c in new}
    new_bodies = {(c.start, c.end) for c in new}
    for c in old:
        if c.end <= sec_start:
            assert _key(c) in new_keys, c
        elif c.start >= sec_end:
            assert (c.start + shift, c.end + shift) in new_bodies, c
            if c.overlap_start >= sec_end:  # an overlap may reach back into the edited section
                assert _key(c, shift) in new_keys, c
    _check_prefix_is_stable(old, new, text, edit_at, limit)


@settings(max_examples=40, deadline=None)
@given(
    body=st.lists(paragraphs, min_size=8, max_size=30), limit=st.integers(24, 80), data=st.data()
)
def test_an_edit_never_changes_chunks_before_it(
    body: list[str], limit: int, data: st.DataObject
) -> None:
    i = data.draw(st.integers(len(body) // 2, len(body) - 1))
    text = "\n\n".join(body)
    edited = list(body)
    edited[i] = data.draw(paragraphs)
    new_text = "\n\n".join(edited)
    edit_at = len("\n\n".join(body[:i]))
    old, new = chunk_text(text, TOK, limit), chunk_text(new_text, TOK, limit)
    check_chunks(new_text, new, TOK, limit)
    _check_prefix_is_stable(old, new, text, edit_at, limit)
