"""The one HTTP client for upstream calls: an ``httpx.AsyncClient`` over a transport of our own.

Adapters need little of a client: POST a body, read the status and headers (``Retry-After``,
rate limits, request ids), iterate the body as it arrives (SSE). ``upstream_client()`` is
``httpx.AsyncClient`` for all of that: its request and response models, its exceptions, the
proxy transports it mounts and the OpenTelemetry instrumentation that wraps its transports all
stay httpx's. The gateway sends through ``UpstreamHttp``, which hands each request to the
transport the client would pick, without the client's per-request layers (auth flows,
redirects, cookies, event hooks) that it never uses: on a fast upstream those layers cost as
much CPU as the transport itself.

Under it, for direct connections, is ``LeanTransport`` (an ``httpx.AsyncBaseTransport``):
keep-alive HTTP/1.1 connections, each the asyncio protocol of its socket (what arrives goes
straight into the parser of the response being read), pooled per origin. It exists because
httpx's default transport (httpcore's pool over anyio streams) is general — HTTP/2, proxies,
SOCKS, several event loops — and on the gateway's hot path, a cache miss against a fast
upstream or a model streaming one token per event, that generality is most of the gateway's
CPU. ``LeanTransport`` leaves out what this traffic never needs: HTTP/2, proxies (httpx's own
transports serve proxied URLs, see below), Unix sockets, local addresses, socket options, other
event loops than asyncio.

Responses are parsed by httptools (llhttp, the parser of Node.js, which uvicorn uses too), not
h11 (httpcore's): h11 is pure Python, and its regular expressions over every header of a
response and every piece of a chunked body cost more than the rest of the transport, once per
miss and once per streamed event. What h11 decided, this module decides the same way, and
``tests/unit/vendors/test_transport.py`` holds it to it: informational (1xx) responses are
skipped; a body framed by neither Content-Length nor chunked runs to the close; a connection is
reused only when the response was read to its end and the server keeps it open (HTTP/1.1
without ``Connection: close``, or HTTP/1.0 with ``keep-alive``, which h11 never reuses); a
response with both Content-Length and Transfer-Encoding is refused as RFC 9112 section 6.3
advises (h11 took the chunked framing); bytes after the end of a response leave it whole but
its connection is closed, so they are never read as the next answer, and so are bytes that
arrive while a connection sits idle; a server that answers before it has read the whole
request, and half-closes, still gets the rest of the request, and its answer is the response
(as with httpcore). The request head is written here, with h11's checks: the method and
header names are tokens, and no value holds a CR, LF or NUL that would split the request; the
error names the header, never its value (h11 quoted the value, an API key with a stray newline
included).

The settings, and why:

* a cap on open connections across all upstreams (``server.upstream_max_connections``): a
  burst of map calls waits for a free connection (inside the call's own deadline, as the pool
  timeout) instead of opening sockets without bound; idle ones count towards it, and one idle
  for another origin is closed to make room;
* an idle connection is not reused after 5 s: a peer or a NAT on the way may have dropped it
  without a word, and a request sent on it would only fail at the read timeout;
* the keep-alive race: a request sent on a reused connection that the server closed while it
  sat idle (no byte of a response came back, and the close came within
  ``RACE_WINDOW_S`` of the request) is sent once more on a fresh connection, as a browser
  does; a failure after any byte of the response arrived is never retried here, nor is a
  close long after the request: that is an upstream that took the request and hung up, and
  sending it again would hide the hang from the breaker and double the wait inside one
  attempt;
* the environment is honoured: ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` with ``NO_PROXY``
  (read by httpx; those URLs go through httpx's own proxy transports, capped by the same
  number), and ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (httpx's default TLS context);
* answers are asked for uncompressed: a compressor on the way could hold back the pieces of
  a stream, and a model's answer is small next to the prompt we send;
* no cookie jar: a cookie a vendor sets (CDN affinity, bot checks) would otherwise be sent
  back on the next call, whichever tenant it is for;
* HTTP/1.1 only, no redirects (an API endpoint that redirects is misconfigured);
* with tracing on, each request carries the trace context of the model call it is an attempt
  of (``traceparent``, ``tracestate``, ``baggage``: whatever the configured propagators,
  ``OTEL_PROPAGATORS``, write), so a vendor or a proxy that traces joins the caller's trace.
  The pipeline names the call's span with ``send_trace_context`` rather than making it the
  current span: a current span would become the parent of whatever the code reading the
  call's events starts meanwhile. With tracing off nothing is set, and a request costs one
  context-variable lookup more.

Failures are httpx's exceptions (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
``WriteTimeout``, ``PoolTimeout``, ``RemoteProtocolError``...); ``vendors/errors.py`` turns them
into ``UpstreamError`` kinds and they never leave ``vendors/``.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    nullcontext,
    suppress,
)
from contextvars import ContextVar, Token
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import NamedTuple, Protocol, cast

import httptools
import httpx

# httpx reads the proxy variables only when it builds its own transport; with ours, its reading
# of them (the same NO_PROXY rules) is asked for here and the proxy transports mounted by hand.
from httpx._utils import get_environment_proxies
from opentelemetry import propagate, trace

from longread_server import __version__
from longread_server.memo import Memo
from longread_server.repeat_timeout import RepeatTimeout

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
KEEPALIVE_EXPIRY_S = 5.0
# A close that crossed our request on the wire arrives within a round trip of sending it; one
# second covers slow links, and is far below any upstream's own give-up time.
RACE_WINDOW_S = 1.0
DEFAULT_MAX_CONNECTIONS = 1000

_READ = 64 * 1024
# Body bytes parsed but not yet taken above which a connection stops reading (a slow consumer
# of a fast stream), one read past it at most; it reads again once no more than ``_READ`` are
# left.
_BUFFERED_MAX = 4 * _READ
_Origin = tuple[bytes, bytes, int]  # scheme, host, port

# The span whose context goes upstream with a request (see the module docstring).
_UPSTREAM_SPAN: ContextVar[trace.Span | None] = ContextVar("longread_upstream_span", default=None)
_NOTHING: AbstractContextManager[None] = nullcontext()


class _SendingTraceContext:
    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: Token[trace.Span | None] | None = None

    def __enter__(self) -> None:
        self._token = _UPSTREAM_SPAN.set(self._span)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            # Exited in another context (an async generator closed by whoever finalized it):
            # that context never saw the value, so there is nothing to undo there.
            with suppress(ValueError):
                _UPSTREAM_SPAN.reset(self._token)


def send_trace_context(span: trace.Span | None) -> AbstractContextManager[None]:
    """While inside, requests sent from this context carry ``span``'s trace context (and the
    context's baggage); ``None``: nothing is sent (tracing off)."""
    return _NOTHING if span is None else _SendingTraceContext(span)


def _inject(headers: httpx.Headers, span: trace.Span) -> None:
    # The current context keeps the caller's baggage; the span replaces its current span.
    propagate.inject(headers, context=trace.set_span_in_context(span))


class HttpClient(Protocol):
    """What the adapters use of a client: ``httpx.AsyncClient`` has it, and so does
    ``UpstreamHttp``, the gateway's."""

    def stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes,
        headers: Mapping[str, str],
        timeout: float | httpx._client.UseClientDefault,
    ) -> AbstractAsyncContextManager[httpx.Response]: ...


class UpstreamHttp:
    """``client``'s transports, sent to without ``AsyncClient``'s per-request layers.

    A request goes to the transport ``client`` itself would pick for its URL (``LeanTransport``,
    or httpx's proxy transport for a proxied one), with the client's default headers and
    timeout; its response is httpx's. What those layers add is left out because the gateway
    never uses it: auth flows, redirects (off), cookies (none kept), event hooks, ``elapsed``.
    The OpenTelemetry httpx instrumentation wraps the transports, so its spans are the same.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        # The client's default headers, spelled as it sends them, by lower-case name.
        self._headers = {
            name.decode("latin-1").lower(): (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in client.headers.raw
        }
        self._timeout = client.timeout.as_dict()
        self._transports: Memo[tuple[str, str, int | None], httpx.AsyncBaseTransport] = Memo(256)
        # Parsed URLs and prepared headers, by value: an upstream's calls repeat the same few,
        # and parsing and normalizing them is most of what a request costs to build.
        self._urls: Memo[str, httpx.URL] = Memo(256)
        self._prepared: Memo[tuple[str, tuple[tuple[str, str], ...]], _Prepared] = Memo(256)

    def _transport(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        # The client's own choice (proxy mounts, NO_PROXY), remembered per origin.
        origin = (url.scheme, url.host, url.port)
        return self._transports.get_or_make(origin, lambda: self.client._transport_for_url(url))

    def stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes,
        headers: Mapping[str, str],
        timeout: float | httpx._client.UseClientDefault = httpx.USE_CLIENT_DEFAULT,
    ) -> AbstractAsyncContextManager[httpx.Response]:
        extensions = {
            "timeout": self._timeout
            if isinstance(timeout, httpx._client.UseClientDefault)
            else {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        }
        parsed = self._urls.get_or_make(url, lambda: httpx.URL(url))
        key = (parsed.netloc.decode("ascii"), tuple(headers.items()))
        prepared = self._prepared.get_or_make(key, lambda: self._prepare(parsed, key[1]))
        if content:
            # The request ``httpx.Request(method, url, content=..., headers=...)`` builds (the
            # same headers in the same order, the body read), from headers prepared once:
            # httpx would look each of them up again, by case-insensitive scans, every time.
            request = httpx.Request(
                method,
                parsed,
                headers=prepared.with_host,
                stream=httpx.ByteStream(content),
                extensions=extensions,
            )
            if not prepared.has_length:
                request.headers["Content-Length"] = str(len(content))
            request.read()
        else:
            request = httpx.Request(
                method, parsed, content=content, headers=prepared.merged, extensions=extensions
            )
        span = _UPSTREAM_SPAN.get()
        if span is not None:  # into the request's own copy of the headers
            _inject(request.headers, span)
        return _Sent(self._transport(request.url), request)

    def _prepare(self, url: httpx.URL, headers: tuple[tuple[str, str], ...]) -> _Prepared:
        # As ``AsyncClient`` merges them: a call's own header replaces the default of that
        # name, and comes after the defaults, in the call's order.
        given = {name.lower() for name, _ in headers}
        merged = [spelled for name, spelled in self._headers.items() if name not in given]
        merged.extend(headers)
        named = given | self._headers.keys()
        with_host = merged if "host" in named else [("Host", url.netloc.decode("ascii")), *merged]
        return _Prepared(httpx.Headers(merged), httpx.Headers(with_host), "content-length" in named)

    async def aclose(self) -> None:
        await self.client.aclose()


class _Prepared(NamedTuple):
    """A call's headers merged into the client's defaults; the same led by ``Host`` (unless
    given), as httpx sends them; whether they state a ``Content-Length``."""

    merged: httpx.Headers
    with_host: httpx.Headers
    has_length: bool


class _Sent(AbstractAsyncContextManager[httpx.Response]):
    """``request`` sent on ``async with``, its response closed at the end (a plain class: no
    generator and context manager object of ``asynccontextmanager`` per request)."""

    __slots__ = ("_request", "_response", "_transport")

    def __init__(self, transport: httpx.AsyncBaseTransport, request: httpx.Request) -> None:
        self._transport = transport
        self._request = request
        self._response: httpx.Response | None = None

    async def __aenter__(self) -> httpx.Response:
        response = await self._transport.handle_async_request(self._request)
        response.request = self._request
        self._response = response
        return response

    async def __aexit__(self, *exc: object) -> None:
        if self._response is not None:
            await self._response.aclose()


def upstream_client(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> httpx.AsyncClient:
    """The client for upstream calls; ``max_connections`` 0 means no cap."""
    cap = max_connections or None
    proxy_limits = httpx.Limits(
        max_connections=cap, max_keepalive_connections=cap, keepalive_expiry=KEEPALIVE_EXPIRY_S
    )
    return httpx.AsyncClient(
        transport=LeanTransport(max_connections=cap, keepalive_expiry=KEEPALIVE_EXPIRY_S),
        mounts=_proxy_mounts(proxy_limits),
        timeout=DEFAULT_TIMEOUT,
        headers={"user-agent": f"longread/{__version__}", "accept-encoding": "identity"},
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        follow_redirects=False,
        trust_env=True,
    )


def _proxy_mounts(limits: httpx.Limits) -> dict[str, httpx.AsyncBaseTransport | None]:
    """What ``AsyncClient`` would mount for the proxy variables: httpx's transport with the
    proxy for each proxied scheme, ``None`` (the client's own transport) for NO_PROXY hosts."""
    return {
        pattern: None if url is None else httpx.AsyncHTTPTransport(proxy=url, limits=limits)
        for pattern, url in get_environment_proxies().items()
    }


class _Head:
    """A final response's status line and headers."""

    __slots__ = ("headers", "reason", "status")

    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers


class _Marker(enum.Enum):
    END = "the end of the response"
    CLOSED = "closed before any byte of a response"


_END = _Marker.END
_CLOSED = _Marker.CLOSED
_NO_BODY = frozenset((204, 304))


class _ExtraResponse(Exception):
    """Raised from the parser's callback when a second response starts."""


class _Response:
    """The response to a connection's current request, read with httptools (llhttp, the
    parser of Node.js), its callbacks queued as the events ``_next_event`` hands out: the head
    (``_Head``; informational 1xx responses are skipped), the body's pieces (``bytes``), then
    ``_END``. A response whose body runs to the connection's close (neither Content-Length nor
    chunked) ends at the close, and its connection is not reused.

    One per connection, ``reset`` for each request after the first: the parser and this
    object refer to each other (its callbacks are our methods), so a pair made per request
    would be garbage only the cyclic collector frees, and its collections pause the loop."""

    __slots__ = (
        "_head_done",
        "_headers",
        "_parser",
        "_reason",
        "_started",
        "buffered",
        "ended",
        "events",
        "keep_alive",
        "until_close",
    )

    def __init__(self) -> None:
        self.events: collections.deque[_Head | bytes | _Marker] = collections.deque()
        self.reset()
        self._parser = httptools.HttpResponseParser(self)

    def reset(self) -> None:
        """Ready for the response to the connection's next request (the parser is ready for
        its next message once the last one ended on a connection kept alive)."""
        self.events.clear()
        self.buffered = 0  # bytes of body in ``events``
        self.ended = False  # the final response was read to its end
        self.keep_alive = False  # and the server lets the connection serve another request
        self.until_close = False  # the body ends when the connection closes
        self._started = False  # a byte of a response was parsed
        self._head_done = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if not isinstance(e.__context__, _ExtraResponse):
                raise
            # Bytes after the end of the response: the response stands, but whatever they
            # are would be read as the answer to the next request, so the connection is not
            # reused.
            self.keep_alive = False
        except httptools.HttpParserUpgrade:
            raise httpx.RemoteProtocolError("the server switched protocols") from None
        except httptools.HttpParserError as e:
            raise httpx.RemoteProtocolError(f"invalid HTTP response: {e}") from None

    def eof(self) -> _Marker:
        """What the connection's close means at this point of the response."""
        if self.until_close and not self.ended:
            self.ended = True
            self.keep_alive = False
            return _END
        if not self._started:
            return _CLOSED
        raise httpx.RemoteProtocolError("the server closed the connection mid-response")

    # httptools' callbacks.

    def on_message_begin(self) -> None:
        if self.ended:
            raise _ExtraResponse
        self._started = True

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # may come in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._head_done:  # a chunked body's trailer fields are not the response's
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the final response follows
            self._reason = b""
            self._headers = []
            return
        self._head_done = True
        self.keep_alive = parser.should_keep_alive()
        self.until_close = status not in _NO_BODY and not any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self._headers
        )
        self.events.append(_Head(status, self._reason, self._headers))

    def on_body(self, body: bytes) -> None:
        self.events.append(bytes(body))
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if not self._head_done:  # the end of an informational response
            return
        self.keep_alive = self.keep_alive and self._parser.should_keep_alive()
        self.ended = True
        self.events.append(_END)


class _Connection(asyncio.Protocol):
    """One connection, as the event loop's protocol for it: the bytes it receives go straight
    into the parser of the response being read (no stream reader buffering and copying them
    first: a streamed answer is one small read per event), and the reader waiting for an event
    is woken. Bytes that come while no request is out make the connection unfit for reuse (they
    would be read as the answer to the next request). Reading pauses while more than
    ``_BUFFERED_MAX`` bytes of body wait for a slow consumer, as a stream reader's limit does."""

    __slots__ = (
        "busy",
        "closed",
        "eof",
        "failure",
        "heard",
        "idle_since",
        "lost",
        "origin",
        "read_bound",
        "reading_paused",
        "response",
        "reused",
        "tls",
        "transport",
        "unsolicited",
        "waiter",
        "writable",
        "write_paused",
    )

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.tls = False
        self.response = _Response()  # the response to the current request (see reset)
        self.busy = False  # a request is out and its response not read to its end
        self.reused = False
        self.heard = False  # a byte of the current response has arrived
        self.idle_since = 0.0
        self.closed = False
        self.eof = False  # the peer sent its last byte (or the connection is lost)
        self.lost = False  # the connection is closed, by either side
        self.failure: Exception | None = None  # what reading the response ran into
        self.unsolicited = False  # bytes came while no request was out
        self.waiter: asyncio.Future[None] | None = None  # the reader waiting for an event
        self.reading_paused = False
        self.write_paused = False
        self.writable: asyncio.Future[None] | None = None  # a writer waiting for the buffer
        # The read timeout, over every read of the connection's life: one timer, not one a read.
        self.read_bound = RepeatTimeout()

    def stale(self) -> bool:
        return self.eof or self.unsolicited or self.transport is None or self.transport.is_closing()

    # The event loop's callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports have the methods of ``asyncio.Transport``, not its class.)
        self.transport = cast(asyncio.Transport, transport)
        self.tls = transport.get_extra_info("sslcontext") is not None

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.unsolicited = True
            return
        self.heard = True
        response = self.response
        try:
            response.feed(data)
        except Exception as e:  # (feed turns the parser's own errors into RemoteProtocolError)
            self.failure = e
            self.busy = False  # nothing more of it is read
        if response.buffered > _BUFFERED_MAX and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Our side stays open (as a stream reader's protocol keeps it): a server may answer
        # before it has read the whole request (an early 413) and half-close, reading on;
        # the rest of the request still goes out, then its answer is read. TLS cannot
        # half-close: its transport closes.
        return not self.tls

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.lost = True
        if exc is not None and self.failure is None and self.busy:
            self.failure = exc
        self._wake()
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Our side.

    def taken(self, n: int) -> None:
        """The consumer took ``n`` bytes of body: reading goes on once few are left."""
        response = self.response
        response.buffered -= n
        if self.reading_paused and response.buffered <= _READ and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()


class _Stale(Exception):
    """A reused connection turned out closed before any byte of the response arrived."""


async def _next_event(conn: _Connection, read_timeout: float | None) -> _Head | bytes | _Marker:
    response = conn.response
    events = response.events
    while not events:
        failure = conn.failure
        if failure is not None:
            if isinstance(failure, httpx.RemoteProtocolError):
                raise failure
            raise httpx.ReadError(str(failure) or type(failure).__name__)
        if conn.eof:
            return response.eof()
        waiter = conn.waiter = asyncio.get_running_loop().create_future()
        try:
            with conn.read_bound.bound(read_timeout):
                await waiter
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the response") from None
        finally:
            conn.waiter = None
    event = events.popleft()
    if type(event) is bytes:
        conn.taken(len(event))
    return event


# What a request's head may hold (RFC 9110: a method and a field name are tokens; a field
# value is visible characters, spaces and tabs, RFC 9110 section 5.5), checked before anything
# is sent, as h11 does: a stray CR or LF in a header would otherwise split the request.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_TARGET = re.compile(rb"[^\x00-\x20\x7f]+")


def _request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request line and headers, as bytes; ``httpx.LocalProtocolError`` for what cannot
    be sent (the message names the header, never its value, which may be a key)."""
    if not _TOKEN.fullmatch(method):
        raise httpx.LocalProtocolError("invalid HTTP method")
    if not _TARGET.fullmatch(target):
        raise httpx.LocalProtocolError("invalid request target")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise httpx.LocalProtocolError("invalid header name")
        if not _VALUE.fullmatch(value):
            raise httpx.LocalProtocolError(f"invalid value of the header {name.decode('ascii')}")
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


async def _drain(conn: _Connection, timeout: float | None) -> None:
    """Waits, within ``timeout``, until the socket has taken what was written above the
    transport's high-water mark (most requests never reach it: no timer is armed for them);
    ``ConnectionResetError`` once the connection is lost, as a stream writer's ``drain``."""
    if conn.write_paused and not conn.lost:
        writable = conn.writable = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(timeout):
            await writable
    if conn.lost:
        raise ConnectionResetError("Connection lost")


class _Body(httpx.AsyncByteStream):
    """A response body read through httptools. The connection goes back to the pool as soon as the
    body has been read to its end; a body closed before that closes its connection (what is
    left of it could be anything up to a whole stream)."""

    def __init__(self, pool: LeanTransport, conn: _Connection, read_timeout: float | None):
        self._pool = pool
        self._conn: _Connection | None = conn
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                event = await _next_event(conn, self._read_timeout)
                if type(event) is bytes:
                    if event:
                        yield event
                elif event is _END:
                    self._conn = None
                    self._pool._checkin(conn)
                    return
                else:  # closed before the end of the body
                    raise httpx.RemoteProtocolError("the server closed the connection mid-body")
        except BaseException:
            self._conn = None
            self._pool._drop(conn)
            raise

    async def aclose(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._pool._drop(conn)


class LeanTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over asyncio protocols, pooled per origin, with a cap on open
    connections in total (``None``: no cap). See the module docstring."""

    def __init__(
        self,
        *,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._cap = max_connections
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open = 0  # connections open or being opened: what the cap bounds
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._queued = 0  # requests waiting for a connection (woken or not)
        self._last_sweep = time.monotonic()
        self._closed = False
        self.connections_opened = 0

    @property
    def open_connections(self) -> int:
        return self._open

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"cannot send to {url}: only http and https")
        if not url.raw_host:
            raise httpx.UnsupportedProtocol(f"cannot send to {url}: no host")
        origin = (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None  # a streamed body: sent as it comes, and never sent twice
        head = _request_head(request.method.encode("ascii"), url.raw_path, request.headers.raw)

        conn = await self._acquire(origin, timeouts)
        try:
            event = await self._exchange(conn, head, body, request, timeouts)
        except _Stale:
            conn = await self._reconnect(conn, timeouts)
            event = await self._exchange(conn, head, body, request, timeouts)
        return httpx.Response(
            status_code=event.status,
            headers=event.headers,
            stream=_Body(self, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                self._drop(conn)
        self._idle.clear()

    # The pool.

    async def _acquire(self, origin: _Origin, timeouts: dict[str, float | None]) -> _Connection:
        if not self._queued:
            conn = self._take(origin)
            if conn is not None:
                return conn
            if self._cap is None or self._open < self._cap:
                self._open += 1
                return await self._connect(origin, timeouts.get("connect"))
        # Full: wait in line for a connection to come back or a slot to free up.
        self._queued += 1
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                while True:
                    conn = self._take(origin)
                    if conn is not None:
                        return conn
                    if self._cap is None or self._open < self._cap or self._evict_one():
                        self._open += 1
                        break
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    except BaseException:
                        if waiter.done() and not waiter.cancelled():
                            self._wake()  # woken, but leaving: the wake goes to the next one
                        elif waiter in self._waiters:
                            self._waiters.remove(waiter)
                        raise
        except TimeoutError:
            raise httpx.PoolTimeout("timed out waiting for a free connection") from None
        finally:
            self._queued -= 1
        return await self._connect(origin, timeouts.get("connect"))

    def _take(self, origin: _Origin) -> _Connection | None:
        """An idle connection to ``origin`` still fit for a request (the most recent first)."""
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.stale() or now - conn.idle_since > self._expiry:
                self._drop(conn)
                continue
            conn.reused = True
            conn.heard = False
            return conn
        return None

    def _evict_one(self) -> bool:
        """Closes the longest idle connection (to any origin) to free a slot."""
        oldest: list[_Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is None:
            return False
        self._drop(oldest.pop(0))
        return True

    def _checkin(self, conn: _Connection) -> None:
        # (Its request was sent whole: a response is read only once the request is out.)
        if (
            conn.response.ended
            and conn.response.keep_alive
            and not conn.stale()
            and not self._closed
        ):
            conn.response.reset()
            conn.busy = False
            conn.idle_since = now = time.monotonic()
            self._idle.setdefault(conn.origin, []).append(conn)
            if self._waiters:
                self._wake()
            if now - self._last_sweep > self._expiry:
                self._sweep(now)
        else:
            self._drop(conn)

    def _sweep(self, now: float) -> None:
        """Closes idle connections past their expiry (to any origin)."""
        self._last_sweep = now
        for idle in self._idle.values():
            while idle and now - idle[0].idle_since > self._expiry:
                self._drop(idle.pop(0))

    def _drop(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.busy = False
        if conn.transport is not None:
            conn.transport.close()
        conn.read_bound.close()
        self._open -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # One connection.

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        """Opens a connection on a slot already counted in ``_open``."""
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        tls: ssl.SSLContext | None = None
        if scheme == b"https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context(trust_env=True)
                self._ssl.set_alpn_protocols(["http/1.1"])
            tls = self._ssl
        try:
            async with asyncio.timeout(timeout):
                _, conn = await asyncio.get_running_loop().create_connection(
                    lambda: _Connection(origin), host, port, ssl=tls
                )
        except BaseException as e:
            self._open -= 1
            if self._waiters:
                self._wake()
            if isinstance(e, TimeoutError):
                raise httpx.ConnectTimeout(f"connecting to {host}:{port}") from None
            if isinstance(e, OSError):
                raise httpx.ConnectError(str(e) or type(e).__name__) from None
            raise
        self.connections_opened += 1
        return conn

    async def _reconnect(
        self, stale: _Connection, timeouts: dict[str, float | None]
    ) -> _Connection:
        """A fresh connection in place of ``stale`` (already closed), on its slot."""
        self._open += 1  # _drop gave the slot back; take it again before anyone else can
        return await self._connect(stale.origin, timeouts.get("connect"))

    async def _exchange(
        self,
        conn: _Connection,
        head: bytes,
        body: bytes | None,
        request: httpx.Request,
        timeouts: dict[str, float | None],
    ) -> _Head:
        """Sends the request on ``conn`` and reads the response head; on any failure the
        connection is closed (``_Stale``: a reused one the server had closed, the request can
        be sent again)."""
        try:
            return await self._send(conn, head, body, request, timeouts)
        except BaseException:
            self._drop(conn)
            raise

    async def _send(
        self,
        conn: _Connection,
        head: bytes,
        body: bytes | None,
        request: httpx.Request,
        timeouts: dict[str, float | None],
    ) -> _Head:
        retriable = conn.reused and body is not None
        write_timeout = timeouts.get("write")
        transport = conn.transport
        assert transport is not None
        conn.busy = True
        try:
            if conn.lost:
                raise ConnectionResetError("Connection lost")
            if body is not None:  # framed by its Content-Length, which httpx set
                transport.write(head + body)
                await _drain(conn, write_timeout)
            else:
                chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
                transport.write(head)
                async for chunk in request.stream:  # type: ignore[union-attr]
                    if chunk:
                        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                        await _drain(conn, write_timeout)
                if chunked:
                    transport.write(b"0\r\n\r\n")
                await _drain(conn, write_timeout)
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request") from None
        except OSError as e:
            if retriable:
                raise _Stale from e
            raise httpx.WriteError(str(e) or type(e).__name__) from None
        read_timeout = timeouts.get("read")
        sent = time.monotonic()
        try:
            event = await _next_event(conn, read_timeout)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            if retriable and not conn.heard and time.monotonic() - sent < RACE_WINDOW_S:
                raise _Stale from None
            raise
        if type(event) is _Head:
            return event
        # Closed with no byte of a response (a body or the end cannot come before the head).
        if retriable and time.monotonic() - sent < RACE_WINDOW_S:
            raise _Stale
        raise httpx.RemoteProtocolError("the server closed the connection, no response")
