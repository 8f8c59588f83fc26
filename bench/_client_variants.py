"""A gateway whose upstream HTTP client is one of several candidates, for ``bench.http_client``.

``python -m bench._client_variants --variant NAME --config FILE`` runs ``longread serve`` with
``app._http_client`` replaced by the candidate NAME, so every candidate is measured on the
gateway's real miss path (pipeline, adapters, SSE parsing) and only the client differs.

``leanhttp`` is the gateway's former client on h11, called directly (``bench._leanhttp``): the
reference for ``httpx_lean``, the same pool as an httpx transport under ``httpx.AsyncClient``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from longread_server import __version__, app
from longread_server.vendors import transport

from bench._leanhttp import LeanHttp
from bench._servers import Proc, wait_port

TIMEOUT = httpx.Timeout(600.0, connect=10.0)
_UA = f"longread/{__version__}"


def _as_timeout(timeout: Any) -> httpx.Timeout:
    """The adapters pass what ``AsyncClient.stream`` takes: seconds, or the client default."""
    return (
        timeout
        if isinstance(timeout, httpx.Timeout)
        else TIMEOUT
        if timeout is httpx.USE_CLIENT_DEFAULT
        else httpx.Timeout(timeout)
    )


class TransportOnly:
    """httpx's own transport (httpcore's pool under httpx's request and response models)
    without ``AsyncClient``'s per-request layers: no cookie jar, auth or redirect flow, event
    hooks or URL merging; parsed URLs are kept."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._transport = httpx.AsyncHTTPTransport(limits=limits, retries=0)
        self._urls: dict[str, httpx.URL] = {}

    @property
    def timeout(self) -> httpx.Timeout:
        return TIMEOUT

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes,
        headers: Mapping[str, str],
        timeout: Any,
    ) -> AsyncIterator[httpx.Response]:
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        request = httpx.Request(
            method,
            parsed,
            content=content,
            headers={"user-agent": _UA, **headers},
            extensions={"timeout": _as_timeout(timeout).as_dict()},
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            yield response
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()


VARIANTS: dict[str, Callable[[], Any]] = {
    # httpx as the gateway configured it when it was not the default.
    "httpx": lambda: httpx.AsyncClient(
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        timeout=TIMEOUT,
    ),
    # AsyncClient on httpx's default transport (httpcore), tuned for this traffic (one cap for
    # open and idle connections, no compression, no cookie jar): the gateway's client before
    # LeanTransport.
    "httpx_tuned": lambda: httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=5.0
        ),
        timeout=TIMEOUT,
        headers={"user-agent": _UA, "accept-encoding": "identity"},
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        follow_redirects=False,
        trust_env=True,
    ),
    # The gateway's client (vendors/transport.py): the same AsyncClient over LeanTransport.
    "httpx_lean": lambda: transport.upstream_client(),
    # The former h11 client, called directly.
    "leanhttp": lambda: LeanHttp(timeout=TIMEOUT),
    # httpx's transport, driven without AsyncClient.
    "httpx_transport": lambda: TransportOnly(
        httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    ),
}


def gateway(port: int, sandbox_port: int, variant: str, cpu: int | None = None) -> Proc:
    """A gateway on ``port`` with its OpenAI upstream at the sandbox, over client ``variant``."""
    config = f"""
listen = "127.0.0.1:{port}"
[telemetry]
access_log = false
[[upstreams]]
name = "openai"
kind = "openai"
base_url = "http://127.0.0.1:{sandbox_port}/v1"
api_key_env = "BENCH_KEY"
"""
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="longread-bench-")
    with os.fdopen(fd, "w") as f:
        f.write(config)
    args = [sys.executable, "-m", "bench._client_variants", "--variant", variant, "--config", path]
    proc = Proc(args, env={"BENCH_KEY": "bench"}, cpu=cpu)
    wait_port(port)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--config", required=True)
    a = parser.parse_args()
    make = VARIANTS[a.variant]
    app._http_client = lambda *_: make()
    return app.main(a.config)


if __name__ == "__main__":
    raise SystemExit(main())
