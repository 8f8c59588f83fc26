"""Turning whatever went wrong upstream into one ``UpstreamError``.

Three sources: an HTTP error status with a body (nested ``{"error":{...}}``, flat vLLM
``{"object":"error","message":...,"code":400}``, or plain text), an error object inside an
otherwise successful stream, and a transport failure (httpx exceptions never leave
``vendors/``). The ``ErrorKind`` decides retries and breaker accounting downstream.

Redaction: vendors quote the request in their error messages (the prompt of a refused
request, an HTML page from a proxy that echoes it, a mid-stream error about the text) and
OpenAI quotes a masked key in its 401. So an error's ``message`` (its exception text, which
tracebacks, spans and client errors carry) is built only from what is not content: the
upstream's name, the HTTP status, the vendor's error type and code, each of those only when it
looks like an identifier. The vendor's own words go to ``detail``, recorded only where content
is; a refused key's body is dropped altogether, so no setting can put a key fragment anywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
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
    text = err.detail.lower()
    return any(words in text for words in _OVERFLOW_WORDS)


_MAX_MESSAGE = 1000  # characters of a plain-text error body kept in the detail

# What a vendor's error type or code, or a request id, looks like: an identifier. Anything
# else in those fields (a sentence, a quote of the request) is not kept: they go into the
# error's message, which is never content.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_REDACTED = "[redacted]"


def identifier(value: str) -> str:
    """``value`` if it looks like an identifier (a vendor error code, a request id), else ""."""
    return value if _IDENTIFIER.fullmatch(value) else ""


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every word that holds a secret's last four characters replaced: the
    secret itself, and a masked form that shows its end (``sk-ab****wxyz``)."""
    for secret in secrets:
        tail = secret[-4:]
        if len(secret) >= 4 and tail in text:
            text = re.sub(r"\S*" + re.escape(tail) + r"\S*", _REDACTED, text)
    return text


def summary(upstream: str, head: str, vendor_type: str, vendor_code: str) -> str:
    """An error's message: ``head`` ("HTTP 400 Bad Request") and the vendor's error type and
    code, never its text."""
    named = ", ".join(dict.fromkeys(n for n in (vendor_type, vendor_code) if n))
    return f"{upstream}: {head} ({named})" if named else f"{upstream}: {head}"


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
    request_id = identifier(_text(obj.get("request_id")))
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
        vendor_type=identifier(_text(obj.get("type"))),
        vendor_code=identifier(_text(code)),
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
    """The error for a non-2xx response. ``reason`` (the status line's phrase, which the
    server chose) is not used: the standard phrase of the status is."""
    details = details_from_body(body)
    kind = classify(status, details.vendor_type, details.vendor_code)
    try:
        head = f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:  # a status the standard does not name (Anthropic's 529)
        head = f"HTTP {status}"
    return UpstreamError(
        kind,
        summary(upstream, head, details.vendor_type, details.vendor_code),
        status=status,
        vendor_type=details.vendor_type,
        vendor_code=details.vendor_code,
        retry_after_s=parse_retry_after(headers),
        rate_limits=rate_limits,
        request_id=identifier(request_id) or details.request_id,
        detail=_detail(kind, details.message),
    )


def _detail(kind: ErrorKind, text: str) -> str:
    # A refused key's body is where vendors quote the key (OpenAI: "Incorrect API key
    # provided: sk-ab****wxyz"): not kept at all, so no setting can record it.
    return "" if kind is ErrorKind.AUTH else text


def stream_error(upstream: str, obj: Any) -> UpstreamError:
    """The error for an error object received with HTTP 200 (mid-stream, or a 200 body that
    is an error). Unknown errors count as SERVER: the upstream failed after accepting."""
    details = details_from_object(obj)
    kind = kind_for_vendor_error(details.vendor_type, details.vendor_code) or ErrorKind.SERVER
    return UpstreamError(
        kind,
        summary(upstream, "error in response", details.vendor_type, details.vendor_code),
        vendor_type=details.vendor_type,
        vendor_code=details.vendor_code,
        request_id=details.request_id,
        detail=_detail(kind, details.message),
    )


def malformed(upstream: str, what: str) -> UpstreamError:
    """A response we cannot read: retryable, like a broken connection. ``what`` is ours
    (never a quote of the response)."""
    return UpstreamError(ErrorKind.CONNECTION, f"{upstream}: malformed response: {what}")


# The decoder ``json.loads`` ends in, called without the steps around it that a text of a
# stream event never needs (a check for a BOM, two scans for whitespace).
_raw_decode = json.JSONDecoder().raw_decode


def load_json(upstream: str, data: str | bytes) -> Any:
    """``json.loads`` that fails as an ``UpstreamError`` (CONNECTION), never a ValueError or a
    RecursionError."""
    try:
        if type(data) is str and data[:1] in ("{", "["):
            # What json.loads decodes for this text, or raises, when nothing follows it;
            # anything else (whitespace, more data) goes the whole way below.
            value, end = _raw_decode(data)
            if end == len(data):
                return value
        return json.loads(data)
    except json.JSONDecodeError as exc:  # its text says where, never what
        raise malformed(upstream, f"invalid JSON ({exc.msg} at {exc.pos})") from None
    except ValueError:  # UnicodeDecodeError, whose text quotes the bytes
        raise malformed(upstream, "invalid JSON (not UTF-8)") from None
    except RecursionError:  # json's C decoder recurses once per nesting level
        raise malformed(upstream, "JSON nested too deeply") from None


def transport_error(upstream: str, exc: Exception) -> UpstreamError:
    """The error for an httpx failure: timeouts are TIMEOUT, the rest CONNECTION. Its text is
    the detail, not the message: a protocol error may quote the bytes it could not take (h11,
    under httpx's transports for proxied URLs, quotes a header value it refuses, the key of an
    ``authorization`` header with a stray newline; a status line it cannot parse, which may be
    the start of a page)."""
    if isinstance(exc, httpx.TimeoutException):
        kind = ErrorKind.TIMEOUT
    elif isinstance(exc, httpx.HTTPError):
        kind = ErrorKind.CONNECTION
    else:  # httpx.InvalidURL, httpx.StreamError: configuration or misuse, not the network
        kind = ErrorKind.OTHER
    return UpstreamError(kind, f"{upstream}: {type(exc).__name__}", detail=str(exc))
