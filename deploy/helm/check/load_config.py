"""Loads what each rendering of the chart would start the gateway with (the ConfigMap's TOML and
the container's environment, written by chartcheck -gateway-config) with the gateway's own
``load_config``, so a setting the chart names that the gateway does not know, or a value it
refuses, fails `make chart` instead of a pod's start-up.

    python deploy/helm/check/load_config.py RENDERING.json...
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

from longread_server.config import Config, load_config

# Stand-ins for the values Secrets hold: load_config checks a Redis URL's form.
SECRET_VALUES = {"LONGREAD_REDIS_URL": "redis://redis:6379/0"}


def check(rendering: Path) -> Config:
    data = json.loads(rendering.read_text())
    env = {
        name: SECRET_VALUES.get(name, "key-1,key-2") if value == "secret" else value
        for name, value in data["env"].items()
    }
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
    assert math.isclose(cfg.server.drain_delay_s, float(env["LONGREAD_SERVER__DRAIN_DELAY_S"])), (
        cfg.server
    )
    print(
        f"{rendering}: the gateway accepts it (listen :{port}, metrics "
        f"{tel.prometheus_host}:{tel.prometheus_port} {'on' if tel.prometheus else 'off'}, "
        f"drain {cfg.server.drain_delay_s:g}+{cfg.server.grace_s:g}s, "
        f"{len(cfg.upstreams)} upstreams, {len(cfg.tenants)} tenants)"
    )
    return cfg


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        check(Path(arg))
