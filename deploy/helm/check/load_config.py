"""Loads what each rendering of the chart would start the gateway with (the ConfigMap's TOML and
the container's environment, written by chartcheck -gateway-config) with the gateway's own
``load_config``, so a setting the chart names that the gateway does not know, or a value it
refuses, fails `make chart` instead of a pod's start-up. With --serve, a gateway is started from
the first rendering (on loopback ports) and asked about the health service each probe names: a
probe asking about a name the gateway does not serve would keep every pod unready or restarting.

    python deploy/helm/check/load_config.py [--serve] RENDERING.json...
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from longread_server.config import Config, load_config

# Stand-ins for the values Secrets hold: load_config checks a Redis URL's form.
SECRET_VALUES = {"LONGREAD_REDIS_URL": "redis://redis:6379/0"}
LONGREAD = Path(sys.executable).parent / "longread"


def environment(data: dict[str, dict[str, str]]) -> dict[str, str]:
    return {
        name: SECRET_VALUES.get(name, "key-1,key-2") if value == "secret" else value
        for name, value in data["env"].items()
    }


def check(rendering: Path) -> Config:
    data = json.loads(rendering.read_text())
    env = environment(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "longread.toml"
        path.write_text(data["toml"])
        cfg = load_config(path, env)
    # What the chart's Services, probes and ServiceMonitor assume of the gateway.
    host, _, port = cfg.listen.rpartition(":")
    assert host == "0.0.0.0", f"listen {cfg.listen}: not on every interface"
    tel = cfg.telemetry
    if "LONGREAD_TELEMETRY__PROMETHEUS" in env:
        assert tel.metrics and tel.prometheus and tel.prometheus_host == "0.0.0.0", tel
    if "LONGREAD_HTTP__LISTEN" in env:  # the container port and Service port named http
        assert cfg.http.listen.rpartition(":")[0] == "0.0.0.0", cfg.http
    drain = float(env["LONGREAD_SERVER__DRAIN_DELAY_S"])
    assert math.isclose(cfg.server.drain_delay_s, drain), cfg.server
    print(
        f"{rendering}: the gateway accepts it (listen :{port}, http "
        f"{cfg.http.listen or 'off'}{' with the page' if cfg.http.ui else ''}, metrics "
        f"{tel.prometheus_host}:{tel.prometheus_port} {'on' if tel.prometheus else 'off'}, "
        f"drain {cfg.server.drain_delay_s:g}+{cfg.server.grace_s:g}s, "
        f"{len(cfg.upstreams)} upstreams, {len(cfg.tenants)} tenants)"
    )
    return cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(target: str, service: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LONGREAD), "health", "--target", target, "--service", service, "--timeout", "2"],
        capture_output=True,
        text=True,
    )


def serve_and_probe(rendering: Path) -> None:
    """The gateway as the rendering configures it, but on loopback ports of this machine."""
    data = json.loads(rendering.read_text())
    port, metrics_port = free_port(), free_port()
    env = os.environ | environment(data)
    env |= {
        "LONGREAD_LISTEN": f"127.0.0.1:{port}",
        "LONGREAD_TELEMETRY__PROMETHEUS_HOST": "127.0.0.1",
        "LONGREAD_TELEMETRY__PROMETHEUS_PORT": str(metrics_port),
    }
    target = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "longread.toml"
        path.write_text(data["toml"])
        log = Path(tmp) / "serve.log"  # a file: a pipe nobody reads could fill and block it
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(LONGREAD), "serve", "--config", str(path)],
                env=env,
                cwd=tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while health(target, "").returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the gateway did not start: {log.read_text()}")
                time.sleep(0.5)
            for probe, service in sorted(data["probes"].items()):
                got = health(target, service)
                assert got.returncode == 0, f"{probe} probe's service {service!r}: {got.stderr}"
                print(f"{rendering}: {probe} probe, service {service!r}: {got.stdout.strip()}")
            if "LONGREAD_TELEMETRY__PROMETHEUS" in data["env"]:
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = resp.read().decode()
                assert "target_info" in body or "# TYPE" in body, body[:200]
                print(f"{rendering}: /metrics answers ({len(body)} bytes)")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


if __name__ == "__main__":
    args = sys.argv[1:]
    serve = "--serve" in args
    files = [Path(a) for a in args if a != "--serve"]
    if not files:
        sys.exit(__doc__)
    for f in files:
        check(f)
    if serve:
        serve_and_probe(files[0])
