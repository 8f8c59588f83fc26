"""The processes we compare the gateway with: the bare grpc.aio floor, the LiteLLM proxy, the
Portkey AI gateway and redis-server. Each is a ``_servers.Proc`` (CPU and RSS from /proc,
``stop()``)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench._load import log
from bench._servers import ROOT, Proc, wait_port

LITELLM_VERSION = "1.106.2"  # the newest that installs from this index (perf-anchors.md §2.1)
LITELLM_VENV = ROOT / ".bench" / "litellm-venv"
# LiteLLM fetches a model cost map, Anthropic beta headers, router presets, blog posts and
# policy templates at startup; use the copies bundled in the package and point the remote URLs
# at a closed loopback port, so the proxy never leaves the machine.
LITELLM_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_MODEL_COST_MAP_URL": "http://127.0.0.1:9/x",
    "LITELLM_ANTHROPIC_BETA_HEADERS_URL": "http://127.0.0.1:9/x",
    "LITELLM_AUTOROUTER_PRESETS_URL": "http://127.0.0.1:9/x",
    "LITELLM_BLOG_POSTS_URL": "http://127.0.0.1:9/x",
}


def floor(
    port: int,
    *,
    upstream: str | None = None,
    response: Path | None = None,
    http: str = "raw",
    cpu: int | None = None,
    event_loop: str = "auto",
    gc_thresholds: str | None = None,
    wrapper: Sequence[str] = (),
    start_s: float = 30.0,
) -> Proc:
    """The bare grpc.aio server of ``bench._floor`` (with ``upstream``: echo + HTTP hop, over
    a minimal HTTP/1.1 client, httpx with ``http="httpx"``, or the gateway's vendor layer with
    ``http="vendor"``), on the event loop the gateway would pick for ``event_loop``
    (``server.event_loop``), with the gateway's garbage-collector thresholds unless
    ``gc_thresholds`` (comma-separated; empty: Python's); ``wrapper``: a command it runs
    under, given ``start_s`` seconds to listen."""
    args = [*wrapper, sys.executable, "-m", "bench._floor", "--port", str(port), "--http", http]
    args += ["--event-loop", event_loop]
    if gc_thresholds is not None:
        args += ["--gc-thresholds", gc_thresholds]
    if upstream:
        args += ["--upstream", upstream]
    if response:
        args += ["--response", str(response)]
    proc = Proc(args, cpu=cpu)
    wait_port(port, start_s)
    return proc


def redis_server(port: int, cpu: int | None = None) -> Proc:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    work = tempfile.mkdtemp(prefix="longread-bench-redis-")
    proc = Proc(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            work,
        ],
        cpu=cpu,
    )
    wait_port(port)
    return proc


def litellm_installed() -> bool:
    meta = LITELLM_VENV / "lib"
    return (LITELLM_VENV / "bin" / "litellm").exists() and any(
        meta.glob(f"python3*/site-packages/litellm-{LITELLM_VERSION}.dist-info")
    )


def ensure_litellm() -> float:
    """Installs ``litellm[proxy]`` into its own virtualenv (.bench/litellm-venv) unless it is
    there; returns the seconds spent installing. Raises on failure."""
    if litellm_installed():
        return 0.0
    t0 = time.monotonic()
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (once)")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=120)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
        timeout=1200,
        stdout=sys.stderr,
    )
    return time.monotonic() - t0


class LiteLLM:
    """A LiteLLM proxy (one worker, the default) whose only model is ``model`` at ``api_base``.

    It refuses to boot without a master key, so a random one is made; send it as
    ``authorization: Bearer <key>``. Cache, spend logs and error logs are off, no database."""

    def __init__(self, port: int, api_base: str, model: str, cpu: int | None = None) -> None:
        self.port = port
        self.key = "sk-" + secrets.token_hex(32)
        self.dir = Path(tempfile.mkdtemp(prefix="longread-bench-litellm-"))
        config = self.dir / "litellm.yaml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "model_list": [
                        {
                            "model_name": model,
                            "litellm_params": {
                                "model": f"openai/{model}",
                                "api_base": api_base,
                                "api_key": "bench",
                            },
                        }
                    ],
                    "litellm_settings": {"cache": False},
                    "general_settings": {
                        "master_key": self.key,
                        "disable_spend_logs": True,
                        "disable_error_logs": True,
                    },
                }
            )
        )
        env = {**LITELLM_OFFLINE_ENV, "HOME": str(self.dir)}
        self.proc = Proc(
            [
                str(LITELLM_VENV / "bin" / "litellm"),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--telemetry",
                "False",
            ],
            env=env,
            cpu=cpu,
        )
        self.started = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from launch until /health/liveliness answers; raises if it never does."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.p.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.proc.p.returncode}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/health/liveliness", timeout=1
                ) as r:
                    if r.status == 200:
                        return time.monotonic() - self.started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"litellm not ready after {timeout:.0f} s")

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


PORTKEY_VERSION = "1.15.2"
PORTKEY_DIR = ROOT / ".bench" / f"portkey-{PORTKEY_VERSION}"
# Portkey's own range for @hono/node-server admits releases whose responses carry immutable
# headers, which its streaming path then tries to append to ("TypeError: immutable", every
# streamed chat completion fails; Portkey-AI/gateway issue 1389): the last release it works with.
PORTKEY_OVERRIDES = {"@hono/node-server": "1.13.8"}
_PORTKEY_ENTRY = Path("node_modules/@portkey-ai/gateway/build/start-server.js")


def portkey_installed() -> bool:
    meta = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    if not (PORTKEY_DIR / _PORTKEY_ENTRY).exists() or not meta.exists():
        return False
    lock = PORTKEY_DIR / "package.json"
    pinned = json.loads(lock.read_text()).get("overrides") if lock.exists() else None
    return bool(json.loads(meta.read_text()).get("version") == PORTKEY_VERSION) and (
        pinned == PORTKEY_OVERRIDES
    )


def ensure_portkey() -> float:
    """Installs ``@portkey-ai/gateway`` with npm into its own directory (.bench/portkey-*)
    unless it is there; returns the seconds spent installing. Raises on failure."""
    if portkey_installed():
        return 0.0
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("node and npm are needed for the Portkey gateway")
    t0 = time.monotonic()
    log(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {PORTKEY_DIR} (once)")
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    (PORTKEY_DIR / "package.json").write_text(
        json.dumps({"private": True, "overrides": PORTKEY_OVERRIDES})
    )
    subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--omit=dev",
            f"@portkey-ai/gateway@{PORTKEY_VERSION}",
        ],
        cwd=PORTKEY_DIR,
        check=True,
        timeout=600,
        stdout=sys.stderr,
    )
    return time.monotonic() - t0


class Portkey:
    """The Portkey AI gateway on Node (one process, its default), headless (no UI, no log
    stream). It keeps no configuration of its own: each request names the provider and the
    upstream in headers (``headers``), ``openai`` at ``api_base``, so it stays on the machine."""

    def __init__(self, port: int, api_base: str, cpu: int | None = None) -> None:
        self.port = port
        self.headers = {
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": api_base,
            "authorization": "Bearer bench",
        }
        node = shutil.which("node") or "node"
        self.proc = Proc(
            [node, str(PORTKEY_DIR / _PORTKEY_ENTRY), f"--port={port}", "--headless"],
            env={"NODE_ENV": "production"},
            cpu=cpu,
        )
        self.started = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from launch until ``GET /`` answers; raises if it never does."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.p.poll() is not None:
                raise RuntimeError(f"portkey exited with {self.proc.p.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - self.started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"portkey not ready after {timeout:.0f} s")

    def stop(self) -> None:
        self.proc.stop()


def env_note() -> dict[str, object]:
    """What the numbers ran on: the machine and the code (commit, and whether server/ had
    uncommitted changes; read-only git commands)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    from longread_server.app import loop_factory

    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        # What server.event_loop = "auto" (the default) picks here, for the gateway and floor.
        "event_loop": "asyncio" if loop_factory("auto") is None else "uvloop",
        "git_head": git("rev-parse", "--short", "HEAD"),
        "server_dirty": bool(git("status", "--porcelain", "--", "server")),
    }
