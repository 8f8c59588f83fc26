"""OpenAI Chat Completions adapter: payloads, streams (incl. compatible-server deviations),
non-streaming bodies and errors, over a real httpx client with a mock transport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from longread_server.domain import ErrorKind, LlmRequest, Message, RateLimitInfo, Usage
from longread_server.vendors.openai import OpenAIAdapter

from .support import (
    FakeUpstream,
    collect,
    collect_error,
    json_response,
    sse_body,
    stream_response,
)

BASE = "https://api.example.test/v1"
REQ = LlmRequest(
    model="gpt-4o",
    messages=(Message("user", "Summarise this."),),
    max_output_tokens=256,
    system="You are terse.",
)
NON_STREAMING = LlmRequest(
    model="gpt-4o", messages=REQ.messages, max_output_tokens=256, stream=False
)


def adapter(client: httpx.AsyncClient, **kw: Any) -> OpenAIAdapter:
    return OpenAIAdapter(client, name="openai", base_url=BASE, api_key="sk-test", **kw)


def chunk(
    content: str | None = None,
    *,
    index: int = 0,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    role: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta = {"role": "assistant", "content": "", "refusal": None}
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-9tXjg",
        "object": "chat.completion.chunk",
        "created": 1723024748,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
        **extra,
    }


USAGE = {"prompt_tokens": 14, "completion_tokens": 47, "total_tokens": 61}
OPENAI_STREAM = sse_body(
    chunk(role=True),
    chunk("I'm"),
    chunk(" caf\u00e9 \U0001f642"),
    chunk(" done.\u2028"),  # raw U+2028 inside the JSON string
    chunk(finish="stop"),
    {**chunk(), "choices": [], "usage": USAGE},
    "data: [DONE]\n\n",
)


async def run(
    *responses: httpx.Response | Exception, req: LlmRequest = REQ, **kw: Any
) -> tuple[list[str], Any, FakeUpstream]:
    upstream = FakeUpstream(*responses)
    async with upstream.client() as client:
        deltas, finish = await collect(adapter(client, **kw).call(req))
    return deltas, finish, upstream


async def run_error(
    *responses: httpx.Response | Exception, req: LlmRequest = REQ, **kw: Any
) -> tuple[list[str], Any]:
    upstream = FakeUpstream(*responses)
    async with upstream.client() as client:
        return await collect_error(adapter(client, **kw).call(req))


# --- payloads -------------------------------------------------------------------------------


async def test_minimal_payload_omits_unset_options() -> None:
    async with httpx.AsyncClient() as client:
        openai = OpenAIAdapter(client, name="openai", base_url=BASE, api_key="k")
        assert openai.build_payload(NON_STREAMING) == {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Summarise this."}],
            "max_completion_tokens": 256,
        }


async def test_full_payload_openai_proper() -> None:
    req = LlmRequest(
        model="gpt-4o",
        messages=(Message("user", "a"), Message("assistant", "b"), Message("user", "c")),
        max_output_tokens=100,
        system="sys",
        temperature=0.0,  # falsy but set: must be sent
        top_p=0.5,
        stop=("END", "STOP"),
        seed=0,
        prompt_cache_key="doc-1",
        prompt_cache_retention="24h",
    )
    async with httpx.AsyncClient() as client:
        payload = OpenAIAdapter(client, name="o", base_url=BASE, api_key="k").build_payload(req)
    assert payload == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        "max_completion_tokens": 100,
        "temperature": 0.0,
        "top_p": 0.5,
        "seed": 0,
        "stop": ["END", "STOP"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "prompt_cache_key": "doc-1",
        "prompt_cache_retention": "24h",
    }


async def test_compatible_payload_uses_max_tokens_and_no_cache_key() -> None:
    req = LlmRequest(
        model="llama3",
        messages=REQ.messages,
        max_output_tokens=64,
        prompt_cache_key="doc-1",
        prompt_cache_retention="24h",
    )
    async with httpx.AsyncClient() as client:
        compat = OpenAIAdapter(client, name="ollama", base_url=BASE, api_key="", compatible=True)
        payload = compat.build_payload(req)
    assert payload["max_tokens"] == 64
    assert "max_completion_tokens" not in payload
    assert "prompt_cache_key" not in payload and "prompt_cache_retention" not in payload
    assert payload["stream_options"] == {"include_usage": True}


async def test_request_sends_exactly_the_payload_with_auth_and_extra_headers() -> None:
    response, _ = stream_response(OPENAI_STREAM)
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        openai = OpenAIAdapter(
            client,
            name="openai",
            base_url=BASE + "/",
            api_key="sk-test",
            extra_headers={"OpenAI-Project": "proj_1"},
        )
        await collect(openai.call(REQ))
        assert upstream.last_json == openai.build_payload(REQ)
    request = upstream.requests[0]
    assert request.method == "POST"
    assert str(request.url) == BASE + "/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["openai-project"] == "proj_1"


async def test_compatible_server_without_key_gets_no_auth_header() -> None:
    response, _ = stream_response(OPENAI_STREAM)
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        compat = OpenAIAdapter(client, name="vllm", base_url=BASE, api_key="", compatible=True)
        await collect(compat.call(REQ))
    assert "authorization" not in upstream.requests[0].headers


async def test_non_ascii_payload_is_sent_as_utf8() -> None:
    response, _ = stream_response(OPENAI_STREAM)
    req = LlmRequest(
        model="m",
        messages=(Message("user", "r\u00e9sum\u00e9 \u2028 \U0001f642"),),
        max_output_tokens=5,
    )
    _, _, upstream = await run(response, req=req)
    assert upstream.last_json["messages"][0]["content"] == "r\u00e9sum\u00e9 \u2028 \U0001f642"


# --- streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, None])
async def test_openai_stream_split_anywhere(chunk_size: int | None) -> None:
    response, stream = stream_response(OPENAI_STREAM, chunk_size=chunk_size)
    deltas, finish, _ = await run(response)
    assert "".join(deltas) == "I'm caf\u00e9 \U0001f642 done.\u2028"
    assert finish.finish_reason == "stop"
    assert finish.usage == Usage(input_tokens=14, output_tokens=47, calls=1)
    assert finish.model == "gpt-4o-2024-08-06"
    assert finish.response_id == "chatcmpl-9tXjg"
    assert stream.closed


async def test_cached_tokens_from_prompt_tokens_details() -> None:
    usage = {**USAGE, "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 3}}
    body = sse_body(chunk("x"), chunk(finish="stop"), {**chunk(), "choices": [], "usage": usage})
    response, _ = stream_response(body + b"data: [DONE]\n\n")
    _, finish, _ = await run(response)
    assert finish.usage == Usage(
        input_tokens=14, output_tokens=47, cached_input_tokens=8, cache_write_tokens=3, calls=1
    )


async def test_deepseek_usage_on_last_content_chunk_and_keep_alives() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "total_tokens": 105,
        "prompt_cache_hit_tokens": 64,
        "prompt_cache_miss_tokens": 36,
    }
    body = sse_body(
        ": keep-alive\n\n",
        ": keep-alive\n\n",
        chunk(role=True),
        {**chunk(), "choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},
        chunk("Hi"),
        chunk(" there", finish="stop", usage=usage),
        "data: [DONE]\n\n",
    )
    response, _ = stream_response(body, chunk_size=5)
    deltas, finish, _ = await run(response)
    assert deltas == ["Hi", " there"]
    assert finish.usage == Usage(input_tokens=100, output_tokens=5, cached_input_tokens=64, calls=1)


async def test_moonshot_usage_inside_the_choice() -> None:
    usage = {"prompt_tokens": 19, "completion_tokens": 13, "total_tokens": 32, "cached_tokens": 4}
    finish_chunk = chunk(finish="stop")
    finish_chunk["choices"][0]["usage"] = usage
    del finish_chunk["usage"]
    response, _ = stream_response(sse_body(chunk("ok"), finish_chunk, "data: [DONE]\n\n"))
    _, finish, _ = await run(response)
    assert finish.usage == Usage(input_tokens=19, output_tokens=13, cached_input_tokens=4, calls=1)


async def test_last_non_null_usage_wins() -> None:
    # vLLM continuous_usage_stats: usage on every chunk, growing.
    body = sse_body(
        chunk("a", usage={"prompt_tokens": 5, "completion_tokens": 1}),
        chunk("b", usage={"prompt_tokens": 5, "completion_tokens": 2}),
        chunk(finish="stop", usage=None),
        "data: [DONE]\n\n",
    )
    response, _ = stream_response(body)
    _, finish, _ = await run(response)
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (5, 2)


async def test_no_usage_at_all_gives_zero_usage() -> None:
    body = sse_body(chunk("a"), chunk(finish="stop"), "data: [DONE]\n\n")
    response, _ = stream_response(body)
    _, finish, _ = await run(response)
    assert finish.usage == Usage(calls=1)


async def test_done_ends_the_stream_without_reading_further() -> None:
    body = sse_body(chunk("a"), chunk(finish="stop"), "data: [DONE]\n\n", "data: {not json\n\n")
    response, stream = stream_response(body.split(b"data: {not"), block=True)
    deltas, finish, _ = await run(response)  # would hang on the blocked stream otherwise
    assert deltas == ["a"]
    assert finish.finish_reason == "stop"
    assert stream.closed


async def test_done_is_a_prefix_match_and_done_without_finish_reason_is_stop() -> None:
    response, _ = stream_response(sse_body(chunk("a"), "data: [DONE] trailing\n\n"))
    deltas, finish, _ = await run(response)
    assert (deltas, finish.finish_reason) == (["a"], "stop")


async def test_eof_after_finish_reason_without_done_is_fine() -> None:
    response, _ = stream_response(sse_body(chunk("a"), chunk(finish="stop")).rstrip(b"\n"))
    deltas, finish, _ = await run(response)
    assert (deltas, finish.finish_reason) == (["a"], "stop")


async def test_eof_without_finish_or_done_is_a_broken_stream() -> None:
    response, _ = stream_response(sse_body(chunk("a"), chunk("b")))
    deltas, error = await run_error(response)
    assert deltas == ["a", "b"]
    assert error.kind is ErrorKind.CONNECTION
    assert "ended early" in error.message
    assert error.streamed


async def test_empty_stream_is_a_broken_stream_not_yet_streamed() -> None:
    response, _ = stream_response(b"")
    deltas, error = await run_error(response)
    assert deltas == []
    assert error.kind is ErrorKind.CONNECTION
    assert not error.streamed


async def test_only_choice_zero_is_the_answer_when_n_is_above_one() -> None:
    body = sse_body(
        chunk(role=True, index=0),
        chunk(role=True, index=1),
        chunk("zero-a", index=0),
        chunk("one-a", index=1),
        chunk("one-b", index=1, finish="stop"),
        chunk("zero-b", index=0),
        chunk(index=0, finish="length"),
        {**chunk(), "choices": [], "usage": USAGE},
        "data: [DONE]\n\n",
    )
    response, _ = stream_response(body)
    deltas, finish, _ = await run(response)
    assert "".join(deltas) == "zero-azero-b"
    assert finish.finish_reason == "length"


async def test_finish_reason_length_and_tool_calls() -> None:
    for vendor, ours in [("length", "length"), ("tool_calls", "tool_calls"), ("eos", "stop")]:
        response, _ = stream_response(sse_body(chunk("a"), chunk(finish=vendor)))
        _, finish, _ = await run(response)
        assert finish.finish_reason == ours


async def test_tool_call_deltas_are_not_text() -> None:
    tool = {
        "index": 0,
        "delta": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ],
        },
        "finish_reason": None,
    }
    body = sse_body({**chunk(), "choices": [tool]}, chunk(finish="tool_calls"), "data: [DONE]\n\n")
    response, _ = stream_response(body)
    deltas, finish, _ = await run(response)
    assert deltas == []
    assert finish.finish_reason == "tool_calls"


async def test_refusal_deltas_are_answer_text_and_finish_as_content_filter() -> None:
    refusal = chunk()
    refusal["choices"][0]["delta"] = {"refusal": "I can't help with that."}
    response, _ = stream_response(
        sse_body(chunk(role=True), refusal, chunk(finish="stop"), "data: [DONE]\n\n")
    )
    deltas, finish, _ = await run(response)
    assert deltas == ["I can't help with that."]
    assert finish.finish_reason == "content_filter"


async def test_mid_stream_error_after_text() -> None:
    error_event = {
        "error": {
            "message": "The server had an error",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    response, _ = stream_response(
        sse_body(chunk("partial"), error_event), headers={"x-request-id": "req_42"}
    )
    deltas, error = await run_error(response)
    assert deltas == ["partial"]
    assert error.kind is ErrorKind.SERVER
    assert error.vendor_type == "server_error"
    assert error.status is None
    assert error.streamed
    assert error.request_id == "req_42"
    assert "The server had an error" in error.detail
    assert error.message == "openai: error in response (server_error)"


async def test_vllm_mid_stream_error_followed_by_done() -> None:
    error_event = {
        "error": {
            "object": "error",
            "message": "context too long",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }
    response, _ = stream_response(sse_body(error_event, "data: [DONE]\n\n"))
    deltas, error = await run_error(response)
    assert deltas == []
    assert error.kind is ErrorKind.BAD_REQUEST
    assert error.vendor_code == "400"
    assert not error.streamed


async def test_error_event_name_and_unknown_event_names() -> None:
    body = (
        b'event: heartbeat\ndata: {"whatever": 1}\n\n'
        + sse_body(chunk("a"))
        + b'event: error\ndata: {"message": "overloaded", "type": "overloaded_error"}\n\n'
    )
    response, _ = stream_response(body)
    deltas, error = await run_error(response)
    assert deltas == ["a"]
    assert error.kind is ErrorKind.OVERLOADED


async def test_malformed_json_in_stream_is_a_connection_error() -> None:
    response, _ = stream_response(sse_body(chunk("a"), 'data: {"choices": [\n\n'))
    deltas, error = await run_error(response)
    assert deltas == ["a"]
    assert error.kind is ErrorKind.CONNECTION
    assert error.streamed


async def test_unexpected_json_shape_is_a_connection_error() -> None:
    response, _ = stream_response(sse_body({"choices": ["not an object"]}))
    _, error = await run_error(response)
    assert error.kind is ErrorKind.CONNECTION


async def test_json_nested_too_deeply_is_a_connection_error() -> None:
    response, _ = stream_response(sse_body(chunk("a"), "data: " + "[" * 100_000 + "\n\n"))
    deltas, error = await run_error(response)
    assert deltas == ["a"]
    assert (error.kind, error.streamed) == (ErrorKind.CONNECTION, True)
    response, _ = stream_response(b"[" * 100_000, status=500)
    _, error = await run_error(response)
    assert (error.kind, error.status) == (ErrorKind.SERVER, 500)


async def test_non_object_json_events_are_skipped() -> None:
    response, _ = stream_response(sse_body("data: 42\n\n", chunk("a"), chunk(finish="stop")))
    deltas, _, _ = await run(response)
    assert deltas == ["a"]


async def test_stream_request_answered_with_plain_json() -> None:
    response = json_response(completion("whole answer"))
    deltas, finish, _ = await run(response)
    assert deltas == ["whole answer"]
    assert finish.finish_reason == "stop"


# --- non-streaming --------------------------------------------------------------------------


def completion(
    content: str | None, *, refusal: str | None = None, finish: str = "stop"
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MBs8",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": refusal,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": "default",
    }


async def test_non_streaming_body() -> None:
    deltas, finish, upstream = await run(json_response(completion("Hello!")), req=NON_STREAMING)
    assert deltas == ["Hello!"]
    assert finish.finish_reason == "stop"
    assert finish.usage == Usage(input_tokens=19, output_tokens=10, calls=1)
    assert finish.model == "gpt-4.1-2025-04-14"
    assert finish.response_id == "chatcmpl-B9MBs8"
    assert "stream" not in upstream.last_json


async def test_non_streaming_body_after_blank_keep_alive_lines() -> None:
    body = b"\n\n\n" + json.dumps(completion("Hi")).encode()
    response, _ = stream_response(body, content_type="application/json", chunk_size=2)
    deltas, _, _ = await run(response, req=NON_STREAMING)
    assert deltas == ["Hi"]


async def test_non_streaming_empty_content_yields_only_finish() -> None:
    deltas, finish, _ = await run(
        json_response(completion(None, finish="length")), req=NON_STREAMING
    )
    assert deltas == []
    assert finish.finish_reason == "length"


async def test_non_streaming_refusal() -> None:
    body = completion(None, refusal="I can't help with that.")
    deltas, finish, _ = await run(json_response(body), req=NON_STREAMING)
    assert deltas == ["I can't help with that."]
    assert finish.finish_reason == "content_filter"


async def test_non_streaming_picks_choice_zero() -> None:
    body = completion("zero")
    body["choices"].insert(
        0, {**body["choices"][0], "index": 1, "message": {"role": "assistant", "content": "one"}}
    )
    deltas, _, _ = await run(json_response(body), req=NON_STREAMING)
    assert deltas == ["zero"]


async def test_non_streaming_error_object_with_200() -> None:
    body = {"error": {"message": "oops", "type": "server_error", "code": None}}
    _, error = await run_error(json_response(body), req=NON_STREAMING)
    assert error.kind is ErrorKind.SERVER


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"id": "x"}', b""])
async def test_non_streaming_malformed_body(body: bytes) -> None:
    response, _ = stream_response(body, content_type="application/json")
    _, error = await run_error(response, req=NON_STREAMING)
    assert error.kind is ErrorKind.CONNECTION


# --- HTTP errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ErrorKind.BAD_REQUEST),
        (401, ErrorKind.AUTH),
        (402, ErrorKind.BILLING),
        (403, ErrorKind.AUTH),
        (404, ErrorKind.NOT_FOUND),
        (408, ErrorKind.TIMEOUT),
        (409, ErrorKind.SERVER),
        (413, ErrorKind.BAD_REQUEST),
        (422, ErrorKind.BAD_REQUEST),
        (429, ErrorKind.RATE_LIMITED),
        (500, ErrorKind.SERVER),
        (502, ErrorKind.SERVER),
        (503, ErrorKind.OVERLOADED),
        (529, ErrorKind.OVERLOADED),
    ],
)
async def test_statuses_map_to_kinds(status: int, kind: ErrorKind) -> None:
    body = {"error": {"message": "nope", "type": "x", "param": None, "code": None}}
    deltas, error = await run_error(json_response(body, status=status))
    assert deltas == []
    assert error.kind is kind
    assert error.status == status
    assert not error.streamed


async def test_rate_limit_error_with_headers() -> None:
    body = {
        "error": {
            "message": "Rate limit reached for gpt-4o ... Please try again in 3.89s.",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    headers = {
        "x-request-id": "req_abc",
        "retry-after-ms": "3890",
        "retry-after": "4",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "3.89s",
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
    }
    _, error = await run_error(json_response(body, status=429, headers=headers))
    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.vendor_type == "tokens"
    assert error.vendor_code == "rate_limit_exceeded"
    assert error.request_id == "req_abc"
    assert error.retry_after_s == pytest.approx(3.89)
    assert error.rate_limits == RateLimitInfo(
        limit_requests=5000,
        remaining_requests=4999,
        reset_requests_s=0.012,
        limit_tokens=30000,
        remaining_tokens=0,
        reset_tokens_s=3.89,
    )
    assert "Please try again in 3.89s" in error.detail
    assert error.message == "openai: HTTP 429 Too Many Requests (tokens, rate_limit_exceeded)"


async def test_insufficient_quota_is_billing_not_rate_limited() -> None:
    body = {
        "error": {
            "message": "You exceeded your current quota",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    _, error = await run_error(json_response(body, status=429))
    assert error.kind is ErrorKind.BILLING
    assert error.rate_limits is None


async def test_flat_vllm_error_body() -> None:
    body = {
        "object": "error",
        "message": "This model's maximum context length is 2048 tokens",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    _, error = await run_error(json_response(body, status=400), compatible=True)
    assert error.kind is ErrorKind.BAD_REQUEST
    assert error.vendor_type == "BadRequestError"
    assert error.vendor_code == "400"
    assert "maximum context length is 2048" in error.detail


async def test_plain_text_error_body() -> None:
    response = httpx.Response(502, text="upstream connect error", headers={"retry-after": "2"})
    _, error = await run_error(response)
    assert error.kind is ErrorKind.SERVER
    assert error.message == "openai: HTTP 502 Bad Gateway"
    assert error.detail == "upstream connect error"
    assert error.retry_after_s == 2.0


async def test_ollama_model_not_found() -> None:
    body = {
        "error": {
            "message": 'model "x" not found, try pulling it first',
            "type": "api_error",
            "param": None,
            "code": None,
        }
    }
    _, error = await run_error(json_response(body, status=404), compatible=True)
    assert error.kind is ErrorKind.NOT_FOUND


async def test_retry_after_http_date() -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # in the past: wait nothing
    _, error = await run_error(httpx.Response(503, text="busy", headers={"retry-after": date}))
    assert error.kind is ErrorKind.OVERLOADED
    assert error.retry_after_s == 0.0


async def test_an_error_detail_never_holds_the_requests_key() -> None:
    """A body that quotes the key (a proxy echoing the request's headers) is scrubbed with the
    credentials the request carried, before the error leaves the adapter."""
    body = {"error": {"message": "bad header Bearer k-secret-9999 in request", "type": "x"}}
    upstream = FakeUpstream(json_response(body, status=400))
    async with upstream.client() as client:
        named = OpenAIAdapter(
            client, name="openai", base_url="http://up.test/v1", api_key="k-secret-9999"
        )
        _, error = await collect_error(named.call(REQ))
    assert error.detail == "bad header Bearer [redacted] in request"
    assert "9999" not in error.message
