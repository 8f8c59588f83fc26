"""Test helpers: a real ``httpx.AsyncClient`` over ``httpx.MockTransport`` serving canned
bytes, split into chunks exactly as given (so tests control the network read boundaries)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import httpx
from longread_server.domain import Finish, LlmEvent, TextDelta, UpstreamError


class ChunkStream(httpx.AsyncByteStream):
    """A response body delivered in the given chunks; can then block (until ``release``) or
    fail with a transport error. Records whether it was closed, and when."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        block: bool = False,
        fail: Exception | None = None,
    ) -> None:
        self.chunks = list(chunks)
        self.sent = 0
        self.closed = False
        self.blocked = asyncio.Event()
        self._release = asyncio.Event() if block else None
        self._fail = fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.sent += 1
            yield chunk
        if self._release is not None:
            self.blocked.set()
            await self._release.wait()
        if self._fail is not None:
            raise self._fail

    async def aclose(self) -> None:
        self.closed = True


def split_every(data: bytes, size: int) -> list[bytes]:
    """``data`` in pieces of ``size`` bytes (size 1 splits every multi-byte character)."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def sse_body(*events: dict[str, Any] | str) -> bytes:
    """An OpenAI-style stream: each dict becomes ``data: <json>\\n\\n``; a str is sent as is."""
    out = []
    for event in events:
        if isinstance(event, str):
            out.append(event)
        else:
            out.append("data: " + json.dumps(event, ensure_ascii=False) + "\n\n")
    return "".join(out).encode()


def anthropic_body(*events: dict[str, Any] | str) -> bytes:
    """An Anthropic-style stream: ``event: <type>\\ndata: <json>\\n\\n`` per dict."""
    out = []
    for event in events:
        if isinstance(event, str):
            out.append(event)
        else:
            data = json.dumps(event, ensure_ascii=False)
            out.append(f"event: {event['type']}\ndata: {data}\n\n")
    return "".join(out).encode()


def stream_response(
    body: bytes | Sequence[bytes],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_type: str = "text/event-stream",
    chunk_size: int | None = None,
    block: bool = False,
    fail: Exception | None = None,
) -> tuple[httpx.Response, ChunkStream]:
    """A response whose body arrives in the given chunks (or ``body`` split every
    ``chunk_size`` bytes)."""
    if isinstance(body, bytes):
        chunks = split_every(body, chunk_size) if chunk_size else [body]
    else:
        chunks = list(body)
    stream = ChunkStream(chunks, block=block, fail=fail)
    all_headers = {"content-type": content_type, **(headers or {})}
    return httpx.Response(status, headers=all_headers, stream=stream), stream


def json_response(
    obj: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=obj, headers=headers)


class FakeUpstream:
    """Serves one canned response per request (the last one repeats) and records requests."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.responses[min(len(self.requests), len(self.responses)) - 1]
        if isinstance(response, Exception):
            raise response
        return response

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle), **kw)

    @property
    def last_json(self) -> Any:
        return json.loads(self.requests[-1].content)


async def collect(events: AsyncIterator[LlmEvent]) -> tuple[list[str], Finish]:
    """All deltas and the Finish, checking the event grammar: TextDelta* Finish, then end."""
    deltas: list[str] = []
    finish: Finish | None = None
    async for event in events:
        assert finish is None, "nothing may follow Finish"
        if isinstance(event, TextDelta):
            assert event.text, "no empty deltas"
            deltas.append(event.text)
        else:
            assert isinstance(event, Finish), "a chat call yields no count"
            finish = event
    assert finish is not None, "a successful call ends with Finish"
    return deltas, finish


async def collect_error(events: AsyncIterator[LlmEvent]) -> tuple[list[str], UpstreamError]:
    """The deltas yielded before the call failed, and the failure."""
    deltas: list[str] = []
    try:
        async for event in events:
            assert isinstance(event, TextDelta), "no Finish before a failure"
            deltas.append(event.text)
    except UpstreamError as exc:
        return deltas, exc
    raise AssertionError("the call did not fail")
