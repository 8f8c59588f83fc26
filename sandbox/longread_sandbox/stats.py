"""Counters a test or benchmark reads to see what reached the "vendor".

Retries, fault injection and caching happen inside the gateway, where a test cannot see them;
the upstream's counters can. ``GET /_sandbox/stats`` serves the same numbers as JSON.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SandboxStats:
    """Request counters since start or the last reset (control-plane calls not counted)."""

    requests: int = 0
    streams: int = 0
    disconnects: int = 0  # clients that went away before the response ended
    active: int = 0  # model requests in progress (a gauge; reset leaves it alone)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    by_tag: Counter[str] = field(default_factory=Counter)  # the x-sandbox-tag header
    by_retry_count: Counter[int] = field(default_factory=Counter)  # x-stainless-retry-count

    def reset(self) -> None:
        active = self.active
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, Counter):
                value.clear()
            else:
                setattr(self, name, 0)
        self.active = active

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "streams": self.streams,
            "disconnects": self.disconnects,
            "active": self.active,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "by_endpoint": dict(self.by_endpoint),
            "by_model": dict(self.by_model),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "by_fault": dict(self.by_fault),
            "by_tag": dict(self.by_tag),
            "by_retry_count": {str(k): v for k, v in self.by_retry_count.items()},
        }
