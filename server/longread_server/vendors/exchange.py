"""One HTTP exchange with a vendor, shared by every adapter.

Sends a JSON body over the shared httpx client (``vendors/transport.py``), maps an error status to
``UpstreamError``, feeds the SSE stream (or the whole JSON body) to a vendor-specific
``ResponseParser`` and yields the events it produces. Owns the failure rules the adapters
have in common:

* httpx exceptions become TIMEOUT / CONNECTION errors; an unexpected JSON shape is
  CONNECTION; ``streamed`` is set on any error raised after a ``TextDelta`` was yielded;
* an error leaves without the exception it came from (``from None``: a traceback prints
  the text of its cause, and an httpx error's text may quote a header or the response) and
  with the request's credentials scrubbed from its ``detail`` (``vendors.errors.scrub``);
* the response is always closed (``async with``), also when the consumer stops early or the
  task is cancelled; ``CancelledError`` is never caught;
* ``Finish`` (and a non-streaming answer) is yielded only after the response is closed, so
  a slow consumer never holds a pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from time import monotonic
from typing import Any, Protocol

import httpx

from longread_server.domain import ErrorKind, Finish, LlmEvent, TextDelta, UpstreamError
from longread_server.vendors.errors import (
    identifier,
    load_json,
    malformed,
    scrub,
    transport_error,
)
from longread_server.vendors.sse import ServerSentEvent, SSEDecoder
from longread_server.vendors.transport import HttpClient

_MAX_ERROR_BODY = 64 * 1024  # bytes of an error body worth reading
_DRAIN_S = 0.05  # how long to wait for the rest of a stream after its end marker
_DRAIN_BYTES = 64 * 1024

ErrorFromResponse = Callable[[httpx.Response, bytes], UpstreamError]


class ResponseParser(Protocol):
    """Vendor-specific reading of one response. A new parser is made for every call."""

    done: bool  # the stream said it is over ([DONE], message_stop): stop reading

    def on_event(self, event: ServerSentEvent) -> str:
        """Read one SSE event; return the answer text it carries ("" if none). Raises
        ``UpstreamError`` for an in-stream error."""
        ...

    def end_of_stream(self) -> Finish:
        """The stream ended (``done`` or EOF): the final event, or an ``UpstreamError`` if the
        stream stopped before the answer was complete."""
        ...

    def parse_body(self, body: bytes) -> tuple[str, Finish]:
        """Read a whole non-streaming JSON body: the answer text and the final event."""
        ...


# Request headers that carry a credential, and the schemes written before it.
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})
_SCHEMES = ("bearer ", "basic ")


def _secrets(headers: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for name, value in headers.items():
        if name.lower() in _CREDENTIAL_HEADERS:
            value = value.strip()
            if value[:7].lower().startswith(_SCHEMES):
                value = value.split(None, 1)[-1]
            out.append(value)
    return out


def _redacted(error: UpstreamError, headers: Mapping[str, str]) -> UpstreamError:
    if error.detail:
        error.detail = scrub(error.detail, _secrets(headers))
    return error


def encode_json(payload: dict[str, Any]) -> bytes:
    """The request body for ``payload``: compact, UTF-8, one ``json.dumps``."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _deadline_error(upstream: str, *, unsent: bool = False) -> UpstreamError:
    return UpstreamError(ErrorKind.TIMEOUT, f"{upstream}: deadline exceeded", unsent=unsent)


async def _read_body(
    response: httpx.Response, upstream: str, deadline: float | None, limit: int | None
) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if deadline is not None and monotonic() > deadline:
            raise _deadline_error(upstream)
        parts.append(chunk)
        size += len(chunk)
        if limit is not None and size >= limit:
            break
    return b"".join(parts)


def _is_json(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("application/json")


async def post_json(
    client: HttpClient,
    url: str,
    *,
    upstream: str,
    headers: Mapping[str, str],
    body: bytes,
    time_left: float | None,
    error_from_response: ErrorFromResponse,
) -> Any:
    """A plain JSON request/response (no events), e.g. Anthropic ``count_tokens``."""
    if time_left is not None and time_left <= 0:
        raise _deadline_error(upstream, unsent=True)
    deadline = None if time_left is None else monotonic() + time_left
    # Every phase (connect, pool wait, write, each read) gets the whole time left, so none
    # outlives the budget; the budget is also checked between reads (the caller's deadline,
    # which cancels the task, is the hard bound). A number: httpx builds its Timeout from it.
    timeout = httpx.USE_CLIENT_DEFAULT if time_left is None else time_left
    try:
        async with client.stream(
            "POST", url, content=body, headers=headers, timeout=timeout
        ) as response:
            if not response.is_success:
                raise error_from_response(
                    response, await _read_body(response, upstream, deadline, _MAX_ERROR_BODY)
                )
            raw = await _read_body(response, upstream, deadline, None)
    except UpstreamError as exc:
        raise _redacted(exc, headers) from None
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        raise _redacted(transport_error(upstream, exc), headers) from None
    return load_json(upstream, raw)


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Reads what is left of a finished stream (normally just the end of the chunked body),
    so the connection goes back to the pool instead of being closed. Bounded in bytes and
    time: a server that keeps talking after the end gets its connection closed instead."""
    size = 0
    with contextlib.suppress(TimeoutError, httpx.HTTPError, httpx.StreamError):
        async with asyncio.timeout(_DRAIN_S):
            async for chunk in chunks:
                size += len(chunk)
                if size > _DRAIN_BYTES:
                    return


async def exchange(
    client: HttpClient,
    url: str,
    *,
    upstream: str,
    headers: Mapping[str, str],
    body: bytes,
    stream: bool,
    time_left: float | None,
    parser: ResponseParser,
    error_from_response: ErrorFromResponse,
    request_id_header: str,
) -> AsyncGenerator[LlmEvent, None]:
    """POST ``body`` to ``url`` and yield the answer as events (see the module docstring)."""
    if time_left is not None and time_left <= 0:
        raise _deadline_error(upstream, unsent=True)
    deadline = None if time_left is None else monotonic() + time_left
    streamed = False
    request_id = ""
    text = ""
    timeout = httpx.USE_CLIENT_DEFAULT if time_left is None else time_left
    try:
        async with client.stream(
            "POST", url, content=body, headers=headers, timeout=timeout
        ) as response:
            request_id = identifier(response.headers.get(request_id_header, ""))
            if not response.is_success:
                raise error_from_response(
                    response, await _read_body(response, upstream, deadline, _MAX_ERROR_BODY)
                )
            if stream and not _is_json(response):
                decoder = SSEDecoder()
                done = False
                chunks = response.aiter_bytes()
                async for chunk in chunks:
                    if deadline is not None and monotonic() > deadline:
                        raise _deadline_error(upstream)
                    for event in decoder.feed(chunk):
                        delta = parser.on_event(event)
                        if delta:
                            streamed = True
                            yield TextDelta(delta)
                        if parser.done:
                            done = True
                            break
                    if done:
                        await _drain(chunks)
                        break
                else:
                    for event in decoder.flush():
                        delta = parser.on_event(event)
                        if delta:
                            streamed = True
                            yield TextDelta(delta)
                        if parser.done:
                            break
                finish = parser.end_of_stream()
            else:
                # Not streaming, or a server that answered a stream request with plain JSON.
                raw = await _read_body(response, upstream, deadline, None)
                text, finish = parser.parse_body(raw)
    except UpstreamError as exc:
        exc.streamed = exc.streamed or streamed
        if not exc.request_id:
            exc.request_id = request_id
        raise _redacted(exc, headers) from None
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        error = transport_error(upstream, exc)
        error.streamed = streamed
        error.request_id = request_id
        raise _redacted(error, headers) from None
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        # JSON of an unexpected shape (e.g. a list where an object belongs). The exception's
        # text may quote the JSON (a KeyError's key): only its type is named.
        error = malformed(upstream, f"unexpected structure ({type(exc).__name__})")
        error.streamed = streamed
        error.request_id = request_id
        raise error from None
    if text:
        yield TextDelta(text)
    yield finish
