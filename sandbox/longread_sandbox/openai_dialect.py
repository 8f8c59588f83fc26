"""The OpenAI Chat Completions wire format (``POST /v1/chat/completions``).

Request validation, response and stream bytes, error bodies and headers as documented in
``reference/vendor-protocols.md`` §1, so the official SDK and the gateway's own parser see what
they would see from OpenAI (and from OpenAI-compatible servers, which copy it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .completion import Completion
from .ids import IdSource
from .prefix_cache import OPENAI_MIN_CACHED, OPENAI_RETENTION_S, PrefixCache
from .protocol import ApiError, ChatRequest, Headers
from .ratelimit import RateSnapshot, go_duration
from .tokens import PER_MESSAGE_TOKENS, PER_NAME_TOKENS, PER_REPLY_TOKENS, Tokenizer

DEFAULT_MAX_TOKENS = 4096
MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 128
IMAGE_TOKENS = 85  # a low-detail image; the sandbox never looks at pixels
FINGERPRINT = "fp_sandbox"
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
# Stand-ins for the role/separator tokens around each message, so two prompts that differ only
# in how text is split across messages do not share a cache prefix.
_ROLE_MARKS = {role: 100_264 + i for i, role in enumerate(ROLES)}
_FINISH = {"end": "stop", "stop_sequence": "stop", "length": "length"}
_INVALID_TYPE = "invalid_type"
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent "
    "was not valid JSON. If you have trouble figuring out how to fix this, please contact us "
    "through our help center at help.openai.com.)"
)
_FAULTS: dict[int, tuple[str, str, str | None, str | None]] = {
    # status: (type, message, param, code)
    400: (
        "invalid_request_error",
        "This model's maximum context length is 128000 tokens. However, your messages resulted "
        "in 131072 tokens. Please reduce the length of the messages.",
        "messages",
        "context_length_exceeded",
    ),
    401: (
        "invalid_request_error",
        "Incorrect API key provided: sk-sand*****xxxx. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        None,
        "invalid_api_key",
    ),
    402: (
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
        None,
        "insufficient_quota",
    ),
    403: (
        "request_forbidden",
        "Country, region, or territory not supported",
        None,
        "unsupported_country_region_territory",
    ),
    404: (
        "invalid_request_error",
        "The model does not exist or you do not have access to it.",
        None,
        "model_not_found",
    ),
    408: ("timeout", "Request timed out.", None, None),
    409: ("invalid_request_error", "Conflict: another request is in progress.", None, None),
    413: ("invalid_request_error", "Request too large.", None, "request_too_large"),
    422: ("invalid_request_error", "Unprocessable request.", None, None),
    500: (
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
        None,
        None,
    ),
    502: ("server_error", "Bad gateway.", None, None),
    503: (
        "service_unavailable_error",
        "The engine is currently overloaded, please try again later",
        None,
        "server_is_overloaded",
    ),
    504: ("timeout", "Gateway timeout.", None, None),
}


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class OpenAIDialect:
    """Parses and renders OpenAI Chat Completions traffic."""

    name = "openai"

    def __init__(self, tokenizer: Tokenizer, cache: PrefixCache, ids: IdSource) -> None:
        self._tokenizer = tokenizer
        self._cache = cache
        self._ids = ids

    # -- requests ---------------------------------------------------------------------------

    def check_auth(self, headers: Mapping[str, str], api_key: str | None) -> ApiError | None:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return ApiError(401, "invalid_request_error", _NO_KEY)
        if api_key is not None and key != api_key:
            masked = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else key
            return ApiError(
                401,
                "invalid_request_error",
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def parse_chat(self, body: object) -> ChatRequest:
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request_error", "Invalid body: expected a JSON object.")
        model = body.get("model")
        if model is None or model == "":
            raise ApiError(400, "invalid_request_error", "you must provide a model parameter")
        if not isinstance(model, str):
            raise _invalid_type("model", "a string", model)
        messages = body.get("messages")
        if messages is None:
            raise ApiError(
                400,
                "invalid_request_error",
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not isinstance(messages, list):
            raise _invalid_type("messages", "an array", messages)
        if not messages:
            raise ApiError(
                400,
                "invalid_request_error",
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but "
                "got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        # Billed as OpenAI bills: the model's own encoding, its documented chat framing (tokens.py).
        encode = self._tokenizer.for_model(model).encode
        sources: list[tuple[str, str]] = []
        encoded: list[tuple[int, Sequence[int]]] = []
        prompt_tokens = PER_REPLY_TOKENS
        tools = body.get("tools")
        if tools:
            tool_ids = encode(_dumps(tools))
            encoded.append((0, tool_ids))
            prompt_tokens += len(tool_ids)
        for index, message in enumerate(messages):
            role, text, images = _message(index, message)
            ids: Sequence[int] = encode(text) if text else ()
            encoded.append((_ROLE_MARKS[role], ids))
            prompt_tokens += (
                PER_MESSAGE_TOKENS + len(encode(role)) + len(ids) + images * IMAGE_TOKENS
            )
            name = message.get("name") if isinstance(message, dict) else None
            if isinstance(name, str) and name:
                prompt_tokens += PER_NAME_TOKENS + len(encode(name))
            sources.append((role, text))
        stream = body.get("stream") or False
        if not isinstance(stream, bool):
            raise _invalid_type("stream", "a boolean", stream)
        options = body.get("stream_options")
        if options is not None and not stream:
            raise ApiError(
                400,
                "invalid_request_error",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        if options is not None and not isinstance(options, dict):
            raise _invalid_type("stream_options", "an object", options)
        retention = body.get("prompt_cache_retention")
        if retention is not None and retention not in OPENAI_RETENTION_S:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Invalid value: '{retention}'. Supported values are: 'in_memory' and '24h'.",
                param="prompt_cache_retention",
            )
        cached = 0
        if prompt_tokens >= OPENAI_MIN_CACHED:
            ttl_s = OPENAI_RETENTION_S[retention or "in_memory"]
            cached = self._cache.openai_cached_tokens(model, _sequence(encoded), ttl_s)
        return ChatRequest(
            model=model,
            sources=sources,
            prompt_tokens=prompt_tokens,
            max_tokens=_max_tokens(body),
            stop=_stop(body.get("stop")),
            stream=stream,
            include_usage=bool(options and options.get("include_usage")),
            choices=_choices(body.get("n")),
            cache_read_tokens=cached,
        )

    # -- responses --------------------------------------------------------------------------

    def render_chat(self, request: ChatRequest, completion: Completion) -> bytes:
        finish = _FINISH[completion.finish]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": completion.text,
            "refusal": None,
            "annotations": [],
        }
        body = {
            "id": self._ids.make("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                for i in range(request.choices)
            ],
            "usage": _usage(request, completion),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        return _dumps(body).encode()

    def stream_frames(self, request: ChatRequest, completion: Completion) -> OpenAIFrames:
        return OpenAIFrames(self._ids.make("chatcmpl-"), request, completion)

    def malformed_body(self) -> bytes:
        return b'{"id":"chatcmpl-sandbox","object":"chat.completion","choices":[{"index":0,'

    def error_body(self, error: ApiError, request_id: str) -> bytes:
        inner = {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
        return _dumps({"error": inner}).encode()

    def fault_error(self, status: int, retry_after_s: float) -> ApiError:
        if status == 429:
            return ApiError(
                429,
                "requests",
                "Rate limit reached for requests per min (RPM): Limit 10000, Used 10000, "
                f"Requested 1. Please try again in {go_duration(retry_after_s)}. Visit "
                "https://platform.openai.com/account/rate-limits to learn more.",
                code="rate_limit_exceeded",
            )
        type_, message, param, code = _FAULTS.get(status if status != 529 else 503, _FAULTS[500])
        return ApiError(503 if status == 529 else status, type_, message, param=param, code=code)

    def invalid_json(self) -> ApiError:
        return ApiError(400, "invalid_request_error", _BAD_JSON)

    def not_found(self, method: str, path: str) -> ApiError:
        return ApiError(404, "invalid_request_error", f"Invalid URL ({method} {path})")

    def too_large(self) -> ApiError:
        return ApiError(413, "invalid_request_error", "Request too large.")

    def models_body(self, models: list[str]) -> bytes:
        data = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "sandbox"}
            for m in models
        ]
        return _dumps({"object": "list", "data": data}).encode()

    def response_headers(self, request_id: str, limits: RateSnapshot) -> Headers:
        return [
            (b"x-request-id", request_id.encode()),
            (b"openai-version", b"2020-10-01"),
            (b"openai-organization", b"sandbox"),
            (b"x-ratelimit-limit-requests", b"%d" % limits.requests_limit),
            (b"x-ratelimit-limit-tokens", b"%d" % limits.tokens_limit),
            (b"x-ratelimit-remaining-requests", b"%d" % limits.requests_remaining),
            (b"x-ratelimit-remaining-tokens", b"%d" % limits.tokens_remaining),
            (b"x-ratelimit-reset-requests", go_duration(limits.requests_reset_s).encode()),
            (b"x-ratelimit-reset-tokens", go_duration(limits.tokens_reset_s).encode()),
        ]


class OpenAIFrames:
    """``data: <chunk>`` events, ``[DONE]``, and the final ``choices: []`` usage chunk."""

    __slots__ = ("_choices", "_completion", "_prefix", "_request", "_suffix")

    def __init__(self, response_id: str, request: ChatRequest, completion: Completion) -> None:
        self._request = request
        self._completion = completion
        self._choices = range(request.choices)
        head = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": FINGERPRINT,
        }
        self._prefix = b"data: " + _dumps(head)[:-1].encode() + b',"choices":['
        self._suffix = b'],"usage":null}\n\n' if request.include_usage else b"]}\n\n"

    def head(self) -> bytes:
        return b"".join(
            self._prefix + b'{"index":%d,"delta":{"role":"assistant","content":"","refusal":null},'
            b'"logprobs":null,"finish_reason":null}' % i + self._suffix
            for i in self._choices
        )

    def delta(self, text: str) -> bytes:
        content = _dumps(text).encode()
        return b"".join(
            self._prefix
            + b'{"index":%d,"delta":{"content":%s},"logprobs":null,"finish_reason":null}'
            % (i, content)
            + self._suffix
            for i in self._choices
        )

    def tail(self) -> bytes:
        finish = _FINISH[self._completion.finish].encode()
        out = [
            self._prefix
            + b'{"index":%d,"delta":{},"logprobs":null,"finish_reason":"%s"}' % (i, finish)
            + self._suffix
            for i in self._choices
        ]
        if self._request.include_usage:
            usage = _dumps(_usage(self._request, self._completion)).encode()
            out.append(self._prefix + b'],"usage":' + usage + b"}\n\n")
        out.append(b"data: [DONE]\n\n")
        return b"".join(out)

    def error(self, message: str = "") -> bytes:
        type_, usual, param, code = _FAULTS[500]
        inner = {"message": message or usual, "type": type_, "param": param, "code": code}
        return b"data: " + _dumps({"error": inner}).encode() + b"\n\n"

    def malformed(self) -> bytes:
        return self._prefix + b'{"index":0,"delta":{"content":"\n\n'


def _message(index: int, message: object) -> tuple[str, str, int]:
    """``(role, text, image_count)`` of one request message."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        raise ApiError(
            400,
            "invalid_request_error",
            f"Missing required parameter: '{where}.role'.",
            param=f"{where}.role",
            code="missing_required_parameter",
        )
    if role not in _ROLE_MARKS:
        raise ApiError(
            400,
            "invalid_request_error",
            f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
            "'function', 'tool', and 'developer'.",
            param=f"{where}.role",
            code="invalid_value",
        )
    content = message.get("content")
    images = 0
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict):
                raise _invalid_type(f"{where}.content", "an array of objects", part)
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                images += 1
        text = "\n\n".join(texts)
    else:
        raise _invalid_type(f"{where}.content", "a string or array", content)
    calls = message.get("tool_calls")
    if calls:
        text += _dumps(calls)
    return str(role), text, images


def _sequence(encoded: list[tuple[int, Sequence[int]]]) -> list[int]:
    out: list[int] = []
    for mark, ids in encoded:
        out.append(mark)
        out.extend(ids)
        out.append(100_265)
    return out


def _max_tokens(body: dict[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid_type(key, "an integer", value)
        if value < 1:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Invalid '{key}': integer below minimum value. Expected a value >= 1, but got "
                f"{value} instead.",
                param=key,
                code="integer_below_min_value",
            )
        return value
    return DEFAULT_MAX_TOKENS


def _stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if len(value) > MAX_STOP_SEQUENCES:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Invalid 'stop': array too long. Expected an array with maximum length "
                f"{MAX_STOP_SEQUENCES}, but got an array with length {len(value)} instead.",
                param="stop",
                code="array_above_max_length",
            )
        return tuple(value)
    raise _invalid_type("stop", "a string or array of strings", value)


def _choices(value: object) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type("n", "an integer", value)
    if not 1 <= value <= MAX_CHOICES:
        raise ApiError(
            400,
            "invalid_request_error",
            f"Invalid 'n': expected a value between 1 and {MAX_CHOICES}, but got {value}.",
            param="n",
            code="invalid_value",
        )
    return value


def _usage(request: ChatRequest, completion: Completion) -> dict[str, Any]:
    return _cache_fields(request, _openai_usage(request, completion))


def _cache_fields(request: ChatRequest, usage: dict[str, Any]) -> dict[str, Any]:
    """Cache hits where each OpenAI-compatible vendor reports them (the same prefix rules for
    all): DeepSeek adds ``prompt_cache_hit_tokens``/``prompt_cache_miss_tokens``
    (https://api-docs.deepseek.com/guides/kv_cache); Moonshot's Kimi puts ``cached_tokens`` at
    the top level of ``usage`` (https://platform.moonshot.ai/docs/api/chat); Gemini's
    OpenAI-compatible endpoint uses ``prompt_tokens_details.cached_tokens`` as OpenAI does
    (https://ai.google.dev/gemini-api/docs/openai)."""
    model = request.model
    hit = request.cache_read_tokens
    if model.startswith("deepseek"):
        usage["prompt_cache_hit_tokens"] = hit
        usage["prompt_cache_miss_tokens"] = request.prompt_tokens - hit
    elif model.startswith(("kimi", "moonshot")):
        del usage["prompt_tokens_details"]
        usage["cached_tokens"] = hit
    elif model.startswith("gemini"):
        usage["prompt_tokens_details"] = {"cached_tokens": hit}
        del usage["completion_tokens_details"]
    return usage


def _openai_usage(request: ChatRequest, completion: Completion) -> dict[str, Any]:
    completion_tokens = completion.tokens * request.choices
    return {
        "prompt_tokens": request.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": request.prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": request.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _invalid_type(param: str, expected: str, value: object) -> ApiError:
    got = "null" if value is None else type(value).__name__
    return ApiError(
        400,
        "invalid_request_error",
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code=_INVALID_TYPE,
    )
