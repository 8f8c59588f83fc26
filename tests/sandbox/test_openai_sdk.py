"""The sandbox speaks OpenAI Chat Completions as the official ``openai`` SDK expects it."""

from __future__ import annotations

import asyncio

import openai
import pytest
from longread_sandbox import Sandbox, SandboxConfig
from openai.types.chat import ChatCompletionMessageParam

from .documents import (
    ANSWER,
    BEST_SENTENCE,
    O200K,
    PROMPT,
    long_document,
    o200k_tokens,
    openai_prompt_tokens,
)

MODEL = "gpt-4o-mini"


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


async def test_non_streaming_answer_usage_and_request_id(oai: openai.AsyncOpenAI) -> None:
    raw = await oai.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You answer from the text."},
            {"role": "user", "content": PROMPT},
        ],
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ANSWER
    assert BEST_SENTENCE in ANSWER
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == openai_prompt_tokens(
        [
            {"role": "system", "content": "You answer from the text."},
            {"role": "user", "content": PROMPT},
        ]
    )
    assert usage.completion_tokens == o200k_tokens(ANSWER)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert completion._request_id == raw.headers["x-request-id"]
    assert raw.headers["content-type"] == "application/json"


async def test_streaming_matches_non_streaming(oai: openai.AsyncOpenAI) -> None:
    whole = await oai.chat.completions.create(model=MODEL, messages=user(PROMPT))
    stream = await oai.chat.completions.create(
        model=MODEL, messages=user(PROMPT), stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    first, finish, last = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None and finish.choices[0].delta.role is None
    assert last.choices == [] and last.usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len(chunks) > 4  # the answer arrives in several deltas


async def test_stream_without_include_usage_has_no_usage_chunk(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model=MODEL, messages=user(PROMPT), stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_max_tokens_truncates_with_finish_reason_length(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model=MODEL, messages=user(PROMPT), max_completion_tokens=5
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    expected = O200K.decode(O200K.encode_ordinary(ANSWER)[:5])
    assert completion.choices[0].message.content == expected
    stream = await oai.chat.completions.create(
        model=MODEL,
        messages=user(PROMPT),
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_stop_sequence_cuts_the_answer(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model=MODEL, messages=user(PROMPT), stop=["1889", "never-there"]
    )
    content = completion.choices[0].message.content
    assert content == ANSWER[: ANSWER.index("1889")]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == o200k_tokens(
        content
    )


async def test_same_request_same_answer(oai: openai.AsyncOpenAI) -> None:
    first = await oai.chat.completions.create(model=MODEL, messages=user(PROMPT))
    second = await oai.chat.completions.create(model=MODEL, messages=user(PROMPT))
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage
    assert first.id != second.id


async def test_n_choices(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(model=MODEL, messages=user(PROMPT), n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2 * o200k_tokens(ANSWER)
    stream = await oai.chat.completions.create(model=MODEL, messages=user(PROMPT), n=2, stream=True)
    texts = ["", ""]
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [ANSWER, ANSWER]


@pytest.mark.parametrize(
    ("fault", "error_class", "status", "error_type"),
    [
        ("400", openai.BadRequestError, 400, "invalid_request_error"),
        ("401", openai.AuthenticationError, 401, "invalid_request_error"),
        ("403", openai.PermissionDeniedError, 403, "request_forbidden"),
        ("404", openai.NotFoundError, 404, "invalid_request_error"),
        ("409", openai.ConflictError, 409, "invalid_request_error"),
        ("422", openai.UnprocessableEntityError, 422, "invalid_request_error"),
        ("429", openai.RateLimitError, 429, "requests"),
        ("500", openai.InternalServerError, 500, "server_error"),
        ("503", openai.InternalServerError, 503, "service_unavailable_error"),
        ("529", openai.InternalServerError, 503, "service_unavailable_error"),
    ],
)
async def test_error_statuses_map_to_sdk_exceptions(
    oai: openai.AsyncOpenAI,
    fault: str,
    error_class: type[openai.APIStatusError],
    status: int,
    error_type: str,
) -> None:
    with pytest.raises(error_class) as caught:
        await oai.chat.completions.create(
            model=MODEL, messages=user(PROMPT), extra_headers={"x-sandbox-fault": fault}
        )
    error = caught.value
    assert error.status_code == status
    assert error.type == error_type
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert isinstance(error.body, dict) and set(error.body) == {"message", "type", "param", "code"}
    if status in (429, 503):
        assert error.response.headers["retry-after-ms"] == "10"
        assert error.response.headers["retry-after"] == "1"
    else:
        assert "retry-after" not in error.response.headers


@pytest.mark.parametrize("fault", ["429", "503", "529"])
async def test_sdk_retries_retryable_statuses(sandbox: Sandbox, fault: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=sandbox.openai_base_url, api_key="sk-test", max_retries=2
    ) as client:
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(
                model=MODEL, messages=user(PROMPT), extra_headers={"x-sandbox-fault": fault}
            )
    assert sandbox.stats.by_endpoint["/v1/chat/completions"] == 3
    assert dict(sandbox.stats.by_retry_count) == {0: 1, 1: 1, 2: 1}
    assert sandbox.stats.by_fault[fault] == 3


async def test_scripted_faults_then_success(sandbox: Sandbox) -> None:
    sandbox.configure(script=["503", "429"])
    async with openai.AsyncOpenAI(
        base_url=sandbox.openai_base_url, api_key="sk-test", max_retries=2
    ) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=user(PROMPT))
    assert completion.choices[0].message.content == ANSWER
    assert dict(sandbox.stats.by_status) == {503: 1, 429: 1, 200: 1}


async def test_midstream_error_raises_api_error(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model=MODEL,
        messages=user(PROMPT),
        stream=True,
        extra_headers={"x-sandbox-fault": "midstream_error"},
    )
    received = ""
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received += chunk.choices[0].delta.content or ""
    assert not isinstance(caught.value, openai.APIStatusError)
    assert caught.value.type == "server_error"
    assert received and ANSWER.startswith(received) and received != ANSWER


async def test_malformed_stream_line_fails_the_stream(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model=MODEL,
        messages=user(PROMPT),
        stream=True,
        extra_headers={"x-sandbox-fault": "malformed"},
    )
    with pytest.raises(ValueError, match=r"JSON|Expecting|Unterminated|delimiter"):
        async for _ in stream:
            pass


async def test_reset_mid_stream_is_a_connection_error(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model=MODEL, messages=user(PROMPT), stream=True, extra_headers={"x-sandbox-fault": "reset"}
    )
    received = ""
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received += chunk.choices[0].delta.content or ""
    assert received and ANSWER.startswith(received) and received != ANSWER


async def test_reset_without_response_is_a_connection_error(
    oai: openai.AsyncOpenAI, sandbox: Sandbox
) -> None:
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(
            model=MODEL, messages=user(PROMPT), extra_headers={"x-sandbox-fault": "reset"}
        )
    # The connection pool recovers: the next call succeeds.
    completion = await oai.chat.completions.create(model=MODEL, messages=user(PROMPT))
    assert completion.choices[0].message.content == ANSWER


async def test_timeout_fault_hangs_until_the_client_gives_up(sandbox: Sandbox) -> None:
    async with openai.AsyncOpenAI(
        base_url=sandbox.openai_base_url, api_key="sk-test", max_retries=0, timeout=0.3
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(
                model=MODEL, messages=user(PROMPT), extra_headers={"x-sandbox-fault": "timeout"}
            )
    async with asyncio.timeout(5):  # the sandbox notices the disconnect; nothing leaks
        await sandbox.wait_idle()
    assert sandbox.stats.active == 0
    assert sandbox.stats.disconnects == 1


async def test_prompt_caching_reports_cached_tokens(oai: openai.AsyncOpenAI) -> None:
    doc = long_document()
    first = await oai.chat.completions.create(model=MODEL, messages=user(doc + "\n\nQ: mills?"))
    second = await oai.chat.completions.create(model=MODEL, messages=user(doc + "\n\nQ: mills?"))
    other = await oai.chat.completions.create(model=MODEL, messages=user(doc + "\n\nQ: rivers?"))
    assert first.usage and second.usage and other.usage
    assert first.usage.prompt_tokens >= 1024 + 128
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    for usage in (second.usage, other.usage):
        details = usage.prompt_tokens_details
        assert details is not None and details.cached_tokens is not None
        cached = details.cached_tokens
        assert cached >= 1024 and cached % 128 == 0
        assert usage.prompt_tokens - 128 < cached <= usage.prompt_tokens or usage is other.usage
    assert other.usage.prompt_tokens_details is not None
    other_cached = other.usage.prompt_tokens_details.cached_tokens or 0
    assert other_cached <= other.usage.prompt_tokens - 5  # the different tail is not cached


async def test_a_shared_document_prefix_is_read_in_128_token_steps_with_24h_retention(
    oai: openai.AsyncOpenAI,
) -> None:
    """The gateway's shape: system, the document, then the question. A second question on
    the document reads the prefix up to the last 128-token boundary it shares; the key and
    the 24h retention are accepted on a model that supports them."""
    doc = long_document(120)

    async def ask(question: str) -> openai.types.CompletionUsage:
        completion = await oai.chat.completions.create(
            model="gpt-5",
            messages=[
                {"role": "system", "content": "You answer from the document."},
                {"role": "user", "content": f"<document>\n{doc}\n</document>"},
                {"role": "user", "content": f"Question: {question}"},
            ],
            prompt_cache_key="lr-doc-1",
            prompt_cache_retention="24h",
        )
        assert completion.usage is not None
        return completion.usage

    first, second = await ask("How many mills in region 7?"), await ask("Which river floods?")
    assert first.prompt_tokens_details is not None and second.prompt_tokens_details is not None
    assert first.prompt_tokens_details.cached_tokens == 0
    cached = second.prompt_tokens_details.cached_tokens or 0
    assert cached >= 1024 and cached % 128 == 0
    # the whole shared prefix (all but the question's few tokens), to the 128-token step below
    assert second.prompt_tokens - 128 - 20 < cached <= second.prompt_tokens - 5


@pytest.mark.parametrize(
    ("model", "where"),
    [
        ("deepseek-chat", "prompt_cache_hit_tokens"),
        ("kimi-k2-0905-preview", "cached_tokens"),
        ("gemini-2.5-flash", "prompt_tokens_details"),
    ],
)
async def test_compatible_vendors_report_cache_hits_in_their_own_fields(
    oai: openai.AsyncOpenAI, model: str, where: str
) -> None:
    doc = long_document(80)
    for question in ("Mills?", "Bridges?"):
        completion = await oai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": doc}, *user(question)]
        )
    usage = completion.usage
    assert usage is not None
    extra = usage.model_extra or {}
    if where == "prompt_cache_hit_tokens":
        hit = extra["prompt_cache_hit_tokens"]
        assert hit + extra["prompt_cache_miss_tokens"] == usage.prompt_tokens
    elif where == "cached_tokens":
        hit = extra["cached_tokens"]
        assert usage.prompt_tokens_details is None
    else:
        assert usage.prompt_tokens_details is not None
        hit = usage.prompt_tokens_details.cached_tokens or 0
        assert "prompt_cache_hit_tokens" not in extra and "cached_tokens" not in extra
    assert hit >= 1024 and hit % 128 == 0


async def test_an_unknown_retention_is_refused(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.chat.completions.create(
            model=MODEL,
            messages=user(PROMPT),
            extra_body={"prompt_cache_retention": "forever"},
        )
    assert caught.value.param == "prompt_cache_retention"


async def test_short_prompts_are_never_cached(oai: openai.AsyncOpenAI) -> None:
    for _ in range(2):
        completion = await oai.chat.completions.create(model=MODEL, messages=user(PROMPT))
        assert completion.usage and completion.usage.prompt_tokens_details
        assert completion.usage.prompt_tokens_details.cached_tokens == 0


async def test_models_list(oai: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in oai.models.list()]
    assert "gpt-4o-mini" in models


async def test_configured_api_key_is_enforced() -> None:
    async with Sandbox(SandboxConfig(api_key="sk-right-key-123")) as sb:
        async with openai.AsyncOpenAI(
            base_url=sb.openai_base_url, api_key="sk-wrong-key-456", max_retries=0
        ) as wrong:
            with pytest.raises(openai.AuthenticationError) as caught:
                await wrong.chat.completions.create(model=MODEL, messages=user(PROMPT))
        assert caught.value.code == "invalid_api_key"
        assert "sk-" in caught.value.message and "456" in caught.value.message
        assert "wrong-key" not in caught.value.message  # masked, as OpenAI does
        async with openai.AsyncOpenAI(
            base_url=sb.openai_base_url, api_key="sk-right-key-123", max_retries=0
        ) as right:
            completion = await right.chat.completions.create(model=MODEL, messages=user(PROMPT))
        assert completion.choices[0].message.content == ANSWER


async def test_prompt_tokens_are_billed_with_the_models_encoding_and_openais_framing(
    oai: openai.AsyncOpenAI,
) -> None:
    """OpenAI's documented chat framing (3 per message, 1 per name, 3 for the reply) over the
    model's own encoding: o200k_base for GPT-4o / GPT-4.1, cl100k_base for GPT-4 Turbo."""
    chinese = "港口九点关闭，渡轮每小时一班。第二条生产线推迟了十一周。" * 20
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You answer from the text."},
        {"role": "user", "content": chinese, "name": "analyst"},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": PROMPT},
    ]
    plain = [{k: str(v) for k, v in m.items()} for m in messages]
    for model, o200k in (("gpt-4.1-mini", True), ("gpt-4o-mini", True), ("gpt-4-turbo", False)):
        completion = await oai.chat.completions.create(model=model, messages=messages)
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == openai_prompt_tokens(plain, o200k=o200k), model
    # The encodings really differ on this prompt, so the check above tells them apart.
    assert openai_prompt_tokens(plain) < openai_prompt_tokens(plain, o200k=False) * 0.8
