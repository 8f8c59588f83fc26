"""The sandbox's knobs: constructor arguments, CLI flags, and runtime changes.

One dataclass so the three ways to set a knob (``SandboxConfig(...)``, ``--flag``,
``POST /_sandbox/config``) cannot drift apart. Per-request headers override the latency knobs
for one request only (see ``endpoints.Knobs``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .faults import Fault


@dataclass(slots=True)
class SandboxConfig:
    """Sandbox settings. Times in milliseconds unless the name says otherwise."""

    host: str = "127.0.0.1"
    port: int = 0
    # None: any non-empty key is accepted. Set: other keys get the vendor's 401.
    api_key: str | None = None
    latency_ms: float = 0.0  # from arrival to the response (errors included)
    ttft_ms: float = 0.0  # streaming: after the headers, before the first event
    tokens_per_s: float = 0.0  # streaming pace; 0 = as fast as possible
    fault_rate: float = 0.0  # share of model requests that get ``fault_kind`` (seeded RNG)
    fault_kind: str = "503"
    seed: int = 0
    script: tuple[str | None, ...] = field(default=())  # faults for the next requests
    retry_after_ms: float = 1000.0  # hint sent with 429/503/529
    hang_max_s: float = 60.0  # ``timeout``/``stall`` faults give up after this
    delta_tokens: int = 4  # tokens per streamed delta
    max_body_bytes: int = 32 * 1024 * 1024  # Anthropic's request limit

    def update(self, changes: Mapping[str, Any]) -> None:
        """Validate then apply runtime changes; raises ``ValueError`` naming the bad key."""
        parsed: dict[str, Any] = {}
        for key, value in changes.items():
            parse = _RUNTIME_FIELDS.get(key)
            if parse is None:
                raise ValueError(f"unknown or read-only sandbox setting {key!r}")
            try:
                parsed[key] = parse(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"invalid value for {key!r}: {exc}") from None
        for key, value in parsed.items():
            setattr(self, key, value)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["script"] = list(self.script)
        data["api_key"] = None if self.api_key is None else "***"
        return data


def _non_negative(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError("expected a finite number >= 0")
    return number


def _rate(value: Any) -> float:
    number = _non_negative(value)
    if number > 1:
        raise ValueError("expected a number between 0 and 1")
    return number


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("expected an integer >= 1")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _fault_kind(value: Any) -> str:
    return Fault.parse(str(value)).label


def _script(value: Any) -> tuple[str | None, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError("expected a list of fault kinds or nulls")
    out: list[str | None] = []
    for entry in value:
        if entry is None or entry in ("", "ok", "none", "null"):
            out.append(None)
        else:
            out.append(Fault.parse(str(entry)).label)
    return tuple(out)


def _optional_key(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise TypeError("expected a string or null")


_RUNTIME_FIELDS: dict[str, Callable[[Any], Any]] = {
    "api_key": _optional_key,
    "latency_ms": _non_negative,
    "ttft_ms": _non_negative,
    "tokens_per_s": _non_negative,
    "fault_rate": _rate,
    "fault_kind": _fault_kind,
    "seed": _int,
    "script": _script,
    "retry_after_ms": _non_negative,
    "hang_max_s": _non_negative,
    "delta_tokens": _positive_int,
}
