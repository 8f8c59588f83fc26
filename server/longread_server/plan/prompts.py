"""The prompts of each strategy step. Pure text; the planner counts their tokens.

The instruction always comes after a ``Question:`` marker. In single-pass, reduce, refine and
select prompts it comes last, so answers stay on the question even when the document is long.
Map prompts are built for caching instead: the first message (the task and the question) is
identical across the map calls of a job, so vendor prompt caching can reuse the system prompt
plus that message (``MAP_CACHE_PREFIX``), and the second message is the chunk alone, with no
"part i of n": a map call depends only on its chunk, the question and the settings, so the
gateway's response cache can reuse it when an unrelated part of the document changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from longread_server.domain import Message

DEFAULT_SYSTEM = (
    "You analyse documents. Answer only from the text you are given, precisely and concisely."
)

_SINGLE = "<document>\n{document}\n</document>\n\nQuestion: {instruction}"
_MAP_TASK = (
    "You will be given an excerpt of a longer document. Extract what in it is relevant to the "
    "question; if nothing is, say so in one sentence.\n\nQuestion: {instruction}"
)
_MAP_PART = "<document_part>\n{document}\n</document_part>\n\nAnswer from this excerpt only."
# Messages of a map call that form the prefix shared by every map call of a job.
MAP_CACHE_PREFIX = 1
_REDUCE = (
    "These are notes taken from {parts} parts of a document, in order. Combine them into one "
    "answer; drop notes that found nothing relevant.\n\n{notes}\n\nQuestion: {instruction}"
)
_NOTE = '<notes part="{part}">\n{text}\n</notes>'


def system_prompt(custom: str) -> str:
    return custom or DEFAULT_SYSTEM


def single(document: str, instruction: str, history: Sequence[Message] = ()) -> list[Message]:
    return [*history, Message("user", _SINGLE.format(document=document, instruction=instruction))]


def map_step(document: str, instruction: str) -> list[Message]:
    """The shared task message (the cacheable prefix), then the chunk."""
    return [
        Message("user", _MAP_TASK.format(instruction=instruction)),
        Message("user", _MAP_PART.format(document=document)),
    ]


def document_cache_key(text: str) -> str:
    """Groups a document's calls for vendor prompt caching (OpenAI ``prompt_cache_key``)."""
    return "lr-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def reduce_step(
    notes: Sequence[str], instruction: str, history: Sequence[Message] = (), first_part: int = 1
) -> list[Message]:
    joined = "\n\n".join(
        _NOTE.format(part=first_part + i, text=n.strip()) for i, n in enumerate(notes)
    )
    text = _REDUCE.format(parts=len(notes), notes=joined, instruction=instruction)
    return [*history, Message("user", text)]


def overhead(instruction: str, system: str) -> str:
    """The longest step prompt minus the document and history, for counting reserved tokens
    (templates are filled with empty text; the refine template is the longest, the two map
    messages are counted with a line per message boundary to stay on the safe side)."""
    refine = _REFINE.format(document="", instruction=instruction, answer="")
    mapped = "\n\n\n\n".join(m.content for m in map_step("", instruction))
    return "\n".join([system, max(refine, mapped, key=len)])


_REFINE_FIRST = (
    "You will read a document part by part and keep an answer to the question up to date. "
    "This is the first part.\n\n<document_part>\n{document}\n</document_part>\n\n"
    "Question: {instruction}"
)
_REFINE = (
    "You are reading a document part by part. Your answer so far, from the earlier parts:\n\n"
    "<answer_so_far>\n{answer}\n</answer_so_far>\n\nThe next part:\n\n"
    "<document_part>\n{document}\n</document_part>\n\nRefine the answer with what this part "
    "adds; keep what still holds.\n\nQuestion: {instruction}"
)
_SELECT = (
    "These passages were selected from a longer document as the most relevant to the "
    "question; they are in document order and gaps are marked [...].\n\n"
    "<passages>\n{passages}\n</passages>\n\nQuestion: {instruction}"
)
PASSAGE_GAP = "\n[...]\n"


def refine_step(
    document: str, instruction: str, answer: str, history: Sequence[Message] = ()
) -> list[Message]:
    if not answer:
        text = _REFINE_FIRST.format(document=document, instruction=instruction)
    else:
        text = _REFINE.format(document=document, instruction=instruction, answer=answer.strip())
    return [*history, Message("user", text)]


def select_step(
    passages: Sequence[str], instruction: str, history: Sequence[Message] = ()
) -> list[Message]:
    text = _SELECT.format(passages=PASSAGE_GAP.join(passages), instruction=instruction)
    return [*history, Message("user", text)]
