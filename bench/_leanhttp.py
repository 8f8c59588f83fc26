"""The gateway's former upstream client, for ``bench.http_client`` only: ``LeanHttp``, keep-alive
HTTP/1.1 on h11 pooled per origin, called directly (no httpx client or transport around it).

It was ``vendors/transport.py`` until httpx became the one client; it is kept here, unchanged
but for the timeout the adapters now pass (seconds, or httpx's "client default"), as the
reference that ``LeanTransport`` under ``httpx.AsyncClient`` is measured against.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
from longread_server import __version__

_READ = 64 * 1024
_USER_AGENT = f"longread/{__version__}"


class Headers(dict[str, str]):
    """Response headers by lower-case name (h11 lower-cases them); repeated headers are
    joined with ", " as HTTP allows."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass(eq=False, slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    reused: bool = False
    heard: bool = False  # any byte of the current response has arrived
    idle_since: float = 0.0

    def stale(self) -> bool:
        return self.reader.at_eof() or self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class _Response:
    __slots__ = ("_read_timeout", "conn", "done", "headers", "reason_phrase", "status_code")

    def __init__(self, event: h11.Response, conn: _Connection, read_timeout: float | None):
        self.status_code = event.status_code
        self.reason_phrase = event.reason.decode("latin-1")
        headers = Headers()
        for name, value in event.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers = headers
        self.conn = conn
        self._read_timeout = read_timeout
        self.done = False  # the body was read to its end

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        conn = self.conn
        while not self.done:
            event = await _next_event(conn, self._read_timeout)
            if isinstance(event, h11.Data):
                if event.data:
                    yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.done = True
            else:  # ConnectionClosed before the end of the body
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")


async def _next_event(conn: _Connection, read_timeout: float | None) -> h11.Event:
    while True:
        try:
            event = conn.h11.next_event()
        except h11.RemoteProtocolError as e:
            raise httpx.RemoteProtocolError(str(e)) from None
        if event is h11.PAUSED:  # bytes after the end of the response
            raise httpx.RemoteProtocolError("the server sent more than one response")
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]
        try:
            async with asyncio.timeout(read_timeout):
                data = await conn.reader.read(_READ)
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the response") from None
        except OSError as e:
            raise httpx.ReadError(str(e) or type(e).__name__) from None
        if data:
            conn.heard = True
        conn.h11.receive_data(data)  # b"" is EOF


class _Stale(Exception):
    """A reused connection turned out closed before any response byte arrived."""


class LeanHttp:
    """Keep-alive HTTP/1.1 over asyncio streams, pooled per origin (see the module doc)."""

    def __init__(
        self,
        *,
        timeout: httpx.Timeout,
        max_idle_per_origin: int = 200,
        keepalive_expiry_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = timeout
        self._max_idle = max_idle_per_origin
        # As httpx: a connection idle longer than this is not reused. A peer or a NAT on the
        # way may have dropped it without a word, and a request sent on it would only fail
        # at the read timeout.
        self._expiry = keepalive_expiry_s
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._targets: dict[str, tuple[_Origin, str]] = {}
        self.connections_opened = 0

    @property
    def timeout(self) -> httpx.Timeout:
        return self._timeout

    def _target(self, url: str) -> tuple[_Origin, str]:
        hit = self._targets.get(url)
        if hit is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise httpx.UnsupportedProtocol(f"cannot send to {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            hit = (_Origin(parts.scheme, parts.hostname, port), path)
            if len(self._targets) < 1024:
                self._targets[url] = hit
        return hit

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    origin.host, origin.port, ssl=tls, limit=_READ * 4
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {origin.host}:{origin.port}") from None
        except OSError as e:
            raise httpx.ConnectError(str(e) or type(e).__name__) from None
        self.connections_opened += 1
        return _Connection(reader, writer)

    def _checkout(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.stale() or now - conn.idle_since > self._expiry:
                conn.close()
                continue
            conn.reused = True
            conn.heard = False
            return conn
        return None

    def _checkin(self, origin: _Origin, conn: _Connection) -> None:
        h = conn.h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE and not conn.stale():
            h.start_next_cycle()
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._max_idle:
                conn.idle_since = time.monotonic()
                idle.append(conn)
                return
        conn.close()

    async def _exchange(
        self, conn: _Connection, request: h11.Request, content: bytes, timeout: httpx.Timeout
    ) -> _Response:
        """Sends ``request`` on ``conn`` and reads the response head; on any failure the
        connection is closed (``_Stale``: it was a reused one the server had closed)."""
        try:
            return await self._send(conn, request, content, timeout)
        except BaseException:
            conn.close()
            raise

    async def _send(
        self, conn: _Connection, request: h11.Request, content: bytes, timeout: httpx.Timeout
    ) -> _Response:
        h = conn.h11
        payload = b"".join(
            [
                h.send(request) or b"",
                h.send(h11.Data(data=content)) or b"",
                h.send(h11.EndOfMessage()) or b"",
            ]
        )
        conn.writer.write(payload)
        try:
            async with asyncio.timeout(timeout.write):
                await conn.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request") from None
        except OSError as e:
            if conn.reused:
                raise _Stale from e
            raise httpx.WriteError(str(e) or type(e).__name__) from None
        while True:
            try:
                event = await _next_event(conn, timeout.read)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                if conn.reused and not conn.heard:
                    raise _Stale from None
                raise
            if isinstance(event, h11.Response):
                return _Response(event, conn, timeout.read)
            if isinstance(event, h11.ConnectionClosed):
                if conn.reused:
                    raise _Stale
                raise httpx.RemoteProtocolError("the server closed the connection, no response")
            # InformationalResponse (100 Continue...): keep reading

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes,
        headers: Mapping[str, str],
        timeout: Any,
    ) -> AsyncIterator[_Response]:
        if not isinstance(timeout, httpx.Timeout):
            timeout = (
                self._timeout if timeout is httpx.USE_CLIENT_DEFAULT else httpx.Timeout(timeout)
            )
        origin, path = self._target(url)
        request = h11.Request(
            method=method,
            target=path,
            headers=[
                ("host", origin.host_header),
                ("user-agent", _USER_AGENT),
                ("content-length", str(len(content))),
                *headers.items(),
            ],
        )
        response = None
        conn = self._checkout(origin)
        if conn is not None:
            with contextlib.suppress(_Stale):  # the keep-alive race: again on a fresh connection
                response = await self._exchange(conn, request, content, timeout)
        if response is None:
            conn = await self._connect(origin, timeout.connect)
            response = await self._exchange(conn, request, content, timeout)
        conn = response.conn
        try:
            yield response
        except BaseException:
            conn.close()
            raise
        if response.done:
            with contextlib.suppress(h11.LocalProtocolError):
                self._checkin(origin, conn)
        else:
            conn.close()  # the body was not read to the end: the connection is not reusable

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
