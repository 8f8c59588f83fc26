"""Fault injection: which failure, if any, a model request gets.

Chaos and integration tests need failures they can aim. Four sources, first match wins:

1. the ``x-sandbox-fault: <kind>`` request header (a direct caller picks its own fault);
2. a ``[[sandbox-fault:<kind>]]`` marker in the prompt text, so a test that talks to the gateway
   can target one upstream call; ``[[sandbox-fault:<kind>*N]]`` fails only the first N requests
   carrying that same prompt, so retries through the gateway can succeed;
3. the script: faults for the next requests in order (``None`` = answer normally);
4. ``fault_rate``: a seeded RNG, so a chaos run is reproducible.

Kinds: an HTTP status (``429``, ``500``, ``503``, ``529`` and other 4xx/5xx) answered with the
vendor's error body, or ``timeout`` (never answer), ``reset`` (TCP reset; mid-stream when
streaming), ``malformed`` (invalid JSON), ``midstream_error`` (error event after HTTP 200),
``stall`` (stream a few deltas, then go silent).

Three kinds quote the prompt back, as vendors and the proxies in front of them do, so a
test can check that a gateway never records what an upstream echoes: ``echo_400`` (the
vendor's 400 whose message quotes the prompt), ``html_502`` (a proxy's HTML error page that
quotes it) and ``midstream_echo`` (an error event after HTTP 200 that quotes it; a 500 when not
streaming). ``echo`` gives the quote.
"""

from __future__ import annotations

import random
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NAMED_KINDS = frozenset(
    {
        "timeout",
        "reset",
        "malformed",
        "midstream_error",
        "stall",
        "echo_400",
        "html_502",
        "midstream_echo",
    }
)
STATUS_KINDS = frozenset(
    {400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529}
)
# Faults that let the stream start and break it partway.
MIDSTREAM_KINDS = frozenset({"reset", "malformed", "midstream_error", "stall", "midstream_echo"})
ECHO_CHARS = 200  # of each prompt part quoted by an echoing fault
MARKER_PREFIX = "[[sandbox-fault:"
_MARKER = re.compile(r"\[\[sandbox-fault:([a-z_0-9]+)(?:\*(\d+))?\]\]")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure: ``kind`` is ``"status"`` (with ``status``) or a named kind."""

    kind: str
    status: int = 0

    @property
    def label(self) -> str:
        return str(self.status) if self.kind == "status" else self.kind

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse ``"503"``, ``"timeout"``...; raises ``ValueError`` for unknown kinds."""
        value = text.strip().lower()
        if value.isdigit() and int(value) in STATUS_KINDS:
            return cls("status", int(value))
        if value in NAMED_KINDS:
            return cls(value)
        known = sorted(NAMED_KINDS) + [str(s) for s in sorted(STATUS_KINDS)]
        raise ValueError(f"unknown sandbox fault {text!r}; known: {', '.join(known)}")


def parse_script(entries: Iterable[str | int | None]) -> list[Fault | None]:
    """Script entries: a kind, or ``None``/``""``/``"ok"`` for a normal answer."""
    out: list[Fault | None] = []
    for entry in entries:
        if entry is None or entry in ("", "ok", "none", "null"):
            out.append(None)
        else:
            out.append(Fault.parse(str(entry)))
    return out


class FaultPlanner:
    """Decides the fault for each model request (see the module docstring for the order)."""

    __slots__ = ("_marker_hits", "_rng", "_script", "kind", "rate", "seed")

    def __init__(
        self,
        *,
        seed: int = 0,
        rate: float = 0.0,
        kind: Fault | None = None,
        script: Iterable[Fault | None] = (),
    ) -> None:
        self.seed = seed
        self.rate = rate
        self.kind = kind or Fault("status", 503)
        self._rng = random.Random(seed)
        self._script: deque[Fault | None] = deque(script)
        self._marker_hits: dict[tuple[str, int], int] = {}

    @property
    def script(self) -> list[Fault | None]:
        return list(self._script)

    def set_script(self, script: Iterable[Fault | None]) -> None:
        self._script = deque(script)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def reset(self) -> None:
        """Forget the script and counted markers; restart the RNG sequence."""
        self._script.clear()
        self._marker_hits.clear()
        self._rng = random.Random(self.seed)

    def choose(self, header: str | None, sources: Sequence[tuple[str, str]]) -> Fault | None:
        """The fault for one model request; raises ``ValueError`` for a bad header."""
        if header:
            return Fault.parse(header)
        marked = self._from_marker(sources)
        if marked is not None:
            return marked
        if self._script:
            return self._script.popleft()
        if self.rate > 0 and self._rng.random() < self.rate:
            return self.kind
        return None

    def _from_marker(self, sources: Sequence[tuple[str, str]]) -> Fault | None:
        for _, text in sources:
            if MARKER_PREFIX not in text:
                continue
            match = _MARKER.search(text)
            if match is None:
                continue
            try:
                fault = Fault.parse(match.group(1))
            except ValueError:
                continue
            if match.group(2) is None:
                return fault
            key = (match.group(0), hash(tuple(t for _, t in sources)))
            used = self._marker_hits.get(key, 0)
            if used >= int(match.group(2)):
                return None
            self._marker_hits[key] = used + 1
            return fault
        return None


def echo(sources: Sequence[tuple[str, str]]) -> str:
    """The prompt as an echoing fault quotes it: the start of each of its parts."""
    return " | ".join(text[:ECHO_CHARS] for _, text in sources if text)
