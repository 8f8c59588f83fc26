"""Token-exact, boundary-respecting chunking of long documents. Pure, no I/O.

What it guarantees
------------------
* No chunk's sent text (overlap included) is longer than ``max_chunk_tokens`` tokens, counted
  by encoding exactly that text on its own.
* Bodies tile the text: ``chunk[0].start == 0``, ``chunk[i].end == chunk[i + 1].start``, the last
  ends at ``len(text)``; offsets are code points, and no cut ever falls inside a character.
* Cuts fall on the best boundary available, best first: section (a heading), blank line, line
  ending a sentence, sentence (``. ! ?`` before a space; the CJK full stop, exclamation and
  question marks and semicolon anywhere; closing quotes and brackets stay with the sentence),
  line, clause (``, ; :`` and the CJK comma, enumeration comma and colon), word, and only then
  between two characters (never before a combining mark or inside a joiner sequence when that
  can be helped). The best level present in the upper half of the token window wins, so
  chunks are at least half full; a line inside a sentence (hard-wrapped prose) ranks below the
  sentence end.
* Deterministic and local. Chunks are packed greedily from the start, so chunks before an
  edit keep their cuts. A heading that closes a section of at least ~2 chunks (8 bytes per
  chunk token) is a hard cut: an edit inside such a section changes no chunk outside it (but
  the overlap of the next one). Smaller sections are packed together, and the preference for
  headings realigns cuts after an edit, usually within a chunk or two.

How it stays fast and exact
---------------------------
The document is encoded once, and each token's byte length looked up once (in C). A window of
B tokens after a chunk start is then a slice sum; the cut is searched for backwards in the
window with byte-level ``rfind`` and regexes; only tokens near a cut are walked in Python.

Counts taken from that one encoding are exact for a span whose ends are *split points*:
places where cl100k_base's pre-tokenizer splits whatever text surrounds them (a letter then a
non-letter, a non-space then a space or tab, a newline then a non-space), or where the
document's tokens already break inside a punctuation-led piece such as ``。下一个``
(``_Doc.split_kind`` has the argument). BPE never merges across those, so
``count(text[h:t])`` is the number of document tokens between split points ``h < t``. Nearly
every cut is a split point; a span with other ends is counted as
``count(head) + tokens(h..t) + count(tail)``, encoding only the few characters between each
end and the nearest split point inside the span. Exactness never costs a second pass.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple, cast

from longread_server.plan.tokenizers import Tokenizer

__all__ = ["TextChunk", "chunk_text", "token_lengths"]


@dataclass(frozen=True, slots=True)
class TextChunk:
    """One chunk: ``text[start:end]`` is its body, ``text[overlap_start:end]`` what is sent.

    ``tokens`` counts the sent text, ``content_hash`` is the hex SHA-256 of its UTF-8 bytes.
    """

    index: int
    start: int
    end: int
    overlap_start: int
    tokens: int
    content_hash: str

    def body(self, text: str) -> str:
        return text[self.start : self.end]

    def sent(self, text: str) -> str:
        return text[self.overlap_start : self.end]


def token_lengths(tokenizer: Tokenizer, tokens: Sequence[int]) -> Sequence[int]:
    """The UTF-8 byte length of each of ``tokens``, looked up in C: all the chunker needs of a
    document's encoding. As ``bytes`` (one byte a token, every cl100k_base token is at most
    128 bytes long), so it is small enough to keep: a 1M-token document's is 1 MB."""
    lengths = tokenizer.token_byte_lengths
    # itemgetter of many ids returns a tuple; of one, a bare int.
    found = itemgetter(*tokens)(lengths) if len(tokens) > 1 else [lengths[t] for t in tokens]
    try:
        return bytes(found)
    except ValueError:  # a token of 256 bytes or more: an encoding other than cl100k_base
        return tuple(found)


def text_token_lengths(tokenizer: Tokenizer, text: str, limit: int) -> Sequence[int]:
    """``token_lengths(tokenizer, tokenizer.encode_at_most(text, limit))``, piece by piece: a
    long document is planned in a worker thread, and the event loop waits for the GIL
    whenever one C call holds it; looking up (and freeing) a piece's tokens at a time gives it
    back between pieces, where the whole document's would hold it for tens of milliseconds."""
    parts = [token_lengths(tokenizer, p) for p in tokenizer.encode_pieces_at_most(text, limit)]
    if all(isinstance(p, bytes) for p in parts):
        return b"".join(cast(list[bytes], parts))
    return tuple(n for p in parts for n in p)


def chunk_text(
    text: str,
    tokenizer: Tokenizer,
    max_chunk_tokens: int,
    overlap_tokens: int = 0,
    lens: Sequence[int] | None = None,
) -> list[TextChunk]:
    """Splits ``text`` into chunks of at most ``max_chunk_tokens`` tokens each (overlap included).

    ``lens``: ``token_lengths(tokenizer, tokenizer.encode(text))`` when the caller already has
    it (the planner counts the document first, and may remember it), so the document is
    encoded once.

    Every chunk after the first repeats up to ``overlap_tokens`` tokens from the end of the
    previous chunk's body: whole sentences where they fit, else whole clauses or words.
    Raises ValueError for ``max_chunk_tokens < 1``, a negative overlap, an overlap not smaller
    than the chunk, a text that cannot be encoded as UTF-8 (lone surrogates), or a limit below
    the tokens of a single character (a cut never splits one; only possible below 4 tokens).
    """
    if max_chunk_tokens < 1:
        raise ValueError(f"max_chunk_tokens must be at least 1, got {max_chunk_tokens}")
    if overlap_tokens < 0:
        raise ValueError(f"overlap_tokens must not be negative, got {overlap_tokens}")
    if overlap_tokens >= max_chunk_tokens:
        raise ValueError(
            f"overlap_tokens ({overlap_tokens}) must be smaller than "
            f"max_chunk_tokens ({max_chunk_tokens})"
        )
    if not text:
        return []
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"text is not valid Unicode (lone surrogate at {e.start})") from e
    doc = _Doc(text, data, tokenizer, lens)
    bodies = _bodies(doc, max_chunk_tokens, overlap_tokens)
    return _finish(text, doc, bodies, max_chunk_tokens, overlap_tokens)


# ---------------------------------------------------------------------------------------------
# Boundary patterns (on UTF-8 bytes: multi-byte punctuation is matched as whole sequences, and
# UTF-8 is self-synchronising, so every match starts and ends on a character boundary).


def _alt(chars: str) -> bytes:
    return b"|".join(re.escape(c.encode()) for c in chars)


# Closing quotes and brackets: ASCII, guillemet, curly quotes, CJK corner/fullwidth/lenticular/
# angle/tortoise-shell brackets.
_CLOSERS = _alt("\"')]}\u00bb\u201d\u2019\u300d\u300f\uff09\u3011\u300b\u3009\u3015")
# Sentence ends of the major scripts. Unicode defines them as the Sentence_Terminal property
# (UAX #29, "Sentence Boundaries"; PropList.txt); the whole property spans some 170 characters
# of historic and minor scripts too, and each terminator costs a backward search per window, so
# the chunker takes the stops of the scripts long documents are written in (tests check every
# one against the property). They end a sentence wherever they stand: these scripts are written
# without spaces (CJK, Myanmar, Khmer) or use the mark for nothing else.
_STOPS = (
    "\u3002\uff0e\uff61\uff01\uff1f"  # CJK full stops (ideographic, full/halfwidth), ! and ?
    "\u0964\u0965"  # Devanagari danda and double danda (shared by Bengali, Gurmukhi, ...)
    "\u06d4\u061f"  # Arabic full stop (Urdu) and question mark
    "\u0589"  # Armenian full stop
    "\u1362\u1367\u1368"  # Ethiopic full stop, question mark, paragraph separator
    "\u104b"  # Myanmar section: its full stop
    "\u17d4\u17d5"  # Khmer khan and bariyoosan
    # Not Sentence_Terminal, but where these texts end sentences: Chinese prose separates
    # sentences with the fullwidth semicolon; Tibetan has no other stop than the shad and the
    # double shad, which close clauses and sentences alike.
    "\uff1b\u0f0d\u0f0e"
)
# The fullwidth full stop is also the decimal point of fullwidth numbers.
_DIGIT = rb"(?:[0-9]|\xef\xbc[\x90-\x99])"
_STOP = rb"(?:" + _alt(_STOPS.replace("\uff0e", "")) + rb"|\xef\xbc\x8e(?!" + _DIGIT + rb"))"
# Terminators that end a sentence only before whitespace: "." also ends abbreviations and
# decimals, and "…" (like "...") also marks a pause inside a sentence.
_SPACED_ENDS = (".", "!", "?", "\u2026")
_SPACED_END = rb"(?:[.!?]|" + _alt("\u2026") + rb")"
# Clause marks: ASCII ones before whitespace; anywhere the CJK comma, enumeration comma and
# colon (fullwidth and halfwidth), the Arabic comma and semicolon, Armenian comma, Ethiopic
# comma, semicolon and colon, and the Myanmar little section (Sentence_Terminal, but Burmese
# uses it where other scripts put a comma).
_CLAUSE_MARKS = "\uff0c\u3001\uff1a\uff64\u060c\u061b\u055d\u1363\u1364\u1365\u104a"
_CLAUSE_MARK = _alt(_CLAUSE_MARKS)
_SPACE = rb"[ \t\n\r\f\v]"
# Where a sentence ends: the spaced terminators before whitespace, the stops anywhere; closing
# quotes and brackets stay with the sentence. The cut goes right after the match.
_SENTENCE = re.compile(
    rb"(?:" + _SPACED_END + rb"+(?:" + _CLOSERS + rb")*(?=" + _SPACE + rb"|\Z)"
    rb"|" + _STOP + rb"+(?:" + _CLOSERS + rb")*)"
)
_CLAUSE = re.compile(
    rb"(?:[,;:]+(?:" + _CLOSERS + rb")*(?=" + _SPACE + rb")|(?:" + _CLAUSE_MARK + rb")+)"
)
# A blank-line run; the cut goes after its last newline.
_PARAGRAPH = re.compile(rb"\n(?:[ \t\r\f\v]*\n)+")
_WORD = re.compile(rb"(?<![ \t\n\r\f\v])[ \t\f\v]")
# Section starts: ATX headings, setext underlines, and short lines standing alone between
# blank lines without ending in punctuation (titles of plain-text documents).
_HEADING = re.compile(
    rb"\n(?:(?P<atx> {0,3}#{1,6}(?=[ \t\r\n]|\Z))"
    rb"|(?P<setext> {0,3}(?:=+|-{2,})[ \t]*(?=\r?\n|\Z))"
    rb"|[ \t]*\r?\n(?=[ \t]*+(?P<title>[^\s][^\n]{0,79}+)\n[ \t]*\r?\n))"
)
_ATX_LINE = re.compile(rb" {0,3}#{1,6}(?:[ \t\r]|\Z)")
_TITLE_ENDS = (*(c.encode() for c in ".!?,;:-*|\\\u2026" + _STOPS + _CLAUSE_MARKS),)

# Where an overlap may start (after skipping whitespace), best first.
_OVERLAP_STARTS = ((_PARAGRAPH, _SENTENCE), (_CLAUSE,), (_WORD,))

# Unicode White_Space: what the tokenizer's regex calls \s.
_WS = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WS_BYTES = b" \t\n\r\f\v"
# Characters a cut should not go before (they attach to the previous character).
_JOINERS = frozenset("\u200d\u034f\ufe0e\ufe0f")
_HARD, _SOFT = 2, 1  # kinds of split points (see _Doc.split_kind)
_LOOK = 64  # bound on candidates tried by the backward and forward searches
_SMALL = 48  # spans up to this many bytes are simply encoded
_SKIP, _SKIP_BYTES = 16, 96  # token walks longer than this many bytes skip 16 tokens at a time
# A section is a hard cut from this many bytes per chunk token on (~2 chunks of English).
_HARD_SECTION_BYTES_PER_TOKEN = 8
# Characters where split points usually are (ASCII non-alphanumerics, general punctuation,
# CJK punctuation, fullwidth forms): candidates to check with ``_Doc.split_kind``.
_HINT = re.compile(
    rb"[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"
    rb"|\xe2[\x80\x81][\x80-\xbf]|\xe3\x80[\x80-\xbf]|\xef[\xbc\xbd][\x80-\xbf]"
)
# A run of sentence (clause) terminators with its closing quotes, matched where rfind found one.
_SENTENCE_AT = re.compile(rb"(?:" + _SPACED_END + rb"|" + _STOP + rb")+(?:" + _CLOSERS + rb")*")
_CLAUSE_AT = re.compile(rb"(?:[,;:]+|(?:" + _CLAUSE_MARK + rb")+)(?:" + _CLOSERS + rb")*")
_SENTENCE_TAIL = re.compile(
    rb"(?:" + _SPACED_END + rb"|" + _STOP + rb")(?:" + _CLOSERS + rb")*[ \t\r]*\Z"
)
_LATIN_ENDS = (b".", b"!", b"?")
_LATIN_CLAUSES = (b",", b";", b":")
_STOP_BYTES = tuple(c.encode() for c in _STOPS)
_SPACED_END_BYTES = tuple(c.encode() for c in _SPACED_ENDS if not c.isascii())
_CLAUSE_MARK_BYTES = tuple(c.encode() for c in _CLAUSE_MARKS)


class _Doc:
    """The document as UTF-8 bytes plus one encoding of it, with exact span counting."""

    __slots__ = (
        "bytes_per_token",
        "data",
        "encode",
        "exact_pieces",
        "lens",
        "n",
        "ntok",
        "o200k",
        "scan",
    )

    def __init__(
        self, text: str, data: bytes, tokenizer: Tokenizer, lens: Sequence[int] | None = None
    ) -> None:
        self.data = data
        self.n = len(data)
        # What boundary searches read: the same bytes, page furniture blanked (see _page_view).
        self.scan = _page_view(data)
        self.encode: Callable[[str], list[int]] = tokenizer.encode
        # The byte length of every token of the document: only lengths are needed from here
        # on, so the ids are never kept (and the garbage collector never walks them).
        self.lens = lens if lens is not None else token_lengths(tokenizer, tokenizer.encode(text))
        self.ntok = len(self.lens)
        # Undershoots the tokens in a span a little (~80 % of a span's bytes at the mean), so
        # a walk's first jump rarely passes its target.
        self.bytes_per_token = 1.25 * self.n / max(1, self.ntok)
        pretokenizer = tokenizer.pretokenizer
        self.exact_pieces = pretokenizer is not None
        self.o200k = pretokenizer == "o200k"

    # -- characters ---------------------------------------------------------------------------

    def char_at(self, b: int) -> str:
        """The character starting at byte ``b`` (``b`` on a character boundary, < n)."""
        x = self.data[b]
        if x < 0x80:
            return chr(x)
        width = 2 if x < 0xE0 else 3 if x < 0xF0 else 4
        return self.data[b : b + width].decode("utf-8")

    def char_start(self, b: int) -> int:
        """The start of the character that byte ``b`` belongs to."""
        data = self.data
        while b > 0 and 0x80 <= data[b] < 0xC0:
            b -= 1
        return b

    def next_char(self, b: int) -> int:
        x = self.data[b]
        return b + (1 if x < 0x80 else 2 if x < 0xE0 else 3 if x < 0xF0 else 4)

    def split_kind(self, b: int) -> int:
        """Whether the tokenizer splits at ``b`` whatever the text around it: ``_HARD``,
        ``_SOFT`` (it does where the document's tokens have a boundary at ``b``), or 0.

        cl100k_base pre-splits text with ``'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+
        \\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|
        \\s+(?!\\S)|\\s`` and runs BPE inside each piece. No piece runs on past a letter
        followed by a non-letter, a non-space followed by a space other than CR/LF, or a newline
        followed by a non-space (hard). Pieces are matched left to right without look-behind,
        so such a split holds in any substring holding both characters, with the same pieces
        in between. A punctuation mark followed by a letter (the CJK full stop before the next
        sentence) starts a piece ``。下一个`` that a substring cut between them splits in two;
        BPE never merges across a token boundary, so when the document's tokens have one there,
        each half encodes alone to exactly its tokens (soft). The apostrophe is excluded: it
        starts contractions (``'s``), pieces of their own.
        """
        if b <= 0 or b >= self.n:
            return _HARD
        data = self.data
        x, y = data[b - 1], data[b]
        o200k = self.o200k
        if x < 0x80 and y < 0x80:
            return (_ASCII_KINDS_O200K if o200k else _ASCII_KINDS)[x << 7 | y]
        if x < 0x80:
            prev = chr(x)
        else:
            j = b - 1
            while data[j] < 0xC0:
                j -= 1
            prev = data[j:b].decode("utf-8")
        nxt = self.char_at(b)
        kind = _KINDS.get((prev, nxt, o200k))
        if kind is None:
            if len(_KINDS) > 1 << 16:
                _KINDS.clear()
            kind = _KINDS[prev, nxt, o200k] = _kind(prev, nxt, o200k)
        return kind

    # -- tokens -------------------------------------------------------------------------------

    def span_bytes(self, k: int, count: int) -> int:
        """Byte length of ``count`` tokens from token ``k``."""
        return sum(self.lens[k : k + count])

    def token_at(self, b: int, k: int, pos: int) -> _Anchor:
        """The token containing byte ``b`` and its start (``(ntok, n)`` at the end), walking
        from token ``k`` that starts at ``pos``. Long walks jump most of the way at once (a
        guess from the document's bytes per token, summed at C speed), then step."""
        lens, per = self.lens, self.bytes_per_token
        if pos > b:
            while pos - b > _SKIP_BYTES:
                j = min(k, int((pos - b) / per))
                step = sum(lens[k - j : k])
                if j < _SKIP or pos - step < b:
                    break
                pos -= step
                k -= j
            while pos - b > _SKIP_BYTES and k >= _SKIP:
                step = sum(lens[k - _SKIP : k])
                if pos - step < b:
                    break
                pos -= step
                k -= _SKIP
            while pos > b:
                k -= 1
                pos -= lens[k]
        ntok = self.ntok
        while b - pos > _SKIP_BYTES:
            j = min(ntok - k, int((b - pos) / per))
            step = sum(lens[k : k + j])
            if j < _SKIP or pos + step > b:
                break
            pos += step
            k += j
        while b - pos > _SKIP_BYTES and k + _SKIP <= ntok:
            step = sum(lens[k : k + _SKIP])
            if pos + step > b:
                break
            pos += step
            k += _SKIP
        while k < ntok:
            nxt = pos + lens[k]
            if nxt > b:
                break
            pos = nxt
            k += 1
        return k, pos

    def locate(self, b: int, k: int, pos: int) -> int:
        """Index of the token starting at byte ``b`` (walking as ``token_at``); -1 when ``b``
        falls inside a token."""
        k, pos = self.token_at(b, k, pos)
        return k if pos == b else -1

    def encode_len(self, a: int, c: int) -> int:
        return len(self.encode(self.data[a:c].decode("utf-8"))) if c > a else 0

    def count(self, a: int, c: int, near_a: _Anchor, near_c: _Anchor) -> tuple[int, _Anchor]:
        """Exact token count of ``data[a:c]`` encoded alone, and the token containing ``c``.

        ``near_a`` / ``near_c`` are known token starts close to ``a`` and ``c`` to walk from.
        The count is ``count(a..h) + tokens(h..t) + count(t..c)`` for the first and last split
        points ``h <= t`` in the span (see ``split_kind``); both ends are usually split points
        themselves, and then nothing is encoded.
        """
        if self.exact_pieces and c - a > _SMALL:
            kind = self.split_kind
            h, kh = a, -1
            if kind(a):
                kh = near_a[0] if near_a[1] == a else self.locate(a, *near_a)
            if kh < 0:
                h, kh = self._split_after(a, c, near_a)
            if kh >= 0:
                t, kt = c, -1
                near = near_c if abs(near_c[1] - c) < c - h else (kh, h)
                if kind(c):
                    kt = near[0] if near[1] == c else self.locate(c, *near)
                if kt < 0:
                    t, kt = self._split_before(c, h, near)
                if kt >= kh:
                    total = kt - kh
                    if h > a:
                        total += self.encode_len(a, h)
                    if c > t:
                        total += self.encode_len(t, c)
                        return total, self.token_at(c, kt, t)
                    return total, (kt, t)
        total = self.encode_len(a, c)
        return total, self.token_at(c, *near_a)

    def _split_after(self, a: int, c: int, near: _Anchor) -> _Anchor:
        """The first split point in ``(a, c)`` as ``(b, token index)``; index -1 if none."""
        data, kind = self.data, self.split_kind
        for i, m in enumerate(_HINT.finditer(data, a + 1, c)):
            for b in (m.start(), m.end()):
                if a < b < c and kind(b):
                    k = self.locate(b, *near)
                    if k >= 0:
                        return b, k
            if i >= _LOOK:
                break
        return -1, -1

    def _split_before(self, c: int, floor: int, near: _Anchor) -> _Anchor:
        """The last split point in ``[floor, c)`` as ``(b, token index)``; index -1 if none."""
        kind = self.split_kind
        b = self.char_start(c - 1)
        low = max(floor, c - 16)
        while b >= low:
            if kind(b):
                k = self.locate(b, *near)
                if k >= 0:
                    return b, k
            if b == 0:
                return -1, -1
            b = self.char_start(b - 1)
        hints = _HINT.finditer(self.data, max(floor, c - 4096), b + 1)
        points = [p for m in hints for p in (m.start(), m.end()) if floor <= p <= b]
        for p in reversed(points[-_LOOK:]):
            if kind(p):
                k = self.locate(p, *near)
                if k >= 0:
                    return p, k
        return -1, -1


def _kind(prev: str, nxt: str, o200k: bool = False) -> int:
    """``_Doc.split_kind`` between two characters (``o200k``: under o200k_base's pattern)."""
    if o200k and prev.isalpha() and (nxt == "'" or unicodedata.category(nxt)[0] == "M"):
        return 0  # o200k_base: a word runs on into its marks and its contraction
    if nxt.isalpha():
        if prev.isalpha():
            return 0
        if prev in "\r\n":
            return _HARD
        if prev in _WS or prev == "'" or not _known(nxt):
            return 0
        category = unicodedata.category(prev)
        return _SOFT if category[0] != "N" and category != "Cn" else 0
    if prev.isalpha():
        return _HARD if _known(nxt) else 0
    if nxt in _WS:
        return _HARD if nxt not in "\r\n" and prev not in _WS else 0
    return _HARD if prev in "\r\n" else 0


def _known(ch: str) -> bool:
    """Whether this Python's Unicode database knows ``ch`` (a newer one may call it a letter)."""
    return ch < "\x80" or unicodedata.category(ch) != "Cn"


_ASCII_KINDS = bytes(_kind(chr(i >> 7), chr(i & 0x7F)) for i in range(1 << 14))
_ASCII_KINDS_O200K = bytes(_kind(chr(i >> 7), chr(i & 0x7F), True) for i in range(1 << 14))
# Split kinds of non-ASCII character pairs (and the pattern), memoized.
_KINDS: dict[tuple[str, str, bool], int] = {}

_Anchor = tuple[int, int]  # (token index, byte offset where that token starts)


class _Body(NamedTuple):
    """A body in bytes ``[start, end)``, its tokens, and the tokens containing its ends."""

    start: int
    end: int
    tokens: int
    at_start: _Anchor
    at_end: _Anchor


# ---------------------------------------------------------------------------------------------
# Page breaks
#
# Text extracted from paged documents (PDFs, scanned books) carries the pages' furniture into
# the text: a form feed between pages, a running header or footer and a page number beside
# it, blank lines around them. Read as they stand, they make a blank line (a paragraph break)
# and short lines alone between blank lines (headings) in the middle of a sentence that runs
# on over the page, so cuts would go there. The boundary searches therefore read a copy of
# the document in which each page break's furniture is blanked out: turned into spaces, byte
# for byte, so every offset, every count and every character stays where it was.
#
# A page break is a paragraph break only when the text before it ends a sentence: a
# paragraph can end at the foot of a page, but one that ends mid-sentence goes on over it.
# Then the break reads as a blank line before the next page's text (the furniture stays with
# the page it belongs to); otherwise as one line break, as in a hard-wrapped paragraph.
#
# Furniture is recognised only beside a form feed, past blank lines, at most two lines on
# each side: a bare page number ("12", "- 12 -", "Page 12", "12 of 300", "xiv"), or a short
# line that recurs beside other page breaks, its numbers aside (a running header or footer).
# A line beside only one page break cannot be told from a heading that starts a page, so it
# is left as text, except at the top of a page where the sentence before runs on: no heading
# can stand there, and a short line set apart by a blank line is taken for a header. (Not at
# the foot of a page: the first line of a paragraph that goes on over the page looks the same
# as a footer there.)

_PAGE_NUMBER = re.compile(
    r"[-\u2010-\u2014(\[|]?\s*(?:(?:page|pg\.?|p\.)\s*)?"
    r"(?:\d{1,5}|(?=[ivxlcdm])m{0,3}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3}))"
    r"(?:\s*(?:of|/)\s*\d{1,5})?\s*[-\u2010-\u2014)\]|]?\.?",
    re.IGNORECASE,
)
_NOT_LETTERS = re.compile(r"[\W\d_]+")
_LINE_END = re.compile(rb"[\n\f]")
_PAGE_LINE_BYTES = 120  # longer lines are text: headers and footers are short
_PAGE_LINES = 2  # furniture lines on each side of a form feed
_PAGE_SKIP = 64  # lines walked on each side of a form feed, blank ones included
_BLANK, _FURNITURE, _TEXT = 0, 1, 2


def _page_view(data: bytes) -> bytes:
    """``data`` with the furniture of every page break blanked (see above); ``data`` itself
    when it has no form feed."""
    if b"\f" not in data:
        return data
    n = len(data)

    def line_before(end: int) -> int:
        """Start of the line ending at ``end`` (a newline or form feed, or ``n``); lines longer
        than a header are cut short (they are text either way)."""
        floor = max(0, end - _PAGE_LINE_BYTES - 1)
        return max(data.rfind(b"\n", floor, end), data.rfind(b"\f", floor, end), floor - 1) + 1

    def line_after(start: int) -> int:
        """End of the line starting at ``start`` (as ``line_before``)."""
        ceiling = min(n, start + _PAGE_LINE_BYTES + 1)
        end = _LINE_END.search(data, start, ceiling)
        return ceiling if end is None else end.start()

    signatures: dict[tuple[int, int], str] = {}  # every line near a form feed is read twice

    def signature(a: int, b: int) -> str:
        """A line with its numbers and punctuation dropped: the same for every page."""
        sig = signatures.get((a, b))
        if sig is None:
            text = data[a:b].decode("utf-8", "replace")
            sig = signatures[a, b] = " ".join(_NOT_LETTERS.sub(" ", text).split())
        return sig

    def lines(feed: int, backward: bool) -> list[tuple[int, int]]:
        """The lines next to the form feed at ``feed``, nearest first, up to one past the
        furniture there can be (blank lines aside, up to a bound)."""
        found: list[tuple[int, int]] = []
        pos, shown = feed, 0
        while shown <= _PAGE_LINES and len(found) < _PAGE_SKIP:
            if backward:
                if pos <= 0:
                    break
                a = line_before(pos)
                b, pos = pos, a - 1
            else:
                if pos + 1 >= n:
                    break
                a, b = pos + 1, line_after(pos + 1)
                pos = b
            found.append((a, b))
            shown += bool(data[a:b].strip())
        return found

    feeds = _feeds(data)
    near = [(lines(f, True), lines(f, False)) for f in feeds]
    # Running headers and footers: short lines that recur beside page breaks (counted by
    # place, so one line between two close page breaks is still one).
    seen: dict[str, set[int]] = {}
    for sides in near:
        for side in sides:
            shown = 0
            for a, b in side:
                if not data[a:b].strip():
                    continue
                if b - a <= _PAGE_LINE_BYTES and (sig := signature(a, b)):
                    seen.setdefault(sig, set()).add(a)
                shown += 1
                if shown == _PAGE_LINES:
                    break
    running = {sig for sig, places in seen.items() if len(places) > 1}

    def kind(a: int, b: int) -> int:
        if b - a > _PAGE_LINE_BYTES:
            return _TEXT
        line = data[a:b].decode("utf-8", "replace").strip()
        if not line:
            return _BLANK
        if _PAGE_NUMBER.fullmatch(line) or signature(a, b) in running:
            return _FURNITURE
        return _TEXT

    def edge(side: list[tuple[int, int]], backward: bool, default: int, loose: bool) -> int:
        """Where the furniture on one side of a form feed ends: the newline or form feed that
        ends the text before (``backward``), or the start of the text after. ``loose``: a
        sentence runs on over the page break, so no heading can stand there, and a short line
        set apart by a blank line is furniture too (a header or footer seen only once)."""
        shown = 0
        for i, (a, b) in enumerate(side):
            k = kind(a, b)
            if (
                k == _TEXT
                and loose
                and b - a <= _PAGE_LINE_BYTES
                and i + 1 < len(side)
                and not data[side[i + 1][0] : side[i + 1][1]].strip()
                and not _SENTENCE_TAIL.search(data, a, b)
            ):
                k = _FURNITURE
            if k == _FURNITURE:
                shown += 1
            if k == _TEXT or shown > _PAGE_LINES:
                return b if backward else a
        return default

    def ends_sentence(start: int) -> bool:
        """Whether the text before ``start`` ends a sentence (the start of the text does)."""
        return start <= 0 or bool(
            _SENTENCE_TAIL.search(data, max(line_before(start), start - 64), start)
        )

    view = bytearray(data)
    last_end = -1
    for f, (before, after) in zip(feeds, near, strict=True):
        if f < last_end:
            continue  # within the previous page break (a blank page)
        first = before[-1][0] if before else 0
        # Furniture shared with the previous page break (a short page) stays with it.
        start = max(edge(before, True, first, loose=False), last_end)
        finished = ends_sentence(start)
        end = edge(after, False, after[-1][1] + 1 if after else n, loose=not finished)
        end = min(max(end, f + 1), n)
        view[start:end] = b" " * (end - start)
        view[end - 1] = 0x0A
        if finished and end - start > 1:
            view[start] = 0x0A
        last_end = end
    return bytes(view)


def _feeds(data: bytes) -> list[int]:
    """Offsets of the form feeds in ``data``."""
    found = []
    i = data.find(b"\f")
    while i >= 0:
        found.append(i)
        i = data.find(b"\f", i + 1)
    return found


# ---------------------------------------------------------------------------------------------
# Cut selection


def _sections(doc: _Doc, min_bytes: int) -> tuple[list[int], list[int]]:
    """Heading starts (sorted) and those that are hard cuts.

    A heading is a hard cut when the section before it has at least ``min_bytes`` bytes. A
    cut there costs the fill of that section's last chunk, so only sections spanning a few
    chunks pay for it; smaller ones are packed with their neighbours (the packing still
    prefers to cut at headings). The rule looks only at the two headings around a section,
    so an edit cannot move hard cuts anywhere else.
    """
    data = doc.scan
    found = set()
    for m in _HEADING.finditer(data):
        if m.lastgroup == "atx":
            found.add(m.start() + 1)
        elif m.lastgroup == "setext":
            line = data.rfind(b"\n", 0, m.start()) + 1
            if data[line : m.start()].strip():
                found.add(line)
        elif _ATX_LINE.match(m.group("title")) or _is_title(m.group("title")):
            found.add(m.end())
    heads = sorted(b for b in found if 0 < b < doc.n)
    hard: list[int] = []
    prev = 0
    for b in heads:
        if b - prev >= min_bytes:
            hard.append(b)
        prev = b
    return heads, hard


def _is_title(line: bytes) -> bool:
    line = line.rstrip()
    return not line.endswith(_TITLE_ENDS) and any(
        ch.isalnum() for ch in line.decode("utf-8", "replace")
    )


def _last_match(pattern: re.Pattern[bytes], data: bytes, lo: int, hi: int) -> int:
    """End of the last match of ``pattern`` with ``lo < end <= hi``; -1 if none."""
    best = -1
    for m in pattern.finditer(data, max(0, lo - 8), min(len(data), hi + 8)):
        end = m.end()
        if end > hi:
            break
        if end > lo:
            best = end
    return best


class _Cutter:
    """Finds the best boundary in a window of the document."""

    __slots__ = ("clause_terms", "data", "doc", "heads", "sentence_terms")

    def __init__(self, doc: _Doc, heads: list[int]) -> None:
        self.doc = doc
        self.data = doc.scan  # boundaries are looked for with page furniture blanked
        self.heads = heads
        # Terminators to look for, as (bytes, ends a sentence even without a space after it);
        # the stops first in documents that can hold them. A stop whose lead byte the
        # document lacks cannot occur in it: one memchr spares a search in every window.
        latin_ends = tuple((t, False) for t in _LATIN_ENDS)
        latin_clauses = tuple((t, False) for t in _LATIN_CLAUSES)
        data = doc.data
        if data.isascii():
            self.sentence_terms, self.clause_terms = latin_ends, latin_clauses
        else:
            leads = {t[:1] for t in (*_STOP_BYTES, *_SPACED_END_BYTES, *_CLAUSE_MARK_BYTES)}
            present = {lead for lead in leads if lead in data}
            self.sentence_terms = (
                tuple((t, True) for t in _STOP_BYTES if t[:1] in present)
                + tuple((t, False) for t in _SPACED_END_BYTES if t[:1] in present)
                + latin_ends
            )
            self.clause_terms = (
                tuple((t, True) for t in _CLAUSE_MARK_BYTES if t[:1] in present) + latin_clauses
            )

    def best(self, a: int, lo: int, hi: int) -> int:
        """The best cut in ``(a, hi]``: best level in ``(lo, hi]``, then in ``(a, lo]``."""
        lo = max(lo, a)
        if hi > lo:
            c = self._levels(lo, hi)
            if c > 0:
                return self._on_char(a, c)
        if lo > a:
            c = self._levels(a, lo)
            if c > 0:
                return self._on_char(a, c)
        return self._char_cut(a, hi)

    def _on_char(self, a: int, c: int) -> int:
        """``c``, or the nearest character boundary after ``a``: in the page view, furniture
        is blanked byte for byte, so a multi-byte character there reads as several spaces
        with places between them where the text itself cannot be cut."""
        doc = self.doc
        if self.data is doc.data or c >= doc.n:
            return c
        start = doc.char_start(c)
        if start == c:
            return c
        return start if start > a else doc.next_char(start)

    def _levels(self, lo: int, hi: int) -> int:
        """The last boundary of the best level in ``(lo, hi]``; -1 if there is none."""
        doc, data = self.doc, self.data
        i = bisect.bisect_right(self.heads, hi)
        if i and self.heads[i - 1] > lo:
            return self.heads[i - 1]
        nl = data.rfind(b"\n", lo, hi)
        if nl >= 0:
            c = _last_match(_PARAGRAPH, data, lo, hi)
            if c > 0 and (c == doc.n or data[c] not in b"\n\r"):
                return c
            c = self._sentence_line(lo, nl)
            if c > 0:
                return c
        c = self._last_end(_SENTENCE_AT, self.sentence_terms, lo, hi)
        if c > 0:
            return c
        if nl >= 0:
            return nl + 1
        c = self._last_end(_CLAUSE_AT, self.clause_terms, lo, hi)
        if c > 0:
            return c
        return self._word_cut(lo, hi)

    def _sentence_line(self, lo: int, nl: int) -> int:
        """After the last newline at or before ``nl`` that ends a sentence; -1 if none."""
        data = self.data
        for _ in range(_LOOK):
            if _SENTENCE_TAIL.search(data, max(lo, nl - 16), nl):
                return nl + 1
            nl = data.rfind(b"\n", lo, nl)
            if nl < 0:
                break
        return -1

    def _last_end(
        self, pattern: re.Pattern[bytes], terms: tuple[tuple[bytes, bool], ...], lo: int, hi: int
    ) -> int:
        """End of the last run of terminators in ``(lo, hi]``: the spaced ones must be followed
        by whitespace, the stops need not. -1 if there is none."""
        data, n = self.data, self.doc.n
        best, floor = -1, lo - 8
        for term, anywhere in terms:
            j = hi
            for _ in range(_LOOK):
                i = data.rfind(term, floor, j)
                if i < 0:
                    break
                j = i
                # No match: a fullwidth full stop used as a decimal point.
                m = pattern.match(data, i)
                if m is None:
                    continue
                end = m.end()
                if lo < end <= hi and (anywhere or end == n or data[end] in _WS_BYTES):
                    if end > best:
                        best, floor = end, i  # later terms must end after this one
                    break
        return best

    def _word_cut(self, lo: int, hi: int) -> int:
        """Before the last run of spaces or tabs in ``(lo, hi]``; -1 if none."""
        data = self.data
        b = max(data.rfind(b" ", lo, hi), data.rfind(b"\t", lo, hi))
        while b > lo and data[b - 1] in b" \t\f\v":
            b -= 1
        if b <= lo or data[b - 1] in _WS_BYTES:
            return -1
        return b

    def _char_cut(self, a: int, hi: int) -> int:
        """Between two characters, at or before ``hi``, not before a combining mark or joiner."""
        doc = self.doc
        if hi >= doc.n:
            return doc.n
        b = doc.char_start(hi)
        if b <= a:
            return doc.next_char(a)
        for _ in range(16):
            ch = doc.char_at(b)
            prev = doc.char_start(b - 1)
            if not (
                ch in _JOINERS
                or unicodedata.combining(ch)
                or unicodedata.category(ch) in ("Mn", "Mc", "Me")
                or doc.char_at(prev) in _JOINERS
                or (ch == "\n" and doc.data[prev] == 0x0D)
                or 0xFE00 <= ord(ch) <= 0xFE0F  # variation selectors
                or 0x1F3FB <= ord(ch) <= 0x1F3FF  # emoji skin tones
            ):
                return b
            if prev <= a:
                break
            b = prev
        return doc.char_start(hi)


def _bodies(doc: _Doc, limit: int, overlap: int) -> list[_Body]:
    """Consecutive bodies tiling the document, each with its exact token count."""
    heads, hard = _sections(doc, min_bytes=_HARD_SECTION_BYTES_PER_TOKEN * limit)
    cutter = _Cutter(doc, heads)
    bodies: list[_Body] = []
    a = 0
    anchor: _Anchor = (0, 0)
    h = 0  # index of the next hard section cut
    while a < doc.n:
        budget = limit if a == 0 else limit - overlap
        while h < len(hard) and hard[h] <= a:
            h += 1
        stop = hard[h] if h < len(hard) else doc.n
        c, tokens, at_c = _next_cut(doc, cutter, a, anchor, budget, limit, stop)
        bodies.append(_Body(a, c, tokens, anchor, at_c))
        a, anchor = c, at_c
    return bodies


def _next_cut(
    doc: _Doc, cutter: _Cutter, a: int, anchor: _Anchor, budget: int, limit: int, stop: int
) -> tuple[int, int, _Anchor]:
    """The furthest good cut after ``a`` whose span counts at most ``budget`` tokens.

    ``stop`` is the next hard cut (a section start, or the end). When not even one character
    fits ``budget`` (a tiny chunk after a large overlap), one character is taken if it fits
    ``limit``: the overlap then shrinks to make room.
    """
    ka, sa = anchor
    room = budget
    cap = stop
    while True:
        if ka + room >= doc.ntok:
            hi, near_c = doc.n, (doc.ntok, doc.n)
        else:
            hi = sa + doc.span_bytes(ka, room)
            near_c = (ka + room, hi)
        if stop <= min(hi, cap):
            c = stop
        else:
            hi = min(hi, cap)
            c = cutter.best(a, a + (hi - a) // 2, hi)
        tokens, at_c = doc.count(a, c, anchor, near_c)
        if tokens <= budget:
            return c, tokens, at_c
        one = doc.next_char(a)
        if c <= one:
            if tokens <= limit:
                return c, tokens, at_c
            raise ValueError(
                f"max_chunk_tokens={limit} is smaller than the {tokens} tokens of the "
                f"character at byte {a}"
            )
        room = max(1, min(room, budget) - (tokens - budget))
        cap = max(one, doc.char_start(c - 1))


# ---------------------------------------------------------------------------------------------
# Overlap and the result


def _overlap_start(
    doc: _Doc, prev: _Body, body: _Body, limit: int, overlap: int
) -> tuple[int, int]:
    """Where the overlap of ``body`` starts, and the tokens of the sent text.

    The overlap is the longest tail of the previous body that starts at a sentence or
    paragraph start (else a clause start, else a word start), counts at most ``overlap``
    tokens, and keeps the sent text within ``limit``.
    """
    start, end = body.start, body.end
    k, s = body.at_start
    back = min(k, overlap + 1)
    if not back:
        return start, body.tokens
    lo = max(prev.start, s - doc.span_bytes(k - back, back))
    # Counts add up across a hard split point: sent = overlap + body.
    joins_hard = doc.exact_pieces and doc.split_kind(start) == _HARD
    data = doc.scan

    def fits(b: int) -> int:
        """Sent tokens with the overlap starting at ``b``; 0 when it does not fit."""
        ov, _ = doc.count(b, start, body.at_start, body.at_start)
        if ov > overlap:
            return 0
        if joins_hard:
            total = ov + body.tokens
        else:
            total, _ = doc.count(b, end, body.at_start, body.at_end)
        return total if total <= limit else 0

    if lo <= prev.start:
        tokens = fits(prev.start)
        if tokens:
            return prev.start, tokens
    for patterns in _OVERLAP_STARTS:
        pos = max(prev.start, lo - 8)
        while pos < start:
            ends = [m.end() for p in patterns if (m := p.search(data, pos, start))]
            if not ends:
                break
            raw = min(ends)
            b = raw
            while b < start and data[b] in _WS_BYTES:
                b += 1
            if lo <= b < start:
                tokens = fits(b)
                if tokens:
                    return b, tokens
            pos = raw if raw > pos else pos + 1
    return start, body.tokens


def _finish(text: str, doc: _Doc, bodies: list[_Body], limit: int, overlap: int) -> list[TextChunk]:
    ascii_only = doc.n == len(text)
    data = doc.data
    chunks: list[TextChunk] = []
    char = 0
    for i, body in enumerate(bodies):
        a, c = body.start, body.end
        if i and overlap:
            os, tokens = _overlap_start(doc, bodies[i - 1], body, limit, overlap)
        else:
            os, tokens = a, body.tokens
        if ascii_only:
            start, end, ostart = a, c, os
        else:
            start = char
            end = char = start + len(data[a:c].decode("utf-8"))
            ostart = start - len(data[os:a].decode("utf-8")) if os < a else start
        chunks.append(
            TextChunk(
                index=i,
                start=start,
                end=end,
                overlap_start=ostart,
                tokens=tokens,
                content_hash=hashlib.sha256(data[os:c]).hexdigest(),
            )
        )
    return chunks
