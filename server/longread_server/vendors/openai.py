"""OpenAI Chat Completions (``POST {base_url}/chat/completions``), for OpenAI itself and for
OpenAI-compatible servers (vLLM, Ollama, DeepSeek, Moonshot...).

``base_url`` includes the API version, as in the OpenAI SDK: ``https://api.openai.com/v1``,
``http://localhost:11434/v1``.

Reading tolerates the known deviations (reference §1, §4):

* usage may come in the top-level ``usage`` of any chunk (last non-null wins; DeepSeek puts
  it on the last content chunk, OpenAI on a trailing ``choices: []`` chunk) or in
  ``choices[0].usage`` (Moonshot); none at all (old Ollama) gives zero usage;
* cached input is ``prompt_tokens_details.cached_tokens`` (OpenAI,
  https://platform.openai.com/docs/guides/prompt-caching; Gemini's OpenAI-compatible endpoint,
  https://ai.google.dev/gemini-api/docs/openai), else DeepSeek's ``prompt_cache_hit_tokens``
  (https://api-docs.deepseek.com/guides/kv_cache), else Moonshot's top-level ``cached_tokens``
  (https://platform.moonshot.ai/docs/api/chat); ``prompt_tokens`` includes the hits for all
  of them, and the catalog's ``cached_input_per_mtok`` prices them;
* ``data: [DONE]`` (prefix match) and EOF both end the stream, but EOF with neither
  ``[DONE]`` nor a ``finish_reason`` is a broken stream (CONNECTION, "stream ended early");
* a data object with ``error`` (or an ``event: error``) is a mid-stream failure;
* only choice index 0 is the answer (a request with n > 1 interleaves other indexes);
* unknown ``event:`` names, comments and blank data are skipped.

Refusals: a ``refusal`` (streamed in ``delta.refusal`` or in ``message.refusal``) is the text
the caller gets to see, so it is yielded as answer text, and the call finishes with
``finish_reason="content_filter"`` whatever the vendor reported, so callers can tell a
refusal from an answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from longread_server.domain import (
    Finish,
    LlmEvent,
    LlmRequest,
    Operation,
    UpstreamError,
    Usage,
    VendorKind,
)
from longread_server.vendors.errors import load_json, malformed, status_error, stream_error
from longread_server.vendors.exchange import encode_json, exchange, post_json
from longread_server.vendors.headers import parse_openai_rate_limits
from longread_server.vendors.sse import ServerSentEvent
from longread_server.vendors.transport import HttpClient

_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    # seen on OpenAI-compatible servers
    "eos": "stop",
    "eos_token": "stop",
    "stop_sequence": "stop",
    "end_turn": "stop",
    "max_tokens": "length",
    "model_length": "length",
}


def normalize_finish_reason(reason: str) -> str:
    """OpenAI's names are ours; a few compatible servers' spellings are mapped onto them and
    anything else passes through."""
    return _FINISH_REASONS.get(reason, reason)


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def normalize_usage(usage: Any) -> Usage:
    """Our ``Usage`` from a Chat Completions ``usage`` object (``prompt_tokens`` already
    includes cached tokens, for OpenAI and DeepSeek alike)."""
    if not isinstance(usage, dict):
        return Usage(calls=1)
    cached = 0
    cache_write = 0
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        cached = _int(details.get("cached_tokens"))
        cache_write = _int(details.get("cache_write_tokens"))
    if not cached:
        cached = _int(usage.get("prompt_cache_hit_tokens")) or _int(usage.get("cached_tokens"))
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        cached_input_tokens=cached,
        cache_write_tokens=cache_write,
        calls=1,
    )


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class ChatCompletionParser:
    """Reads one Chat Completions response, streamed (chunks) or not."""

    __slots__ = ("_finish_reason", "_id", "_model", "_refused", "_upstream", "_usage", "done")

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self.done = False
        self._finish_reason: str | None = None
        self._refused = False
        self._usage: Any = None
        self._model = ""
        self._id = ""

    def on_event(self, event: ServerSentEvent) -> str:
        data = event.data
        if not data:
            return ""
        if data[0] == "[" and data.startswith("[DONE]"):
            self.done = True
            return ""
        name = event.event
        if name and name != "message" and name != "error":
            return ""
        chunk = load_json(self._upstream, data)
        if not isinstance(chunk, dict):
            return ""
        if chunk.get("error") is not None or name == "error":
            raise stream_error(self._upstream, chunk)
        if not self._id:
            self._id = _str(chunk.get("id"))
            self._model = _str(chunk.get("model"))
        text = ""
        choices = chunk.get("choices")
        if choices:
            for choice in choices:
                if choice.get("index", 0) != 0:
                    continue  # n > 1: only the first choice is the answer
                delta = choice.get("delta")
                if delta:
                    content = delta.get("content")
                    if content and isinstance(content, str):
                        text += content
                    refusal = delta.get("refusal")
                    if refusal and isinstance(refusal, str):
                        self._refused = True
                        text += refusal
                reason = choice.get("finish_reason")
                if reason:
                    self._finish_reason = _str(reason)
                usage = choice.get("usage")
                if usage:
                    self._usage = usage  # Moonshot
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        return text

    def end_of_stream(self) -> Finish:
        if self._finish_reason is None and not self.done:
            raise malformed(self._upstream, "stream ended early (no finish_reason, no [DONE])")
        return self._finish(self._finish_reason or "stop")

    def _finish(self, reason: str) -> Finish:
        return Finish(
            finish_reason="content_filter" if self._refused else normalize_finish_reason(reason),
            usage=normalize_usage(self._usage),
            model=self._model,
            response_id=self._id,
        )

    def parse_body(self, body: bytes) -> tuple[str, Finish]:
        # json.loads skips the blank lines DeepSeek sends while the request is queued.
        obj = load_json(self._upstream, body)
        if not isinstance(obj, dict):
            raise malformed(self._upstream, "body is not a JSON object")
        if obj.get("error") is not None:
            raise stream_error(self._upstream, obj)
        self._id = _str(obj.get("id"))
        self._model = _str(obj.get("model"))
        self._usage = obj.get("usage")
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise malformed(self._upstream, "no choices")
        text = ""
        reason = ""
        for choice in choices:
            if choice.get("index", 0) != 0:
                continue
            message = choice.get("message") or {}
            text = _str(message.get("content"))
            refusal = _str(message.get("refusal"))
            if refusal:
                self._refused = True
                text += refusal
            reason = _str(choice.get("finish_reason"))
            if choice.get("usage"):
                self._usage = self._usage or choice["usage"]
            break
        return text, self._finish(reason or "stop")


class OpenAIAdapter:
    """Chat Completions over the shared client; ``compatible=True`` for other servers that
    speak the protocol (they get ``max_tokens`` and no ``prompt_cache_key``)."""

    # "Between 0 and 2" (platform.openai.com/docs/api-reference/chat/create, `temperature`);
    # OpenAI-compatible servers take the same range (DeepSeek's and Gemini's documented
    # ranges are [0, 2] too).
    max_temperature = 2.0

    def __init__(
        self,
        client: HttpClient,
        *,
        name: str,
        base_url: str,
        api_key: str,
        compatible: bool = False,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.kind = VendorKind.OPENAI_COMPATIBLE if compatible else VendorKind.OPENAI
        self._client = client
        self._compatible = compatible
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._embeddings_url = base_url.rstrip("/") + "/embeddings"
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        headers.update(extra_headers or {})
        self._headers = headers

    def build_payload(self, req: LlmRequest) -> dict[str, Any]:
        if req.operation is Operation.EMBEDDING:
            # One input, as floats (https://platform.openai.com/docs/api-reference/embeddings).
            text = req.messages[0].content if req.messages else ""
            return {"model": req.model, "input": [text], "encoding_format": "float"}
        messages: list[dict[str, Any]] = []
        if req.system:
            messages.append({"role": "system", "content": req.system})
        messages.extend({"role": m.role, "content": m.content} for m in req.messages)
        payload: dict[str, Any] = {"model": req.model, "messages": messages}
        if self._compatible:
            payload["max_tokens"] = req.max_output_tokens
        else:
            payload["max_completion_tokens"] = req.max_output_tokens
        if req.temperature is not None:
            payload["temperature"] = req.temperature
        if req.top_p is not None:
            payload["top_p"] = req.top_p
        if req.seed is not None:
            payload["seed"] = req.seed
        if req.stop:
            payload["stop"] = list(req.stop)
        if req.stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        if req.prompt_cache_key and not self._compatible:
            payload["prompt_cache_key"] = req.prompt_cache_key
        # Extended retention keeps cached prefixes up to 24 hours at no extra charge, on the
        # models that support it (the catalog's prompt_cache_retention); others refuse it
        # (https://platform.openai.com/docs/guides/prompt-caching).
        if req.prompt_cache_retention and not self._compatible:
            payload["prompt_cache_retention"] = req.prompt_cache_retention
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
            parser=ChatCompletionParser(self.name),
            error_from_response=self._error_from_response,
            request_id_header="x-request-id",
        )

    async def embed(
        self, req: LlmRequest, *, timeout: float | None = None
    ) -> tuple[tuple[float, ...], Usage, str]:
        """The vector of the request's one message (``POST /embeddings``), its usage and the
        model the vendor reports."""
        obj = await post_json(
            self._client,
            self._embeddings_url,
            upstream=self.name,
            headers=self._headers,
            body=encode_json(self.build_payload(req)),
            time_left=timeout,
            error_from_response=self._error_from_response,
        )
        data = obj.get("data") if isinstance(obj, dict) else None
        first = data[0] if isinstance(data, list) and data else None
        vector = first.get("embedding") if isinstance(first, dict) else None
        if not isinstance(vector, list) or not vector:
            raise malformed(self.name, "embeddings answer has no data[0].embedding")
        try:
            values = tuple(float(v) for v in vector)
        except (TypeError, ValueError):
            raise malformed(self.name, "embeddings answer has a non-number in its vector") from None
        usage = obj.get("usage") if isinstance(obj, dict) else None
        tokens = _int(usage.get("prompt_tokens")) if isinstance(usage, dict) else 0
        return values, Usage(input_tokens=tokens, calls=1), _str(obj.get("model"))

    def _error_from_response(self, response: httpx.Response, body: bytes) -> UpstreamError:
        return status_error(
            self.name,
            response.status_code,
            response.headers,
            body,
            request_id=response.headers.get("x-request-id", ""),
            rate_limits=parse_openai_rate_limits(response.headers),
            reason=response.reason_phrase,
        )
