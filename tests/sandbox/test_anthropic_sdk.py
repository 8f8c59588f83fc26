"""The sandbox speaks Anthropic Messages as the official ``anthropic`` SDK expects it."""

from __future__ import annotations

import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam, TextBlock, TextBlockParam
from longread_sandbox import Sandbox, SandboxConfig

from .documents import ANSWER, ENCODING, PROMPT, long_document, prompt_tokens, tokens

MODEL = "claude-sonnet-4-6"
MAX_TOKENS = 256  # the SDK refuses large max_tokens for non-streaming calls


def user(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


def text_of(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if isinstance(b, TextBlock))


async def test_non_streaming_answer_usage_and_request_id(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        system="You answer from the text.",
        messages=user(PROMPT),
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert text_of(message) == ANSWER
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == prompt_tokens("You answer from the text.", PROMPT)
    assert message.usage.output_tokens == tokens(ANSWER)
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0
    assert message._request_id is not None and message._request_id.startswith("req_")


async def test_count_tokens_matches_input_tokens(claude: anthropic.AsyncAnthropic) -> None:
    counted = await claude.messages.count_tokens(
        model=MODEL, system="You answer from the text.", messages=user(PROMPT)
    )
    message = await claude.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        system="You answer from the text.",
        messages=user(PROMPT),
    )
    assert counted.input_tokens == message.usage.input_tokens


async def test_streaming_matches_non_streaming(claude: anthropic.AsyncAnthropic) -> None:
    whole = await claude.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT))
    async with claude.messages.stream(
        model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT)
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 2
    assert "".join(pieces) == text_of(whole) == text_of(final)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


async def test_raw_stream_event_order(claude: anthropic.AsyncAnthropic) -> None:
    stream = await claude.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT), stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}


async def test_max_tokens_truncates_with_stop_reason_max_tokens(
    claude: anthropic.AsyncAnthropic,
) -> None:
    message = await claude.messages.create(model=MODEL, max_tokens=6, messages=user(PROMPT))
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 6
    assert text_of(message) == ENCODING.decode(ENCODING.encode(ANSWER)[:6])


async def test_stop_sequences(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT), stop_sequences=["Tower", "1889"]
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "Tower"
    assert text_of(message) == ANSWER[: ANSWER.index("Tower")]
    async with claude.messages.stream(
        model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT), stop_sequences=["1889"]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "1889"


async def test_same_request_same_answer(claude: anthropic.AsyncAnthropic) -> None:
    first = await claude.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT))
    second = await claude.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT))
    assert text_of(first) == text_of(second)
    assert first.usage == second.usage


async def test_cache_control_writes_then_reads(claude: anthropic.AsyncAnthropic) -> None:
    doc = long_document(100)  # over Sonnet 4.6's 2048-token minimum
    system: list[TextBlockParam] = [
        {"type": "text", "text": "You answer from the document."},
        {"type": "text", "text": doc, "cache_control": {"type": "ephemeral"}},
    ]
    counted = await claude.messages.count_tokens(
        model=MODEL, system=system, messages=user("How many mills in region 7?")
    )
    first = await claude.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, system=system, messages=user("How many mills?")
    )
    second = await claude.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        system=system,
        messages=user("How many mills in region 7?"),
    )
    prefix = tokens("You answer from the document.") + 3 + tokens(doc)
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == prefix
    # input_tokens excludes cached tokens; the three add up to the whole prompt.
    total = second.usage.input_tokens + second.usage.cache_read_input_tokens
    assert total == counted.input_tokens
    assert second.usage.input_tokens == tokens("How many mills in region 7?") + 3 + 3


async def test_cache_control_on_message_block_and_1h_ttl(claude: anthropic.AsyncAnthropic) -> None:
    doc = long_document(100)
    messages: list[MessageParam] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": doc, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "How many mills in region 7?"},
            ],
        }
    ]
    first = await claude.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=messages)
    second = await claude.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=messages)
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == tokens(doc) + 3
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert second.usage.cache_read_input_tokens == tokens(doc) + 3


async def test_a_marked_prefix_below_the_model_minimum_caches_nothing(
    claude: anthropic.AsyncAnthropic,
) -> None:
    """Shorter prefixes than the model's minimum are processed uncached, without an error:
    Sonnet 4.6 needs 2048 tokens, Sonnet 4.5 1024, Haiku 4.5 4096."""
    doc = long_document(60)
    size = tokens(doc) + 3
    assert 1024 <= size < 2048
    messages: list[MessageParam] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": doc, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "How many mills in region 7?"},
            ],
        }
    ]
    for model, cached in [
        ("claude-sonnet-4-6", False),
        ("claude-haiku-4-5", False),
        ("claude-sonnet-4-5", True),
    ]:
        for _ in range(2):
            last = await claude.messages.create(
                model=model, max_tokens=MAX_TOKENS, messages=messages
            )
        assert last.usage.cache_read_input_tokens == (size if cached else 0), model
        assert last.usage.cache_creation_input_tokens == 0
        if not cached:  # the whole prompt is plain input
            assert last.usage.input_tokens > size


async def test_only_the_exact_prefix_is_read_and_a_changed_document_is_written_again(
    claude: anthropic.AsyncAnthropic,
) -> None:
    """The entry is the exact marked prefix: a document that merely starts like a cached one
    is written in full, and the first document is still read back afterwards."""
    system = "You answer from the document."

    def ask(doc: str, question: str) -> list[MessageParam]:
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": doc, "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": question},
                ],
            }
        ]

    one, two = long_document(100), long_document(101)
    a = await claude.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, system=system, messages=ask(one, "Mills?")
    )
    b = await claude.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, system=system, messages=ask(two, "Mills?")
    )
    c = await claude.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, system=system, messages=ask(one, "Bridges?")
    )
    written = a.usage.cache_creation_input_tokens or 0
    assert written > 0 and a.usage.cache_read_input_tokens == 0
    # two starts with one's text but the marked prefix ends elsewhere: no partial read
    assert b.usage.cache_read_input_tokens == 0
    assert (b.usage.cache_creation_input_tokens or 0) > written
    assert c.usage.cache_read_input_tokens == written
    assert c.usage.cache_creation_input_tokens == 0


@pytest.mark.parametrize(
    ("fault", "error_class", "error_type"),
    [
        ("400", anthropic.BadRequestError, "invalid_request_error"),
        ("401", anthropic.AuthenticationError, "authentication_error"),
        ("402", anthropic.PaymentRequiredError, "billing_error"),
        ("403", anthropic.PermissionDeniedError, "permission_error"),
        ("404", anthropic.NotFoundError, "not_found_error"),
        ("413", anthropic.ContentTooLargeError, "request_too_large"),
        ("429", anthropic.RateLimitError, "rate_limit_error"),
        ("500", anthropic.InternalServerError, "api_error"),
        ("503", anthropic.ServiceUnavailableError, "api_error"),
        ("504", anthropic.GatewayTimeoutError, "timeout_error"),
        ("529", anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_error_statuses_map_to_sdk_exceptions(
    claude: anthropic.AsyncAnthropic,
    fault: str,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    with pytest.raises(error_class) as caught:
        await claude.messages.create(
            model=MODEL,
            max_tokens=MAX_TOKENS,
            messages=user(PROMPT),
            extra_headers={"x-sandbox-fault": fault},
        )
    error = caught.value
    assert error.status_code == int(fault)
    assert error.type == error_type
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert isinstance(error.body, dict)
    assert error.body["type"] == "error" and error.body["request_id"] == error.request_id
    if fault in ("429", "503", "529"):
        assert error.response.headers["retry-after-ms"] == "10"
    else:
        assert "retry-after" not in error.response.headers


@pytest.mark.parametrize("fault", ["429", "503", "529"])
async def test_sdk_retries_retryable_statuses(sandbox: Sandbox, fault: str) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=sandbox.base_url, api_key="sk-ant-test", max_retries=2
    ) as client:
        with pytest.raises(anthropic.APIStatusError):
            await client.messages.create(
                model=MODEL,
                max_tokens=MAX_TOKENS,
                messages=user(PROMPT),
                extra_headers={"x-sandbox-fault": fault},
            )
    assert sandbox.stats.by_endpoint["/v1/messages"] == 3
    assert dict(sandbox.stats.by_retry_count) == {0: 1, 1: 1, 2: 1}


async def test_midstream_error_is_status_200_api_status_error(
    claude: anthropic.AsyncAnthropic,
) -> None:
    received = ""
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with claude.messages.stream(
            model=MODEL,
            max_tokens=MAX_TOKENS,
            messages=user(PROMPT),
            extra_headers={"x-sandbox-fault": "midstream_error"},
        ) as stream:
            async for text in stream.text_stream:
                received += text
    assert caught.value.status_code == 200
    assert not isinstance(caught.value, anthropic.OverloadedError)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert received and ANSWER.startswith(received) and received != ANSWER


async def test_reset_mid_stream_is_a_connection_error(claude: anthropic.AsyncAnthropic) -> None:
    # anthropic 2.x lets the transport error escape from a stream unwrapped.
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        async with claude.messages.stream(
            model=MODEL,
            max_tokens=MAX_TOKENS,
            messages=user(PROMPT),
            extra_headers={"x-sandbox-fault": "reset"},
        ) as stream:
            async for _ in stream.text_stream:
                pass


async def test_stall_mid_stream_times_out_without_leaking(sandbox: Sandbox) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=sandbox.base_url, api_key="sk-ant-test", max_retries=0, timeout=0.3
    ) as client:
        received = ""
        with pytest.raises((anthropic.APITimeoutError, httpx2.TimeoutException)):
            async with client.messages.stream(
                model=MODEL,
                max_tokens=MAX_TOKENS,
                messages=user(PROMPT),
                extra_headers={"x-sandbox-fault": "stall"},
            ) as stream:
                async for text in stream.text_stream:
                    received += text
    assert received and received != ANSWER
    await sandbox.wait_idle()
    assert sandbox.stats.active == 0


async def test_both_auth_styles_are_accepted(sandbox: Sandbox) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=sandbox.base_url, auth_token="bearer-token", max_retries=0
    ) as bearer:
        message = await bearer.messages.create(
            model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT)
        )
    assert text_of(message) == ANSWER
    async with anthropic.AsyncAnthropic(
        base_url=sandbox.base_url,
        api_key="unused",
        default_headers={"x-api-key": "sk-ant-header", "authorization": ""},
        max_retries=0,
    ) as keyed:
        message = await keyed.messages.create(
            model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT)
        )
    assert text_of(message) == ANSWER


async def test_configured_api_key_is_enforced() -> None:
    async with Sandbox(SandboxConfig(api_key="sk-ant-right")) as sb:
        async with anthropic.AsyncAnthropic(
            base_url=sb.base_url, api_key="sk-ant-wrong", max_retries=0
        ) as wrong:
            with pytest.raises(anthropic.AuthenticationError) as caught:
                await wrong.messages.create(
                    model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT)
                )
        assert caught.value.type == "authentication_error"
        async with anthropic.AsyncAnthropic(
            base_url=sb.base_url, api_key="sk-ant-right", max_retries=0
        ) as right:
            message = await right.messages.create(
                model=MODEL, max_tokens=MAX_TOKENS, messages=user(PROMPT)
            )
        assert text_of(message) == ANSWER


@pytest.mark.parametrize(("field", "value"), [("temperature", 1.5), ("top_p", -0.1)])
async def test_sampling_outside_the_documented_range_is_refused(
    claude: anthropic.AsyncAnthropic, field: str, value: float
) -> None:
    """Anthropic's temperature ranges from 0.0 to 1.0 (OpenAI's to 2): the emulator refuses
    what the vendor refuses, so a gateway that forwarded 1.5 would fail here too."""
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(
            model="claude-haiku-4-5",
            max_tokens=16,
            messages=user(PROMPT),
            extra_body={field: value},
        )
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert field in info.value.message
    ok = await claude.messages.create(
        model="claude-haiku-4-5", max_tokens=16, messages=user(PROMPT), extra_body={field: 1.0}
    )
    assert ok.content
