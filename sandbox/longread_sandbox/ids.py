"""Request and response ids that look like the vendors' and are unique per process.

A counter after a random per-process prefix: cheaper than ``uuid4`` per request, and two
sandboxes started by one test never hand out the same id.
"""

from __future__ import annotations

import itertools
import secrets


class IdSource:
    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def make(self, prefix: str) -> str:
        """``prefix`` + 8 random hex digits + a 16-digit counter, e.g. ``req_3fa2...``."""
        return f"{prefix}{self._prefix}{next(self._counter):016x}"
