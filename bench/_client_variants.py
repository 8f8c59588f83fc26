"""A gateway whose upstream HTTP client is one of several candidates, for ``bench.http_client``.

``python -m bench._client_variants --variant NAME --config FILE`` runs ``longread serve`` with
``app._http_client`` replaced by the candidate NAME, so every candidate is measured on the
gateway's real miss path (pipeline, adapters, SSE parsing) and only the client differs. The
candidates are built from the gateway's own pieces (``vendors/transport.py``) and httpx's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from longread_server import __version__, app
from longread_server.vendors import transport

from bench import _servers
from bench._servers import Proc

TIMEOUT = httpx.Timeout(600.0, connect=10.0)
_UA = f"longread/{__version__}"


def _httpx_tuned() -> httpx.AsyncClient:
    """AsyncClient on httpx's default transport (httpcore), tuned for this traffic: one cap for
    open and idle connections, no compression, no cookie jar."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=5.0
        ),
        timeout=TIMEOUT,
        headers={"user-agent": _UA, "accept-encoding": "identity"},
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        follow_redirects=False,
        trust_env=True,
    )


VARIANTS: dict[str, Callable[[], Any]] = {
    # httpx as the gateway configured it when it was not the default.
    "httpx": lambda: httpx.AsyncClient(
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        timeout=TIMEOUT,
    ),
    "httpx_tuned": _httpx_tuned,
    # AsyncClient over LeanTransport, sent to through AsyncClient's own layers.
    "httpx_lean": transport.upstream_client,
    # The gateway's client: the same, sent to through UpstreamHttp.
    "gateway": lambda: transport.UpstreamHttp(transport.upstream_client()),
    # httpx's default transport, sent to through UpstreamHttp.
    "httpx_transport": lambda: transport.UpstreamHttp(_httpx_tuned()),
}


def gateway(port: int, sandbox_port: int, variant: str, cpu: int | None = None) -> Proc:
    """A gateway on ``port`` with its upstreams at the sandbox, over client ``variant``."""
    serve = ("bench._client_variants", "--variant", variant)
    return _servers.gateway(port, sandbox_port, cpu=cpu, serve=serve)


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
