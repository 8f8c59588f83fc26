"""Finding and starting the vendor emulator the gateway serves from when no vendor is set.

The emulator is its own distribution (``longread-sandbox``), which the gateway does not import:
it registers a start function under the ``longread.sandbox`` entry point, the standard
plugin mechanism, and the gateway looks it up only when it needs it. A gateway installed
without the emulator then fails with a configuration error that says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from importlib.metadata import entry_points
from typing import Protocol, cast

from longread_server.config import ConfigError, EmbeddedSandboxConfig

ENTRY_POINT_GROUP = "longread.sandbox"
ENTRY_POINT_NAME = "embedded"


class EmbeddedSandbox(Protocol):
    """A running emulator: where it listens, and how to stop it."""

    @property
    def base_url(self) -> str:
        """``http://host:port``; OpenAI-style clients add ``/v1``."""
        ...

    async def stop(self) -> None: ...


class StartSandbox(Protocol):
    """The entry point's target: starts an emulator on ``host:port`` (0: any free port)."""

    def __call__(
        self, *, host: str, port: int, latency_ms: float
    ) -> Awaitable[EmbeddedSandbox]: ...


def find_sandbox() -> StartSandbox:
    """The installed emulator's start function; ``ConfigError`` when none is installed."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=ENTRY_POINT_NAME)
    if not found:
        raise ConfigError(
            "no vendor configured and no sandbox installed: set a vendor key (e.g. "
            "OPENAI_API_KEY) or [[upstreams]], or install longread-sandbox"
        )
    return cast(StartSandbox, next(iter(found)).load())


async def start_sandbox(cfg: EmbeddedSandboxConfig) -> EmbeddedSandbox:
    """Starts the emulator on loopback with the ``[sandbox]`` settings."""
    start = find_sandbox()
    try:
        return await start(host="127.0.0.1", port=cfg.port, latency_ms=cfg.latency_ms)
    except OSError as e:  # its port in use
        reason = os.strerror(e.errno) if e.errno else str(e)
        why = f"cannot start the sandbox on 127.0.0.1:{cfg.port}: {reason}"
        raise ConfigError(why, setting="sandbox.port") from None
