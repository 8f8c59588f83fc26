"""The gateway finds the vendor emulator through its entry point, and says what to do without it."""

from __future__ import annotations

import pytest
from longread_server import embedded_sandbox
from longread_server.app import start
from longread_server.config import Config, ConfigError, EmbeddedSandboxConfig


async def test_the_installed_emulator_is_found_and_started() -> None:
    sandbox = await embedded_sandbox.start_sandbox(EmbeddedSandboxConfig())
    try:
        assert sandbox.base_url.startswith("http://127.0.0.1:")
    finally:
        await sandbox.stop()


async def test_without_the_emulator_no_vendor_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded_sandbox, "entry_points", lambda **_: ())
    cfg = Config(listen="127.0.0.1:0")
    assert cfg.use_sandbox
    with pytest.raises(ConfigError, match="install longread-sandbox"):
        await start(cfg)
