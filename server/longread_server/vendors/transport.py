"""The one HTTP client for upstream calls: an ``httpx.AsyncClient`` shared by every adapter.

Adapters need little of it: POST a body, read the status and headers (``Retry-After``, rate
limits, request ids), iterate the body as it arrives (SSE). The settings, and why:

* a cap on open connections across all upstreams (``server.upstream_max_connections``): a
  burst of map calls waits for a free connection (inside the call's own deadline, as the pool
  timeout) instead of opening sockets without bound; idle ones are kept up to the same number;
* an idle connection is not reused after 5 s: a peer or a NAT on the way may have dropped it
  without a word, and a request sent on it would only fail at the read timeout;
* the environment is honoured (``trust_env``): ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``
  with ``NO_PROXY``, and ``SSL_CERT_FILE``/``SSL_CERT_DIR``;
* answers are asked for uncompressed: a compressor on the way could hold back the pieces of
  a stream, and a model's answer is small next to the prompt we send;
* no cookie jar: a cookie a vendor sets (CDN affinity, bot checks) would otherwise be sent
  back on the next call, whichever tenant it is for;
* HTTP/1.1 only, no redirects (an API endpoint that redirects is misconfigured).

Failures are httpx's exceptions (``ConnectError``, ``ReadTimeout``, ``PoolTimeout``,
``RemoteProtocolError``...); ``vendors/errors.py`` turns them into ``UpstreamError`` kinds and
they never leave ``vendors/``.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from longread_server import __version__

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
KEEPALIVE_EXPIRY_S = 5.0
DEFAULT_MAX_CONNECTIONS = 1000


def upstream_client(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> httpx.AsyncClient:
    """The client for upstream calls; ``max_connections`` 0 means no cap."""
    cap = max_connections or None
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=cap,
            max_keepalive_connections=cap,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        ),
        timeout=DEFAULT_TIMEOUT,
        headers={"user-agent": f"longread/{__version__}", "accept-encoding": "identity"},
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        http1=True,
        http2=False,
        follow_redirects=False,
        trust_env=True,
    )
