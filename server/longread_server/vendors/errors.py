"""Turning whatever went wrong upstream into one ``UpstreamError``.

Three sources: an HTTP error status with a body (nested ``{"error":{...}}``, flat vLLM
``{"object":"error","message":...,"code":400}``, or plain text), an error object inside an
otherwise successful stream, and a transport failure (httpx exceptions never leave
``vendors/``). The ``ErrorKind`` decides retries and breaker accounting downstream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from longread_server.domain import ErrorKind, RateLimitInfo, UpstreamError
from longread_server.vendors.headers import parse_retry_after

_STATUS_KINDS = {
    400: ErrorKind.BAD_REQUEST,
    401: ErrorKind.AUTH,
    402: ErrorKind.BILLING,
    403: ErrorKind.AUTH,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    409: ErrorKind.SERVER,  # the SDKs retry conflicts (lock timeouts upstream)
    413: ErrorKind.BAD_REQUEST,
    422: ErrorKind.BAD_REQUEST,
    429: ErrorKind.RATE_LIMITED,
    503: ErrorKind.OVERLOADED,
    529: ErrorKind.OVERLOADED,
}

# Vendor error ``type``/``code`` strings (lower-cased) that say what happened without a status:
# OpenAI, Anthropic, DeepSeek, Ollama, vLLM (exception class names).
_VENDOR_KINDS = {
    "insufficient_quota": ErrorKind.BILLING,
    "billing_error": ErrorKind.BILLING,
    "insufficient_balance": ErrorKind.BILLING,
    "rate_limit_exceeded": ErrorKind.RATE_LIMITED,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "tokens": ErrorKind.RATE_LIMITED,
    "requests": ErrorKind.RATE_LIMITED,
    "overloaded_error": ErrorKind.OVERLOADED,
    "server_is_overloaded": ErrorKind.OVERLOADED,
    "service_unavailable_error": ErrorKind.OVERLOADED,
    "slow_down": ErrorKind.OVERLOADED,
    "server_error": ErrorKind.SERVER,
    "api_error": ErrorKind.SERVER,
    "internal_error": ErrorKind.SERVER,
    "internalservererror": ErrorKind.SERVER,
    "timeout_error": ErrorKind.TIMEOUT,
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "context_length_exceeded": ErrorKind.BAD_REQUEST,
    "request_too_large": ErrorKind.BAD_REQUEST,
    "badrequesterror": ErrorKind.BAD_REQUEST,
    "authentication_error": ErrorKind.AUTH,
    "invalid_api_key": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "not_found_error": ErrorKind.NOT_FOUND,
    "model_not_found": ErrorKind.NOT_FOUND,
    "notfounderror": ErrorKind.NOT_FOUND,
}

# How vendors say a prompt does not fit the model's context window. The error's kind is
# BAD_REQUEST either way (retrying the same prompt cannot help); recognising it lets the
# fallback stage move the call to a model with a larger window. OpenAI and Moonshot send the
# code ``context_length_exceeded``; Anthropic says "prompt is too long: N tokens > M maximum";
# vLLM and other OpenAI-compatible servers say "maximum context length" in the message.
_OVERFLOW_CODES = frozenset({"context_length_exceeded"})
_OVERFLOW_WORDS = (
    "prompt is too long",
    "maximum context length",
    "context length",
    "context window",
    "exceeds the maximum number of tokens",
)


def is_context_overflow(err: UpstreamError) -> bool:
    """Whether ``err`` is the vendor refusing a prompt longer than the model's window."""
    if err.kind is not ErrorKind.BAD_REQUEST:
        return False
    if err.vendor_code.lower() in _OVERFLOW_CODES:
        return True
    text = err.message.lower()
    return any(words in text for words in _OVERFLOW_WORDS)


_MAX_MESSAGE = 1000  # characters of a plain-text error body kept in the message


def kind_for_status(status: int) -> ErrorKind:
    """The kind an HTTP error status means on its own."""
    kind = _STATUS_KINDS.get(status)
    if kind is not None:
        return kind
    return ErrorKind.SERVER if status >= 500 else ErrorKind.OTHER


def kind_for_vendor_error(vendor_type: str, vendor_code: str) -> ErrorKind | None:
    """The kind a vendor's error ``code`` (more specific) or ``type`` names, if known.
    A numeric code (vLLM puts the HTTP status there) is read as a status."""
    for name in (vendor_code, vendor_type):
        if name:
            kind = _VENDOR_KINDS.get(name.lower())
            if kind is not None:
                return kind
    # isdigit() alone also accepts digits int() refuses (superscripts such as "²").
    if vendor_code.isascii() and vendor_code.isdigit() and len(vendor_code) == 3:
        return kind_for_status(int(vendor_code))
    return None


def classify(status: int, vendor_type: str, vendor_code: str) -> ErrorKind:
    """The kind of an HTTP error response: the status decides, except that a quota/billing
    error is BILLING whatever the status (OpenAI sends ``insufficient_quota`` as a 429), an
    overloaded error in a 5xx is OVERLOADED, and an unusual status defers to the body."""
    kind = kind_for_status(status)
    named = kind_for_vendor_error(vendor_type, vendor_code)
    if named is ErrorKind.BILLING:
        return named
    if named is ErrorKind.OVERLOADED and kind is ErrorKind.SERVER:
        return named
    if kind is ErrorKind.OTHER and named is not None:
        return named
    return kind


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """The useful fields of an error body or an in-stream error object."""

    message: str = ""
    vendor_type: str = ""
    vendor_code: str = ""
    request_id: str = ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def details_from_object(obj: Any) -> ErrorDetails:
    """Read an error object: ``{"error": {...}}`` (OpenAI, Anthropic, newer vLLM),
    ``{"error": "text"}``, or a flat ``{"message", "type", "code"}`` (older vLLM)."""
    if not isinstance(obj, dict):
        return ErrorDetails(message=_text(obj)[:_MAX_MESSAGE])
    request_id = _text(obj.get("request_id"))
    inner = obj.get("error")
    if isinstance(inner, str):
        return ErrorDetails(message=inner, request_id=request_id)
    if isinstance(inner, dict):
        obj = inner
    code = obj.get("code")
    if code is None:
        details = obj.get("details")
        if isinstance(details, dict):
            code = details.get("error_code")  # Anthropic 2.x detail
    return ErrorDetails(
        message=_text(obj.get("message")),
        vendor_type=_text(obj.get("type")),
        vendor_code=_text(code),
        request_id=request_id,
    )


def details_from_body(body: bytes) -> ErrorDetails:
    """Read an error response body, whatever shape it has (JSON or plain text)."""
    text = body.decode("utf-8", "replace").strip()
    if text[:1] in ("{", "["):
        try:
            return details_from_object(json.loads(text))
        except (ValueError, RecursionError):  # not JSON, or nested deeper than json can read
            pass
    return ErrorDetails(message=text[:_MAX_MESSAGE])


def status_error(
    upstream: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request_id: str,
    rate_limits: RateLimitInfo | None,
    reason: str = "",
) -> UpstreamError:
    """The error for a non-2xx response."""
    details = details_from_body(body)
    message = details.message or reason or "no details"
    return UpstreamError(
        classify(status, details.vendor_type, details.vendor_code),
        f"{upstream}: HTTP {status}: {message}",
        status=status,
        vendor_type=details.vendor_type,
        vendor_code=details.vendor_code,
        retry_after_s=parse_retry_after(headers),
        rate_limits=rate_limits,
        request_id=request_id or details.request_id,
    )


def stream_error(upstream: str, obj: Any) -> UpstreamError:
    """The error for an error object received with HTTP 200 (mid-stream, or a 200 body that
    is an error). Unknown errors count as SERVER: the upstream failed after accepting."""
    details = details_from_object(obj)
    kind = kind_for_vendor_error(details.vendor_type, details.vendor_code) or ErrorKind.SERVER
    return UpstreamError(
        kind,
        f"{upstream}: error in response: {details.message or 'no details'}",
        vendor_type=details.vendor_type,
        vendor_code=details.vendor_code,
        request_id=details.request_id,
    )


def malformed(upstream: str, what: str) -> UpstreamError:
    """A response we cannot read: retryable, like a broken connection."""
    return UpstreamError(ErrorKind.CONNECTION, f"{upstream}: malformed response: {what}")


def load_json(upstream: str, data: str | bytes) -> Any:
    """``json.loads`` that fails as an ``UpstreamError`` (CONNECTION), never a ValueError or a
    RecursionError."""
    try:
        return json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise malformed(upstream, f"invalid JSON ({exc})") from None
    except RecursionError:  # json's C decoder recurses once per nesting level
        raise malformed(upstream, "JSON nested too deeply") from None


def transport_error(upstream: str, exc: Exception) -> UpstreamError:
    """The error for an httpx failure: timeouts are TIMEOUT, the rest CONNECTION."""
    if isinstance(exc, httpx.TimeoutException):
        kind = ErrorKind.TIMEOUT
    elif isinstance(exc, httpx.HTTPError):
        kind = ErrorKind.CONNECTION
    else:  # httpx.InvalidURL, httpx.StreamError: configuration or misuse, not the network
        kind = ErrorKind.OTHER
    detail = str(exc) or "no details"
    return UpstreamError(kind, f"{upstream}: {type(exc).__name__}: {detail}")
