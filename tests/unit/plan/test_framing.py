"""OpenAI's chat framing in the plan's estimate, against the cookbook's rule counted with
bpe-openai's own o200k_base."""

from __future__ import annotations

import bpe_openai
from longread_server.domain import Message
from longread_server.plan import prompts
from longread_server.plan.catalog import Catalog
from longread_server.plan.framing import openai_call_tokens, openai_framed
from longread_server.plan.planner import JobSpec, Strategy, plan_job
from longread_server.plan.tokenizers import get_tokenizer

_O200K = bpe_openai.get_encoding("o200k_base")
_CATALOG = Catalog.builtin()


def cookbook_count(messages: list[dict[str, str]]) -> int:
    """3 per message plus its values' tokens, 1 per name, 3 for the reply."""
    total = 3
    for m in messages:
        total += 3 + sum(len(_O200K.encode_ordinary(v)) for v in m.values())
        total += 1 if "name" in m else 0
    return total


def test_a_call_is_counted_as_openai_frames_it() -> None:
    system = "You analyse documents."
    messages = [
        Message("user", "港口九点关闭。"),
        Message("assistant", "Noted."),
        Message("user", "Why?"),
    ]
    expected = cookbook_count(
        [{"role": "system", "content": system}]
        + [{"role": m.role, "content": m.content} for m in messages]
    )
    assert openai_call_tokens(system, messages, get_tokenizer("gpt-4.1-mini")) == expected


def test_single_pass_estimate_is_the_framed_prompt() -> None:
    text = "The harbour closes at nine; ferries run hourly. " * 200
    question = "When does the harbour close?"
    spec = JobSpec(text=text, instruction=question, strategy=Strategy.SINGLE_PASS)
    gpt = _CATALOG.get("openai", "gpt-4.1-mini")
    assert gpt is not None and openai_framed(gpt)
    plan = plan_job(spec, gpt, get_tokenizer(gpt.tokenizer))
    sent = prompts.single(text, question)  # the document, then the question
    expected = cookbook_count(
        [{"role": "system", "content": prompts.DEFAULT_SYSTEM}]
        + [{"role": m.role, "content": m.content} for m in sent]
    )
    assert plan.estimated_input_tokens == expected


def test_models_without_a_published_framing_keep_the_reserve() -> None:
    claude = _CATALOG.get("anthropic", "claude-haiku-4-5")
    assert claude is not None and not openai_framed(claude)
    spec = JobSpec(text="Short text.", instruction="Why?", strategy=Strategy.SINGLE_PASS)
    plan = plan_job(spec, claude, get_tokenizer(claude.model))
    assert plan.estimated_input_tokens == plan.document_tokens + plan.overhead_tokens
