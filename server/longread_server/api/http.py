"""The HTTP listener: one ASGI application, served by uvicorn on the gateway's event loop.

The application is a starlette application: the Connect face (``connect.py``) is mounted at its
service's path, ``/longread.v1.AnalysisService``, and anything else a deployment serves from
the same listener is one more route after it, e.g. a page at ``/``::

    http_app([connect_app(...)], [Mount("/", StaticFiles(directory=..., html=True))])

uvicorn rather than hypercorn: HTTP/1.1 is all Connect (unary and server streaming) and
gRPC-Web need, gRPC itself has its own listener, and uvicorn is the more widely run of the
two. Its ``serve`` would install its own SIGINT/SIGTERM handlers; here the gateway's handlers
(``app.serve``) decide, and ``HttpServer.stop`` is called by its drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Generator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from longread_server.config import Config, ConfigError

log = logging.getLogger("longread")


def page() -> list[BaseRoute]:
    """The page to try the service (``http.ui``): static files of this package, served as
    they are; its script calls the Connect face on the same origin."""
    return [Mount("/", StaticFiles(packages=[("longread_server", "web")], html=True))]


def http_app(services: Sequence[Any], routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The listener's application: each connectrpc ASGI application at its ``path``, then
    ``routes`` (checked in order, after the services). A starlette application rather than a
    bare router, so that a route's HTTP error (a file that is not there) is a response."""
    return Starlette(routes=[*(Mount(s.path, app=s) for s in services), *routes])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The gateway owns the process's signals (app.serve); it stops this server itself.
        yield


class HttpServer:
    """uvicorn serving ``app`` on ``cfg.http.listen``, with ``cfg.tls`` when it is set."""

    def __init__(self, cfg: Config, app: Any) -> None:
        host, _, port = cfg.http.listen.rpartition(":")
        tls = cfg.tls
        config = uvicorn.Config(
            app,
            host=host.strip("[]"),
            port=int(port),
            lifespan="off",
            log_config=None,
            log_level=logging.WARNING,
            access_log=False,  # the RPCs have theirs (api/rpc_record.py)
            server_header=False,
            ssl_certfile=tls.cert_file or None,
            ssl_keyfile=tls.key_file or None,
            ssl_ca_certs=tls.client_ca_file or None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls.client_ca_file else ssl.CERT_NONE,
        )
        self.tls = tls.enabled
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        try:
            self._socket = config.bind_socket()
        except SystemExit:  # uvicorn exits when it cannot bind, after logging why
            raise ConfigError(
                f"cannot listen on {cfg.http.listen}", setting="http.listen"
            ) from None
        self.port: int = self._socket.getsockname()[1]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve([self._socket]), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # its failure, raised here
                raise ConfigError("the HTTP listener did not start", setting="http.listen")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float) -> None:
        """Stops accepting, closes idle connections, and gives the requests still open
        ``grace`` seconds (the RPCs among them have been drained by the admission by then)."""
        if self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = max(1, math.ceil(grace))
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
