"""A small HTTP/1.1 server: asyncio streams for I/O, ``h11`` for the protocol.

No web framework: the sandbox must add next to nothing to a benchmark's numbers, and it must be
able to do things frameworks hide, such as resetting a TCP connection mid-stream or holding a
request open until the client gives up. ``h11`` does the parsing and framing (keep-alive,
pipelining, chunked encoding); this module owns the connection loop and hands each complete
request to a handler together with an ``Exchange`` to answer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11

from .protocol import Headers

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
_REASONS[529] = b"Overloaded"
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(slots=True)
class Request:
    """One complete HTTP request. Header names are lowercase; the last value wins."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    too_large: bool = False  # the body exceeded the limit and was dropped


class ClientGone(ConnectionError):
    """The client closed or reset the connection before the response was complete."""


Handler = Callable[[Request, "Exchange"], Awaitable[None]]


class Exchange:
    """The response side of one request: a whole JSON body, or a stream of chunks."""

    __slots__ = ("_conn", "_pending", "_reader", "_writer", "closed", "status")

    def __init__(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._conn = conn
        self._reader = reader
        self._writer = writer
        self.status = 0  # 0 until the response head is sent
        self._pending = b""  # a response head held back to share a write with the body
        self.closed = False  # the connection must not be reused

    @property
    def started(self) -> bool:
        return self.status != 0

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """Send a complete response with ``Content-Length`` in one write."""
        conn = self._conn
        self.status = status
        framing = [(b"content-length", b"%d" % len(body))]
        data = self._head(status, framing, headers)
        data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await self._write(data)

    async def start_stream(self, status: int, headers: Headers, *, flush: bool = True) -> None:
        """Start a streamed response (chunked, or close-delimited for HTTP/1.0).

        ``flush=False`` holds the head back to go out with the first chunk: when nothing
        waits between head and body, one write (one syscall) beats two.
        """
        self.status = status
        self._pending = self._head(status, [], headers)
        if flush:
            await self._write(b"")

    def _head(self, status: int, framing: Headers, headers: Headers) -> bytes:
        """The response head: h11 writes (and validates) the framing headers, we add the rest.

        h11 validates every header with regular expressions; for the dozen or so identity and
        rate-limit headers on every response that is a measurable share of the per-request
        CPU. Those headers are the sandbox's own constants, ids and numbers, never request
        data, so they are spliced in already rendered; h11 still writes the status line and
        decides the framing (content-length or chunked, keep-alive or close).
        """
        head = self._conn.send(
            h11.Response(status_code=status, headers=framing, reason=_reason(status))
        )
        assert head is not None and head.endswith(b"\r\n\r\n")
        extra = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
        return head[:-2] + extra + b"\r\n"

    async def send(self, chunk: bytes, *, last: bool = False) -> None:
        """Send and flush one chunk of a streamed response; ``last`` also ends it."""
        data = b""
        if chunk:
            data = self._conn.send(h11.Data(data=chunk)) or b""
        if last:
            data += self._conn.send(h11.EndOfMessage()) or b""
        await self._write(data)

    def abort(self) -> None:
        """Drop the connection with a TCP reset (SO_LINGER 0), not a clean close."""
        self.closed = True
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self._writer.transport.abort()

    async def hang(self, max_s: float) -> bool:
        """Answer nothing until the client disconnects or ``max_s`` passes, then close.

        Reading (and discarding) is how a disconnect is noticed; without it a hung request
        would hold its task and socket for the full ``max_s`` after the client gave up.
        Returns True when the client went away first.
        """
        self.closed = True
        gone = True
        try:
            async with asyncio.timeout(max_s):
                while await self._reader.read(READ_SIZE):
                    pass
        except TimeoutError:
            gone = False
        except (ConnectionError, OSError):
            pass
        self._writer.transport.close()
        return gone

    async def _write(self, data: bytes) -> None:
        transport = self._writer.transport
        if transport.is_closing():
            raise ClientGone("client disconnected")
        if self._pending:
            data, self._pending = self._pending + data, b""
        if not data:
            return
        self._writer.write(data)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ClientGone(str(exc)) from exc


def _reason(status: int) -> bytes:
    return _REASONS.get(status, b"")


class HttpServer:
    """Accepts connections and runs each through the h11 request/response cycle."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int,
        on_disconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self._handler = handler
        self._max_body = max_body_bytes
        self._on_disconnect = on_disconnect
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0  # connections accepted since start (keep-alive reuse shows here)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        return len(self._tasks)

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=READ_SIZE, backlog=1024
        )

    async def stop(self) -> None:
        """Stop accepting, then cancel every open connection (streams and hangs included)."""
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        conn = h11.Connection(h11.SERVER)
        try:
            await self._loop(conn, reader, writer)
        except (ConnectionError, OSError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            # Only ``stop`` cancels these tasks, and it awaits them. Ending normally keeps
            # Python 3.11's stream callback from logging the cancellation as an error.
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.close()

    async def _loop(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                request = await self._read_request(conn, reader, writer)
            except h11.RemoteProtocolError as exc:
                await self._reject(conn, writer, exc)
                return
            if request is None:
                return
            exchange = Exchange(conn, reader, writer)
            try:
                await self._handler(request, exchange)
            except (ClientGone, ConnectionError, OSError):
                self._on_disconnect()
                return
            except Exception:
                log.exception("sandbox handler failed for %s %s", request.method, request.path)
                if not exchange.started:
                    await exchange.respond(
                        500, [(b"content-type", b"application/json")], b'{"error":"internal"}'
                    )
                return
            if exchange.closed:
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Request | None:
        request: Request | None = None
        parts: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:  # curl does this for big bodies
                    writer.write(
                        conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                    )
                conn.receive_data(await reader.read(READ_SIZE))
            elif isinstance(event, h11.Request):
                target = event.target.decode("latin-1")
                path, _, query = target.partition("?")
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
                request = Request(event.method.decode("ascii"), path, query, headers, b"")
            elif isinstance(event, h11.Data):
                assert request is not None
                size += len(event.data)
                if size > self._max_body:
                    request.too_large = True
                    parts.clear()
                elif not request.too_large:
                    parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                request.body = parts[0] if len(parts) == 1 else b"".join(parts)
                return request
            else:  # ConnectionClosed, or PAUSED after a protocol mix-up
                return None

    async def _reject(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError
    ) -> None:
        """Answer a request h11 could not parse with a plain 400 (or whatever it suggests)."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is already under way; all we can do is close
        body = b'{"error":{"message":"malformed HTTP request","type":"invalid_request_error"}}'
        status = exc.error_status_hint
        with contextlib.suppress(h11.LocalProtocolError):
            data = conn.send(
                h11.Response(
                    status_code=status,
                    headers=[
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                    reason=_reason(status),
                )
            )
            writer.write((data or b"") + (conn.send(h11.Data(data=body)) or b""))
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
