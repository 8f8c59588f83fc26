"""``longread serve`` with a setting it cannot use: one line on stderr, exit code 2, in the
CLI's shape (``longread: error: <what>; hint: <what to do>``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another server listens on."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def serve(env: dict[str, str], *args: str) -> str:
    """The one line ``longread serve`` prints before it exits with 2."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LONGREAD_", "OTEL_")) and not k.endswith("_API_KEY")
    }
    done = subprocess.run(
        [sys.executable, "-m", "longread.cli", "serve", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_missing_tls_file(tmp_path: Path) -> None:
    env = {
        "LONGREAD_TLS__CERT_FILE": str(tmp_path / "server.pem"),
        "LONGREAD_TLS__KEY_FILE": str(tmp_path / "server.key"),
    }
    assert serve(env, "--port", "0") == (
        f"longread: error: tls.cert_file (LONGREAD_TLS__CERT_FILE): cannot read "
        f"{tmp_path / 'server.pem'}: No such file or directory; "
        "hint: correct tls.cert_file where it is given (LONGREAD_TLS__CERT_FILE)"
    )


def test_a_port_in_use(taken: int) -> None:
    assert serve({}, "--port", str(taken)) == (
        f"longread: error: listen (--host/--port): cannot listen on 127.0.0.1:{taken}: "
        "Address already in use; hint: another process listens there: stop it, or choose "
        "another port (--host/--port)"
    )
    line = serve({"LONGREAD_LISTEN": f"127.0.0.1:{taken}"})
    assert line.startswith("longread: error: listen (LONGREAD_LISTEN): cannot listen on")
    assert line.endswith("choose another port (LONGREAD_LISTEN)")


def test_a_list_from_the_environment_that_is_not_json() -> None:
    assert serve({"LONGREAD_UPSTREAMS": "openai,anthropic"}, "--port", "0") == (
        "longread: error: upstreams (LONGREAD_UPSTREAMS): expected a JSON array of objects: "
        "Expecting value at line 1 column 1; "
        "hint: correct upstreams where it is given (LONGREAD_UPSTREAMS)"
    )


def test_a_sandbox_port_in_use(taken: int) -> None:
    assert serve({"LONGREAD_SANDBOX__PORT": str(taken)}, "--port", "0") == (
        f"longread: error: sandbox.port (LONGREAD_SANDBOX__PORT): cannot start the sandbox "
        f"on 127.0.0.1:{taken}: Address already in use; hint: another process listens there: "
        "stop it, or choose another port (LONGREAD_SANDBOX__PORT)"
    )


def test_a_metrics_port_in_use(taken: int) -> None:
    env = {
        "LONGREAD_TELEMETRY__METRICS": "true",
        "LONGREAD_TELEMETRY__PROMETHEUS": "true",
        "LONGREAD_TELEMETRY__PROMETHEUS_PORT": str(taken),
    }
    assert serve(env, "--port", "0").startswith(
        "longread: error: telemetry.prometheus_port (LONGREAD_TELEMETRY__PROMETHEUS_PORT): "
        "cannot listen"
    )


def test_an_event_loop_that_is_not_one() -> None:
    assert serve({"LONGREAD_SERVER__EVENT_LOOP": "tokio"}, "--port", "0") == (
        "longread: error: server.event_loop (LONGREAD_SERVER__EVENT_LOOP): 'tokio' is not one "
        "of auto, uvloop, asyncio; hint: correct server.event_loop where it is given "
        "(LONGREAD_SERVER__EVENT_LOOP)"
    )


def test_uvloop_asked_for_where_it_is_not_installed(tmp_path: Path) -> None:
    # A module of that name that fails to import, ahead of the installed one on the path.
    (tmp_path / "uvloop.py").write_text("raise ImportError('not installed here')\n")
    env = {"LONGREAD_SERVER__EVENT_LOOP": "uvloop", "PYTHONPATH": str(tmp_path)}
    assert serve(env, "--port", "0") == (
        "longread: error: server.event_loop (LONGREAD_SERVER__EVENT_LOOP): uvloop is not "
        'installed; hint: pip install uvloop, or set server.event_loop = "asyncio"'
    )


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import uvloop
    from longread_server.app import loop_factory

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") is None
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        assert type(runner.get_loop()).__module__.startswith("asyncio")
