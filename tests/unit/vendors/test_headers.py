"""Retry-After and rate-limit header parsing."""

from __future__ import annotations

import httpx
import pytest
from longread_server.domain import RateLimitInfo
from longread_server.vendors.headers import (
    parse_anthropic_rate_limits,
    parse_go_duration,
    parse_openai_rate_limits,
    parse_retry_after,
)

NOW = 1_755_780_000.0  # 2025-08-21T12:40:00Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("3.89s", 3.89),
        ("1s", 1.0),
        ("1h2m3.5s", 3723.5),
        ("500ns", 5e-7),
        ("20us", 2e-5),
        ("20\u00b5s", 2e-5),
        ("20\u03bcs", 2e-5),
        ("0", 0.0),
        ("0s", 0.0),
        ("2", 2.0),  # a bare number: seconds
        (".5s", 0.5),
        (" 1m ", 60.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "1s2", "s", "-1s", "1m-2s", "inf", "nan"])
def test_bad_go_durations(text: str) -> None:
    assert parse_go_duration(text) is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "10"}, 0.01),
        ({"retry-after-ms": "1500.5"}, 1.5005),
        ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),  # ms wins
        ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),  # unreadable ms: fall back
        ({"retry-after-ms": "-5", "retry-after": "2"}, 2.0),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "Thu, 21 Aug 2025 12:40:30 GMT"}, 30.0),
        ({"retry-after": "Thu, 21 Aug 2025 12:39:00 GMT"}, 0.0),  # in the past
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float) -> None:
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "headers", [{}, {"retry-after": "soon"}, {"retry-after": "-3"}, {"retry-after": "nan"}]
)
def test_retry_after_absent_or_unreadable(headers: dict[str, str]) -> None:
    assert parse_retry_after(httpx.Headers(headers), now=NOW) is None


def test_retry_after_header_names_are_case_insensitive() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After-Ms": "20"})) == pytest.approx(0.02)


def test_openai_rate_limits() -> None:
    headers = httpx.Headers(
        {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-limit-tokens": "160000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-remaining-tokens": "159976",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    info = parse_openai_rate_limits(headers)
    assert info is not None
    assert info.reset_requests_s == pytest.approx(0.012)
    assert info == RateLimitInfo(
        limit_requests=5000,
        remaining_requests=4999,
        reset_requests_s=info.reset_requests_s,
        limit_tokens=160000,
        remaining_tokens=159976,
        reset_tokens_s=360.0,
    )


def test_openai_rate_limits_partial_and_absent() -> None:
    partial = parse_openai_rate_limits(
        httpx.Headers({"x-ratelimit-reset-tokens": "3.89s", "x-ratelimit-limit-tokens": "lots"})
    )
    assert partial == RateLimitInfo(reset_tokens_s=3.89)
    assert parse_openai_rate_limits(httpx.Headers({"x-request-id": "req_1"})) is None


def test_anthropic_rate_limits() -> None:
    headers = httpx.Headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
            "anthropic-ratelimit-tokens-limit": "90000",
            "anthropic-ratelimit-tokens-remaining": "12000",
            "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:01.500000+00:00",
            "anthropic-ratelimit-input-tokens-limit": "1",
        }
    )
    assert parse_anthropic_rate_limits(headers, now=NOW) == RateLimitInfo(
        limit_requests=50,
        remaining_requests=0,
        reset_requests_s=59.0,
        limit_tokens=90000,
        remaining_tokens=12000,
        reset_tokens_s=1.5,
    )


def test_anthropic_input_tokens_stand_in_for_missing_tokens_family() -> None:
    headers = httpx.Headers(
        {
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
            "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:39:00Z",  # past: 0
        }
    )
    assert parse_anthropic_rate_limits(headers, now=NOW) == RateLimitInfo(
        limit_tokens=40000, remaining_tokens=39000, reset_tokens_s=0.0
    )


def test_anthropic_rate_limits_absent_or_unreadable() -> None:
    assert parse_anthropic_rate_limits(httpx.Headers({}), now=NOW) is None
    info = parse_anthropic_rate_limits(
        httpx.Headers({"anthropic-ratelimit-requests-reset": "tomorrow"}), now=NOW
    )
    assert info is None
