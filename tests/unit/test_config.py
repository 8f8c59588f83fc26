"""Config: defaults, TOML, environment overrides, validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from longread_server.config import ConfigError, load_config, request_bytes_limit
from longread_server.domain import VendorKind


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "longread.toml"
    p.write_text(text)
    return p


def test_defaults_use_sandbox_without_keys() -> None:
    cfg = load_config(env={})
    assert cfg.listen == "127.0.0.1:50051"
    assert not cfg.upstreams and cfg.use_sandbox and not cfg.auth_enabled
    # The default request limit holds the character limits in any script (4 bytes a char).
    assert request_bytes_limit(cfg) >= 4 * cfg.limits.max_document_chars


def test_vendor_prompt_caching_settings(tmp_path: Path) -> None:
    assert load_config(None, env={}).cache.vendor_ttl == "5m"
    path = tmp_path / "c.toml"
    path.write_text('[cache]\nvendor_ttl = "1h"\nvendor_extended_retention = false\n')
    cache = load_config(path, env={}).cache
    assert (cache.vendor_ttl, cache.vendor_extended_retention) == ("1h", False)
    assert load_config(None, env={"LONGREAD_CACHE__VENDOR_TTL": "off"}).cache.vendor_ttl == "off"
    path.write_text('[cache]\nvendor_ttl = "2h"\n')
    with pytest.raises(ConfigError, match=r"cache\.vendor_ttl"):
        load_config(path, env={})


def test_vendor_keys_from_environment_configure_upstreams() -> None:
    cfg = load_config(env={"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "ak-1"})
    assert {u.name: u.api_key for u in cfg.upstreams} == {"openai": "sk-1", "anthropic": "ak-1"}
    assert not cfg.use_sandbox


def test_file_then_env_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
listen = "0.0.0.0:6000"
[limits]
max_document_tokens = 1000
[[upstreams]]
name = "local"
kind = "openai_compatible"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "LOCAL_KEY"
models = ["m1"]
[[tenants]]
name = "acme"
api_keys_env = "ACME_KEYS"
""",
    )
    env = {
        "LONGREAD_LIMITS__MAX_DOCUMENT_TOKENS": "2000",
        "LONGREAD_SERVER__REFLECTION": "false",
        "LOCAL_KEY": "k",
        "ACME_KEYS": "a1, a2",
    }
    cfg = load_config(path, env)
    assert cfg.listen == "0.0.0.0:6000"
    assert cfg.limits.max_document_tokens == 2000 and cfg.server.reflection is False
    (up,) = cfg.upstreams
    assert up.kind is VendorKind.OPENAI_COMPATIBLE and up.api_key == "k" and up.models == ["m1"]
    assert cfg.tenants[0].api_keys == ["a1", "a2"] and cfg.auth_enabled


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("nonsense = 1", {}, "nonsense"),
        ("[limits]\nmax_document_tokens = 'many'", {}, "limits.max_document_tokens"),
        ('[[upstreams]]\nname="x"\nkind="grpc"\nbase_url="u"', {}, "upstreams[0].kind"),
        ('[[tenants]]\nname="t"\napi_keys_env="NOPE"', {}, "no API keys"),
        ("", {"LONGREAD_LIMITS__MAX_CHUNKS": "lots"}, "LONGREAD_LIMITS__MAX_CHUNKS"),
        ('[tls]\nclient_ca_file="ca.pem"', {}, "tls.client_ca_file"),
        ("listen = ", {}, "not valid TOML"),
    ],
)
def test_invalid_config_names_the_field(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text), env)


def test_client_variables_are_not_server_settings() -> None:
    cfg = load_config(env={"LONGREAD_API_KEY": "x", "LONGREAD_TARGET": "h:1"})
    assert cfg.listen == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[server]\nbogus = 1\n", {}, "server.bogus (in {path}): unknown setting"),
        (
            "[telemetry]\ntraces = true\notlp_endpoint = 'https://localhost:4317'\n",
            {"OTEL_EXPORTER_OTLP_CLIENT_KEY": __file__},
            "OTEL_EXPORTER_OTLP_CLIENT_KEY and OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE go",
        ),
        (
            "[telemetry]\ntraces = true\n",
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            "OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1",
        ),
        ("", {"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: no traces exporter"),
        (
            "[telemetry]\notlp_protocol = 'http/json'\nmetrics = true\n"
            "otlp_endpoint = 'http://localhost:4318'\n",
            {},
            "telemetry.otlp_protocol (in {path}): expected grpc or http/protobuf",
        ),
    ],
)
def test_serve_reports_a_configuration_error_in_one_line(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "longread.toml"
    path.write_text(toml)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LONGREAD_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-m", "longread.cli", "serve", "--config", str(path), "--port", "0"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback
    assert lines[0].startswith("longread: error: " + message.format(path=path))
    assert "; hint: " in lines[0]


@pytest.mark.parametrize("value", ["lean", "httpx"])
def test_the_old_http_client_setting_loads_and_is_ignored_with_a_warning(
    tmp_path: Path, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, f'[server]\nhttp_client = "{value}"\n')
    with caplog.at_level("WARNING", logger="longread_server.config"):
        load_config(path, env={})
    assert [r.getMessage() for r in caplog.records] == [
        "server.http_client is ignored: upstream calls always use httpx"
    ]
    with pytest.raises(ConfigError, match="http_client"):
        load_config(write(tmp_path, '[server]\nhttp_client = "curl"\n'), env={})


def test_upstream_connection_cap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="longread_server.config"):
        assert load_config(env={}).server.upstream_max_connections == 1000
    assert not caplog.records  # the default: no warning about http_client
    env = {"LONGREAD_SERVER__UPSTREAM_MAX_CONNECTIONS": "0"}
    assert load_config(env=env).server.upstream_max_connections == 0  # no cap
    with pytest.raises(ConfigError, match="upstream_max_connections"):
        load_config(write(tmp_path, "[server]\nupstream_max_connections = -1\n"), env={})


def test_event_loop(tmp_path: Path) -> None:
    assert load_config(env={}).server.event_loop == "auto"
    env = {"LONGREAD_SERVER__EVENT_LOOP": "asyncio"}
    assert load_config(env=env).server.event_loop == "asyncio"
    with pytest.raises(ConfigError, match=r"server\.event_loop") as e:
        load_config(write(tmp_path, '[server]\nevent_loop = "tokio"\n'), env={})
    assert "'tokio' is not one of auto, uvloop, asyncio" in str(e.value)


def test_gc_thresholds(tmp_path: Path) -> None:
    assert load_config(env={}).server.gc_thresholds == [50_000, 10, 10]
    toml = write(tmp_path, "[server]\ngc_thresholds = [2000, 5]\n")
    assert load_config(toml, env={}).server.gc_thresholds == [2000, 5]
    for text in ("20000,5,5", "[20000, 5, 5]"):  # by name or as JSON, as every list
        env = {"LONGREAD_SERVER__GC_THRESHOLDS": text}
        assert load_config(env=env).server.gc_thresholds == [20_000, 5, 5]
    assert load_config(env={"LONGREAD_SERVER__GC_THRESHOLDS": "[]"}).server.gc_thresholds == []
    for bad in ("[700, 10, 10, 10]", "[-1]"):
        with pytest.raises(ConfigError, match=r"server\.gc_thresholds"):
            load_config(write(tmp_path, f"[server]\ngc_thresholds = {bad}\n"), env={})
    with pytest.raises(ConfigError, match=r"server\.gc_thresholds\[1\]"):
        load_config(env={"LONGREAD_SERVER__GC_THRESHOLDS": "700,ten"})


_UPSTREAMS = """
[[upstreams]]
name = "openai"
kind = "openai"
base_url = "http://x/v1"
fallback = "anthropic"

[[upstreams]]
name = "anthropic"
kind = "anthropic"
base_url = "http://y"
"""


def test_fallback_chains(tmp_path: Path) -> None:
    text = (
        _UPSTREAMS
        + """
[[resilience.fallback]]
model = "gpt-4o"
chain = ["openai/gpt-4.1", "anthropic/claude-haiku-4-5"]
on = ["context_overflow", "circuit_open"]
"""
    )
    cfg = load_config(write(tmp_path, text), env={})
    (chain,) = cfg.resilience.fallback
    assert chain.model == "gpt-4o" and chain.chain[1] == "anthropic/claude-haiku-4-5"
    assert cfg.upstreams[0].fallback == "anthropic"
    bad = {
        'chain = ["nowhere/gpt-4o"]\nupstream = "openai"': "nowhere",
        'chain = ["anthropic"]': "needs upstream or model",
        'chain = ["anthropic"]\nupstream = "openai"\non = ["teapot"]': "teapot",
    }
    for table, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, _UPSTREAMS + "[[resilience.fallback]]\n" + table), env={})
    unknown = _UPSTREAMS.replace('fallback = "anthropic"', 'fallback = "azure"')
    with pytest.raises(ConfigError, match="azure"):
        load_config(write(tmp_path, unknown), env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("redis_required = true", r"redis_required \(in .*\): needs redis_url"),
        ("[server]\nliveness_block_s = -1", "server.liveness_block_s"),
        ("[server]\nmax_connection_age_s = -1", "server.max_connection_age_s"),
        ("[server]\nreadiness_interval_s = 0", "server.readiness_interval_s"),
    ],
)
def test_health_and_connection_age_settings_are_checked(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), {})


def test_connection_age_options() -> None:
    from longread_server.app import connection_age_options

    cfg = load_config(env={})
    assert connection_age_options(cfg) == [
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", 900_000),
    ]
    cfg.server.max_connection_age_grace_s = 0  # no grace limit: gRPC's own (none)
    assert connection_age_options(cfg) == [("grpc.max_connection_age_ms", 300_000)]
    cfg.server.max_connection_age_ms = 1500  # the older spelling wins when set
    assert connection_age_options(cfg) == [("grpc.max_connection_age_ms", 1500)]
    cfg.server.max_connection_age_ms = 0
    cfg.server.max_connection_age_s = 0
    assert connection_age_options(cfg) == []
