"""What vendors say in response headers about when to come back: ``retry-after(-ms)`` and the
``x-ratelimit-*`` (OpenAI, Go durations) / ``anthropic-ratelimit-*`` (RFC 3339) families.

Parsed only for error responses, once each, so clarity wins over speed here. Every parser
returns None for a missing or unreadable value rather than failing the call.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from longread_server.domain import RateLimitInfo

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) and value >= 0 else None


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration such as ``6m0s``, ``12ms``, ``3.89s`` or ``1h2m3.5s``.

    A bare number is taken as seconds (some OpenAI-compatible servers send that)."""
    text = text.strip()
    if not text:
        return None
    try:
        return _finite(float(text))
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _GO_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        return None
    return _finite(total)


def _parse_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return None
        return int(value) if math.isfinite(value) else None


def _seconds_until(when: datetime, now: float) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, as the SDKs read it: ``retry-after-ms`` (float ms) first, then
    ``retry-after`` as float seconds, then ``retry-after`` as an HTTP date."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            seconds = _finite(float(value) / 1000.0)
        except ValueError:
            seconds = None
        if seconds is not None:
            return seconds
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _finite(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _seconds_until(when, time.time() if now is None else now)


def parse_openai_rate_limits(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; resets are Go durations."""
    reset_requests = headers.get("x-ratelimit-reset-requests")
    reset_tokens = headers.get("x-ratelimit-reset-tokens")
    info = RateLimitInfo(
        limit_requests=_parse_int(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=_parse_int(headers.get("x-ratelimit-remaining-requests")),
        reset_requests_s=None if reset_requests is None else parse_go_duration(reset_requests),
        limit_tokens=_parse_int(headers.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_parse_int(headers.get("x-ratelimit-remaining-tokens")),
        reset_tokens_s=None if reset_tokens is None else parse_go_duration(reset_tokens),
    )
    return None if info == _EMPTY else info


def _parse_rfc3339(text: str | None, now: float) -> float | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return _seconds_until(when, now)


def parse_anthropic_rate_limits(
    headers: Mapping[str, str], now: float | None = None
) -> RateLimitInfo | None:
    """``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``; resets are RFC 3339
    instants, turned into seconds from ``now``. The combined ``tokens-*`` family is used; when
    it is absent, ``input-tokens-*`` (usually the binding one for long documents) stands in."""
    now = time.time() if now is None else now
    tokens = "anthropic-ratelimit-tokens-"
    if (
        tokens + "limit" not in headers
        and tokens + "remaining" not in headers
        and tokens + "reset" not in headers
    ):
        tokens = "anthropic-ratelimit-input-tokens-"
    requests = "anthropic-ratelimit-requests-"
    info = RateLimitInfo(
        limit_requests=_parse_int(headers.get(requests + "limit")),
        remaining_requests=_parse_int(headers.get(requests + "remaining")),
        reset_requests_s=_parse_rfc3339(headers.get(requests + "reset"), now),
        limit_tokens=_parse_int(headers.get(tokens + "limit")),
        remaining_tokens=_parse_int(headers.get(tokens + "remaining")),
        reset_tokens_s=_parse_rfc3339(headers.get(tokens + "reset"), now),
    )
    return None if info == _EMPTY else info


_EMPTY = RateLimitInfo()
