"""Behaviour every adapter shares: transport failures, ``streamed``, deadlines, closing the
response on early exit and on cancellation, and the factory."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
from longread_server.domain import (
    ErrorKind,
    Finish,
    LlmRequest,
    Message,
    TextDelta,
    UpstreamError,
    VendorKind,
)
from longread_server.vendors import (
    AnthropicAdapter,
    OpenAIAdapter,
    VendorAdapter,
    make_adapter,
)
from longread_server.vendors import exchange as exchange_module

from .support import FakeUpstream, collect, collect_error, sse_body, stream_response

REQ = LlmRequest(model="m", messages=(Message("user", "hi"),), max_output_tokens=16)


def chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def openai(client: httpx.AsyncClient) -> OpenAIAdapter:
    return OpenAIAdapter(client, name="openai", base_url="http://up.test/v1", api_key="k")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.RemoteProtocolError("peer closed connection"), ErrorKind.CONNECTION),
        (httpx.ReadError("connection reset"), ErrorKind.CONNECTION),
        (httpx.ReadTimeout("timed out"), ErrorKind.TIMEOUT),
    ],
)
async def test_transport_failure_after_a_delta_is_streamed(exc: Exception, kind: ErrorKind) -> None:
    response, stream = stream_response(
        sse_body(chunk("a")), fail=exc, headers={"x-request-id": "req_9"}
    )
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        deltas, error = await collect_error(openai(client).call(REQ))
    assert deltas == ["a"]
    assert error.kind is kind
    assert error.streamed
    assert error.request_id == "req_9"
    # Its text is the detail, and the httpx error is not chained: a traceback would print it.
    assert error.detail == str(exc) and error.__cause__ is None and error.__suppress_context__
    assert stream.closed


async def test_transport_failure_before_any_delta_is_not_streamed() -> None:
    response, _ = stream_response(b": keep-alive\n\n", fail=httpx.RemoteProtocolError("closed"))
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        deltas, error = await collect_error(openai(client).call(REQ))
    assert (deltas, error.kind, error.streamed) == ([], ErrorKind.CONNECTION, False)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), ErrorKind.CONNECTION),
        (httpx.ConnectTimeout("slow"), ErrorKind.TIMEOUT),
        (httpx.PoolTimeout("no connection free"), ErrorKind.TIMEOUT),
    ],
)
async def test_failure_to_connect(exc: Exception, kind: ErrorKind) -> None:
    upstream = FakeUpstream(exc)
    async with upstream.client() as client:
        _, error = await collect_error(openai(client).call(REQ))
        _, anthropic_error = await collect_error(
            AnthropicAdapter(client, name="a", base_url="http://up.test", api_key="k").call(REQ)
        )
    assert error.kind is kind
    assert anthropic_error.kind is kind
    assert not error.streamed


async def test_invalid_url_is_not_leaked_as_an_httpx_exception() -> None:
    async with httpx.AsyncClient() as client:
        broken = OpenAIAdapter(client, name="o", base_url="http://[::1", api_key="k")
        _, error = await collect_error(broken.call(REQ))
    assert error.kind is ErrorKind.OTHER


async def test_finish_is_yielded_after_the_response_is_closed() -> None:
    response, stream = stream_response(sse_body(chunk("a"), chunk(finish="stop")))
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        async for event in openai(client).call(REQ):
            if isinstance(event, TextDelta):
                assert not stream.closed
            else:
                assert isinstance(event, Finish)
                assert stream.closed


async def test_stopping_early_closes_the_response() -> None:
    response, stream = stream_response(sse_body(chunk("a"), chunk("b")), block=True)
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        events = openai(client).call(REQ)
        async with contextlib.aclosing(events):
            first = await anext(events)
            assert first == TextDelta("a")
        assert stream.closed


async def test_cancellation_closes_the_response_and_propagates() -> None:
    response, stream = stream_response(sse_body(chunk("a")), block=True)
    upstream = FakeUpstream(response)
    seen: list[object] = []

    async with upstream.client() as client:

        async def consume() -> None:
            async for event in openai(client).call(REQ):
                seen.append(event)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(stream.blocked.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()
    assert seen == [TextDelta("a")]
    assert stream.closed


async def test_cancellation_while_reading_an_error_body() -> None:
    response, stream = stream_response(b'{"error": ', status=500, block=True)
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        task = asyncio.create_task(collect(openai(client).call(REQ)))
        await asyncio.wait_for(stream.blocked.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert stream.closed


async def test_timeout_maps_to_httpx_timeouts() -> None:
    body = sse_body(chunk("a"), chunk(finish="stop"))
    upstream = FakeUpstream(stream_response(body)[0], stream_response(body)[0])
    async with upstream.client(timeout=httpx.Timeout(30.0, connect=2.0)) as client:
        await collect(openai(client).call(REQ, timeout=4.5))
        await collect(openai(client).call(REQ))
    assert upstream.requests[0].extensions["timeout"] == {
        "connect": 4.5,
        "read": 4.5,
        "write": 4.5,
        "pool": 4.5,
    }
    # None: the client's own timeouts.
    assert upstream.requests[1].extensions["timeout"] == {
        "connect": 2.0,
        "read": 30.0,
        "write": 30.0,
        "pool": 30.0,
    }


async def test_no_time_left_fails_without_a_request() -> None:
    upstream = FakeUpstream(httpx.ConnectError("unused"))
    async with upstream.client() as client:
        _, error = await collect_error(openai(client).call(REQ, timeout=0))
        with pytest.raises(UpstreamError) as info:
            await AnthropicAdapter(
                client, name="a", base_url="http://up.test", api_key="k"
            ).count_tokens(REQ, timeout=-1)
    assert error.kind is ErrorKind.TIMEOUT
    assert info.value.kind is ErrorKind.TIMEOUT
    assert upstream.requests == []


async def test_deadline_is_checked_between_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(exchange_module, "monotonic", lambda: clock[0])
    response, stream = stream_response(
        [sse_body(chunk("a")), sse_body(chunk("b")), sse_body(chunk(finish="stop"))]
    )
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        events = openai(client).call(REQ, timeout=10)
        deltas: list[str] = []
        with pytest.raises(UpstreamError) as info:
            async for event in events:
                assert isinstance(event, TextDelta)
                deltas.append(event.text)
                clock[0] += 11  # the budget runs out while the consumer works
    assert deltas == ["a"]
    assert info.value.kind is ErrorKind.TIMEOUT
    assert info.value.streamed
    assert stream.closed


async def test_error_body_is_read_only_up_to_a_limit() -> None:
    big = [b'{"error": {"message": "', b"x" * 70_000, b"x" * 70_000, b'"}}']
    response, stream = stream_response(big, status=500, content_type="application/json")
    upstream = FakeUpstream(response)
    async with upstream.client() as client:
        _, error = await collect_error(openai(client).call(REQ))
    assert error.kind is ErrorKind.SERVER
    assert stream.sent == 2  # stopped reading after 64 KiB
    assert stream.closed


async def test_reading_a_consumed_response_is_not_leaked_as_an_httpx_exception() -> None:
    response, _ = stream_response(sse_body(chunk("a"), chunk(finish="stop")))
    upstream = FakeUpstream(response)  # the same response object twice: a broken transport
    async with upstream.client() as client:
        await collect(openai(client).call(REQ))
        _, error = await collect_error(openai(client).call(REQ))
    assert error.kind is ErrorKind.OTHER


async def test_make_adapter() -> None:
    async with httpx.AsyncClient() as client:
        openai_adapter = make_adapter(
            VendorKind.OPENAI, client, name="openai", base_url="http://x/v1", api_key="k"
        )
        compatible = make_adapter(
            VendorKind.OPENAI_COMPATIBLE,
            client,
            name="vllm",
            base_url="http://x/v1",
            api_key="",
            extra_headers={"x-a": "b"},
        )
        anthropic = make_adapter(
            VendorKind.ANTHROPIC,
            client,
            name="claude",
            base_url="http://x",
            api_key="k",
            version="2023-06-01",
        )
    assert isinstance(openai_adapter, OpenAIAdapter)
    assert (openai_adapter.kind, openai_adapter.name) == (VendorKind.OPENAI, "openai")
    assert isinstance(compatible, OpenAIAdapter)
    assert compatible.kind is VendorKind.OPENAI_COMPATIBLE
    assert "max_tokens" in compatible.build_payload(REQ)
    assert isinstance(anthropic, AnthropicAdapter)
    assert anthropic.kind is VendorKind.ANTHROPIC


def test_adapters_satisfy_the_protocol() -> None:
    client = httpx.AsyncClient()
    adapters: list[VendorAdapter] = [
        OpenAIAdapter(client, name="o", base_url="http://x/v1", api_key="k"),
        AnthropicAdapter(client, name="a", base_url="http://x", api_key="k"),
    ]
    assert [adapter.name for adapter in adapters] == ["o", "a"]
