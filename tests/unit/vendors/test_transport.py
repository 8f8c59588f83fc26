"""The gateway's upstream client (``upstream_client``: httpx as configured) against scripted
HTTP/1.1 servers: keep-alive, chunked bodies, the keep-alive race, servers that close or stall,
a body left unread, the connection cap and proxies from the environment."""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
import pytest
from longread_server import __version__
from longread_server.vendors import transport
from longread_server.vendors.transport import upstream_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# A loop of the module's own (the suite's other tests share one), made by each of the loop
# factories of this directory's conftest: asyncio's and uvloop's.
pytestmark = pytest.mark.asyncio(loop_scope="module")


T = 2.0  # seconds, per phase, as the adapters pass it


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[Server, int]]:
    state = Server()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await handler(r, w)
        finally:
            w.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield state, port


async def read_request(r: asyncio.StreamReader, state: Server | None = None) -> bytes:
    """One request (headers and a Content-Length body); b"" at EOF."""
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await r.readexactly(length)
    if state is not None:
        state.requests.append(head + body)
    return head + body


async def read_chunked_request(r: asyncio.StreamReader) -> bytes:
    """One request with a chunked body, de-chunked; b"" at EOF."""
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    assert b"transfer-encoding: chunked" in head.lower()
    body = b""
    while size := int((await r.readuntil(b"\r\n")).strip(), 16):
        body += (await r.readexactly(size + 2))[:-2]
    await r.readexactly(2)
    return head + body


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def post(client: httpx.AsyncClient, port: int, body: bytes = b"{}") -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    async with client.stream("POST", url, content=body, headers={"x-k": "v"}, timeout=T) as r:
        data = b"".join([chunk async for chunk in r.aiter_bytes()])
        return r.status_code, data


async def test_keep_alive_reuses_one_connection_and_sends_a_proper_request() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r, state):
            extra = b"X-Request-Id: a\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            w.write(ok(b'{"ok":true}', extra))
            await w.drain()

    async with serve(handler) as (state, port):
        client = upstream_client()
        for _ in range(3):
            assert await post(client, port, b'{"q":1}') == (200, b'{"ok":true}')
        assert not client.cookies  # nothing a vendor sets is sent back
        async with client.stream(
            "POST", f"http://127.0.0.1:{port}/x?y=1", content=b"", headers={}, timeout=T
        ) as r:
            assert r.headers.get("X-REQUEST-ID") == "a"
            assert r.headers["set-cookie"] == "a=1, b=2"
            assert r.is_success and r.reason_phrase == "OK"
            assert [c async for c in r.aiter_bytes()] == [b'{"ok":true}']
        await client.aclose()
    assert state.connections == 1
    first = state.requests[0].decode()
    assert first.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{port}\r\n" in first.lower()
    assert "content-length: 7\r\n" in first.lower() and "x-k: v\r\n" in first.lower()
    assert f"user-agent: longread/{__version__}\r\n" in first.lower()
    assert "accept-encoding: identity\r\n" in first.lower()
    assert first.endswith('{"q":1}')
    assert b"cookie:" not in state.requests[1].lower()
    assert state.requests[3].startswith(b"POST /x?y=1 HTTP/1.1")


async def test_a_kept_alive_connection_reads_every_response_with_one_parser() -> None:
    """No garbage that only the cyclic collector frees, per response: the parser and the
    object its callbacks are bound to are made once per connection (counted with the
    collector off, so a pair made per response would still be there)."""
    async with serve(_answering(ok(b'{"ok":true}'))) as (state, port):
        client = upstream_client()
        assert await post(client, port) == (200, b'{"ok":true}')
        gc.collect()
        gc.disable()
        try:
            before = sum(type(o) is transport._Response for o in gc.get_objects())
            for _ in range(20):
                assert await post(client, port) == (200, b'{"ok":true}')
            after = sum(type(o) is transport._Response for o in gc.get_objects())
        finally:
            gc.enable()
        await client.aclose()
    assert state.connections == 1
    assert after == before


async def test_chunked_bodies_stream_in_pieces() -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for p in pieces:
                w.write(b"%x\r\n%s\r\n" % (len(p), p))
                await w.drain()
                await asyncio.sleep(0.01)
            w.write(b"0\r\n\r\n")
            await w.drain()

    async with serve(handler) as (state, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/"
        async with client.stream("POST", url, content=b"{}", headers={}, timeout=T) as r:
            got = [c async for c in r.aiter_bytes()]
        assert got == pieces
        assert await post(client, port) == (200, b"".join(pieces))  # same connection
        await client.aclose()
    assert state.connections == 1


async def test_an_idle_connection_the_server_closed_is_replaced_transparently() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if await read_request(r):
            w.write(ok(b"first"))
            await w.drain()
        # then close the kept-alive connection, as servers do after their idle timeout

    async with serve(handler) as (state, port):
        client = upstream_client()
        assert await post(client, port) == (200, b"first")
        await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        assert await post(client, port) == (200, b"first")
        await client.aclose()
    assert state.connections == 2


async def test_the_keep_alive_race_is_retried_once_on_a_fresh_connection() -> None:
    """The server closes a reused connection right after reading the next request, without
    answering (the close crossed the request on the wire): nothing of a response arrived, so
    the request goes again, once, on a fresh connection."""
    served = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal served
        while await read_request(r):
            if served == 1 and state.connections == 1:
                served += 1
                return  # close without a response
            served += 1
            w.write(ok(b"hi"))
            await w.drain()

    async with serve(handler) as (state, port):
        client = upstream_client()
        assert await post(client, port) == (200, b"hi")
        assert await post(client, port) == (200, b"hi")
        await client.aclose()
    assert state.connections == 2 and served == 3


async def test_the_keep_alive_race_with_a_streamed_request_body_is_not_resent() -> None:
    """A body sent as it is produced cannot be sent twice: the race is then an error."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if await read_chunked_request(r):
            w.write(ok(b"hi"))
            await w.drain()
        await read_chunked_request(r)  # then close without a response

    async def body() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b"1}"

    async with serve(handler) as (state, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/"
        for expect_ok in (True, False):
            try:
                async with client.stream("POST", url, content=body(), timeout=T) as r:
                    assert (r.status_code, await r.aread()) == (200, b"hi")
                assert expect_ok
            except httpx.RemoteProtocolError:
                assert not expect_ok
        await client.aclose()
    assert state.connections == 1


async def test_a_fresh_connection_closed_without_a_response_is_an_error() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)

    async with serve(handler) as (state, port):
        client = upstream_client()
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, port)
    assert state.connections == 1  # not retried: nothing says the request was not handled


async def test_a_body_cut_short_is_an_error_and_the_connection_is_dropped() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await w.drain()
            return

    async with serve(handler) as (state, port):
        client = upstream_client()
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, port)
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, port)
    assert state.connections == 2


async def test_a_stalled_server_is_a_read_timeout() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    async with serve(handler) as (_, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/"
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream("POST", url, content=b"", headers={}, timeout=0.1):
                pass


async def test_nothing_listening_is_a_connect_error() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)

    async with serve(handler) as (_, port):
        pass  # closed: the port is free now
    with pytest.raises(httpx.ConnectError):
        await post(upstream_client(), port)


async def test_a_response_left_unread_closes_its_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(ok(b"x" * 1000))
            await w.drain()

    async with serve(handler) as (state, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/"
        async with client.stream("POST", url, content=b"", headers={}, timeout=T) as r:
            assert r.status_code == 200  # the body is never read
        assert await post(client, port) == (200, b"x" * 1000)
        await client.aclose()
    assert state.connections == 2


async def test_an_error_status_keeps_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            body = b'{"error":{"message":"slow down"}}'
            w.write(
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await w.drain()

    async with serve(handler) as (state, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/"
        for _ in range(2):
            async with client.stream("POST", url, content=b"", headers={}, timeout=T) as r:
                assert r.status_code == 429 and not r.is_success
                assert r.headers.get("retry-after") == "7"
                assert b"slow down" in b"".join([c async for c in r.aiter_bytes()])
        await client.aclose()
    assert state.connections == 1


async def test_an_answer_before_the_whole_request_is_read_is_the_response() -> None:
    # A server refusing a large body as soon as it has the head: it answers, half-closes and
    # reads the rest of the request away. httpx's own transport returns that answer too.
    body = b"x" * (16 * 1024 * 1024)
    answer = b'{"error":{"message":"request too large"}}'

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(
            b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
        )
        await w.drain()
        w.write_eof()
        while await r.read(1 << 16):
            pass

    async with serve(handler) as (_, port):
        for client in (upstream_client(), httpx.AsyncClient()):
            response = await client.post(f"http://127.0.0.1:{port}/", content=body, timeout=T)
            assert (response.status_code, response.content) == (413, answer)
            await client.aclose()


async def test_only_http_urls() -> None:
    client = upstream_client()
    with pytest.raises(httpx.UnsupportedProtocol):
        await post_url(client, "ftp://example.com/x")
    await client.aclose()


async def post_url(client: httpx.AsyncClient, url: str) -> None:
    async with client.stream("POST", url, content=b"", headers={}, timeout=T):
        pass


async def test_a_connection_idle_past_the_keepalive_expiry_is_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "KEEPALIVE_EXPIRY_S", 0.05)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(ok(b"hi"))
            await w.drain()

    async with serve(handler) as (state, port):
        client = upstream_client()
        assert await post(client, port) == (200, b"hi")
        assert await post(client, port) == (200, b"hi")  # reused at once
        await asyncio.sleep(0.1)
        assert await post(client, port) == (200, b"hi")  # expired: a new connection
        await client.aclose()
    assert state.connections == 2


async def test_open_connections_are_capped_and_a_call_waits_for_one() -> None:
    open_now = peak = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while await read_request(r):
                await asyncio.sleep(0.05)
                w.write(ok(b"hi"))
                await w.drain()
        finally:
            open_now -= 1

    async with serve(handler) as (state, port):
        client = upstream_client(max_connections=2)
        results = await asyncio.gather(*(post(client, port) for _ in range(6)))
        assert results == [(200, b"hi")] * 6
        assert peak == 2 and state.connections == 2
        # A call that cannot get a connection within its time fails as a (pool) timeout.
        url = f"http://127.0.0.1:{port}/"
        busy = [asyncio.create_task(post(client, port)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(httpx.PoolTimeout):
            async with client.stream("POST", url, content=b"", headers={}, timeout=0.01):
                pass
        await asyncio.gather(*busy)
        await client.aclose()


async def test_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY sends a call through the proxy (absolute-form target); NO_PROXY hosts are
    called directly."""
    seen: dict[str, list[bytes]] = {"proxy": [], "direct": []}

    def answering(name: str) -> Handler:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while request := await read_request(r):
                seen[name].append(request)
                w.write(ok(b"hi"))
                await w.drain()

        return handler

    for name in ("ALL_PROXY", "HTTPS_PROXY", "all_proxy", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with (
        serve(answering("proxy")) as (_, proxy_port),
        serve(answering("direct")) as (_, port),
    ):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        client = upstream_client()
        url = f"http://api.example.test:{port}/v1/chat/completions"
        async with client.stream("POST", url, content=b"{}", headers={}, timeout=T) as r:
            assert (r.status_code, await r.aread()) == (200, b"hi")
        assert await post(client, port) == (200, b"hi")
        await client.aclose()
    assert len(seen["proxy"]) == 1 and len(seen["direct"]) == 1
    assert seen["proxy"][0].startswith(f"POST {url} HTTP/1.1".encode())
    assert seen["direct"][0].startswith(b"POST /v1/chat/completions HTTP/1.1")


async def test_a_stream_closed_midway_drops_its_connection() -> None:
    """A caller that stops reading a stream (its deadline, a cancelled job) closes the
    response: the rest of the body is not waited for, the connection is not reused."""
    sent_all = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await w.drain()
            await asyncio.sleep(0.2)
            w.write(b"4\r\nlast\r\n0\r\n\r\n")
            await w.drain()
            sent_all.set()

    async with serve(handler) as (state, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/"
        async with client.stream("POST", url, content=b"{}", timeout=T) as r:
            async for chunk in r.aiter_bytes():
                assert chunk == b"first"
                break
        assert not sent_all.is_set()  # left at once
        assert await post(client, port) == (200, b"firstlast")
        await client.aclose()
    assert state.connections == 2


async def test_a_streamed_request_body_is_sent_chunked() -> None:
    got: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while request := await read_chunked_request(r):
            got.append(request)
            w.write(ok(b"hi"))
            await w.drain()

    async def body() -> AsyncIterator[bytes]:
        for piece in (b'{"messages":', b"[]", b"}"):
            yield piece

    async with serve(handler) as (_, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/v1"
        async with client.stream("POST", url, content=body(), timeout=T) as r:
            assert (r.status_code, await r.aread()) == (200, b"hi")
        await client.aclose()
    assert got[0].startswith(b"POST /v1 HTTP/1.1") and got[0].endswith(b'{"messages":[]}')


async def test_a_server_that_does_not_read_is_a_write_timeout() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)  # reads nothing: the socket buffers fill up

    async with serve(handler) as (_, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/"
        timeout = httpx.Timeout(T, write=0.2)
        with pytest.raises(httpx.WriteTimeout):
            async with client.stream("POST", url, content=b"x" * (64 << 20), timeout=timeout):
                pass
        await client.aclose()


async def test_a_connect_that_hangs_is_a_connect_timeout() -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    # neither succeeds nor fails (what a firewall that drops packets does).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fill = [socket.socket() for _ in range(4)]
        for s in fill:
            s.setblocking(False)
            with suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
        client = upstream_client()
        try:
            with pytest.raises(httpx.ConnectTimeout):
                async with client.stream(
                    "POST",
                    f"http://127.0.0.1:{port}/",
                    content=b"",
                    timeout=httpx.Timeout(T, connect=0.05),
                ):
                    pass
            lean = client._transport
            assert isinstance(lean, transport.LeanTransport) and lean.open_connections == 0
        finally:
            await client.aclose()
            for s in fill:
                s.close()


async def test_under_the_cap_an_idle_connection_to_another_upstream_makes_room() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(ok(b"hi"))
            await w.drain()

    async with serve(handler) as (a, port_a), serve(handler) as (b, port_b):
        client = upstream_client(max_connections=1)
        for port in (port_a, port_b, port_a):
            assert await post(client, port) == (200, b"hi")
        lean = client._transport
        assert isinstance(lean, transport.LeanTransport) and lean.open_connections == 1
        await client.aclose()
        assert lean.open_connections == 0
    assert (a.connections, b.connections) == (2, 1)


async def test_waiting_calls_get_connections_in_turn_and_failures_free_their_slot() -> None:
    """With the cap reached, calls queue for a connection; a call whose connection fails
    mid-answer gives its slot back, so the others still get theirs."""
    calls = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal calls
        while await read_request(r):
            calls += 1
            await asyncio.sleep(0.01)
            if calls == 2:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                return  # a body cut short: an error, the connection is dropped
            w.write(ok(b"hi"))
            await w.drain()

    async with serve(handler) as (_, port):
        client = upstream_client(max_connections=1)
        results = await asyncio.gather(
            *(post(client, port) for _ in range(5)), return_exceptions=True
        )
        assert sum(isinstance(x, httpx.RemoteProtocolError) for x in results) == 1
        assert results.count((200, b"hi")) == 4
        assert client._transport.open_connections <= 1  # type: ignore[attr-defined]
        await client.aclose()


def _self_signed(tmp: Path) -> tuple[Path, Path] | None:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_verifies_against_the_ca_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = _self_signed(tmp_path)
    if pair is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = pair
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(ok(b"secret"))
            await w.drain()

    state = Server()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await handler(r, w)
        except (ssl.SSLError, ConnectionError):
            pass  # the client refused our certificate
        finally:
            w.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/v1"
    async with server:
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        client = upstream_client()  # the default CA bundle does not know our certificate
        with pytest.raises(httpx.ConnectError):
            async with client.stream("POST", url, content=b"", timeout=T):
                pass
        await client.aclose()

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        client = upstream_client()
        for _ in range(2):
            async with client.stream("POST", url, content=b"", timeout=T) as r:
                assert (r.status_code, await r.aread()) == (200, b"secret")
        await client.aclose()
    assert state.connections == 1  # kept alive (the refused handshake never got this far)


# ---- UpstreamHttp: the gateway's front door to the same transports ----


async def test_the_direct_path_sends_what_the_client_sends() -> None:
    """``UpstreamHttp`` skips AsyncClient's per-request layers; on the wire the request is the
    same, headers, body and all, and the connection is reused the same way."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r, state):
            w.write(ok(b'{"ok":true}', b"Set-Cookie: a=1\r\n"))
            await w.drain()

    async with serve(handler) as (state, port):
        client = upstream_client()
        direct = transport.UpstreamHttp(upstream_client())
        assert await post(client, port, b'{"q":1}') == (200, b'{"ok":true}')
        for _ in range(2):
            assert await post(direct, port, b'{"q":1}') == (200, b'{"ok":true}')  # type: ignore[arg-type]
        await client.aclose()
        await direct.aclose()
    via_client, *via_direct = state.requests
    assert via_direct == [via_client, via_client]  # byte for byte, no cookie sent back
    assert state.connections == 2  # one per client: the direct one reused its connection


@pytest.mark.parametrize(
    ("method", "url", "headers", "body"),
    [
        ("POST", "http://127.0.0.1:9/v1/chat/completions", {"content-type": "a/b"}, b"{}"),
        ("POST", "https://api.example.test/v1/messages", {"x-api-key": "k"}, b""),
        ("GET", "http://127.0.0.1:9/v1/models", {"Host": "other"}, b""),
        ("POST", "http://[::1]:8080/x", {"Content-Length": "3"}, b"abc"),
        ("POST", "http://b\u00fccher.example/x", {"Transfer-Encoding": "chunked"}, b"abc"),
        ("PUT", "http://h:1/x?q=1", {"HOST": "h", "content-LENGTH": "3", "Accept": "x"}, b"abc"),
    ],
)
async def test_the_direct_path_builds_the_request_httpx_builds(
    method: str, url: str, headers: dict[str, str], body: bytes
) -> None:
    """Headers prepared once per upstream: the same names, values and order, and the same body,
    as ``AsyncClient.build_request`` gives, whatever the call's own headers state."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    client = httpx.AsyncClient(
        transport=httpx.MockTransport(handler), headers=upstream_client().headers
    )
    direct = transport.UpstreamHttp(client)
    for _ in range(2):  # built from scratch, then from what was prepared
        async with direct.stream(method, url, content=body, headers=headers, timeout=T):
            pass
    ref = client.build_request(method, url, content=body, headers=headers)
    for got in seen:
        assert (got.method, got.url, got.headers.raw, got.content) == (
            ref.method,
            ref.url,
            ref.headers.raw,
            ref.content,
        )
    await client.aclose()


async def test_the_direct_path_goes_through_the_proxy_the_client_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while request := await read_request(r):
            seen.append(request)
            w.write(ok(b"hi"))
            await w.drain()

    for name in ("ALL_PROXY", "HTTPS_PROXY", "NO_PROXY", "all_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with serve(handler) as (_, proxy_port):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        direct = transport.UpstreamHttp(upstream_client())
        url = "http://api.example.test:9/v1/chat/completions"
        async with direct.stream("POST", url, content=b"{}", headers={}, timeout=T) as r:
            assert (r.status_code, await r.aread()) == (200, b"hi")
        await direct.aclose()
    assert len(seen) == 1 and seen[0].startswith(f"POST {url} HTTP/1.1".encode())


async def test_the_direct_path_times_out_as_httpx_does() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    async with serve(handler) as (_, port):
        direct = transport.UpstreamHttp(upstream_client())
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        with pytest.raises(httpx.ReadTimeout):
            async with direct.stream("POST", url, content=b"{}", headers={}, timeout=0.2):
                pass
        await direct.aclose()


async def test_a_close_long_after_the_request_is_a_failure_not_the_race(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reused connection whose server takes the request, says nothing and hangs up later
    is not the keep-alive race: the request is not sent again (that would hide the hang and
    double the wait), the caller sees the failure."""
    monkeypatch.setattr(transport, "RACE_WINDOW_S", 0.05)
    served = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal served
        while await read_request(r):
            served += 1
            if served == 2:
                await asyncio.sleep(0.2)  # hung, then gives up
                return
            w.write(ok(b"hi"))
            await w.drain()

    async with serve(handler) as (state, port):
        client = upstream_client()
        assert await post(client, port) == (200, b"hi")
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, port)
        await client.aclose()
    assert state.connections == 1 and served == 2


# The response parser (httptools): the cases h11 used to decide for us.


def _answering(raw: bytes) -> Handler:
    """A server answering every request with ``raw`` (and closing after it when the response
    runs to the close)."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(raw)
            await w.drain()
            if b"content-length" not in raw.lower() and b"chunked" not in raw.lower():
                return  # the body runs to the close

    return handler


async def _one_response(raw: bytes, requests: int = 2) -> tuple[Server, list[object]]:
    """``requests`` posts against a server answering each with ``raw``; each result, or the
    exception it raised."""
    results: list[object] = []
    async with serve(_answering(raw)) as (state, port):
        client = upstream_client()
        for _ in range(requests):
            try:
                results.append(await post(client, port))
            except httpx.HTTPError as e:
                results.append(e)
        await client.aclose()
    return state, results


async def test_informational_responses_before_the_answer_are_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + ok(b"hi")
    state, results = await _one_response(raw)
    assert results == [(200, b"hi"), (200, b"hi")]
    assert state.connections == 1


async def test_trailer_fields_after_a_chunked_body_end_it_and_keep_the_connection() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Request-Id: req_1\r\n\r\n"
        b"2\r\nhi\r\n0\r\nX-Checksum: abc\r\n\r\n"
    )
    state, results = await _one_response(raw)
    assert results == [(200, b"hi"), (200, b"hi")]
    assert state.connections == 1


async def test_a_body_that_runs_to_the_close_is_read_whole_and_its_connection_not_reused() -> None:
    state, results = await _one_response(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\nall of it")
    assert results == [(200, b"all of it"), (200, b"all of it")]
    assert state.connections == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_server_that_will_close_does_not_get_its_connection_reused(raw: bytes) -> None:
    state, results = await _one_response(raw)
    assert results == [(200, b"hi"), (200, b"hi")]
    assert state.connections == 2


async def test_an_http_1_0_keep_alive_response_keeps_its_connection() -> None:
    raw = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"
    state, results = await _one_response(raw)
    assert results == [(200, b"hi"), (200, b"hi")]
    assert state.connections == 1


async def test_bytes_after_the_end_of_a_response_leave_it_whole_but_its_connection_unused() -> None:
    state, results = await _one_response(ok(b"hi") + b"HTTP/1.1 200 OK\r\n")
    assert results == [(200, b"hi"), (200, b"hi")]
    assert state.connections == 2  # the stray bytes are never read as the next answer


async def test_bytes_sent_to_an_idle_connection_keep_it_from_being_reused() -> None:
    sent_stray = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        first = True
        while await read_request(r):
            w.write(ok(b"hi"))
            await w.drain()
            if first:  # then, while no request is out, bytes nobody asked for
                first = False
                await asyncio.sleep(0.05)
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
                await w.drain()
                sent_stray.set()

    async with serve(handler) as (state, port):
        client = upstream_client()
        assert await post(client, port) == (200, b"hi")
        await sent_stray.wait()
        await asyncio.sleep(0.05)  # (the stray bytes reach the idle connection)
        assert await post(client, port) == (200, b"hi")  # not "stray"
        await client.aclose()
    assert state.connections == 2


async def test_a_slow_reader_of_a_long_body_pauses_the_connection_and_gets_it_whole() -> None:
    body = bytes(range(256)) * (6 * 1024)  # 1.5 MiB: several times what is read ahead

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(ok(body))
            await w.drain()

    async with serve(handler) as (state, port):
        client = upstream_client()
        got = bytearray()
        paused = []
        http = transport.UpstreamHttp(client)
        url = f"http://127.0.0.1:{port}/"
        async with http.stream("POST", url, content=b"{}", headers={}) as response:
            assert isinstance(response.stream, transport._Body)
            conn = response.stream._conn
            assert conn is not None
            async for chunk in response.aiter_raw():
                got += chunk
                await asyncio.sleep(0.005)  # slower than the socket
                paused.append(conn.reading_paused)
                # (one read past the mark at most: an event loop reads up to 256 KiB at once)
                assert conn.response.buffered <= transport._BUFFERED_MAX + 256 * 1024
        assert bytes(got) == body
        assert any(paused), "reading never paused for the slow reader"
        assert await post(client, port) == (200, body)  # the connection was kept, and reused
        await client.aclose()
    assert state.connections == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n",
    ],
    ids=["not-http", "bad-chunk-size", "length-and-chunked"],
)
async def test_a_malformed_response_is_a_protocol_error_and_drops_the_connection(
    raw: bytes,
) -> None:
    state, results = await _one_response(raw)
    assert all(isinstance(r, httpx.RemoteProtocolError) for r in results), results
    assert state.connections == 2


async def test_a_response_in_pieces_of_one_byte_is_the_same_response() -> None:
    raw = (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-Request-Id: req_1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            for i in range(len(raw)):
                w.write(raw[i : i + 1])
                await w.drain()
                await asyncio.sleep(0)

    async with serve(handler) as (state, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/"
        for _ in range(2):
            async with client.stream("POST", url, content=b"", headers={}, timeout=T) as r:
                assert (r.status_code, r.reason_phrase) == (429, "Too Many Requests")
                assert r.headers["retry-after"] == "7" and r.headers["x-request-id"] == "req_1"
                assert b"".join([c async for c in r.aiter_bytes()]) == b"hello world"
        await client.aclose()
    assert state.connections == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer sk-secret\r\nX-Injected: 1"},
        {"authorization": "Bearer sk-secret\nX-Injected: 1"},
        {"authorization": "Bearer sk-secret\x00"},
        {"bad name": "sk-secret"},
    ],
    ids=["crlf", "lf", "nul", "name"],
)
async def test_a_header_that_would_split_the_request_is_refused_unsent(
    headers: dict[str, str],
) -> None:
    async with serve(_answering(ok(b"hi"))) as (state, port):
        client = upstream_client()
        url = f"http://127.0.0.1:{port}/"
        with pytest.raises(httpx.LocalProtocolError) as caught:
            async with client.stream("POST", url, content=b"", headers=headers, timeout=T):
                pass
        assert "sk-secret" not in str(caught.value)  # a key is never quoted
        await client.aclose()
    assert state.connections == 0
