"""Fuzz targets: the vendor response parsers, through the adapters (``vendors/openai.py``,
``anthropic.py``, ``exchange.py``, ``errors.py``).

Input: the bytes of one response body. Each input is served to the adapter, over a fake HTTP
client, four ways: as an event stream in one read, as the same stream split at points drawn from
the input, as a non-streaming JSON body, and as the body of an error status (also drawn from the
input). The adapter's contract (``vendors/base.py``): ``TextDelta``s, then exactly one
``Finish``; or an ``UpstreamError``, with ``streamed`` set once text was yielded, and nothing
else ever escapes. How the body is read into reads must not change the outcome, and an error
status keeps its status and a kind the status or the body accounts for. An error's message is
never the body's text: only the status, its standard phrase, and the vendor's error type and
code when they are identifiers (``vendors/errors.py``, redaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import httpx
from longread_server.domain import (
    ErrorKind,
    Finish,
    LlmEvent,
    LlmRequest,
    Message,
    TextDelta,
    UpstreamError,
)
from longread_server.vendors.anthropic import AnthropicAdapter
from longread_server.vendors.errors import kind_for_status
from longread_server.vendors.openai import OpenAIAdapter

from tests.fuzz.sse import splits

# Statuses the vendors send, plus unusual ones (which defer to the body).
STATUSES = (400, 401, 402, 403, 404, 408, 409, 413, 418, 422, 429, 500, 502, 503, 504, 529, 599)
# (kind of outcome, text or error kind, finish or error message, streamed)
Outcome = tuple[str, object, object, bool]


class _Body(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class FakeUpstream:
    """An ``HttpClient`` that answers every request with one canned response."""

    def __init__(self, status: int, content_type: str, chunks: list[bytes]) -> None:
        self.status = status
        self.headers = {"content-type": content_type, "x-request-id": "req-1", "request-id": "r1"}
        self.chunks = chunks

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes,
        headers: Mapping[str, str],
        timeout: float | httpx._client.UseClientDefault,
    ) -> AsyncIterator[httpx.Response]:
        response = httpx.Response(self.status, headers=self.headers, stream=_Body(self.chunks))
        try:
            yield response
        finally:
            await response.aclose()


_LOOP = asyncio.new_event_loop()


async def _collect(events: AsyncGenerator[LlmEvent, None]) -> Outcome:
    deltas: list[str] = []
    finish: Finish | None = None
    try:
        async for event in events:
            assert finish is None, "nothing may follow Finish"
            if isinstance(event, TextDelta):
                assert isinstance(event.text, str) and event.text, "no empty deltas"
                deltas.append(event.text)
            else:
                assert isinstance(event, Finish), f"unexpected event {event!r}"
                finish = event
    except UpstreamError as exc:
        assert finish is None, "no failure after Finish"
        assert isinstance(exc.kind, ErrorKind)
        assert exc.streamed == bool(deltas), "streamed is set exactly when text was yielded"
        return ("error", exc.kind, exc.message, exc.streamed)
    assert finish is not None, "a successful call ends with Finish"
    assert isinstance(finish.finish_reason, str) and finish.finish_reason
    assert isinstance(finish.model, str) and isinstance(finish.response_id, str)
    usage = finish.usage
    assert usage.calls == 1
    for n in (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens):
        assert type(n) is int
    return ("ok", "".join(deltas), finish, False)


Adapter = OpenAIAdapter | AnthropicAdapter
MakeAdapter = Callable[[FakeUpstream], Adapter]


def _run(make: MakeAdapter, upstream: FakeUpstream, stream: bool) -> Outcome:
    request = LlmRequest(
        model="m", messages=(Message("user", "q"),), max_output_tokens=16, stream=stream
    )
    return _LOOP.run_until_complete(_collect(make(upstream).call(request, timeout=None)))


def check(make: MakeAdapter, data: bytes) -> None:
    sse = "text/event-stream"
    whole = _run(make, FakeUpstream(200, sse, [data]), stream=True)
    split = _run(make, FakeUpstream(200, sse, splits(data)), stream=True)
    assert split == whole, (split, whole)
    _run(make, FakeUpstream(200, "application/json", [data]), stream=False)
    # A stream request answered with plain JSON is read as a body.
    _run(make, FakeUpstream(200, "application/json", splits(data)), stream=True)

    status = STATUSES[zlib.crc32(data) % len(STATUSES)]
    outcome, kind, message, streamed = _run(make, FakeUpstream(status, sse, [data]), stream=True)
    assert outcome == "error" and not streamed
    assert isinstance(message, str), message
    said = rf"upstream: HTTP {status}( [A-Za-z' -]+)?( \([A-Za-z0-9][A-Za-z0-9_.:, -]*\))?"
    assert re.fullmatch(said, message), message
    by_status = kind_for_status(status)
    # The status decides, except what the body names: billing always, overloaded over a 5xx,
    # anything over a status of no known meaning.
    assert (
        kind in (by_status, ErrorKind.BILLING)
        or (kind is ErrorKind.OVERLOADED and by_status is ErrorKind.SERVER)
        or by_status is ErrorKind.OTHER
    ), (status, kind)


def _openai(upstream: FakeUpstream) -> Adapter:
    return OpenAIAdapter(upstream, name="upstream", base_url="http://upstream/v1", api_key="k")


def _anthropic(upstream: FakeUpstream) -> Adapter:
    return AnthropicAdapter(upstream, name="upstream", base_url="http://upstream", api_key="k")


def _count_tokens(data: bytes) -> None:
    request = LlmRequest(model="m", messages=(Message("user", "q"),), max_output_tokens=16)
    adapter = AnthropicAdapter(
        FakeUpstream(200, "application/json", [data]),
        name="upstream",
        base_url="http://upstream",
        api_key="k",
    )
    try:
        count = _LOOP.run_until_complete(adapter.count_tokens(request))
    except UpstreamError:
        return
    assert type(count) is int


def fuzz_openai(data: bytes) -> None:
    check(_openai, data)


def fuzz_anthropic(data: bytes) -> None:
    check(_anthropic, data)
    _count_tokens(data)


def outcome(make: MakeAdapter, data: bytes, *, stream: bool) -> Any:
    """What the adapter makes of ``data`` as a 200 body (for regression tests)."""
    content_type = "text/event-stream" if stream else "application/json"
    return _run(make, FakeUpstream(200, content_type, [data]), stream=stream)
