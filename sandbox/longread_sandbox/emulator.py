"""Wiring: routes, the ``/_sandbox/`` control plane, and the ``Sandbox`` lifecycle.

``Sandbox`` is what tests and benchmarks hold: start it on port 0, point an SDK or the gateway
at ``base_url``, read ``stats``, change knobs with ``configure`` (or over HTTP from another
process), stop it.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from .anthropic_dialect import AnthropicDialect
from .endpoints import JSON, VendorEndpoints
from .faults import Fault, FaultPlanner, parse_script
from .http_server import Exchange, HttpServer, Request
from .ids import IdSource
from .openai_dialect import OpenAIDialect
from .prefix_cache import PrefixCache
from .protocol import Dialect
from .settings import SandboxConfig
from .stats import SandboxStats
from .tokens import Tokenizer, load_in_background

CONTROL_PREFIX = "/_sandbox/"
# Listed by GET /v1/models next to every model the sandbox has been asked for.
ADVERTISED_MODELS = (
    "gpt-4o-mini",
    "gpt-4.1",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
)

# Trace-context headers a client may send (W3C Trace Context and Baggage, B3 single and
# multi): kept per request (control plane aside) in ``Sandbox.trace_headers``.
TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
)
# How many requests' trace headers are kept: enough for a test's few calls, bounded for a
# long-running emulator.
TRACE_HEADERS_KEPT = 256

Route = Callable[[Request, Exchange], Awaitable[None]]


class Sandbox:
    """A local OpenAI + Anthropic emulator on a real socket."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.stats = SandboxStats()
        # The trace-context headers of the last requests, control plane aside (oldest first;
        # ``{}`` for a request that sent none): shows whether and what a client propagates.
        self.trace_headers: deque[dict[str, str]] = deque(maxlen=TRACE_HEADERS_KEPT)
        self._idle = asyncio.Event()
        self._idle.set()
        self._planner = FaultPlanner(
            seed=self.config.seed,
            rate=self.config.fault_rate,
            kind=Fault.parse(self.config.fault_kind),
            script=parse_script(self.config.script),
        )
        tokenizer = Tokenizer()
        load_in_background()
        ids = IdSource()
        self._cache = PrefixCache()
        self._openai = OpenAIDialect(tokenizer, self._cache, ids)
        self._anthropic = AnthropicDialect(tokenizer, self._cache, ids)
        self._endpoints = VendorEndpoints(
            self.config, self.stats, self._planner, tokenizer, ids, self._idle
        )
        self._routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/chat/completions"): self._chat_openai,
            ("POST", "/v1/messages"): self._chat_anthropic,
            ("POST", "/v1/messages/count_tokens"): self._count_tokens,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
        }
        self._server = HttpServer(
            self._handle, max_body_bytes=self.config.max_body_bytes, on_disconnect=self._gone
        )
        self._port: int | None = None

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted since start: shows whether clients keep them alive."""
        return self._server.accepted

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._server.start(self.config.host, self.config.port)
        self._port = self._server.port

    async def stop(self) -> None:
        await self._server.stop()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("sandbox not started")
        return self._port

    @property
    def base_url(self) -> str:
        """Base URL for the Anthropic SDK (it appends ``/v1/messages``)."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        elif host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for the OpenAI SDK and OpenAI-compatible clients (they expect ``/v1``)."""
        return self.base_url + "/v1"

    # -- control ----------------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change knobs at runtime (same names and checks as ``POST /_sandbox/config``)."""
        self.config.update(changes)
        planner = self._planner
        if "script" in changes:
            planner.set_script(parse_script(self.config.script))
        if "seed" in changes:
            planner.reseed(self.config.seed)
        planner.rate = self.config.fault_rate
        planner.kind = Fault.parse(self.config.fault_kind)

    def reset(self) -> None:
        """Zero the counters and forget scripts, counted markers, cached prefixes, rate usage
        and the trace headers received.

        Knobs keep their values; set them back with ``configure``.
        """
        self.stats.reset()
        self.trace_headers.clear()
        self._planner.reset()
        self._cache.clear()
        self._endpoints.rate.reset()

    async def wait_idle(self) -> None:
        """Wait until no model request is in progress (e.g. a hung one noticed its client left)."""
        await self._idle.wait()

    def config_json(self) -> dict[str, Any]:
        data = self.config.to_json()
        data["script"] = [None if f is None else f.label for f in self._planner.script]
        return data

    # -- routing ----------------------------------------------------------------------------

    async def _handle(self, request: Request, exchange: Exchange) -> None:
        if request.path.startswith(CONTROL_PREFIX):
            await self._control(request, exchange)
            return
        stats = self.stats
        stats.requests += 1
        stats.by_endpoint[request.path] += 1
        headers = request.headers
        self.trace_headers.append({k: headers[k] for k in TRACE_HEADERS if k in headers})
        tag = headers.get("x-sandbox-tag")
        if tag is not None:
            stats.by_tag[tag] += 1
        retry = headers.get("x-stainless-retry-count")
        if retry is not None and retry.isdigit():
            stats.by_retry_count[int(retry)] += 1
        route = self._routes.get((request.method, request.path))
        if route is None:
            await self._endpoints.not_found(self._dialect_for(request), request, exchange)
        else:
            await route(request, exchange)

    def _dialect_for(self, request: Request) -> Dialect:
        """Anthropic for its paths and headers, else OpenAI (what most clients speak)."""
        headers = request.headers
        if (
            request.path.startswith("/v1/messages")
            or "anthropic-version" in headers
            or "x-api-key" in headers
        ):
            return self._anthropic
        return self._openai

    async def _chat_openai(self, request: Request, exchange: Exchange) -> None:
        await self._endpoints.chat(self._openai, request, exchange)

    async def _chat_anthropic(self, request: Request, exchange: Exchange) -> None:
        await self._endpoints.chat(self._anthropic, request, exchange)

    async def _embeddings(self, request: Request, exchange: Exchange) -> None:
        """OpenAI's embeddings; Anthropic has no embeddings API, so a request in its dialect
        gets its usual 404 for an unknown path."""
        dialect = self._dialect_for(request)
        if dialect is self._anthropic:
            await self._endpoints.not_found(dialect, request, exchange)
        else:
            await self._endpoints.embeddings(dialect, request, exchange)

    async def _count_tokens(self, request: Request, exchange: Exchange) -> None:
        await self._endpoints.count_tokens(self._anthropic, request, exchange)

    async def _models(self, request: Request, exchange: Exchange) -> None:
        models = sorted(set(ADVERTISED_MODELS) | set(self.stats.by_model))
        await self._endpoints.models(self._dialect_for(request), request, exchange, models)

    def _gone(self) -> None:
        self.stats.disconnects += 1

    async def _control(self, request: Request, exchange: Exchange) -> None:
        """``/_sandbox/stats``, ``/_sandbox/reset``, ``/_sandbox/config`` (plain JSON)."""
        action = (request.method, request.path[len(CONTROL_PREFIX) :])
        status, payload = 200, None
        if action == ("GET", "stats"):
            payload = self.stats.to_json()
        elif action == ("POST", "reset"):
            self.reset()
            payload = {"ok": True}
        elif action == ("GET", "config"):
            payload = self.config_json()
        elif action == ("POST", "config"):
            try:
                changes = json.loads(request.body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                self.configure(**changes)
                payload = self.config_json()
            except ValueError as exc:
                status, payload = 400, {"error": {"message": str(exc), "type": "invalid_config"}}
        else:
            status = 404
            payload = {"error": {"message": f"no control endpoint {action[0]} {request.path}"}}
        body = json.dumps(payload).encode()
        await exchange.respond(status, [(b"content-type", JSON)], body)
