"""Anthropic Messages (``POST {base_url}/v1/messages``) and token counting.

``base_url`` is the host, as in the Anthropic SDK (``https://api.anthropic.com``); a trailing
``/v1`` is tolerated. Auth is ``x-api-key`` plus ``anthropic-version``.

Streaming (reference §2): ``message_start`` carries id, model and the first usage;
``content_block_delta`` with a ``text_delta`` is answer text (thinking, signature, citations
and ``input_json_delta`` deltas are not, and are skipped); ``message_delta`` carries the stop
reason and *cumulative* usage (``output_tokens`` overwritten, input and cache counts only when
present); ``message_stop`` ends; ``ping`` and unknown events are ignored; ``event: error``
(after HTTP 200) is a failure whose kind comes from ``error.type``. EOF after a stop reason is
accepted as the end; EOF before one is a broken stream (CONNECTION).

Usage: Anthropic's ``input_tokens`` excludes cached tokens, ours includes them, so
``input = input_tokens + cache_creation_input_tokens + cache_read_input_tokens``,
``cached_input_tokens = cache_read_input_tokens`` and
``cache_write_tokens = cache_creation_input_tokens``, of which
``cache_creation.ephemeral_1h_input_tokens`` are 1-hour writes (priced at 2x input, 5-minute
ones at 1.25x).

Prompt caching (https://docs.claude.com/en/docs/build-with-claude/prompt-caching): the request
says how many leading messages are stable (``cache_prefix_messages``, the document; the runner
sets it only where that prefix reaches the model's minimum cacheable length), and the one
breakpoint goes on the last block of that prefix. It caches tools, system and those messages
together ("the cache prefix is created in the following order: tools, system, then messages"),
so one breakpoint is enough, well under the limit of 4; a breakpoint of its own on the short
system prompt would be below the minimum and cache nothing. ``cache_ttl`` "1h" asks for the
1-hour lifetime (``{"type": "ephemeral", "ttl": "1h"}``); "5m" is the default and sends no
``ttl``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from longread_server.domain import (
    Finish,
    LlmEvent,
    LlmRequest,
    UpstreamError,
    Usage,
    VendorKind,
)
from longread_server.vendors.errors import load_json, malformed, status_error, stream_error
from longread_server.vendors.exchange import encode_json, exchange, post_json
from longread_server.vendors.headers import parse_anthropic_rate_limits
from longread_server.vendors.sse import ServerSentEvent
from longread_server.vendors.transport import HttpClient

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _cache_control(ttl: str) -> dict[str, str]:
    if ttl == "1h":
        return {"type": "ephemeral", "ttl": "1h"}
    return {"type": "ephemeral"}  # 5 minutes, the vendor's default


def normalize_stop_reason(reason: str) -> str:
    """Our finish reason for an Anthropic ``stop_reason`` (unknown ones pass through, e.g.
    ``pause_turn``, ``model_context_window_exceeded``)."""
    return _STOP_REASONS.get(reason, reason)


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class _UsageCounts:
    """Anthropic's usage counters as they accumulate over a stream."""

    __slots__ = ("cache_creation", "cache_creation_1h", "cache_read", "input", "output")

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cache_creation = 0
        self.cache_creation_1h = 0
        self.cache_read = 0

    def update(self, usage: Any) -> None:
        """Overwrite every counter ``usage`` carries (message_delta counts are cumulative)."""
        if not isinstance(usage, dict):
            return
        value = usage.get("output_tokens")
        if type(value) is int:
            self.output = value
        value = usage.get("input_tokens")
        if type(value) is int:
            self.input = value
        value = usage.get("cache_creation_input_tokens")
        if type(value) is int:
            self.cache_creation = value
        value = usage.get("cache_read_input_tokens")
        if type(value) is int:
            self.cache_read = value
        split = usage.get("cache_creation")
        if isinstance(split, dict):
            value = split.get("ephemeral_1h_input_tokens")
            if type(value) is int:
                self.cache_creation_1h = value

    def normalized(self) -> Usage:
        return Usage(
            input_tokens=self.input + self.cache_creation + self.cache_read,
            output_tokens=self.output,
            cached_input_tokens=self.cache_read,
            cache_write_tokens=self.cache_creation,
            cache_write_1h_tokens=min(self.cache_creation_1h, self.cache_creation),
            calls=1,
        )


class MessagesParser:
    """Reads one Messages response, streamed (events) or not."""

    __slots__ = ("_id", "_model", "_stop_reason", "_upstream", "_usage", "done")

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self.done = False
        self._stop_reason: str | None = None
        self._usage = _UsageCounts()
        self._model = ""
        self._id = ""

    def on_event(self, event: ServerSentEvent) -> str:
        name = event.event
        if name == "ping" or not event.data:
            return ""
        obj = load_json(self._upstream, event.data)
        if not isinstance(obj, dict):
            return ""
        if not name or name == "message":
            name = _str(obj.get("type"))  # tolerate a stream without event: lines
        if name == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                return _str(delta.get("text"))
            return ""
        if name == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self._stop_reason = _str(delta["stop_reason"])
            self._usage.update(obj.get("usage"))
        elif name == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self._id = _str(message.get("id"))
                self._model = _str(message.get("model"))
                self._usage.update(message.get("usage"))
        elif name == "message_stop":
            self.done = True
        elif name == "error":
            raise stream_error(self._upstream, obj)
        return ""

    def end_of_stream(self) -> Finish:
        if not self.done and self._stop_reason is None:
            raise malformed(self._upstream, "stream ended early (no message_stop)")
        return self._finish()

    def _finish(self) -> Finish:
        return Finish(
            finish_reason=normalize_stop_reason(self._stop_reason or "end_turn"),
            usage=self._usage.normalized(),
            model=self._model,
            response_id=self._id,
        )

    def parse_body(self, body: bytes) -> tuple[str, Finish]:
        obj = load_json(self._upstream, body)
        if not isinstance(obj, dict):
            raise malformed(self._upstream, "body is not a JSON object")
        if obj.get("type") == "error" or obj.get("error") is not None:
            raise stream_error(self._upstream, obj)
        content = obj.get("content")
        if not isinstance(content, list):
            raise malformed(self._upstream, "no content")
        self._id = _str(obj.get("id"))
        self._model = _str(obj.get("model"))
        self._stop_reason = _str(obj.get("stop_reason")) or None
        self._usage.update(obj.get("usage"))
        text = "".join(_str(block.get("text")) for block in content if block.get("type") == "text")
        return text, self._finish()


class AnthropicAdapter:
    """The Messages API over the shared client."""

    kind = VendorKind.ANTHROPIC
    # "Ranges from 0.0 to 1.0" (docs.anthropic.com/en/api/messages, `temperature`).
    max_temperature = 1.0

    def __init__(
        self,
        client: HttpClient,
        *,
        name: str,
        base_url: str,
        api_key: str,
        version: str = "2023-06-01",
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._client = client
        base = base_url.rstrip("/")
        base = base.removesuffix("/v1")
        self._url = base + "/v1/messages"
        self._count_url = base + "/v1/messages/count_tokens"
        headers = {"content-type": "application/json", "anthropic-version": version}
        if api_key:
            headers["x-api-key"] = api_key
        headers.update(extra_headers or {})
        self._headers = headers

    def _messages(self, req: LlmRequest) -> list[dict[str, Any]]:
        prefix = min(req.cache_prefix_messages, len(req.messages))
        if prefix <= 0:
            return [{"role": m.role, "content": m.content} for m in req.messages]
        # With prompt caching, content goes as block lists so the breakpoint can sit on the
        # last block of the shared prefix.
        messages: list[dict[str, Any]] = [
            {"role": m.role, "content": [{"type": "text", "text": m.content}]} for m in req.messages
        ]
        messages[prefix - 1]["content"][-1]["cache_control"] = _cache_control(req.cache_ttl)
        return messages

    def build_payload(self, req: LlmRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": req.model,
            "max_tokens": req.max_output_tokens,
            "messages": self._messages(req),
        }
        if req.system:
            payload["system"] = req.system
        if req.stop:
            payload["stop_sequences"] = list(req.stop)
        if req.temperature is not None:
            payload["temperature"] = req.temperature
        if req.top_p is not None:
            payload["top_p"] = req.top_p
        if req.stream:
            payload["stream"] = True
        return payload

    def call(
        self, req: LlmRequest, *, timeout: float | None = None
    ) -> AsyncGenerator[LlmEvent, None]:
        return exchange(
            self._client,
            self._url,
            upstream=self.name,
            headers=self._headers,
            body=encode_json(self.build_payload(req)),
            stream=req.stream,
            time_left=timeout,
            parser=MessagesParser(self.name),
            error_from_response=self._error_from_response,
            request_id_header="request-id",
        )

    def build_count_payload(self, req: LlmRequest) -> dict[str, Any]:
        """The ``count_tokens`` body: what the prompt is, without generation settings."""
        payload: dict[str, Any] = {"model": req.model, "messages": self._messages(req)}
        if req.system:
            payload["system"] = req.system
        return payload

    async def count_tokens(
        self,
        req: LlmRequest,
        *,
        timeout: float | None = None,
    ) -> int:
        """Input tokens ``req`` would use (``POST /v1/messages/count_tokens``)."""
        obj = await post_json(
            self._client,
            self._count_url,
            upstream=self.name,
            headers=self._headers,
            body=encode_json(self.build_count_payload(req)),
            time_left=timeout,
            error_from_response=self._error_from_response,
        )
        count = obj.get("input_tokens") if isinstance(obj, dict) else None
        if type(count) is not int:
            raise malformed(self.name, "count_tokens answer has no input_tokens")
        return count

    def _error_from_response(self, response: httpx.Response, body: bytes) -> UpstreamError:
        return status_error(
            self.name,
            response.status_code,
            response.headers,
            body,
            request_id=response.headers.get("request-id", ""),
            rate_limits=parse_anthropic_rate_limits(response.headers),
            reason=response.reason_phrase,
        )
