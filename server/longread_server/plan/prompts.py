"""The prompts of each strategy step. Pure text; the planner counts their tokens.

The instruction always comes after a ``Question:`` marker, and last, so answers stay on the
question even when the document is long.

Single-pass and map prompts put the document first, in a message of its own, and the question
after it: vendor prompt caching matches prompts by their prefix, so system prompt + document
(``SINGLE_CACHE_PREFIX``, ``MAP_CACHE_PREFIX`` messages) is the same for every question asked
of one document, and a second question reads the document from the vendor's cache instead of
paying for it again. Both vendors ask for exactly this: static content first, variable content
last (https://docs.claude.com/en/docs/build-with-claude/prompt-caching,
https://platform.openai.com/docs/guides/prompt-caching). A map call's document
message is its chunk alone, with no "part i of n": a map call depends only on its chunk, the
question and the settings, so the gateway's response cache can reuse it when an unrelated part
of the document changes, and chunk boundaries do not depend on the question, so the vendor's
cache of each chunk serves every question. History sits between the document and the question
(the conversation is about the document; the document stays the shared prefix).

Reduce, refine and select prompts carry text that depends on the question (notes, the answer
so far, the passages chosen for it): nothing in them outlives the question, so they are not
arranged for caching.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from longread_server.domain import Message

DEFAULT_SYSTEM = (
    "You analyse documents. Answer only from the text you are given, precisely and concisely."
)

_DOCUMENT = "<document>\n{document}\n</document>"
_QUESTION = "Question: {instruction}"
_MAP_PART = "<document_part>\n{document}\n</document_part>"
_MAP_TASK = (
    "The text above is an excerpt of a longer document. Extract what in it is relevant to the "
    "question, from this excerpt only; if nothing is, say so in one sentence.\n\n"
    "Question: {instruction}"
)
# Leading messages that are the same for every question on one document (the document, or
# the chunk): where vendor prompt caching puts its breakpoint.
SINGLE_CACHE_PREFIX = 1
MAP_CACHE_PREFIX = 1
_REDUCE = (
    "These are notes taken from {parts} parts of a document, in order. Combine them into one "
    "answer; drop notes that found nothing relevant.\n\n{notes}\n\nQuestion: {instruction}"
)
_NOTE = '<notes part="{part}">\n{text}\n</notes>'


def system_prompt(custom: str) -> str:
    return custom or DEFAULT_SYSTEM


def single(document: str, instruction: str, history: Sequence[Message] = ()) -> list[Message]:
    """The document (the cacheable prefix), the conversation so far, then the question."""
    return [
        Message("user", _DOCUMENT.format(document=document)),
        *history,
        Message("user", _QUESTION.format(instruction=instruction)),
    ]


def map_step(document: str, instruction: str) -> list[Message]:
    """The chunk (the cacheable prefix), then the task and the question."""
    return [
        Message("user", _MAP_PART.format(document=document)),
        Message("user", _MAP_TASK.format(instruction=instruction)),
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
