"""The emulator as the gateway embeds it when no vendor is configured.

The gateway finds ``start_embedded`` through the ``longread.sandbox`` entry point this
distribution declares, so neither package imports the other: a gateway installed without
``longread-sandbox`` simply has no emulator to fall back on.
"""

from __future__ import annotations

from .emulator import Sandbox
from .settings import SandboxConfig


async def start_embedded(*, host: str, port: int, latency_ms: float) -> Sandbox:
    """An emulator listening on ``host:port`` (0: any free port); the caller stops it."""
    sandbox = Sandbox(SandboxConfig(host=host, port=port, latency_ms=latency_ms))
    await sandbox.start()
    return sandbox
