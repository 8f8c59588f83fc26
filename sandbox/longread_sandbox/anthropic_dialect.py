"""The Anthropic Messages wire format (``POST /v1/messages`` and ``/count_tokens``).

Request validation, response and stream bytes, error bodies and headers as documented in
``reference/vendor-protocols.md`` §2. Both auth styles are accepted (``x-api-key`` from the
0.x/1.x SDKs and curl, ``Authorization: Bearer`` from the 2.x SDK), and any
``anthropic-version`` value, since SDK generations send different ones.

Prompt caching follows the documented model: the prefix (tools, then system, then messages)
up to and including a block marked with ``cache_control`` is written on first sight and read
when seen again within its TTL; ``input_tokens`` then counts only the uncached rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .completion import Completion
from .ids import IdSource
from .prefix_cache import Breakpoints, PrefixCache
from .protocol import ApiError, ChatRequest, Headers
from .ratelimit import RateSnapshot, rfc3339, round_thousands
from .tokens import PER_MESSAGE_TOKENS, PER_REPLY_TOKENS, Tokenizer

MAX_CACHE_BREAKPOINTS = 4
IMAGE_TOKENS = 1_600  # roughly what a ~1 megapixel image costs; pixels are never looked at
ORGANIZATION_ID = "00000000-0000-4000-8000-000000000000"
_STOP_REASONS = {"end": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
_INVALID = "invalid_request_error"
_OVERLOADED = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
_FAULTS: dict[int, tuple[str, str]] = {
    400: (_INVALID, "prompt is too long: 210000 tokens > 200000 maximum"),
    401: ("authentication_error", "invalid x-api-key"),
    402: (
        "billing_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
        "Billing to upgrade or purchase credits.",
    ),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "model: not found"),
    408: ("timeout_error", "Request timed out"),
    409: (_INVALID, "Conflict"),
    413: (
        "request_too_large",
        "Request exceeds the maximum allowed number of bytes. The maximum request size is 32 MB.",
    ),
    422: (_INVALID, "Unprocessable request"),
    429: (
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit "
        "(https://docs.claude.com/en/api/rate-limits); see the response headers for current "
        "usage. Please reduce the prompt length or the maximum tokens requested, or try again "
        "later.",
    ),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class _Block:
    """One prompt block as the cache sees it: hash label, text, tokens, cache mark."""

    label: str
    text: str
    tokens: int
    ttl: str | None = None


class AnthropicDialect:
    """Parses and renders Anthropic Messages traffic."""

    name = "anthropic"

    def __init__(self, tokenizer: Tokenizer, cache: PrefixCache, ids: IdSource) -> None:
        self._tokenizer = tokenizer
        self._cache = cache
        self._ids = ids

    # -- requests ---------------------------------------------------------------------------

    def check_auth(self, headers: Mapping[str, str], api_key: str | None) -> ApiError | None:
        key = headers.get("x-api-key", "").strip()
        if not key:
            scheme, _, bearer = headers.get("authorization", "").partition(" ")
            key = bearer.strip() if scheme.lower() == "bearer" else ""
        if not key:
            return ApiError(401, "authentication_error", "x-api-key header is required")
        if api_key is not None and key != api_key:
            return ApiError(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in headers:
            return ApiError(400, _INVALID, "anthropic-version: header is required")
        return None

    def parse_chat(self, body: object) -> ChatRequest:
        return self._parse(body, counting=False)

    def parse_count(self, body: object) -> ChatRequest:
        """A ``count_tokens`` body: no ``max_tokens``, and no effect on the prompt cache."""
        return self._parse(body, counting=True)

    def _parse(self, body: object, *, counting: bool) -> ChatRequest:
        if not isinstance(body, dict):
            raise ApiError(400, _INVALID, "Input should be a valid dictionary")
        model = body.get("model")
        if not model:
            raise ApiError(400, _INVALID, "model: Field required")
        if not isinstance(model, str):
            raise ApiError(400, _INVALID, "model: Input should be a valid string")
        max_tokens = 0 if counting else _max_tokens(body.get("max_tokens"))
        messages = body.get("messages")
        if messages is None:
            raise ApiError(400, _INVALID, "messages: Field required")
        if not isinstance(messages, list):
            raise ApiError(400, _INVALID, "messages: Input should be a valid list")
        if not messages:
            raise ApiError(400, _INVALID, "messages: at least one message is required")
        stream = body.get("stream") or False
        if not isinstance(stream, bool):
            raise ApiError(400, _INVALID, "stream: Input should be a valid boolean")
        _unit_interval("temperature", body.get("temperature"))
        _unit_interval("top_p", body.get("top_p"))
        sources: list[tuple[str, str]] = []
        blocks = self._tools_and_system(body, sources)
        for index, message in enumerate(messages):
            self._message(index, message, blocks, sources)
        top = body.get("cache_control")
        if isinstance(top, dict) and blocks and blocks[-1].ttl is None:
            blocks[-1].ttl = str(top.get("ttl") or "5m")  # automatic caching: mark the end
        prompt_tokens = PER_REPLY_TOKENS + sum(b.tokens for b in blocks)
        request = ChatRequest(
            model=model,
            sources=sources,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stop=_stop_sequences(body.get("stop_sequences")),
            stream=stream,
        )
        marks = sum(1 for b in blocks if b.ttl is not None)
        if marks > MAX_CACHE_BREAKPOINTS:
            raise ApiError(
                400,
                _INVALID,
                f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be "
                f"provided. Found {marks}.",
            )
        if marks and not counting:
            points = Breakpoints(model)
            for block in blocks:
                points.feed(block.label, block.text, block.tokens)
                if block.ttl is not None:
                    points.mark(block.ttl)
            read, write, is_1h = points.resolve(self._cache)
            request.cache_read_tokens, request.cache_write_tokens = read, write
            request.cache_write_1h = is_1h
        return request

    def _tools_and_system(
        self, body: dict[str, Any], sources: list[tuple[str, str]]
    ) -> list[_Block]:
        count = self._tokenizer.count
        blocks: list[_Block] = []
        tools = body.get("tools")
        if tools:
            if not isinstance(tools, list):
                raise ApiError(400, _INVALID, "tools: Input should be a valid list")
            text = _dumps(tools)
            marked = [
                t["cache_control"] for t in tools if isinstance(t, dict) and t.get("cache_control")
            ]
            blocks.append(_Block("tools", text, count(text), _ttl(marked[-1]) if marked else None))
        system = body.get("system")
        if isinstance(system, str):
            if system:
                blocks.append(_Block("system", system, PER_MESSAGE_TOKENS + count(system)))
                sources.append(("system", system))
        elif isinstance(system, list):
            texts: list[str] = []
            for i, block in enumerate(system):
                if not isinstance(block, dict) or not isinstance(block.get("text"), str):
                    raise ApiError(400, _INVALID, f"system.{i}: Input should be a valid text block")
                text = block["text"]
                overhead = PER_MESSAGE_TOKENS if i == 0 else 0
                blocks.append(
                    _Block("system", text, overhead + count(text), _ttl(block.get("cache_control")))
                )
                texts.append(text)
            sources.append(("system", "\n\n".join(texts)))
        elif system is not None:
            raise ApiError(400, _INVALID, "system: Input should be a valid string or list")
        return blocks

    def _message(
        self, index: int, message: object, blocks: list[_Block], sources: list[tuple[str, str]]
    ) -> None:
        if not isinstance(message, dict):
            raise ApiError(400, _INVALID, f"messages.{index}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise ApiError(
                400, _INVALID, f"messages.{index}.role: Input should be 'user' or 'assistant'"
            )
        content = message.get("content")
        count = self._tokenizer.count
        if isinstance(content, str):
            blocks.append(_Block(role, content, PER_MESSAGE_TOKENS + count(content)))
            sources.append((role, content))
            return
        if not isinstance(content, list):
            raise ApiError(
                400, _INVALID, f"messages.{index}.content: Input should be a valid string or list"
            )
        first = len(blocks)
        readable: list[str] = []
        for position, block in enumerate(content):
            if not isinstance(block, dict):
                raise ApiError(
                    400,
                    _INVALID,
                    f"messages.{index}.content.{position}: Input should be a valid dictionary",
                )
            text, tokens, is_readable = _block_text(block, count)
            blocks.append(_Block(role, text, tokens, _ttl(block.get("cache_control"))))
            if is_readable and text:
                readable.append(text)
        if len(blocks) == first:
            blocks.append(_Block(role, "", 0))
        blocks[first].tokens += PER_MESSAGE_TOKENS
        sources.append((role, "\n\n".join(readable)))

    # -- responses --------------------------------------------------------------------------

    def render_chat(self, request: ChatRequest, completion: Completion) -> bytes:
        body = {
            "id": self._ids.make("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": [{"type": "text", "text": completion.text}] if completion.text else [],
            "stop_reason": _STOP_REASONS[completion.finish],
            "stop_sequence": completion.stop_sequence,
            "usage": _usage(request, completion.tokens),
        }
        return _dumps(body).encode()

    def render_count(self, request: ChatRequest) -> bytes:
        return b'{"input_tokens":%d}' % request.prompt_tokens

    def stream_frames(self, request: ChatRequest, completion: Completion) -> AnthropicFrames:
        return AnthropicFrames(self._ids.make("msg_01"), request, completion)

    def malformed_body(self) -> bytes:
        return b'{"id":"msg_01sandbox","type":"message","content":[{"type":"text",'

    def error_body(self, error: ApiError, request_id: str) -> bytes:
        body = {
            "type": "error",
            "error": {"type": error.type, "message": error.message},
            "request_id": request_id,
        }
        return _dumps(body).encode()

    def fault_error(self, status: int, retry_after_s: float) -> ApiError:
        default = _FAULTS[500] if status >= 500 else (_INVALID, "Request failed")
        type_, message = _FAULTS.get(status, default)
        return ApiError(status, type_, message)

    def invalid_json(self) -> ApiError:
        return ApiError(400, _INVALID, "There was an issue with the JSON body of your request.")

    def not_found(self, method: str, path: str) -> ApiError:
        return ApiError(404, "not_found_error", "Not Found")

    def too_large(self) -> ApiError:
        return ApiError(413, *_FAULTS[413])

    def models_body(self, models: list[str]) -> bytes:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-05-14T00:00:00Z"}
            for m in models
        ]
        return _dumps(
            {
                "data": data,
                "has_more": False,
                "first_id": models[0] if models else None,
                "last_id": models[-1] if models else None,
            }
        ).encode()

    def response_headers(self, request_id: str, limits: RateSnapshot) -> Headers:
        requests_reset = rfc3339(limits.now + limits.requests_reset_s).encode()
        tokens_reset = rfc3339(limits.now + limits.tokens_reset_s).encode()
        return [
            (b"request-id", request_id.encode()),
            (b"anthropic-organization-id", ORGANIZATION_ID.encode()),
            (b"anthropic-ratelimit-requests-limit", b"%d" % limits.requests_limit),
            (b"anthropic-ratelimit-requests-remaining", b"%d" % limits.requests_remaining),
            (b"anthropic-ratelimit-requests-reset", requests_reset),
            (b"anthropic-ratelimit-tokens-limit", b"%d" % limits.tokens_limit),
            (
                b"anthropic-ratelimit-tokens-remaining",
                b"%d" % round_thousands(limits.tokens_remaining),
            ),
            (b"anthropic-ratelimit-tokens-reset", tokens_reset),
            (b"anthropic-ratelimit-input-tokens-limit", b"%d" % limits.input_limit),
            (
                b"anthropic-ratelimit-input-tokens-remaining",
                b"%d" % round_thousands(limits.input_remaining),
            ),
            (b"anthropic-ratelimit-input-tokens-reset", tokens_reset),
            (b"anthropic-ratelimit-output-tokens-limit", b"%d" % limits.output_limit),
            (
                b"anthropic-ratelimit-output-tokens-remaining",
                b"%d" % round_thousands(limits.output_remaining),
            ),
            (b"anthropic-ratelimit-output-tokens-reset", tokens_reset),
        ]


class AnthropicFrames:
    """``event: <name>`` + ``data: <json with the same type>`` events, in the documented order."""

    __slots__ = ("_completion", "_message_id", "_request")

    def __init__(self, message_id: str, request: ChatRequest, completion: Completion) -> None:
        self._message_id = message_id
        self._request = request
        self._completion = completion

    def head(self) -> bytes:
        usage = _usage(self._request, 1)
        del usage["cache_creation"]
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return (
            _event("message_start", {"type": "message_start", "message": message})
            + b"event: content_block_start\ndata: "
            b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
            b"\n\n"
            b'event: ping\ndata: {"type": "ping"}\n\n'
        )

    def delta(self, text: str) -> bytes:
        return (
            b"event: content_block_delta\ndata: "
            b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
            + _dumps(text).encode()
            + b"}}\n\n"
        )

    def tail(self) -> bytes:
        completion = self._completion
        usage = _usage(self._request, completion.tokens)
        del usage["cache_creation"], usage["service_tier"]
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP_REASONS[completion.finish],
                "stop_sequence": completion.stop_sequence,
            },
            "usage": usage,
        }
        return (
            b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
            + _event("message_delta", delta)
            + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )

    def error(self, message: str = "") -> bytes:
        if not message:
            return b"event: error\ndata: " + _OVERLOADED + b"\n\n"
        error = {"type": "api_error", "message": message}
        return _event("error", {"type": "error", "error": error})

    def malformed(self) -> bytes:
        return (
            b"event: content_block_delta\ndata: "
            b'{"type":"content_block_delta","index":0,"delta":{"type":"text_de\n\n'
        )


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(data).encode() + b"\n\n"


def _usage(request: ChatRequest, output_tokens: int) -> dict[str, Any]:
    write = request.cache_write_tokens
    uncached = request.prompt_tokens - request.cache_read_tokens - write
    return {
        "input_tokens": uncached,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": request.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 0 if request.cache_write_1h else write,
            "ephemeral_1h_input_tokens": write if request.cache_write_1h else 0,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _block_text(block: dict[str, Any], count: Callable[[str], int]) -> tuple[str, int, bool]:
    """``(text, tokens, readable)`` of a content block; readable = the answer may quote it."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise ApiError(400, _INVALID, "text: Input should be a valid string")
        return text, count(text), True
    if kind == "tool_result":
        inner = block.get("content")
        if isinstance(inner, list):
            inner = "\n\n".join(
                b["text"] for b in inner if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
        text = inner if isinstance(inner, str) else ""
        return text, count(text), True
    if kind in ("image", "document"):
        return _dumps(block.get("source")), IMAGE_TOKENS, False
    if kind == "thinking":
        text = str(block.get("thinking", ""))
        return text, count(text), False
    text = _dumps({k: v for k, v in block.items() if k != "cache_control"})
    return text, count(text), False


def _ttl(cache_control: object) -> str | None:
    if not isinstance(cache_control, dict):
        return None
    return str(cache_control.get("ttl") or "5m")


def _unit_interval(name: str, value: object) -> None:
    """``temperature`` "ranges from 0.0 to 1.0", ``top_p`` is a probability
    (docs.anthropic.com/en/api/messages); absent is the vendor's default."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, _INVALID, f"{name}: Input should be a valid number")
    if value < 0:
        raise ApiError(400, _INVALID, f"{name}: Input should be greater than or equal to 0")
    if value > 1:
        raise ApiError(400, _INVALID, f"{name}: Input should be less than or equal to 1")


def _max_tokens(value: object) -> int:
    if value is None:
        raise ApiError(400, _INVALID, "max_tokens: Field required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, _INVALID, "max_tokens: Input should be a valid integer")
    if value < 1:
        raise ApiError(400, _INVALID, "max_tokens: Input should be greater than or equal to 1")
    return value


def _stop_sequences(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ApiError(400, _INVALID, "stop_sequences: Input should be a valid list of strings")
