"""The fuzz targets in the normal test run: every corpus input replayed, then a bounded number of
generated inputs per target (``make fuzz`` runs the same targets coverage-guided, for longer).

Generated inputs are structured (SSE lines, vendor events with the parsers' field names, payloads
from ``tests/unit/vendors/payloads.py``, documents from pieces that stress the chunker), corpus
inputs with bytes spliced in, and plain random bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import chunker
from tests.fuzz.targets import TARGETS, Target, corpus
from tests.unit.vendors.payloads import anthropic_payloads, json_objects, names, openai_payloads

CASES = [(name, path) for name in TARGETS for path in corpus(name)]


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_corpus_input_keeps_every_guarantee(name: str, path: Path) -> None:
    TARGETS[name](path.read_bytes())


def test_every_target_has_a_corpus() -> None:
    assert all(corpus(name) for name in TARGETS)


# Bytes worth splicing in: line ends, field names, a BOM, multi-byte and invalid UTF-8, JSON
# punctuation.
SPLICES = [
    b"\n", b"\r", b"\r\n", b"\n\n", b"data: ", b"data:", b"event: error\n", b": ping\n", b"id: 1\n",
    b"retry: 9\n", b"[DONE]", b"\xef\xbb\xbf", b"\xe2\x80\xa8", b"\xe4\xb8\x96", b"\xe4\xb8",
    b"\xff", b"\x00", b"\x0c", b"{", b"}", b"[", b"]", b'"', b",", b":", b"null", b"0", b"-1",
    b"\xed\xa0\x80", b"\xcc\x81",
]  # fmt: skip


@st.composite
def spliced(draw: st.DrawFn, name: str) -> bytes:
    """A corpus input with a few byte ranges replaced."""
    data = draw(st.sampled_from(corpus(name))).read_bytes()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        j = min(len(data), i + draw(st.integers(0, 8)))
        data = data[:i] + draw(st.sampled_from(SPLICES) | st.binary(max_size=4)) + data[j:]
    return data


# Field names and values the parsers look at, so that generated JSON reaches their branches.
OPENAI_WORDS = [
    "id", "model", "choices", "index", "delta", "content", "refusal", "finish_reason", "usage",
    "prompt_tokens", "completion_tokens", "prompt_tokens_details", "cached_tokens",
    "cache_write_tokens", "prompt_cache_hit_tokens", "message", "error", "type", "code",
    "request_id", "details", "error_code", "stop", "length", "insufficient_quota", "503",
]  # fmt: skip
ANTHROPIC_WORDS = [
    "type", "message", "id", "model", "usage", "input_tokens", "output_tokens",
    "cache_creation_input_tokens", "cache_read_input_tokens", "delta", "text", "text_delta",
    "stop_reason", "content", "error", "message_start", "content_block_delta", "message_delta",
    "message_stop", "ping", "end_turn", "refusal", "overloaded_error", "details", "error_code",
]  # fmt: skip


def vendor_json(words: list[str]) -> st.SearchStrategy[object]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**40), 2**40)
        | st.floats(allow_nan=False)
        | st.sampled_from(words)
        | st.text(max_size=6)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(words), inner, max_size=5)
        ),
        max_leaves=16,
    )


def sse_stream(words: list[str]) -> st.SearchStrategy[bytes]:
    event = st.builds(
        lambda name, value: (
            (f"event: {name}\n" if name else "")
            + "data: "
            + json.dumps(value, ensure_ascii=False)
            + "\n\n"
        ),
        st.sampled_from(["", "", "message", "error", *words]),
        vendor_json(words),
    )
    done = st.sampled_from(["data: [DONE]\n\n", ": keep-alive\n\n", "data: \n\n", "data: [DONE"])
    return st.lists(event | done, max_size=8).map(lambda es: "".join(es).encode())


def responses(name: str, words: list[str]) -> st.SearchStrategy[bytes]:
    body = vendor_json(words).map(lambda v: json.dumps(v).encode())
    return sse_stream(words) | body | spliced(name) | st.binary(max_size=64)


sse_pieces = st.lists(st.sampled_from(SPLICES) | st.binary(max_size=3), max_size=40).map(b"".join)

# Pieces of documents: words and sentence ends, every line end and page break, combining marks,
# joiner emoji, CJK and its punctuation, right-to-left scripts and marks, special-token text.
DOC_PIECES = [
    "the", " cat", "Sat", "123", "'s", ".", "!", "?", ",", ";", ":", "...", '."', " ", "  ", "\t",
    "\n", "\n\n", "\r\n", "\r", "\x0c", "\x0b", "\x85", "\u2028", "\u2029", "\u00a0", "\u3000",
    "# ", "## ", "====", "e\u0301", "a\u0308\u0304", "\u0e01\u0e32", "\U0001f469\u200d\U0001f4bb",
    "\U0001f44d\U0001f3fd", "\u2764\ufe0f", "\U0001f1eb\U0001f1f7", "\u4e16\u754c", "\u3002",
    "\uff0c", "\u3001", "\uff01", "\u300c", "\u300d", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631",
    "\u061f", "\u200f", "\u202e", "\u202c", "<|endoftext|>", "\U0002a6d6",
]  # fmt: skip
documents = st.lists(st.sampled_from(DOC_PIECES), max_size=150).map("".join) | st.text(max_size=200)
chunker_inputs = (
    st.builds(
        lambda text, limit, overlap: chunker.encode(text, limit, overlap % limit),
        documents,
        st.integers(1, 128),
        st.integers(0, 127),
    )
    | spliced("chunker")
    | st.binary(max_size=200)
)

CANONICAL_WORDS = [
    "model", "messages", "role", "content", "type", "text", "tool_calls", "function", "arguments",
    "tools", "functions", "parameters", "input_schema", "required", "properties", "stop",
    "stop_sequences", "system", "tool_choice", "auto", "none", "max_tokens",
    "max_completion_tokens", "response_format", "json_schema", "schema", "logit_bias",
    "temperature", "thinking", "disabled", "cache_control", "tool_result", "tool_use", "input",
    "is_error", "parallel_tool_calls", "disable_parallel_tool_use", "name", "strict", "n",
]  # fmt: skip
canonical_inputs = (
    (openai_payloads | anthropic_payloads | json_objects).map(lambda p: json.dumps(p).encode())
    | st.dictionaries(st.sampled_from(CANONICAL_WORDS) | names, vendor_json(CANONICAL_WORDS)).map(
        lambda p: json.dumps(p).encode()
    )
    | spliced("canonical")
)

# Examples per target: a few thousand in all, in well under half a minute on one core.
GENERATED: dict[str, tuple[int, st.SearchStrategy[bytes]]] = {
    "sse": (2500, sse_pieces | spliced("sse") | st.binary(max_size=64)),
    "openai": (1000, responses("openai", OPENAI_WORDS)),
    "anthropic": (800, responses("anthropic", ANTHROPIC_WORDS)),
    "chunker": (800, chunker_inputs),
    "canonical": (900, canonical_inputs),
}


def _generated(name: str) -> None:
    examples, inputs = GENERATED[name]
    target: Target = TARGETS[name]

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(inputs)
    def run(data: bytes) -> None:
        target(data)

    run()


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_inputs_keep_every_guarantee(name: str) -> None:
    _generated(name)


def test_every_target_is_generated() -> None:
    assert set(GENERATED) == set(TARGETS)
