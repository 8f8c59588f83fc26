"""Shapes an answer into what a model would return: stop sequences, length limit, deltas.

Vendors stop generating at whichever comes first, a stop sequence or the output-token limit,
and report which one it was; gateways and their tests depend on that distinction (``length``
means "raise max_tokens or refine", ``stop`` means done). Streaming deltas are cut on token
boundaries so ``tokens_per_s`` pacing is per token, and decoded incrementally so a multi-byte
character split across tokens never shows up as a replacement character.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .tokens import Tokenizer

FinishKind = Literal["end", "length", "stop_sequence"]


@dataclass(frozen=True, slots=True)
class Completion:
    """The generated text, its token ids, and why generation ended."""

    text: str
    token_ids: Sequence[int]
    finish: FinishKind
    stop_sequence: str | None = None

    @property
    def tokens(self) -> int:
        return len(self.token_ids)

    def pieces(self, tokenizer: Tokenizer, tokens_per_piece: int) -> list[tuple[str, int]]:
        """Stream deltas as ``(text, token_count)``; the texts concatenate to ``self.text``.

        A piece's text may be empty when its tokens end inside a character; senders skip
        those but still count the tokens for pacing.
        """
        step = max(1, tokens_per_piece)
        decoder = codecs.getincrementaldecoder("utf-8")("ignore")
        ids = self.token_ids
        out: list[tuple[str, int]] = []
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            out.append((decoder.decode(tokenizer.decode_bytes(chunk)), len(chunk)))
        tail = decoder.decode(b"", final=True)
        if tail and out:
            text, count = out[-1]
            out[-1] = (text + tail, count)
        return out


def shape_completion(
    answer: str, *, max_tokens: int, stop: Sequence[str], tokenizer: Tokenizer
) -> Completion:
    """Cut ``answer`` at the earliest stop sequence, then at ``max_tokens`` tokens."""
    finish: FinishKind = "end"
    matched: str | None = None
    cut = -1
    for sequence in stop:
        if sequence:
            at = answer.find(sequence)
            if at != -1 and (cut == -1 or at < cut):
                cut, matched = at, sequence
    if matched is not None:
        answer = answer[:cut]
        finish = "stop_sequence"
    ids: Sequence[int] = tokenizer.encode(answer)
    if len(ids) > max_tokens:
        ids = ids[:max_tokens]
        answer = tokenizer.decode_bytes(ids).decode("utf-8", "ignore")
        finish, matched = "length", None
    return Completion(answer, ids, finish, matched)
