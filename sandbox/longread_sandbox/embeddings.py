"""The OpenAI Embeddings wire format (``POST /v1/embeddings``) and the sandbox's vectors.

Request rules follow OpenAI's API reference for "Create embeddings"
(https://platform.openai.com/docs/api-reference/embeddings/create, cited below as [ref]) and
its embeddings guide (https://platform.openai.com/docs/guides/embeddings, cited as [guide]);
the official ``openai`` SDK's docstring for ``embeddings.create`` states the same limits.
Error bodies have the shape the chat endpoint sends (``openai_dialect``). OpenAI does not
document its embeddings error bodies: the two length limits use the wording users have logged
from the live API (cited there); the other refusals use the chat endpoint's wording, which may
differ from OpenAI's in detail.

The vectors are NOT a trained model. They are signed feature hashing: lowercase word
unigrams and bigrams (and whole numbers) for alphabetic text, character unigrams and bigrams
for CJK runs, each hashed with BLAKE2b keyed by the model name to one signed coordinate,
weighted by sublinear term frequency, then L2-normalized. So they are deterministic across
processes and machines, texts that share words are close, texts that share none are
orthogonal in expectation, and two models' vectors differ, which is enough to test a semantic
cache, a vector store or a dimension check. They know nothing of synonyms: a paraphrase that
shares no words with the original scores like an unrelated text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
import sys
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .protocol import ApiError
from .tokens import Tokenizer

# Native output sizes [guide] ("By default, the length of the embedding vector is 1536 for
# text-embedding-3-small or 3072 for text-embedding-3-large"); ada-002's is 1536 [guide, models
# table].
MODELS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
# ``dimensions``: "Only supported in text-embedding-3 and later models." [ref]
SHORTENABLE = frozenset({"text-embedding-3-small", "text-embedding-3-large"})
# "any array must be 2048 dimensions or less" [ref]: at most 2048 inputs per request (inputs,
# not tokens: Microsoft corrected its Azure OpenAI docs to say so, MicrosoftDocs/azure-docs
# pull 124129). A single token array is one input, limited by MAX_INPUT_TOKENS instead.
MAX_INPUTS = 2048
# "The input must not exceed the max input tokens for the model (8192 tokens for all
# embedding models)" [ref]; max input 8192 tokens per model [guide, models table].
MAX_INPUT_TOKENS = 8192
# "all embedding models enforce a maximum of 300,000 tokens summed across all inputs in a
# single request" [ref].
MAX_REQUEST_TOKENS = 300_000
# The request body's fields [ref]: model, input (required), encoding_format, dimensions, user.
FIELDS = ("model", "input", "encoding_format", "dimensions", "user")
# "Can be either float or base64." [ref]; float is the default [ref].
ENCODINGS = ("float", "base64")

_INVALID = "invalid_request_error"
_CJK = (
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf"  # CJK Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
# A number stays one token ("2024", "3.14", "1,000"); other tokens are runs of letters and
# digits ("q3" stays whole, so "revenue in q3" and "revenue in q4" differ).
_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W_]+")


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A checked embeddings request: each input as text (token ids decoded), billed tokens."""

    model: str
    texts: list[str]
    prompt_tokens: int
    dimensions: int
    base64: bool


def parse_embeddings(body: object, tokenizer: Tokenizer) -> EmbeddingRequest:
    """Check ``body`` as OpenAI does; raises ``ApiError`` (400, or 404 for an unknown model)."""
    if not isinstance(body, dict):
        raise ApiError(400, _INVALID, "Invalid body: expected a JSON object.")
    for key in body:
        if key not in FIELDS:
            raise ApiError(
                400, _INVALID, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter"
            )
    model = body.get("model")
    if model is None or model == "":  # model is required [ref]
        raise ApiError(400, _INVALID, "you must provide a model parameter")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    raw = body.get("input")
    if raw is None:  # input is required [ref]
        raise ApiError(
            400,
            _INVALID,
            "Missing required parameter: 'input'.",
            param="input",
            code="missing_required_parameter",
        )
    inputs = _inputs(raw)
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ENCODINGS:
        raise ApiError(
            400,
            _INVALID,
            f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise _invalid_type("dimensions", "an integer", dimensions)
    user = body.get("user")
    if user is not None and not isinstance(user, str):  # user: a string [ref]
        raise _invalid_type("user", "a string", user)
    native = MODELS.get(model)
    if native is None:
        # OpenAI's answer for a model that does not exist (the chat endpoint's 404 fault too).
        raise ApiError(
            404,
            _INVALID,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    size = native if dimensions is None else _dimensions(model, dimensions, native)
    # Tokens are counted with the model's own encoding [guide: "count tokens ... with tiktoken",
    # cl100k_base for the embedding models], as tokens.py does for chat.
    encoder = tokenizer.for_model(model)
    texts: list[str] = []
    total = 0
    # A single token array is the input itself; in an array of inputs, each has its index.
    nested = isinstance(raw, list) and not _is_token(raw[0])
    for index, item in enumerate(inputs):
        where = f"input[{index}]" if nested else "input"
        if isinstance(item, str):
            count = encoder.count(item)
            text = item
        else:
            count = len(item)
            text = _decode(encoder, item, where)
        if count > MAX_INPUT_TOKENS:
            # OpenAI's current wording, as users have logged it (type invalid_request_error,
            # code null; e.g. github.com/neo4j-labs/agent-memory/issues/104); ``param`` names
            # the input here, where OpenAI sends null, so a test can tell which one was long.
            raise ApiError(
                400,
                _INVALID,
                f"Invalid '{where}': maximum context length is {MAX_INPUT_TOKENS} tokens.",
                param=where,
            )
        total += count
        texts.append(text)
    if total > MAX_REQUEST_TOKENS:
        # The body OpenAI sends, as users have logged it verbatim (its own error type, param
        # null; e.g. github.com/spiceai/spiceai/issues/6142, OpenDataBox/CrackSQL/pull/27).
        raise ApiError(
            400,
            "max_tokens_per_request",
            f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
            code="max_tokens_per_request",
        )
    return EmbeddingRequest(model, texts, total, size, fmt == "base64")


def render_embeddings(request: EmbeddingRequest) -> bytes:
    """The response body [ref, "The embedding object" / create response]."""
    data: list[dict[str, Any]] = []
    for index, text in enumerate(request.texts):
        vector = embed(text, request.model, request.dimensions)
        value: list[float] | str = _base64(vector) if request.base64 else vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": value})
    body = {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": request.prompt_tokens, "total_tokens": request.prompt_tokens},
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


# -- vectors ---------------------------------------------------------------------------------


def embed(text: str, model: str, dimensions: int | None = None) -> array[float]:
    """The unit-length float32 vector of ``text`` (see the module docstring).

    A shortened vector is the native one cut to ``dimensions`` and renormalized, as OpenAI
    describes for text-embedding-3 [guide: "Using larger embeddings ... shortening embeddings";
    the API's ``dimensions`` does the same as truncating and normalizing].
    """
    native = MODELS[model]
    size = native if dimensions is None else dimensions
    counts = Counter(features(text))
    vector = [0.0] * native
    for feature, tf in counts.items():
        index, sign = _slot(model, feature, native)
        vector[index] += sign * (1.0 + math.log(tf))  # sublinear tf
    del vector[size:]
    norm = math.sqrt(math.fsum(v * v for v in vector))
    if norm == 0.0:
        # Every feature of a short text landed past the cut (or cancelled out): fall back to
        # one coordinate the text picks, so the vector is still unit length and deterministic.
        index, sign = _slot(model, "\x00" + text, size)
        vector[index] = float(sign)
        norm = 1.0
    return array("f", [v / norm for v in vector])


def features(text: str) -> Iterator[str]:
    """Hashing features: ``w:`` words and numbers, ``b:`` word bigrams (Latin and other
    alphabetic scripts), ``c:``/``d:`` character unigrams/bigrams of CJK runs; ``p:``
    characters when a text has none of those (punctuation, whitespace)."""
    found = False
    previous: str | None = None
    start = 0
    for run in [*_CJK_RUN.finditer(text), None]:
        end = len(text) if run is None else run.start()
        for match in _WORD.finditer(text, start, end):
            word = match.group().casefold()
            found = True
            yield "w:" + word
            if previous is not None:
                yield "b:" + previous + " " + word
            previous = word
        if run is None:
            break
        previous = None  # a CJK run breaks the word sequence
        chars = run.group()
        found = True
        for i, char in enumerate(chars):
            yield "c:" + char
            if i:
                yield "d:" + chars[i - 1 : i + 1]
        start = run.end()
    if not found:
        for char in text:
            yield "p:" + char


@functools.lru_cache(maxsize=1 << 16)
def _slot(model: str, feature: str, size: int) -> tuple[int, int]:
    """(coordinate, sign) of a feature: BLAKE2b keyed by the model, never ``hash()`` (which is
    salted per process)."""
    digest = hashlib.blake2b(
        feature.encode("utf-8", "surrogatepass"), digest_size=8, key=model.encode()[:64]
    ).digest()
    value = int.from_bytes(digest, "little")
    return (value >> 1) % size, 1 if value & 1 else -1


def _base64(vector: array[float]) -> str:
    """Little-endian float32 bytes, base64 (what the SDK's base64 decoding expects)."""
    if sys.byteorder != "little":
        vector = array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")


# -- request checks --------------------------------------------------------------------------


def _inputs(raw: object) -> list[str | list[int]]:
    """``input`` as a list of texts and token-id lists [ref: "string or array of tokens ... an
    array of strings or array of token arrays"]."""
    if isinstance(raw, str):
        if not raw:
            raise _empty("input", "string")  # "cannot be an empty string" [ref]
        return [raw]
    if not isinstance(raw, list):
        raise _invalid_type("input", "a string or array", raw)
    if not raw:
        raise _empty("input", "array")
    if all(_is_token(v) for v in raw):
        return [list(raw)]  # one input as token ids
    if len(raw) > MAX_INPUTS:
        raise ApiError(
            400,
            _INVALID,
            f"Invalid 'input': array too long. Expected an array with maximum length "
            f"{MAX_INPUTS}, but got an array with length {len(raw)} instead.",
            param="input",
            code="array_above_max_length",
        )
    kind = str if isinstance(raw[0], str) else list
    out: list[str | list[int]] = []
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        if kind is str and isinstance(item, str):
            if not item:
                raise _empty(where, "string")
            out.append(item)
        elif kind is list and isinstance(item, list) and all(_is_token(v) for v in item):
            if not item:
                raise _empty(where, "array")
            out.append(item)
        else:
            expected = "a string" if kind is str else "an array of integers"
            raise _invalid_type(where, expected, item)
    return out


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode(encoder: Tokenizer, ids: Sequence[int], where: str) -> str:
    try:
        if any(i < 0 for i in ids):
            raise KeyError(min(ids))
        data = encoder.decode_bytes(ids)
    except (KeyError, OverflowError):
        raise ApiError(
            400,
            _INVALID,
            f"Invalid '{where}': contains a token id that is not in the model's vocabulary.",
            param=where,
            code="invalid_value",
        ) from None
    return data.decode("utf-8", "replace")


def _dimensions(model: str, value: int, native: int) -> int:
    if model not in SHORTENABLE:
        raise ApiError(
            400,
            _INVALID,
            f"This model does not support specifying dimensions: '{model}'.",
            param="dimensions",
            code="unsupported_parameter",
        )
    # 1..native: a vector can be shortened, never lengthened [guide].
    if value < 1:
        raise ApiError(
            400,
            _INVALID,
            "Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got "
            f"{value} instead.",
            param="dimensions",
            code="integer_below_min_value",
        )
    if value > native:
        raise ApiError(
            400,
            _INVALID,
            f"Invalid 'dimensions': integer above maximum value. Expected a value <= {native}, "
            f"but got {value} instead.",
            param="dimensions",
            code="integer_above_max_value",
        )
    return value


def _empty(param: str, what: str) -> ApiError:
    if what == "string":
        message = (
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, but got "
            "an empty string instead."
        )
        code = "empty_string"
    else:
        message = (
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead."
        )
        code = "empty_array"
    return ApiError(400, _INVALID, message, param=param, code=code)


def _invalid_type(param: str, expected: str, value: object) -> ApiError:
    """The chat endpoint's wording for a value of the wrong JSON type."""
    got = "null" if value is None else type(value).__name__
    return ApiError(
        400,
        _INVALID,
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )
