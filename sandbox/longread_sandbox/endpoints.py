"""What happens to a vendor request: auth, parsing, faults, latency, then answer or stream.

The steps are the same for both wire formats; a ``Dialect`` supplies the bytes. Everything the
caller can observe about timing and failure (latency, time to first token, pacing, injected
faults) is decided here, so it behaves identically for OpenAI and Anthropic traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .answer import extractive_answer
from .anthropic_dialect import AnthropicDialect
from .completion import Completion, shape_completion
from .embeddings import parse_embeddings, render_embeddings
from .faults import MIDSTREAM_KINDS, Fault, FaultPlanner, echo
from .http_server import Exchange, Request
from .ids import IdSource
from .protocol import ApiError, ChatRequest, Dialect, Headers
from .ratelimit import RateSnapshot, RateWindow
from .settings import SandboxConfig
from .stats import SandboxStats
from .tokens import Tokenizer

JSON = b"application/json"
HTML = b"text/html; charset=utf-8"
EVENT_STREAM = b"text/event-stream; charset=utf-8"
RETRY_HINT_STATUSES = frozenset({429, 503, 529})
FAULT_HEADER = "x-sandbox-fault"
# Deltas sent before a mid-stream fault (fewer when the answer is short).
DELTAS_BEFORE_BREAK = 2


@dataclass(frozen=True, slots=True)
class Knobs:
    """Timing for one request: the config, overridden by ``x-sandbox-*`` request headers."""

    latency_s: float
    ttft_s: float
    tokens_per_s: float
    retry_after_ms: float

    @classmethod
    def resolve(cls, headers: Mapping[str, str], config: SandboxConfig) -> Knobs:
        """Raises ``ValueError`` for a header that is not a finite number >= 0."""
        return cls(
            latency_s=_header_ms(headers, "x-sandbox-latency-ms", config.latency_ms) / 1000,
            ttft_s=_header_ms(headers, "x-sandbox-ttft-ms", config.ttft_ms) / 1000,
            tokens_per_s=_header_ms(headers, "x-sandbox-tokens-per-s", config.tokens_per_s),
            retry_after_ms=_header_ms(headers, "x-sandbox-retry-after-ms", config.retry_after_ms),
        )


def _refusal(exc: ApiError | ValueError) -> ApiError:
    """The vendor's 400 for a body it cannot take (a malformed value is invalid_request_error)."""
    return exc if isinstance(exc, ApiError) else ApiError(400, "invalid_request_error", str(exc))


async def _sleep_until(when: float) -> None:
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


def _header_ms(headers: Mapping[str, str], name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0")
    return value


class VendorEndpoints:
    """Serves the vendor endpoints for both dialects."""

    def __init__(
        self,
        config: SandboxConfig,
        stats: SandboxStats,
        planner: FaultPlanner,
        tokenizer: Tokenizer,
        ids: IdSource,
        idle: asyncio.Event,
    ) -> None:
        self._config = config
        self._stats = stats
        self._planner = planner
        self._tokenizer = tokenizer
        self._ids = ids
        self._idle = idle
        self.rate = RateWindow()

    # -- endpoints --------------------------------------------------------------------------

    async def chat(self, dialect: Dialect, request: Request, exchange: Exchange) -> None:
        """``POST /v1/chat/completions`` or ``POST /v1/messages``."""
        request_id = self._ids.make("req_")
        try:
            chat = dialect.parse_chat(self._body(dialect, request))
            self._stats.by_model[chat.model] += 1
            knobs = Knobs.resolve(request.headers, self._config)
            fault = self._planner.choose(request.headers.get(FAULT_HEADER), chat.sources)
        except (ApiError, ValueError) as exc:
            await self.error(dialect, exchange, _refusal(exc), request_id)
            return
        if fault is not None:
            self._stats.by_fault[fault.label] += 1
        # Latency runs from arrival, like a remote provider's: the answer is worked out during
        # it, so the sandbox's own CPU does not add to the latency a caller asked for.
        answer_at = asyncio.get_running_loop().time() + knobs.latency_s
        with self._busy():
            if fault is not None and (fault.kind not in MIDSTREAM_KINDS or not chat.stream):
                await _sleep_until(answer_at)
                quote = echo(chat.sources)
                await self._fault_before_answer(dialect, exchange, fault, knobs, request_id, quote)
                return
            completion = shape_completion(
                extractive_answer(chat.sources),
                max_tokens=chat.max_tokens,
                stop=chat.stop,
                tokenizer=self._tokenizer.for_model(chat.model),
            )
            await _sleep_until(answer_at)
            self._count_usage(chat, completion)
            limits = self.rate.record(chat.prompt_tokens, completion.tokens * chat.choices)
            if chat.stream:
                headers = self._headers(dialect, request_id, limits, EVENT_STREAM)
                headers.append((b"cache-control", b"no-cache"))
                await self._stream(dialect, exchange, chat, completion, fault, knobs, headers)
            else:
                headers = self._headers(dialect, request_id, limits, JSON)
                await self._send(exchange, 200, headers, dialect.render_chat(chat, completion))

    async def embeddings(self, dialect: Dialect, request: Request, exchange: Exchange) -> None:
        """``POST /v1/embeddings`` (OpenAI): the chat endpoint's auth, stats, latency, faults and
        rate-limit headers around ``embeddings``' checks and vectors."""
        request_id = self._ids.make("req_")
        try:
            embedding = parse_embeddings(self._body(dialect, request), self._tokenizer)
            self._stats.by_model[embedding.model] += 1
            knobs = Knobs.resolve(request.headers, self._config)
            # The inputs are the "prompt": fault markers in them count, echoing faults quote them.
            sources = [("input", text) for text in embedding.texts]
            fault = self._planner.choose(request.headers.get(FAULT_HEADER), sources)
        except (ApiError, ValueError) as exc:
            await self.error(dialect, exchange, _refusal(exc), request_id)
            return
        if fault is not None:
            self._stats.by_fault[fault.label] += 1
        answer_at = asyncio.get_running_loop().time() + knobs.latency_s
        with self._busy():
            if fault is not None:  # never streamed: every fault comes before the answer
                await _sleep_until(answer_at)
                await self._fault_before_answer(
                    dialect, exchange, fault, knobs, request_id, echo(sources), param="input"
                )
                return
            body = render_embeddings(embedding)
            await _sleep_until(answer_at)
            self._stats.prompt_tokens += embedding.prompt_tokens
            limits = self.rate.record(embedding.prompt_tokens, 0)
            await self._send(exchange, 200, self._headers(dialect, request_id, limits, JSON), body)

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """Counts a request in progress (``active``; ``_idle`` once none is)."""
        self._stats.active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._stats.active -= 1
            if self._stats.active == 0:
                self._idle.set()

    async def count_tokens(
        self, dialect: AnthropicDialect, request: Request, exchange: Exchange
    ) -> None:
        """``POST /v1/messages/count_tokens``: delayed like any call, but never faulted."""
        request_id = self._ids.make("req_")
        try:
            counted = dialect.parse_count(self._body(dialect, request))
            knobs = Knobs.resolve(request.headers, self._config)
        except (ApiError, ValueError) as exc:
            await self.error(dialect, exchange, _refusal(exc), request_id)
            return
        self._stats.by_model[counted.model] += 1
        if knobs.latency_s > 0:
            await asyncio.sleep(knobs.latency_s)
        headers = self._headers(dialect, request_id, self.rate.record(0, 0), JSON)
        await self._send(exchange, 200, headers, dialect.render_count(counted))

    async def models(
        self, dialect: Dialect, request: Request, exchange: Exchange, models: list[str]
    ) -> None:
        request_id = self._ids.make("req_")
        error = dialect.check_auth(request.headers, self._config.api_key)
        if error is not None:
            await self.error(dialect, exchange, error, request_id)
            return
        headers = self._headers(dialect, request_id, self.rate.record(0, 0), JSON)
        await self._send(exchange, 200, headers, dialect.models_body(models))

    async def not_found(self, dialect: Dialect, request: Request, exchange: Exchange) -> None:
        error = dialect.not_found(request.method, request.path)
        await self.error(dialect, exchange, error, self._ids.make("req_"))

    async def error(
        self,
        dialect: Dialect,
        exchange: Exchange,
        error: ApiError,
        request_id: str,
        retry_after_ms: float | None = None,
    ) -> None:
        """Send ``error`` in the dialect's body format, with retry hints where vendors send them."""
        throttled = None
        if error.status == 429:
            throttled = (retry_after_ms or self._config.retry_after_ms) / 1000
        headers = self._headers(dialect, request_id, self.rate.record(0, 0, throttled), JSON)
        if retry_after_ms is not None and error.status in RETRY_HINT_STATUSES:
            headers.append((b"retry-after", b"%d" % math.ceil(retry_after_ms / 1000)))
            headers.append((b"retry-after-ms", _number(retry_after_ms).encode()))
        await self._send(exchange, error.status, headers, dialect.error_body(error, request_id))

    # -- steps ------------------------------------------------------------------------------

    def _body(self, dialect: Dialect, request: Request) -> Any:
        """The checked, decoded JSON body; raises the vendor's ``ApiError`` otherwise."""
        error = dialect.check_auth(request.headers, self._config.api_key)
        if error is not None:
            raise error
        if request.too_large:
            raise dialect.too_large()
        try:
            return json.loads(request.body)
        except ValueError:
            raise dialect.invalid_json() from None

    async def _fault_before_answer(
        self,
        dialect: Dialect,
        exchange: Exchange,
        fault: Fault,
        knobs: Knobs,
        request_id: str,
        quote: str,
        *,
        param: str = "messages",
    ) -> None:
        """``param``: the request field an ``echo_400`` blames (where the prompt was)."""
        kind = fault.kind
        if kind == "echo_400":
            error = ApiError(
                400,
                "invalid_request_error",
                f"Invalid prompt: '{quote}' could not be processed.",
                param=param,
                code="invalid_prompt",
            )
            await self.error(dialect, exchange, error, request_id)
        elif kind == "html_502":
            page = (
                "<html><head><title>502 Bad Gateway</title></head><body>"
                "<h1>502 Bad Gateway</h1><p>The server could not answer the request "
                f"<pre>{html.escape(quote)}</pre></p></body></html>"
            )
            headers = self._headers(dialect, request_id, self.rate.record(0, 0), HTML)
            await self._send(exchange, 502, headers, page.encode())
        elif kind == "midstream_echo":  # not streaming: the error comes as the answer's status
            error = ApiError(500, "server_error", f"The model failed on: '{quote}'")
            await self.error(dialect, exchange, error, request_id)
        elif kind in ("timeout", "stall"):
            if await exchange.hang(self._config.hang_max_s):
                self._stats.disconnects += 1
        elif kind == "reset":
            exchange.abort()
        elif kind == "malformed":
            headers = self._headers(dialect, request_id, self.rate.record(0, 0), JSON)
            await self._send(exchange, 200, headers, dialect.malformed_body())
        else:
            status = fault.status if kind == "status" else 500
            error = dialect.fault_error(status, knobs.retry_after_ms / 1000)
            await self.error(dialect, exchange, error, request_id, knobs.retry_after_ms)

    async def _stream(
        self,
        dialect: Dialect,
        exchange: Exchange,
        chat: ChatRequest,
        completion: Completion,
        fault: Fault | None,
        knobs: Knobs,
        headers: Headers,
    ) -> None:
        """Send the answer as SSE; pace it, and break it if a mid-stream fault is due."""
        frames = dialect.stream_frames(chat, completion)
        pieces = completion.pieces(self._tokenizer.for_model(chat.model), self._config.delta_tokens)
        self._stats.streams += 1
        self._stats.by_status[200] += 1
        pace = knobs.tokens_per_s
        # Nothing observable happens between events unless something waits or breaks, and
        # then one write carries the whole response.
        at_once = fault is None and pace <= 0
        await exchange.start_stream(200, headers, flush=not at_once or knobs.ttft_s > 0)
        if knobs.ttft_s > 0:
            await asyncio.sleep(knobs.ttft_s)
        if at_once:
            body = [frames.head()]
            body.extend(frames.delta(text) for text, _ in pieces if text)
            body.append(frames.tail())
            await exchange.send(b"".join(body), last=True)
            return
        break_at = min(DELTAS_BEFORE_BREAK, len(pieces) // 2) if fault is not None else -1
        await exchange.send(frames.head())
        loop = asyncio.get_running_loop()
        started, sent_tokens = loop.time(), 0
        for index in range(len(pieces) + 1):
            if index == break_at and fault is not None:
                if fault.kind == "reset":
                    exchange.abort()
                    return
                if fault.kind == "stall":
                    if await exchange.hang(self._config.hang_max_s):
                        self._stats.disconnects += 1
                    return
                if fault.kind == "midstream_error":
                    await exchange.send(frames.error(), last=True)
                    return
                if fault.kind == "midstream_echo":
                    quote = f"The model failed on: '{echo(chat.sources)}'"
                    await exchange.send(frames.error(quote), last=True)
                    return
                await exchange.send(frames.malformed())  # and carry on, as a buggy proxy would
            if index == len(pieces):
                break
            text, tokens = pieces[index]
            if pace > 0:
                delay = started + sent_tokens / pace - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_tokens += tokens
            if text:
                await exchange.send(frames.delta(text))
        await exchange.send(frames.tail(), last=True)

    # -- helpers ----------------------------------------------------------------------------

    def _headers(
        self, dialect: Dialect, request_id: str, limits: RateSnapshot, content_type: bytes
    ) -> Headers:
        headers = dialect.response_headers(request_id, limits)
        headers.append((b"content-type", content_type))
        return headers

    async def _send(self, exchange: Exchange, status: int, headers: Headers, body: bytes) -> None:
        self._stats.by_status[status] += 1
        await exchange.respond(status, headers, body)

    def _count_usage(self, chat: ChatRequest, completion: Completion) -> None:
        stats = self._stats
        stats.prompt_tokens += chat.prompt_tokens
        stats.completion_tokens += completion.tokens * chat.choices
        stats.cache_read_tokens += chat.cache_read_tokens
        stats.cache_write_tokens += chat.cache_write_tokens


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"
