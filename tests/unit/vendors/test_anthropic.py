"""Anthropic Messages adapter: payloads (cache_control placement), streams (reference §2
fixtures), non-streaming bodies, errors and count_tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from longread_server.domain import ErrorKind, LlmRequest, Message, RateLimitInfo, Usage
from longread_server.vendors.anthropic import AnthropicAdapter

from .support import (
    FakeUpstream,
    anthropic_body,
    collect,
    collect_error,
    json_response,
    stream_response,
)

FIXTURES = Path(__file__).parent / "fixtures"
BASE = "https://api.anthropic.test"
REQ = LlmRequest(
    model="claude-sonnet-4-20250514",
    messages=(Message("user", "What's the weather in Paris?"),),
    max_output_tokens=1024,
)
NON_STREAMING = LlmRequest(
    model=REQ.model, messages=REQ.messages, max_output_tokens=1024, stream=False
)

# anthropic-sdk-python tests/lib/streaming/fixtures/tool_use_response.txt (HEAD version: two
# text deltas, five input_json_delta fragments, a "caller" on the tool_use block).
TOOL_USE_STREAM = (FIXTURES / "anthropic_tool_use_response.txt").read_bytes()


def message_start(**usage: int) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 10, "output_tokens": 1},
        },
    }


def text_delta(text: str) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }


def message_delta(stop_reason: str | None = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": usage or {"output_tokens": 5},
    }


STOP = {"type": "message_stop"}


def make(client: httpx.AsyncClient, base_url: str = BASE) -> AnthropicAdapter:
    return AnthropicAdapter(client, name="anthropic", base_url=base_url, api_key="sk-ant-test")


async def run(
    *responses: httpx.Response | Exception, req: LlmRequest = REQ
) -> tuple[list[str], Any, FakeUpstream]:
    upstream = FakeUpstream(*responses)
    async with upstream.client() as client:
        deltas, finish = await collect(make(client).call(req))
    return deltas, finish, upstream


async def run_error(*responses: httpx.Response | Exception, req: LlmRequest = REQ) -> Any:
    upstream = FakeUpstream(*responses)
    async with upstream.client() as client:
        return await collect_error(make(client).call(req))


# --- payloads -------------------------------------------------------------------------------


async def test_minimal_payload() -> None:
    async with httpx.AsyncClient() as client:
        assert make(client).build_payload(NON_STREAMING) == {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        }


async def test_full_payload_without_caching() -> None:
    req = LlmRequest(
        model="claude-x",
        messages=(Message("user", "a"), Message("assistant", "b")),
        max_output_tokens=50,
        system="sys",
        temperature=0.0,
        top_p=0.9,
        stop=("END",),
        seed=7,  # not an Anthropic parameter: dropped
    )
    async with httpx.AsyncClient() as client:
        assert make(client).build_payload(req) == {
            "model": "claude-x",
            "max_tokens": 50,
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
            "system": "sys",
            "stop_sequences": ["END"],
            "temperature": 0.0,
            "top_p": 0.9,
            "stream": True,
        }


async def test_one_breakpoint_on_the_last_prefix_message_and_none_on_the_system() -> None:
    """The breakpoint caches tools, system and the marked messages together: one is enough,
    and one on the short system prompt alone would be below the minimum and cache nothing."""
    req = LlmRequest(
        model="claude-x",
        messages=(
            Message("user", "the document"),
            Message("assistant", "noted"),
            Message("user", "the question"),
        ),
        max_output_tokens=50,
        system="sys",
        cache_prefix_messages=2,
        stream=False,
    )
    ephemeral = {"type": "ephemeral"}
    async with httpx.AsyncClient() as client:
        payload = make(client).build_payload(req)
    assert payload["system"] == "sys"
    assert payload["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "the document"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "noted", "cache_control": ephemeral}],
        },
        {"role": "user", "content": [{"type": "text", "text": "the question"}]},
    ]


async def test_one_hour_ttl_is_asked_for_on_the_breakpoint() -> None:
    req = LlmRequest(
        model="claude-x",
        messages=(Message("user", "the document"), Message("user", "the question")),
        max_output_tokens=50,
        cache_prefix_messages=1,
        cache_ttl="1h",
    )
    async with httpx.AsyncClient() as client:
        payload = make(client).build_payload(req)
    marked = [b for m in payload["messages"] for b in m["content"] if "cache_control" in b]
    assert marked == [
        {
            "type": "text",
            "text": "the document",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]


async def test_cache_prefix_longer_than_messages_is_clamped() -> None:
    req = LlmRequest(
        model="m",
        messages=(Message("user", "only"),),
        max_output_tokens=5,
        cache_prefix_messages=9,
    )
    async with httpx.AsyncClient() as client:
        payload = make(client).build_payload(req)
    assert "system" not in payload
    assert payload["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "only", "cache_control": {"type": "ephemeral"}}],
        }
    ]


async def test_request_headers_url_and_body() -> None:
    response, _ = stream_response(TOOL_USE_STREAM)
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        anthropic = make(client, base_url=BASE + "/v1/")  # a trailing /v1 is tolerated
        await collect(anthropic.call(REQ))
        assert upstream.last_json == anthropic.build_payload(REQ)
    request = upstream.requests[0]
    assert str(request.url) == BASE + "/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


# --- streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 13, 100, None])
async def test_tool_use_fixture_does_not_break_text(chunk_size: int | None) -> None:
    response, stream = stream_response(
        TOOL_USE_STREAM, chunk_size=chunk_size, headers={"request-id": "req_1"}
    )
    deltas, finish, _ = await run(response)
    assert "".join(deltas) == "I'll check the current weather in Paris for you."
    assert finish.finish_reason == "tool_calls"
    assert finish.usage == Usage(input_tokens=377, output_tokens=65, calls=1)
    assert finish.model == "claude-sonnet-4-20250514"
    assert finish.response_id == "msg_019Q1hrJbZG26Fb9BQhrkHEr"
    assert stream.closed


async def test_ping_unknown_events_and_non_text_deltas_are_ignored() -> None:
    body = (
        anthropic_body(
            message_start(),
            {"type": "ping"},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hmm"},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig"},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "citations_delta", "citation": {}},
            },
            {"type": "brand_new_event", "extra": [1, 2]},
            text_delta("caf\u00e9 \u2028 \U0001f642"),
            message_delta(),
            STOP,
        )
        + b"event: ping\n\n"
    )
    response, _ = stream_response(body, chunk_size=3)
    deltas, finish, _ = await run(response)
    assert deltas == ["caf\u00e9 \u2028 \U0001f642"]
    assert finish.finish_reason == "stop"


async def test_usage_is_cumulative_and_cache_counts_are_normalized() -> None:
    body = anthropic_body(
        message_start(
            input_tokens=40,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=0,
            output_tokens=1,
        ),
        text_delta("a"),
        message_delta(None, output_tokens=3),
        message_delta(
            "end_turn",
            input_tokens=40,
            cache_creation_input_tokens=12,
            cache_read_input_tokens=7,
            output_tokens=8,
        ),
        STOP,
    )
    response, _ = stream_response(body)
    _, finish, _ = await run(response)
    assert finish.usage == Usage(
        input_tokens=59, output_tokens=8, cached_input_tokens=7, cache_write_tokens=12, calls=1
    )


async def test_message_delta_keeps_input_counts_when_absent() -> None:
    body = anthropic_body(
        message_start(input_tokens=5, cache_read_input_tokens=100, output_tokens=1),
        text_delta("a"),
        message_delta("max_tokens", output_tokens=9),
        STOP,
    )
    response, _ = stream_response(body)
    _, finish, _ = await run(response)
    assert finish.finish_reason == "length"
    assert finish.usage == Usage(
        input_tokens=105, output_tokens=9, cached_input_tokens=100, calls=1
    )


@pytest.mark.parametrize(
    ("stop_reason", "ours"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),
        ("model_context_window_exceeded", "model_context_window_exceeded"),
    ],
)
async def test_stop_reasons(stop_reason: str, ours: str) -> None:
    body = anthropic_body(message_start(), text_delta("a"), message_delta(stop_reason), STOP)
    response, _ = stream_response(body)
    _, finish, _ = await run(response)
    assert finish.finish_reason == ours


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", ErrorKind.OVERLOADED),
        ("api_error", ErrorKind.SERVER),
        ("rate_limit_error", ErrorKind.RATE_LIMITED),
        ("timeout_error", ErrorKind.TIMEOUT),
        ("invalid_request_error", ErrorKind.BAD_REQUEST),
        ("mystery_error", ErrorKind.SERVER),
    ],
)
async def test_mid_stream_error_event_with_http_200(error_type: str, kind: ErrorKind) -> None:
    body = anthropic_body(
        message_start(),
        text_delta("partial"),
        {"type": "error", "error": {"type": error_type, "message": "Overloaded"}},
    )
    response, _ = stream_response(body, headers={"request-id": "req_018E"})
    deltas, error = await run_error(response)
    assert deltas == ["partial"]
    assert error.kind is kind
    assert error.vendor_type == error_type
    assert error.status is None
    assert error.streamed
    assert error.request_id == "req_018E"


async def test_error_event_before_text_is_not_streamed() -> None:
    body = anthropic_body(
        message_start(), {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}
    )
    response, _ = stream_response(body)
    _, error = await run_error(response)
    assert error.kind is ErrorKind.OVERLOADED
    assert not error.streamed


async def test_stream_without_event_lines_uses_data_type() -> None:
    body = b"".join(
        b"data: " + line + b"\n\n"
        for line in [
            b'{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3}}}',
            b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}',
            b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}',
            b'{"type":"message_stop"}',
        ]
    )
    response, _ = stream_response(body)
    deltas, finish, _ = await run(response)
    assert deltas == ["hi"]
    assert finish.usage == Usage(input_tokens=3, output_tokens=2, calls=1)


async def test_eof_after_stop_reason_without_message_stop_is_accepted() -> None:
    response, _ = stream_response(anthropic_body(message_start(), text_delta("a"), message_delta()))
    deltas, finish, _ = await run(response)
    assert (deltas, finish.finish_reason) == (["a"], "stop")


async def test_eof_before_stop_reason_is_a_broken_stream() -> None:
    response, _ = stream_response(anthropic_body(message_start(), text_delta("a")))
    deltas, error = await run_error(response)
    assert deltas == ["a"]
    assert error.kind is ErrorKind.CONNECTION
    assert error.streamed


async def test_malformed_event_data_is_a_connection_error() -> None:
    body = anthropic_body(message_start()) + b"event: content_block_delta\ndata: {oops\n\n"
    response, _ = stream_response(body)
    _, error = await run_error(response)
    assert error.kind is ErrorKind.CONNECTION


# --- non-streaming --------------------------------------------------------------------------


MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [
        {"type": "text", "text": "I'll check."},
        {
            "type": "tool_use",
            "id": "toolu_01",
            "name": "get_weather",
            "input": {"location": "Paris"},
        },
        {"type": "text", "text": " Done."},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 377,
        "output_tokens": 65,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    },
}


async def test_non_streaming_body() -> None:
    deltas, finish, upstream = await run(json_response(MESSAGE), req=NON_STREAMING)
    assert deltas == ["I'll check. Done."]
    assert finish.finish_reason == "tool_calls"
    assert finish.usage == Usage(
        input_tokens=1397,
        output_tokens=65,
        cached_input_tokens=1000,
        cache_write_tokens=20,
        calls=1,
    )
    assert (finish.model, finish.response_id) == ("claude-sonnet-4-20250514", "msg_01")
    assert "stream" not in upstream.last_json


async def test_non_streaming_empty_content() -> None:
    body = {**MESSAGE, "content": [], "stop_reason": "end_turn"}
    deltas, finish, _ = await run(json_response(body), req=NON_STREAMING)
    assert deltas == []
    assert finish.finish_reason == "stop"


async def test_non_streaming_error_object_with_200() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    _, error = await run_error(json_response(body), req=NON_STREAMING)
    assert error.kind is ErrorKind.OVERLOADED


# --- HTTP errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "kind"),
    [
        (400, "invalid_request_error", ErrorKind.BAD_REQUEST),
        (401, "authentication_error", ErrorKind.AUTH),
        (402, "billing_error", ErrorKind.BILLING),
        (403, "permission_error", ErrorKind.AUTH),
        (404, "not_found_error", ErrorKind.NOT_FOUND),
        (413, "request_too_large", ErrorKind.BAD_REQUEST),
        (429, "rate_limit_error", ErrorKind.RATE_LIMITED),
        (500, "api_error", ErrorKind.SERVER),
        (504, "timeout_error", ErrorKind.SERVER),
        (529, "overloaded_error", ErrorKind.OVERLOADED),
    ],
)
async def test_error_statuses(status: int, error_type: str, kind: ErrorKind) -> None:
    body = {
        "type": "error",
        "error": {"type": error_type, "message": "It went wrong"},
        "request_id": "req_body",
    }
    _, error = await run_error(json_response(body, status=status))
    assert error.kind is kind
    assert error.status == status
    assert error.vendor_type == error_type
    assert error.request_id == "req_body"  # no request-id header: the body's
    # The vendor's words are the detail (a refused key's are dropped); the message is what
    # is not content: the status and the vendor's error type.
    assert error.message.startswith(f"anthropic: HTTP {status}")
    assert error.message.endswith(f"({error_type})") and "It went wrong" not in error.message
    assert error.detail == ("" if kind is ErrorKind.AUTH else "It went wrong")


async def test_overloaded_529_with_headers() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    headers = {
        "request-id": "req_018EeWyXxfu5pfWkrYcMdjWG",
        "retry-after": "3",
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-tokens-limit": "80000",
        "anthropic-ratelimit-tokens-remaining": "80000",
    }
    _, error = await run_error(json_response(body, status=529, headers=headers))
    assert error.kind is ErrorKind.OVERLOADED
    assert error.request_id == "req_018EeWyXxfu5pfWkrYcMdjWG"
    assert error.retry_after_s == 3.0
    assert error.rate_limits == RateLimitInfo(
        limit_requests=50, remaining_requests=49, limit_tokens=80000, remaining_tokens=80000
    )


async def test_cloudflare_413_plain_text() -> None:
    _, error = await run_error(
        httpx.Response(413, text="<html>413 Request Entity Too Large</html>")
    )
    assert error.kind is ErrorKind.BAD_REQUEST
    assert error.message == "anthropic: HTTP 413 Request Entity Too Large"
    assert error.detail == "<html>413 Request Entity Too Large</html>"


# --- count_tokens ---------------------------------------------------------------------------


async def test_count_tokens() -> None:
    req = LlmRequest(
        model="claude-x",
        messages=(Message("user", "doc"), Message("user", "q")),
        max_output_tokens=99,
        system="sys",
        temperature=0.5,
        stop=("END",),
        cache_prefix_messages=1,
    )
    upstream = FakeUpstream(json_response({"input_tokens": 2095}))
    async with upstream.client() as client:
        assert await make(client).count_tokens(req) == 2095
    request = upstream.requests[0]
    assert str(request.url) == BASE + "/v1/messages/count_tokens"
    assert request.headers["x-api-key"] == "sk-ant-test"
    body = upstream.last_json
    assert set(body) == {"model", "messages", "system"}
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}


async def test_count_tokens_errors() -> None:
    body = {"type": "error", "error": {"type": "not_found_error", "message": "no such model"}}
    upstream = FakeUpstream(
        json_response(body, status=404),
        json_response({"tokens": 1}),
        httpx.ConnectError("refused"),
    )
    async with upstream.client() as client:
        anthropic = make(client)
        for kind in (ErrorKind.NOT_FOUND, ErrorKind.CONNECTION, ErrorKind.CONNECTION):
            with pytest.raises(Exception) as info:
                await anthropic.count_tokens(REQ)
            assert getattr(info.value, "kind", None) is kind
