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
  between two characters.
* Deterministic, and local: sections (headings) are hard cuts, so an edit only changes chunks of
  the section it is in (a section smaller than ``max_chunk_tokens`` bytes is glued to the next
  one, so a small edit may also touch that neighbour). Inside a section, chunks before the edit
  keep their cuts; after it, greedy packing usually realigns within a few chunks.

How it stays fast and exact
---------------------------
The document is encoded once. A window of B tokens after a chunk start is located by decoding
the byte length of those token ids (in Rust), the cut is searched for backwards in that window
with byte regexes, and only the tokens near each cut are walked in Python.

Counts taken from the whole-document encoding are exact for a span whose ends are *hard*
positions: places where cl100k_base's pre-tokenizer always splits, whatever text surrounds
them (see ``_Doc.is_hard``): a letter followed by a non-letter, a non-space followed by a space
or tab, a newline followed by a non-space. BPE never merges across pre-tokenizer pieces, so
``count(text[h:t])`` is the number of document tokens between two hard positions ``h < t``.
A span with other ends is counted as ``count(head) + tokens(h..t) + count(tail)``, encoding
only the few characters between each end and the nearest hard position inside the span. So
exactness costs two tiny encodes per chunk, never a second pass over the document.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter

from longread_server.plan.tokenizers import Tokenizer

__all__ = ["TextChunk", "chunk_text"]


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


def chunk_text(
    text: str, tokenizer: Tokenizer, max_chunk_tokens: int, overlap_tokens: int = 0
) -> list[TextChunk]:
    """Splits ``text`` into chunks of at most ``max_chunk_tokens`` tokens each (overlap included).

    Every chunk after the first repeats up to ``overlap_tokens`` tokens from the end of the
    previous chunk's body: whole sentences where they fit, else whole clauses or words.
    Raises ValueError for ``max_chunk_tokens < 1``, a negative overlap, an overlap not smaller
    than the chunk, or a text that cannot be encoded as UTF-8 (lone surrogates).
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
    doc = _Doc(text, data, tokenizer)
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
_CJK_ENDS = "\u3002\uff01\uff1f\uff1b"  # full stop, exclamation, question mark, semicolon
_CJK_CLAUSES = "\uff0c\u3001\uff1a"  # comma, enumeration comma, colon
_CJK_END = _alt(_CJK_ENDS)
_CJK_CLAUSE = _alt(_CJK_CLAUSES)
_SPACE = rb"[ \t\n\r\f\v]"
# Where a sentence ends: Latin terminators before whitespace, CJK ones anywhere; closing
# quotes and brackets stay with the sentence. The cut goes right after the match.
_SENTENCE = re.compile(
    rb"(?:[.!?]+(?:" + _CLOSERS + rb")*(?=" + _SPACE + rb"|\Z)"
    rb"|(?:" + _CJK_END + rb")+(?:" + _CLOSERS + rb")*)"
)
# A line that ends a sentence: the cut goes after its newline.
_SENTENCE_LINE = re.compile(
    rb"(?:[.!?]|" + _CJK_END + rb")(?:" + _CLOSERS + rb")*[ \t]*\r?\n(?![ \t]*\r?\n)"
)
_CLAUSE = re.compile(
    rb"(?:[,;:]+(?:" + _CLOSERS + rb")*(?=" + _SPACE + rb")|(?:" + _CJK_CLAUSE + rb")+)"
)
# A blank-line run; the cut goes after its last newline.
_PARAGRAPH = re.compile(rb"\n(?:[ \t\r\f\v]*\n)+")
_WORD = re.compile(rb"(?<![ \t\n\r\f\v])[ \t\f\v]")
# Section starts: ATX headings, setext underlines, and short lines standing alone between
# blank lines without ending in punctuation (titles of plain-text documents).
_ATX = re.compile(rb"\n {0,3}#{1,6}(?=[ \t\r\n]|\Z)")
_SETEXT = re.compile(rb"\n {0,3}(?:=+|-{2,})[ \t]*(?=\r?\n|\Z)")
_TITLE = re.compile(rb"\n[ \t]*\r?\n(?=[ \t]*([^\s][^\n]{0,99})\n[ \t]*\r?\n)")
_TITLE_AT_START = re.compile(rb"[ \t]*([^\s][^\n]{0,99})\n[ \t]*\r?\n")
_TITLE_ENDS = (*(c.encode() for c in ".!?,;:-*|\\" + _CJK_ENDS + _CJK_CLAUSES),)

# Where an overlap may start (after skipping whitespace), best first.
_OVERLAP_STARTS = ((_PARAGRAPH, _SENTENCE_LINE, _SENTENCE), (_CLAUSE,), (_WORD,))

# Unicode White_Space: what the tokenizer's regex calls \s.
_WS = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WS_BYTES = b" \t\n\r\f\v"
# Characters a cut should not go before (they attach to the previous character).
_JOINERS = frozenset("\u200d\u034f\ufe0e\ufe0f")
_LOOK = 64  # candidates tried from a span end for a hard position before encoding the whole span
_SMALL = 48  # spans up to this many bytes are simply encoded
_SKIP, _SKIP_BYTES = 16, 96  # token walks longer than this skip blocks of tokens
# Characters where hard positions usually are (ASCII non-alphanumerics, general and CJK
# punctuation, fullwidth forms): candidates to check with ``_Doc.is_hard``.
_HINT = re.compile(
    rb"[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]|\xe2[\x80\x81][\x80-\xbf]|\xe3\x80[\x80-\xbf]|\xef[\xbc\xbd][\x80-\xbf]"
)
# A run of sentence (clause) terminators with its closing quotes, matched where rfind found one.
_SENTENCE_AT = re.compile(rb"(?:[.!?]+|(?:" + _CJK_END + rb")+)(?:" + _CLOSERS + rb")*")
_CLAUSE_AT = re.compile(rb"(?:[,;:]+|(?:" + _CJK_CLAUSE + rb")+)(?:" + _CLOSERS + rb")*")
_SENTENCE_TAIL = re.compile(rb"(?:[.!?]|" + _CJK_END + rb")(?:" + _CLOSERS + rb")*[ \t\r]*\Z")
_LATIN_ENDS = (b".", b"!", b"?")
_LATIN_CLAUSES = (b",", b";", b":")
_CJK_END_BYTES = tuple(c.encode() for c in _CJK_ENDS)
_CJK_CLAUSE_BYTES = tuple(c.encode() for c in _CJK_CLAUSES)


class _Doc:
    """The document as UTF-8 bytes plus one encoding of it, with exact span counting."""

    __slots__ = ("data", "decode_bytes", "encode", "exact_pieces", "lens", "n", "ntok", "tokens")

    def __init__(self, text: str, data: bytes, tokenizer: Tokenizer) -> None:
        self.data = data
        self.n = len(data)
        self.encode: Callable[[str], list[int]] = tokenizer.encode
        self.decode_bytes: Callable[[Sequence[int]], bytes] = tokenizer.decode_bytes
        self.tokens = tokenizer.encode(text)
        self.ntok = len(self.tokens)
        lengths = tokenizer.token_byte_lengths
        # Byte length of every token of the document, looked up in C (itemgetter of many ids
        # returns a tuple; of one, a bare int).
        self.lens: tuple[int, ...] = (
            itemgetter(*self.tokens)(lengths)
            if self.ntok > 1
            else tuple(lengths[t] for t in self.tokens)
        )
        self.exact_pieces = tokenizer.splits_like_cl100k

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

    def is_hard(self, b: int) -> bool:
        """Whether cl100k_base's pre-tokenizer splits at ``b`` in any text around it.

        Its pattern ``'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+|
        ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s`` never lets a piece
        run on past (1) a letter followed by a non-letter, (2) a non-space followed by a space
        other than CR/LF, or (3) a newline followed by a non-space. Pieces are matched left to
        right without look-behind, so the split also holds in any substring that contains the
        two characters, and the pieces in between are the same: the whole-document token count
        between two hard positions is exact for that span.
        """
        if b <= 0 or b >= self.n:
            return True
        data = self.data
        x = data[b - 1]
        if x < 0x80:
            prev = chr(x)
        else:
            j = b - 1
            while data[j] < 0xC0:
                j -= 1
            prev = data[j:b].decode("utf-8")
        nxt = self.char_at(b)
        if prev.isalpha() and not nxt.isalpha():
            # A character this Python does not know might be a letter to the tokenizer.
            return nxt < "\x80" or unicodedata.category(nxt) != "Cn"
        if nxt in _WS:
            return nxt not in "\r\n" and prev not in _WS
        return prev in "\r\n"

    # -- tokens -------------------------------------------------------------------------------

    def span_bytes(self, k: int, count: int) -> int:
        """Byte length of ``count`` tokens from token ``k``."""
        return sum(self.lens[k : k + count])

    def token_at(self, b: int, k: int, pos: int) -> _Anchor:
        """The token containing byte ``b`` and its start (``(ntok, n)`` at the end), walking
        from token ``k`` that starts at ``pos``; long walks skip blocks of tokens at C speed."""
        lens = self.lens
        if pos > b:
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
        """
        if self.exact_pieces and c - a > _SMALL:
            h = a if self.is_hard(a) else self._hard_after(a, c)
            t = c if self.is_hard(c) else self._hard_before(c, h)
            if 0 <= h < t:
                kh = self.locate(h, *near_a)
                kt = self.locate(t, *(near_c if near_c[1] - t < t - h else (kh, h)))
                if kh >= 0 and kt >= kh:
                    total = self.encode_len(a, h) + (kt - kh) + self.encode_len(t, c)
                    return total, self.token_at(c, kt, t)
        total = self.encode_len(a, c)
        return total, self.token_at(c, *near_a)

    def _hard_after(self, a: int, c: int) -> int:
        """The first hard position in ``(a, c)``; -1 if none is found nearby."""
        is_hard, data = self.is_hard, self.data
        for i, m in enumerate(_HINT.finditer(data, a + 1, c)):
            b = m.start()
            if is_hard(b):
                return b
            if data[b] == 0x0A and m.end() < c and is_hard(m.end()):
                return m.end()
            if i >= _LOOK:
                break
        return -1

    def _hard_before(self, c: int, floor: int) -> int:
        """The last hard position in ``[floor, c)``; -1 if none is found nearby."""
        if floor < 0:
            return -1
        b = self.char_start(c - 1)
        low = max(floor, c - 16)
        while b > low:
            if self.is_hard(b):
                return b
            b = self.char_start(b - 1)
        if b == floor:
            return floor
        hints = [m.start() for m in _HINT.finditer(self.data, max(floor, c - 4096), b + 1)]
        for h in reversed(hints[-_LOOK:]):
            if self.is_hard(h):
                return h
        return -1


_Anchor = tuple[int, int]  # (token index, byte offset where that token starts)


@dataclass(frozen=True, slots=True)
class _Body:
    """A body in bytes ``[start, end)``, its tokens, and the tokens containing its ends."""

    start: int
    end: int
    tokens: int
    at_start: _Anchor
    at_end: _Anchor


# ---------------------------------------------------------------------------------------------
# Cut selection


def _sections(doc: _Doc, tiny: int) -> tuple[list[int], list[int]]:
    """Heading starts (sorted) and those that are hard cuts.

    A heading is a hard cut unless the section before it is smaller than ``tiny`` bytes: a
    title or a one-line section stays with what follows. The rule only looks at the two
    headings around a section, so an edit cannot move cuts in other sections.
    """
    data = doc.data
    found = {m.start() + 1 for m in _ATX.finditer(data)}
    for m in _SETEXT.finditer(data):
        line = data.rfind(b"\n", 0, m.start()) + 1
        if data[line : m.start()].strip():
            found.add(line)
    for m in _TITLE.finditer(data):
        if _is_title(m.group(1)):
            found.add(m.end())
    start = _TITLE_AT_START.match(data)
    if start and _is_title(start.group(1)):
        found.add(0)
    heads = sorted(b for b in found if 0 < b < doc.n)
    hard: list[int] = []
    prev = 0
    for b in heads:
        if b - prev >= tiny:
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

    __slots__ = ("cjk_clauses", "cjk_ends", "doc", "heads")

    def __init__(self, doc: _Doc, heads: list[int]) -> None:
        self.doc = doc
        self.heads = heads
        ascii_only = doc.data.isascii()
        self.cjk_ends: tuple[bytes, ...] = () if ascii_only else _CJK_END_BYTES
        self.cjk_clauses: tuple[bytes, ...] = () if ascii_only else _CJK_CLAUSE_BYTES

    def best(self, a: int, lo: int, hi: int) -> int:
        """The best cut in ``(a, hi]``: best level in ``(lo, hi]``, then in ``(a, lo]``."""
        lo = max(lo, a)
        if hi > lo:
            c = self._levels(lo, hi)
            if c > 0:
                return c
        if lo > a:
            c = self._levels(a, lo)
            if c > 0:
                return c
        return self._char_cut(a, hi)

    def _levels(self, lo: int, hi: int) -> int:
        """The last boundary of the best level in ``(lo, hi]``; -1 if there is none."""
        doc, data = self.doc, self.doc.data
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
        c = self._last_end(_SENTENCE_AT, _LATIN_ENDS, self.cjk_ends, lo, hi)
        if c > 0:
            return c
        if nl >= 0:
            return nl + 1
        c = self._last_end(_CLAUSE_AT, _LATIN_CLAUSES, self.cjk_clauses, lo, hi)
        if c > 0:
            return c
        return self._word_cut(lo, hi)

    def _sentence_line(self, lo: int, nl: int) -> int:
        """After the last newline at or before ``nl`` that ends a sentence; -1 if none."""
        data = self.doc.data
        for _ in range(_LOOK):
            if _SENTENCE_TAIL.search(data, max(lo, nl - 16), nl):
                return nl + 1
            nl = data.rfind(b"\n", lo, nl)
            if nl < 0:
                break
        return -1

    def _last_end(
        self,
        pattern: re.Pattern[bytes],
        latin: tuple[bytes, ...],
        cjk: tuple[bytes, ...],
        lo: int,
        hi: int,
    ) -> int:
        """End of the last run of terminators in ``(lo, hi]``: Latin ones must be followed by
        whitespace, CJK ones need not. -1 if there is none."""
        data, n = self.doc.data, self.doc.n
        best = -1
        for term in latin + cjk:
            j = hi
            for _ in range(_LOOK):
                i = data.rfind(term, max(lo - 8, best), j)
                if i < 0:
                    break
                m = pattern.match(data, i)
                end = m.end() if m else i + 1
                if lo < end <= hi and (term in cjk or end == n or data[end] in _WS_BYTES):
                    best = max(best, end)
                    break
                j = i
        return best

    def _word_cut(self, lo: int, hi: int) -> int:
        """Before the last run of spaces or tabs in ``(lo, hi]``; -1 if none."""
        data = self.doc.data
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
                or 0xFE00 <= ord(ch) <= 0xFE0F
            ):
                return b
            if prev <= a:
                break
            b = prev
        return doc.char_start(hi)


def _bodies(doc: _Doc, limit: int, overlap: int) -> list[_Body]:
    """Consecutive bodies tiling the document, each with its exact token count."""
    heads, hard = _sections(doc, tiny=limit)
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

    The overlap is the longest tail of the previous body that starts at a sentence start (else
    a clause start, else a word start), counts at most ``overlap`` tokens, and keeps the sent
    text within ``limit``.
    """
    start, end = body.start, body.end
    k, s = body.at_start
    back = min(k, overlap + 1)
    if not back:
        return start, body.tokens
    lo = max(prev.start, s - len(doc.decode_bytes(doc.tokens[k - back : k])))
    data = doc.data
    for patterns in _OVERLAP_STARTS:
        starts = [prev.start] if lo <= prev.start else []
        for pattern in patterns:
            starts += [m.end() for m in pattern.finditer(data, max(prev.start, lo - 16), start)]
        for b in sorted(set(starts)):
            while b < start and data[b] in _WS_BYTES:
                b += 1
            if b < lo or b >= start or doc.encode_len(b, start) > overlap:
                continue
            tokens, _ = doc.count(b, end, body.at_start, body.at_end)
            if tokens <= limit:
                return b, tokens
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
