"""Rate-limit bookkeeping behind the headers every vendor response carries.

The sandbox never enforces these limits (faults do that, deterministically); it reports them so
a gateway's header parsing (OpenAI Go-style durations, Anthropic RFC 3339 timestamps) runs
against realistic, changing values. Usage is counted in fixed one-minute windows; a reset is
the time to replenish what the window used, as with a token bucket.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0
REQUESTS_PER_MINUTE = 10_000
TOKENS_PER_MINUTE = 10_000_000
INPUT_TOKENS_PER_MINUTE = 8_000_000
OUTPUT_TOKENS_PER_MINUTE = 2_000_000


@dataclass(frozen=True, slots=True)
class RateSnapshot:
    """Limits, what remains in the current window, and seconds until it is replenished."""

    requests_remaining: int
    requests_reset_s: float
    tokens_remaining: int
    tokens_reset_s: float
    input_remaining: int
    output_remaining: int
    now: float  # wall clock (epoch seconds), for absolute reset times
    requests_limit: int = REQUESTS_PER_MINUTE
    tokens_limit: int = TOKENS_PER_MINUTE
    input_limit: int = INPUT_TOKENS_PER_MINUTE
    output_limit: int = OUTPUT_TOKENS_PER_MINUTE


class RateWindow:
    """Counts requests and tokens per one-minute window."""

    __slots__ = ("_clock", "_input", "_output", "_requests", "_window_start")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window_start = clock()
        self._requests = 0
        self._input = 0
        self._output = 0

    def record(
        self, input_tokens: int, output_tokens: int, throttled_s: float | None = None
    ) -> RateSnapshot:
        """Count one request; ``throttled_s`` reports limits as exhausted for that long."""
        now = self._clock()
        if now - self._window_start >= WINDOW_S:
            self._window_start, self._requests, self._input, self._output = now, 0, 0, 0
        self._requests += 1
        self._input += input_tokens
        self._output += output_tokens
        left_s = WINDOW_S - (now - self._window_start)
        tokens = self._input + self._output
        wall = time.time()
        if throttled_s is not None:
            return RateSnapshot(0, throttled_s, 0, throttled_s, 0, 0, wall)
        return RateSnapshot(
            requests_remaining=max(0, REQUESTS_PER_MINUTE - self._requests),
            requests_reset_s=min(left_s, self._requests * WINDOW_S / REQUESTS_PER_MINUTE),
            tokens_remaining=max(0, TOKENS_PER_MINUTE - tokens),
            tokens_reset_s=min(left_s, tokens * WINDOW_S / TOKENS_PER_MINUTE),
            input_remaining=max(0, INPUT_TOKENS_PER_MINUTE - self._input),
            output_remaining=max(0, OUTPUT_TOKENS_PER_MINUTE - self._output),
            now=wall,
        )

    def reset(self) -> None:
        self._window_start, self._requests, self._input, self._output = self._clock(), 0, 0, 0


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration.String`` (OpenAI's reset headers): 12ms, 1s, 6m0s.

    Sub-millisecond values round up to ``1ms`` to keep the header ASCII (Go would say µs).
    """
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return _trim(max(seconds * 1000, 1.0)) + "ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{int(hours)}h{int(minutes)}m{_trim(secs)}s"
    if minutes:
        return f"{int(minutes)}m{_trim(secs)}s"
    return f"{_trim(secs)}s"


def _trim(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def rfc3339(epoch_s: float) -> str:
    """Format like Anthropic's reset headers: ``2025-08-21T12:40:59Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def round_thousands(value: int) -> int:
    """Anthropic rounds remaining-token counts to the nearest thousand."""
    return round(value, -3)
