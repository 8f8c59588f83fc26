"""The prompts of each strategy step. Pure text; the planner counts their tokens.

The instruction always comes last, after a ``Question:`` marker, so answers stay on the
question even when the document is long; everything before the document is identical across
the map calls of one job so vendor prompt caching can reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence

from longread_server.domain import Message

DEFAULT_SYSTEM = (
    "You analyse documents. Answer only from the text you are given, precisely and concisely."
)

_SINGLE = "<document>\n{document}\n</document>\n\nQuestion: {instruction}"
_MAP = (
    "This is part {part} of {parts} of a document. Extract what is relevant to the question; "
    "if nothing is, say so in one sentence.\n\n"
    "<document_part>\n{document}\n</document_part>\n\nQuestion: {instruction}"
)
_REDUCE = (
    "These are notes taken from {parts} parts of a document, in order. Combine them into one "
    "answer; drop notes that found nothing relevant.\n\n{notes}\n\nQuestion: {instruction}"
)
_NOTE = '<notes part="{part}">\n{text}\n</notes>'


def system_prompt(custom: str) -> str:
    return custom or DEFAULT_SYSTEM


def single(document: str, instruction: str, history: Sequence[Message] = ()) -> list[Message]:
    return [*history, Message("user", _SINGLE.format(document=document, instruction=instruction))]


def map_step(document: str, instruction: str, part: int, parts: int) -> list[Message]:
    text = _MAP.format(document=document, instruction=instruction, part=part, parts=parts)
    return [Message("user", text)]


def reduce_step(
    notes: Sequence[str], instruction: str, history: Sequence[Message] = (), first_part: int = 1
) -> list[Message]:
    joined = "\n\n".join(
        _NOTE.format(part=first_part + i, text=n.strip()) for i, n in enumerate(notes)
    )
    text = _REDUCE.format(parts=len(notes), notes=joined, instruction=instruction)
    return [*history, Message("user", text)]


def overhead(instruction: str, system: str, history: Sequence[Message] = ()) -> str:
    """The text of a step's prompt minus the document, for counting reserved tokens."""
    parts = [system, *(m.content for m in history)]
    parts.append(_MAP.format(document="", instruction=instruction, part=9999, parts=9999))
    return "\n".join(parts)
