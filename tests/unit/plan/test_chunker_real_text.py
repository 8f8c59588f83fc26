"""The chunker on real text: sentence ends of the major scripts, and text extracted from paged
documents (form feeds, running headers, page numbers, hard-wrapped lines)."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from longread_server.plan import chunker
from longread_server.plan.chunker import TextChunk, chunk_text
from longread_server.plan.tokenizers import get_tokenizer

from .support import check_chunks
from .test_chunker_properties import PIECES, limits

TOK = get_tokenizer("cl100k_base")


def chunks(text: str, limit: int, overlap: int = 0) -> list[TextChunk]:
    result = chunk_text(text, TOK, limit, overlap)
    check_chunks(text, result, TOK, limit, overlap)
    return result


# -- Sentence ends of the major scripts ----------------------------------------------------------

# (letters to make words of, word separator, clause mark, sentence ends, between sentences)
SCRIPTS = {
    "chinese_ideographic": (
        "的一是在不了有和人这中大为上个国我以要他时",
        "",
        "\uff0c",
        "\u3002",
        "",
    ),
    "chinese_fullwidth_stop": (
        "的一是在不了有和人这中大为上个国我以要他时",
        "",
        "\uff0c",
        "\uff0e",
        "",
    ),
    "japanese_halfwidth": ("あいうえおかきくけこさしすせそたちつてと", "", "\u3001", "\uff61", ""),
    "fullwidth_marks": (
        "的一是在不了有和人这中大为上个国我以要他时",
        "",
        "\uff0c",
        "\uff01\uff1f",
        "",
    ),
    "devanagari": ("कखगघचछजझटठडढतथदधनपफबभमयरलवसह", " ", ",", "\u0964\u0965", " "),
    "urdu": ("ابتثجحخدذرزسشصضطظعغفقکگلمنوہی", " ", "\u060c", "\u06d4\u061f", " "),
    "armenian": ("աբգդեզէըթժիլխծկհձղճմյնշոչպջռսվտրցւփքօֆ", " ", "\u055d", "\u0589", " "),
    "ethiopic": ("ሀለሐመሠረሰሸቀበተቸኀነኘአከኸወዐዘዠየደጀገጠጨጰጸፀፈፐ", " ", "\u1363", "\u1362\u1367", " "),
    "myanmar": ("ကခဂဃငစဆဇဈညဋဌဍဎဏတထဒဓနပဖဗဘမယရလဝသဟဠအ", "", "\u104a", "\u104b", ""),
    "tibetan": ("ཀཁགངཅཆཇཉཏཐདནཔཕབམཙཚཛཝཞཟའཡརལཤསཧཨ", "\u0f0b", "", "\u0f0d", ""),
    "khmer": ("កខគឃងចឆជឈញដឋឌឍណតថទធនបផពភមយរលវសហឡអ", "", "", "\u17d4", ""),
    "latin_ellipsis": ("abcdefghijklmnopqrstuvwxyz", " ", ",", "\u2026", " "),
}


def script_text(name: str, seed: int, sentences: int = 300) -> tuple[str, str]:
    letters, space, clause, ends, gap = SCRIPTS[name]
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice(letters) for _ in range(rng.randint(2, 5)))

    parts = []
    for _ in range(sentences):
        words = [word() for _ in range(rng.randint(3, 9))]
        if clause and len(words) > 4:
            words[2] += clause
        parts.append(space.join(words) + rng.choice(ends))
    return gap.join(parts), ends


@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("overlap", [0, 20])
def test_chunks_end_at_the_sentence_ends_of_each_script(name: str, overlap: int) -> None:
    text, ends = script_text(name, seed=len(name))
    limit = 300
    # Every sentence fits in half a chunk, so a window always holds a sentence end.
    longest = max(TOK.count(s) for s in re.split(f"[{ends}]", text))
    assert longest < limit // 2 - overlap
    result = chunks(text, limit, overlap)
    assert len(result) > 5
    for c in result[:-1]:
        assert text[c.end - 1] in ends, (name, text[c.end - 12 : c.end + 12])


def test_a_fullwidth_full_stop_between_digits_is_a_decimal_point() -> None:
    rng = random.Random(1)
    han = "的一是在不了有和人这中大为上个国我以要他时"
    digits = "０１２３４５６７８９"
    parts = []
    for _ in range(400):
        number = rng.choice(digits) + "\uff0e" + "".join(rng.choices(digits, k=3))
        words = ["".join(rng.choices(han, k=rng.randint(2, 6))) for _ in range(2)]
        parts.append(words[0] + number + words[1] + "\uff0e")
    text = "".join(parts)
    for c in chunks(text, 60)[:-1]:
        assert text[c.end - 1] == "\uff0e" and text[c.end] not in digits, text[c.end - 8 :][:16]


def test_the_stops_are_unicode_sentence_terminals() -> None:
    """Every stop the chunker takes is Sentence_Terminal in Unicode (UAX #29), but for the
    few it documents as its own additions."""
    regex = pytest.importorskip("regex")
    terminal = regex.compile(r"\p{Sentence_Terminal}")
    added = set("\uff1b\u0f0d\u0f0e\u2026")
    for ch in chunker._STOPS + "".join(chunker._SPACED_ENDS):
        assert terminal.match(ch) or ch in added, f"U+{ord(ch):04X}"
    for ch in added:
        assert not terminal.match(ch), f"U+{ord(ch):04X} is a terminal now: list it as one"


# -- Text extracted from paged documents ---------------------------------------------------------

WORDS = (
    "river stone lamp paper garden winter signal market bridge morning quiet narrow ancient "
    "village engine silver letter window station record season method answer orbit cedar"
).split()
FOOTERS = ["{n}", "- {n} -", "Page {n}", "{n} of 90", "xiv", "\u2014 {n} \u2014"]


def paged_text(
    seed: int, page_lines: int = 30, pages: int = 24, blank_lines: bool = True, feed: str = "\f"
) -> tuple[str, list[tuple[int, int]]]:
    """Hard-wrapped prose cut into pages like text extracted from a PDF: a running header,
    the body, a page number, a form feed; sentences run on over the page breaks. Returns the
    text and its page breaks, each from the end of one page's text to the start of the next's.
    ``blank_lines``: header and footer set apart by blank lines (else none, as some extractors
    write them); ``feed``: the page break, a form feed with or without lines of its own."""
    rng = random.Random(seed)
    words: list[str] = []
    while len(words) < pages * page_lines * 11:
        sentence = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
        sentence[0] = sentence[0].capitalize()
        sentence[-1] += rng.choice(".!?")
        words.extend(sentence)
    lines, line = [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > 66:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    footer = rng.choice(FOOTERS)
    gap = [""] if blank_lines else []
    text = ""
    breaks: list[tuple[int, int]] = []
    for p in range(pages):
        page = lines[p * page_lines : (p + 1) * page_lines]
        if not page:
            break
        header = f"THE QUIET RIVER    {p + 1}" if p % 2 else f"{p + 1}    Chapter One"
        if p:
            breaks[-1] = (breaks[-1][0], len(text) + len(header) + 1 + len(gap))
        text += "\n".join([header, *gap, *page]) + "\n"
        breaks.append((len(text) - 1, -1))
        text += "\n".join([*gap, footer.format(n=p + 1).center(66).rstrip()]) + "\n" + feed
    return text, breaks[:-1]


def check_no_cut_inside_a_sentence(
    text: str, breaks: list[tuple[int, int]], ends: list[int]
) -> None:
    for end in ends:
        for a, b in breaks:
            if a <= end <= b:
                end = a  # a cut in a page break's furniture: judged by the text before it
        assert text[:end].rstrip()[-1] in ".!?", text[end - 40 : end + 40]


@pytest.mark.parametrize(("blank_lines", "feed"), [(True, "\f"), (False, "\f"), (True, "\n\f\n")])
@pytest.mark.parametrize(("limit", "overlap"), [(80, 0), (120, 0), (200, 30), (400, 0)])
def test_page_breaks_inside_a_sentence_are_not_cut(
    blank_lines: bool, feed: str, limit: int, overlap: int
) -> None:
    for seed in range(3):
        text, breaks = paged_text(seed, blank_lines=blank_lines, feed=feed)
        assert text.count("\f") > 10
        result = chunks(text, limit, overlap)
        check_no_cut_inside_a_sentence(text, breaks, [c.end for c in result[:-1]])


def test_a_page_break_after_a_sentence_end_is_a_paragraph_break() -> None:
    rng = random.Random(4)
    para = " ".join(rng.choice(WORDS) for _ in range(50)) + "."
    page = f"THE QUIET RIVER\n\n{para}\n\n   {{n}}\n\f"
    text = "".join(page.format(n=n) for n in range(1, 4))
    result = chunks(text, TOK.count(page) + 10)
    second_page = text.index("\fTHE QUIET") + len("\fTHE QUIET RIVER\n\n")
    assert result[0].end == second_page  # the page's furniture stays with its page


def test_hard_wrapped_lines_are_not_paragraph_breaks() -> None:
    text, _ = paged_text(7, pages=1, page_lines=400)
    for c in chunks(text, 150)[:-1]:
        assert text[: c.end].rstrip()[-1] in ".!?"


def test_page_furniture_is_not_taken_for_headings() -> None:
    text, _ = paged_text(8, pages=30, feed="\n\f\n")
    doc = chunker._Doc(text, text.encode(), TOK)
    heads, _ = chunker._sections(doc, 1)
    assert heads == []


# -- Properties ----------------------------------------------------------------------------------

REAL_TEXT_PIECES = [
    *PIECES,
    "\f", "\n\f", "\f\n", "\n\n\f\n", "12", "- 12 -", "Page 3", "4 of 9", "xiv", "HEADER",
    *chunker._STOPS, *chunker._SPACED_ENDS, *chunker._CLAUSE_MARKS,
    "\uff13\uff0e\uff11", "\u0915\u0916", "\u0627\u0628", "\u0561\u0562", "\u1200\u1208",
    "\u1000\u1001", "\u0f40\u0f0b\u0f41", "\u1780\u1781",
]  # fmt: skip
real_text = st.lists(st.sampled_from(REAL_TEXT_PIECES), max_size=150).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=real_text, sizes=limits())
def test_every_chunk_keeps_every_promise_on_real_text(text: str, sizes: tuple[int, int]) -> None:
    limit, overlap = sizes
    result = chunk_text(text, TOK, limit, overlap)
    check_chunks(text, result, TOK, limit, overlap)
    assert chunk_text(text, TOK, limit, overlap) == result


@settings(max_examples=200, deadline=None)
@given(text=real_text)
def test_the_page_view_keeps_every_offset(text: str) -> None:
    """The view the boundary searches read has the document's length, and only blanks out:
    every byte it changes becomes a space or a newline."""
    data = text.encode()
    view = chunker._page_view(data)
    assert len(view) == len(data)
    assert all(v == d or v in b" \n" for v, d in zip(view, data, strict=True))


@pytest.mark.parametrize("text", ["\u3000the\n\x0cthe", "thethe\x0c\u3002thethe"])
def test_blanked_furniture_is_never_cut_inside_a_character(text: str) -> None:
    """Page furniture is blanked byte for byte for the boundary searches; a multi-byte
    character there must still be cut whole (found by the property test below)."""
    for limit in range(4, 9):
        chunks = chunk_text(text, TOK, limit, 0)
        assert "".join(text[c.start : c.end] for c in chunks) == text
