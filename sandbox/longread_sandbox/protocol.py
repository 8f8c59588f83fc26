"""What the wire dialects (OpenAI, Anthropic) share with the vendor endpoints.

The endpoints' handling (faults, latency, pacing, stats) is the same for every vendor; only
the bytes differ. A dialect parses a request body into a vendor-neutral ``ChatRequest`` and
renders answers, stream frames and errors in its vendor's exact format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from .completion import Completion
from .ratelimit import RateSnapshot

Headers = list[tuple[bytes, bytes]]


class ApiError(Exception):
    """A vendor-style error response: HTTP status plus the fields of the error body."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.param = param
        self.code = code


@dataclass(slots=True)
class ChatRequest:
    """A parsed model request, vendor-neutral. ``prompt_tokens`` includes cached tokens."""

    model: str
    # (role, text) in prompt order: what the extractive answer reads and fault markers hide in.
    sources: list[tuple[str, str]]
    prompt_tokens: int
    max_tokens: int
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False  # OpenAI stream_options.include_usage
    choices: int = 1  # OpenAI n
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h: bool = False  # Anthropic: the write was for the 1-hour TTL


class StreamFrames(Protocol):
    """The SSE bytes of one streamed answer, in the vendor's framing."""

    def head(self) -> bytes:
        """Everything before the first text delta."""
        ...

    def delta(self, text: str) -> bytes: ...

    def tail(self) -> bytes:
        """Everything after the last delta, including the final usage."""
        ...

    def error(self, message: str = "") -> bytes:
        """A mid-stream error event (sent after HTTP 200); ``message``: its text, instead of
        the vendor's usual one (an echoing fault's quote of the prompt)."""
        ...

    def malformed(self) -> bytes:
        """A data line that is not valid JSON."""
        ...


class Dialect(Protocol):
    """One vendor's wire format."""

    name: str

    def check_auth(self, headers: Mapping[str, str], api_key: str | None) -> ApiError | None: ...

    def parse_chat(self, body: object) -> ChatRequest: ...

    def render_chat(self, request: ChatRequest, completion: Completion) -> bytes: ...

    def stream_frames(self, request: ChatRequest, completion: Completion) -> StreamFrames: ...

    def malformed_body(self) -> bytes: ...

    def error_body(self, error: ApiError, request_id: str) -> bytes: ...

    def fault_error(self, status: int, retry_after_s: float) -> ApiError:
        """The error an injected fault with this HTTP status produces."""
        ...

    def invalid_json(self) -> ApiError: ...

    def not_found(self, method: str, path: str) -> ApiError: ...

    def too_large(self) -> ApiError: ...

    def models_body(self, models: list[str]) -> bytes: ...

    def response_headers(self, request_id: str, limits: RateSnapshot) -> Headers:
        """Identification and rate-limit headers sent on every response."""
        ...
