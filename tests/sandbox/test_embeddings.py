"""``POST /v1/embeddings``: the official SDK's success paths, OpenAI's documented limits on the
wire, the vectors' determinism and similarity ordering, and the chat endpoint's auth, faults,
latency and rate-limit headers applied to embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx
import openai
import pytest
from longread_sandbox import Sandbox, SandboxConfig

from .documents import ENCODING, tokens

SMALL = "text-embedding-3-small"
LARGE = "text-embedding-3-large"
ADA = "text-embedding-ada-002"
OPENAI_HEADERS = {"authorization": "Bearer sk-test"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
PATH = "/v1/embeddings"
A_TOKEN = ENCODING.encode("hello")[0]
# (text, paraphrase, unrelated): the paraphrase shares words with the text, the unrelated
# text shares none (the vectors are feature hashing, not a trained model).
TRIPLES = [
    (
        "How do I reset my password?",
        "How can I reset my password?",
        "What is the capital of France?",
    ),
    (
        "The cat sat on the mat.",
        "A cat was sitting on the mat.",
        "Quarterly revenue grew by 12 percent.",
    ),
    (
        "What is the weather like in Paris today?",
        "Paris weather today",
        "How do I bake sourdough bread?",
    ),
    ("東京の天気は？", "東京の天気を教えて", "大阪の人口は？"),
]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def norm(a: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in a))


def from_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def post(http: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await http.post(PATH, json=body, headers={**OPENAI_HEADERS, **headers})


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}  # the chat errors' shape
    assert response.headers["x-request-id"].startswith("req_")
    return error


# -- success paths through the official SDK ---------------------------------------------------


async def test_float_embeddings_usage_headers_and_stats(
    oai: openai.AsyncOpenAI, sandbox: Sandbox
) -> None:
    texts = ["The Eiffel Tower is in Paris.", "Bonjour tout le monde"]
    raw = await oai.embeddings.with_raw_response.create(
        model=SMALL, input=texts, encoding_format="float", extra_headers={"traceparent": "00-x"}
    )
    result = raw.parse()
    assert result.object == "list" and result.model == SMALL
    assert [d.index for d in result.data] == [0, 1]
    assert all(d.object == "embedding" and len(d.embedding) == 1536 for d in result.data)
    assert all(abs(norm(d.embedding) - 1) < 1e-6 for d in result.data)
    expected = tokens(texts[0]) + tokens(texts[1])  # cl100k_base, as OpenAI counts these models
    assert result.usage.prompt_tokens == result.usage.total_tokens == expected
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 10_000_000 - expected
    assert sandbox.stats.by_endpoint[PATH] == 1 and sandbox.stats.requests == 1
    assert sandbox.stats.by_model[SMALL] == 1
    assert sandbox.stats.by_status[200] == 1
    assert sandbox.stats.prompt_tokens == expected
    assert sandbox.trace_headers[-1] == {"traceparent": "00-x"}


async def test_sdk_default_base64_decodes_to_the_float_answer(
    oai: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    text = "Deterministic vectors for a semantic cache."
    as_float = await oai.embeddings.create(model=LARGE, input=text, encoding_format="float")
    as_default = await oai.embeddings.create(model=LARGE, input=text)  # the SDK asks base64
    assert len(as_float.data[0].embedding) == 3072
    assert as_default.data[0].embedding == as_float.data[0].embedding
    # On the wire: float is the server's default, base64 a string of little-endian float32.
    plain = await post(http, {"model": LARGE, "input": text})
    packed = await post(http, {"model": LARGE, "input": text, "encoding_format": "base64"})
    vector = plain.json()["data"][0]["embedding"]
    encoded = packed.json()["data"][0]["embedding"]
    assert isinstance(vector, list) and isinstance(encoded, str)
    assert from_base64(encoded) == vector == as_float.data[0].embedding


async def test_dimensions_truncate_and_renormalize(oai: openai.AsyncOpenAI) -> None:
    text = "Shortened embeddings keep the leading coordinates."
    full = (await oai.embeddings.create(model=SMALL, input=text)).data[0].embedding
    short = (await oai.embeddings.create(model=SMALL, input=text, dimensions=256)).data[0]
    assert len(short.embedding) == 256
    assert abs(norm(short.embedding) - 1) < 1e-6
    head = full[:256]
    expected = [v / norm(head) for v in head]
    assert max(abs(a - b) for a, b in zip(short.embedding, expected, strict=True)) < 1e-6
    native = await oai.embeddings.create(model=LARGE, input=text, dimensions=3072)
    assert len(native.data[0].embedding) == 3072


async def test_token_id_inputs_embed_like_their_text(oai: openai.AsyncOpenAI) -> None:
    first, second = "hello world", "semantic caches compare vectors"
    ids = [ENCODING.encode(first), ENCODING.encode(second)]
    by_text = await oai.embeddings.create(model=SMALL, input=[first, second])
    one_array = await oai.embeddings.create(model=SMALL, input=ids[0])
    arrays = await oai.embeddings.create(model=SMALL, input=ids)
    assert one_array.data[0].embedding == by_text.data[0].embedding
    assert [d.embedding for d in arrays.data] == [d.embedding for d in by_text.data]
    assert one_array.usage.prompt_tokens == len(ids[0])
    assert arrays.usage.prompt_tokens == len(ids[0]) + len(ids[1])


async def test_paraphrases_score_above_unrelated_texts(oai: openai.AsyncOpenAI) -> None:
    for text, paraphrase, unrelated in TRIPLES:
        result = await oai.embeddings.create(model=SMALL, input=[text, paraphrase, unrelated])
        base, close, far = (d.embedding for d in result.data)
        assert cosine(base, close) > 0.3
        assert cosine(base, close) > cosine(base, far) + 0.25, text
    same = await oai.embeddings.create(model=SMALL, input=["Same text", "same  TEXT"])
    assert cosine(same.data[0].embedding, same.data[1].embedding) > 0.999  # case, spacing
    q3 = await oai.embeddings.create(model=SMALL, input=["revenue in Q3", "revenue in Q4"])
    assert cosine(q3.data[0].embedding, q3.data[1].embedding) < 0.9  # numbers stay whole


async def test_models_embed_differently(oai: openai.AsyncOpenAI) -> None:
    text = "one text, two models"
    small = (await oai.embeddings.create(model=SMALL, input=text)).data[0].embedding
    ada = (await oai.embeddings.create(model=ADA, input=text)).data[0].embedding
    assert len(small) == len(ada) == 1536
    assert abs(cosine(small, ada)) < 0.5


async def test_vectors_are_the_same_in_another_emulator_and_another_process(
    oai: openai.AsyncOpenAI,
) -> None:
    text = "Determinism across processes: never Python's salted hash()."
    here = (await oai.embeddings.create(model=SMALL, input=text)).data[0].embedding
    async with (
        Sandbox(SandboxConfig()) as other,
        openai.AsyncOpenAI(
            base_url=other.openai_base_url, api_key="sk-test", max_retries=0
        ) as client,
    ):
        there = (await client.embeddings.create(model=SMALL, input=text)).data[0].embedding
    assert there == here
    code = (
        "import json, sys; from longread_sandbox.embeddings import embed; "
        f"print(json.dumps(embed(sys.argv[1], {SMALL!r}).tolist()))"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        text,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "12345"},  # a differently salted hash()
    )
    out, _ = await child.communicate()
    assert child.returncode == 0
    assert json.loads(out) == here


# -- OpenAI's documented rules on the wire -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": SMALL}, "input", "missing_required_parameter"),
        ({"model": SMALL, "input": ""}, "input", "empty_string"),
        ({"model": SMALL, "input": []}, "input", "empty_array"),
        ({"model": SMALL, "input": ["ok", ""]}, "input[1]", "empty_string"),
        ({"model": SMALL, "input": [[A_TOKEN], []]}, "input[1]", "empty_array"),
        ({"model": SMALL, "input": 5}, "input", "invalid_type"),
        ({"model": SMALL, "input": ["ok", 5]}, "input[1]", "invalid_type"),
        ({"model": SMALL, "input": [[A_TOKEN], "ok"]}, "input[1]", "invalid_type"),
        ({"model": SMALL, "input": [True]}, "input[0]", "invalid_type"),
        ({"model": SMALL, "input": [-1]}, "input", "invalid_value"),
        ({"model": SMALL, "input": [[A_TOKEN], [100_277]]}, "input[1]", "invalid_value"),
        ({"model": SMALL, "input": "x", "encoding_format": "hex"}, "encoding_format", None),
        ({"model": SMALL, "input": "x", "dimensions": 0}, "dimensions", None),
        ({"model": SMALL, "input": "x", "dimensions": 1537}, "dimensions", None),
        ({"model": LARGE, "input": "x", "dimensions": 3073}, "dimensions", None),
        ({"model": SMALL, "input": "x", "dimensions": "256"}, "dimensions", "invalid_type"),
        ({"model": ADA, "input": "x", "dimensions": 256}, "dimensions", None),
        ({"model": SMALL, "input": "x", "user": 7}, "user", "invalid_type"),
        ({"model": SMALL, "input": "x", "temperature": 0}, "temperature", "unknown_parameter"),
        ({"model": 5, "input": "x"}, "model", "invalid_type"),
    ],
)
async def test_invalid_requests_are_refused_like_chat_errors(
    http: httpx.AsyncClient, sandbox: Sandbox, body: dict[str, Any], param: str, code: str | None
) -> None:
    response = await post(http, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert error["message"]
    assert sandbox.stats.by_status == {400: 1}
    assert not sandbox.stats.by_model  # refused before it counts as a model call


async def test_missing_model_and_unknown_model(http: httpx.AsyncClient) -> None:
    missing = await post(http, {"input": "x"})
    assert missing.status_code == 400
    assert error_of(missing)["message"] == "you must provide a model parameter"  # as chat
    unknown = await post(http, {"model": "text-embedding-4-huge", "input": "x"})
    assert unknown.status_code == 404
    error = error_of(unknown)
    assert error == {
        "message": "The model `text-embedding-4-huge` does not exist or you do not have access "
        "to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    bad_json = await http.post(PATH, content=b"{nope", headers=OPENAI_HEADERS)
    assert bad_json.status_code == 400 and error_of(bad_json)["type"] == "invalid_request_error"


async def test_the_sdk_raises_not_found_for_an_unknown_model(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.embeddings.create(model="gpt-4o-mini", input="chat models do not embed")
    assert caught.value.code == "model_not_found"


async def test_at_most_2048_inputs(http: httpx.AsyncClient) -> None:
    small = {"model": SMALL, "dimensions": 1, "encoding_format": "base64"}
    full = await post(http, {**small, "input": ["x"] * 2048})
    assert full.status_code == 200
    assert len(full.json()["data"]) == 2048
    assert full.json()["usage"]["prompt_tokens"] == 2048
    over = await post(http, {**small, "input": ["x"] * 2049})
    assert over.status_code == 400
    error = error_of(over)
    assert error["param"] == "input" and error["code"] == "array_above_max_length"
    assert "2048" in error["message"] and "2049" in error["message"]


async def test_at_most_8192_tokens_per_input(http: httpx.AsyncClient) -> None:
    small = {"model": SMALL, "dimensions": 8, "encoding_format": "base64"}
    ok = await post(http, {**small, "input": [A_TOKEN] * 8192})
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 8192
    over = await post(http, {**small, "input": [A_TOKEN] * 8193})
    assert over.status_code == 400
    error = error_of(over)
    assert error["type"] == "invalid_request_error" and error["param"] == "input"
    assert error["message"] == "Invalid 'input': maximum context length is 8192 tokens."
    text = "hello world " * 5000  # counted with the model's own encoding
    assert tokens(text) > 8192
    in_array = await post(http, {**small, "input": ["short", text]})
    assert in_array.status_code == 400
    assert error_of(in_array)["param"] == "input[1]"


async def test_at_most_300k_tokens_per_request(http: httpx.AsyncClient, sandbox: Sandbox) -> None:
    small = {"model": SMALL, "dimensions": 8, "encoding_format": "base64"}
    ok = await post(http, {**small, "input": [[A_TOKEN] * 8192] * 36})  # 294,912 tokens
    assert ok.status_code == 200 and ok.json()["usage"]["total_tokens"] == 36 * 8192
    over = await post(http, {**small, "input": [[A_TOKEN] * 8192] * 37})  # 303,104 tokens
    assert over.status_code == 400
    error = error_of(over)
    assert error == {  # OpenAI's own body for this limit: its own type, no param
        "message": "Requested 303104 tokens, max 300000 tokens per request",
        "type": "max_tokens_per_request",
        "param": None,
        "code": "max_tokens_per_request",
    }
    assert sandbox.stats.prompt_tokens == 36 * 8192  # the refused request is not billed


# -- auth, faults, rate limits, latency, Anthropic ---------------------------------------------


async def test_auth_is_checked_like_chat(http: httpx.AsyncClient) -> None:
    no_key = await http.post(PATH, json={"model": SMALL, "input": "x"})
    assert no_key.status_code == 401
    assert error_of(no_key)["type"] == "invalid_request_error"
    async with Sandbox(SandboxConfig(api_key="sk-right-key-123")) as sb:
        async with openai.AsyncOpenAI(
            base_url=sb.openai_base_url, api_key="sk-wrong-key-456", max_retries=0
        ) as wrong:
            with pytest.raises(openai.AuthenticationError) as caught:
                await wrong.embeddings.create(model=SMALL, input="x")
        assert caught.value.code == "invalid_api_key"
        assert "wrong-key" not in caught.value.message
        assert sb.stats.by_status == {401: 1} and not sb.stats.by_model


async def test_rate_limit_fault_sends_retry_after(
    http: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    limited = await post(http, {"model": SMALL, "input": "x"}, **{"x-sandbox-fault": "429"})
    assert limited.status_code == 429
    error = error_of(limited)
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["retry-after-ms"] == "10"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["x-ratelimit-remaining-tokens"] == "0"
    assert sandbox.stats.by_fault["429"] == 1


async def test_sdk_retries_a_scripted_429_then_succeeds(sandbox: Sandbox) -> None:
    sandbox.configure(script=["429", "503"])
    async with openai.AsyncOpenAI(
        base_url=sandbox.openai_base_url, api_key="sk-test", max_retries=2
    ) as client:
        result = await client.embeddings.create(model=SMALL, input="retried")
    assert len(result.data[0].embedding) == 1536
    assert sandbox.stats.by_endpoint[PATH] == 3  # the upstream calls a gateway would make
    assert dict(sandbox.stats.by_status) == {429: 1, 503: 1, 200: 1}
    assert dict(sandbox.stats.by_retry_count) == {0: 1, 1: 1, 2: 1}


async def test_rate_limit_headers_count_requests_and_tokens(http: httpx.AsyncClient) -> None:
    first = await post(http, {"model": SMALL, "input": "one two three"})
    second = await post(http, {"model": SMALL, "input": ["four five", "six"]})
    used = second.json()["usage"]["prompt_tokens"]
    assert int(first.headers["x-ratelimit-remaining-requests"]) == 9999
    assert int(second.headers["x-ratelimit-remaining-requests"]) == 9998
    before = int(first.headers["x-ratelimit-remaining-tokens"])
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == before - used


async def test_injected_faults_apply(http: httpx.AsyncClient, sandbox: Sandbox) -> None:
    marked = {"model": SMALL, "input": ["fine", "bad [[sandbox-fault:500*1]] input"]}
    failed = await post(http, marked)
    assert failed.status_code == 500 and error_of(failed)["type"] == "server_error"
    again = await post(http, marked)  # *1: only the first request with these inputs fails
    assert again.status_code == 200
    echoed = await post(
        http, {"model": SMALL, "input": "secret"}, **{"x-sandbox-fault": "echo_400"}
    )
    assert echoed.status_code == 400
    assert error_of(echoed)["param"] == "input" and "secret" in error_of(echoed)["message"]
    malformed = await post(http, {"model": SMALL, "input": "x"}, **{"x-sandbox-fault": "malformed"})
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    assert dict(sandbox.stats.by_fault) == {"500": 1, "echo_400": 1, "malformed": 1}
    bad_fault = await post(http, {"model": SMALL, "input": "x"}, **{"x-sandbox-fault": "nope"})
    assert bad_fault.status_code == 400


async def test_timeout_fault_hangs_until_the_client_gives_up(sandbox: Sandbox) -> None:
    async with openai.AsyncOpenAI(
        base_url=sandbox.openai_base_url, api_key="sk-test", max_retries=0, timeout=0.3
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.embeddings.create(
                model=SMALL, input="x", extra_headers={"x-sandbox-fault": "timeout"}
            )
    async with asyncio.timeout(5):  # the sandbox notices the disconnect; nothing leaks
        await sandbox.wait_idle()
    assert sandbox.stats.active == 0
    assert sandbox.stats.disconnects == 1


async def test_latency_knob_delays_the_answer(http: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await post(http, {"model": SMALL, "input": "x"}, **{"x-sandbox-latency-ms": "150"})
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.15


async def test_anthropic_has_no_embeddings(http: httpx.AsyncClient, sandbox: Sandbox) -> None:
    response = await http.post(PATH, json={"model": SMALL, "input": "x"}, headers=ANTHROPIC_HEADERS)
    assert response.status_code == 404
    body = response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "not_found_error", "message": "Not Found"}
    assert body["request_id"].startswith("req_")
    assert not sandbox.stats.by_model
    wrong_method = await http.get(PATH, headers=OPENAI_HEADERS)
    assert wrong_method.status_code == 404
    assert error_of(wrong_method)["message"] == "Invalid URL (GET /v1/embeddings)"
