"""Lists and tables from the environment, and errors that name the setting and its source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from longread_server.config import ConfigError, load_config
from longread_server.domain import VendorKind

FILE = """
[[upstreams]]
name = "my-llm"
kind = "openai_compatible"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "MY_KEY"
"""


def config_file(tmp_path: Path, text: str = FILE) -> Path:
    path = tmp_path / "longread.toml"
    path.write_text(text)
    return path


def error(path: Path | None, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env)
    return str(caught.value)


def test_a_json_array_of_upstreams_replaces_the_files(tmp_path: Path) -> None:
    upstreams = [
        {"name": "a", "kind": "openai", "base_url": "https://a/v1", "api_key": "ka"},
        {
            "name": "b",
            "kind": "anthropic",
            "base_url": "https://b",
            "models": ["m"],
            "timeout_s": 5,
        },
    ]
    cfg = load_config(config_file(tmp_path), {"LONGREAD_UPSTREAMS": json.dumps(upstreams)})
    assert [(u.name, u.kind, u.api_key) for u in cfg.upstreams] == [
        ("a", VendorKind.OPENAI, "ka"),
        ("b", VendorKind.ANTHROPIC, ""),
    ]
    assert cfg.upstreams[1].models == ["m"] and cfg.upstreams[1].timeout_s == 5.0
    assert cfg.origins.source("upstreams[1].kind") == "LONGREAD_UPSTREAMS"


def test_a_variable_per_setting_changes_the_upstream_of_that_name(tmp_path: Path) -> None:
    env = {
        "LONGREAD_UPSTREAMS__MY_LLM__API_KEY": "from-a-secret",
        "LONGREAD_UPSTREAMS__MY_LLM__TIMEOUT_S": "30",
        "LONGREAD_UPSTREAMS__MY_LLM__MODELS": "m1, m2",
        "MY_KEY": "not-this-one",
    }
    (up,) = load_config(config_file(tmp_path), env).upstreams
    assert (up.name, up.api_key, up.timeout_s, up.models) == (
        "my-llm",
        "from-a-secret",
        30.0,
        ["m1", "m2"],
    )


def test_variables_that_give_kind_and_base_url_add_an_upstream(tmp_path: Path) -> None:
    env = {
        "LONGREAD_UPSTREAMS__LOCAL__KIND": "openai_compatible",
        "LONGREAD_UPSTREAMS__LOCAL__BASE_URL": "http://127.0.0.1:9000/v1",
        "LONGREAD_UPSTREAMS__LOCAL__MODELS": '["x", "y"]',
        "MY_KEY": "k",
    }
    cfg = load_config(config_file(tmp_path), env)
    assert [u.name for u in cfg.upstreams] == ["my-llm", "local"]
    assert cfg.upstreams[1].models == ["x", "y"] and cfg.upstreams[0].api_key == "k"


def test_a_well_known_vendor_is_changed_or_added_by_name() -> None:
    env = {"OPENAI_API_KEY": "sk", "LONGREAD_UPSTREAMS__ANTHROPIC__API_KEY": "ak"}
    env["LONGREAD_UPSTREAMS__OPENAI__TIMEOUT_S"] = "12"
    cfg = load_config(None, env)
    got = {u.name: (u.api_key, u.timeout_s) for u in cfg.upstreams}
    assert got == {"openai": ("sk", 12.0), "anthropic": ("ak", 600.0)}


def test_tenants_by_name_and_tables_as_json_objects() -> None:
    env = {
        "LONGREAD_TENANTS__ACME__API_KEYS": "k1,k2",
        "LONGREAD_TENANTS__ACME__MONTHLY_BUDGET_USD": "50",
        "LONGREAD_RESILIENCE": '{"fail_open": false, "breaker": {"window": "time"}}',
        "LONGREAD_RESILIENCE__BREAKER__WINDOW_SIZE": "7",  # the narrower variable wins
    }
    cfg = load_config(None, env)
    (t,) = cfg.tenants
    assert (t.name, t.api_keys, t.monthly_budget_usd) == ("acme", ["k1", "k2"], 50.0)
    assert cfg.resilience.fail_open is False
    assert (cfg.resilience.breaker.window, cfg.resilience.breaker.window_size) == ("time", 7)
    assert cfg.resilience.breaker.min_calls == 50  # untouched by the object


def test_catalog_overrides_from_json() -> None:
    models = [
        {
            "vendor": "local",
            "model": "m",
            "context_window": 1000,
            "max_output_tokens": 100,
            "input_per_mtok": 0,
            "output_per_mtok": 0,
        }
    ]
    cfg = load_config(None, {"LONGREAD_MODELS": json.dumps(models)})
    assert cfg.models[0].context_window == 1000 and cfg.models[0].input_per_mtok == 0.0


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"LONGREAD_UPSTREAMS": "openai"},
            "upstreams (LONGREAD_UPSTREAMS): expected a JSON array of objects: Expecting value",
        ),
        (
            {"LONGREAD_UPSTREAMS": '["openai"]'},
            "upstreams[0] (LONGREAD_UPSTREAMS): expected a table",
        ),
        (
            {"LONGREAD_UPSTREAMS": '[{"name": "a", "kind": "openai"}]'},
            "upstreams[0] (LONGREAD_UPSTREAMS): missing base_url",
        ),
        (
            {"LONGREAD_UPSTREAMS": '[{"name": "a", "kind": "grpc", "base_url": "u"}]'},
            "upstreams[0].kind (LONGREAD_UPSTREAMS): 'grpc' is not one of",
        ),
        (
            {"LONGREAD_UPSTREAMS__NEW__API_KEY": "k"},
            "upstreams[new] (LONGREAD_UPSTREAMS__NEW__API_KEY): no entry named 'new': to add one,"
            " set LONGREAD_UPSTREAMS__NEW__KIND and LONGREAD_UPSTREAMS__NEW__BASE_URL",
        ),
        (
            {"LONGREAD_UPSTREAMS__MY_LLM__TIMEOUT": "3"},
            "upstreams[my_llm].timeout (LONGREAD_UPSTREAMS__MY_LLM__TIMEOUT): unknown setting",
        ),
        (
            {"LONGREAD_UPSTREAMS__MY_LLM": "x"},
            "upstreams (LONGREAD_UPSTREAMS__MY_LLM): "
            "expected LONGREAD_UPSTREAMS__<NAME>__<SETTING>",
        ),
        (
            {"LONGREAD_MODELS__X__VENDOR": "v"},
            "models (LONGREAD_MODELS__X__VENDOR): its entries have no name",
        ),
        (
            {"LONGREAD_SERVER__REFLECTION": "maybe"},
            "server.reflection (LONGREAD_SERVER__REFLECTION): cannot parse 'maybe' as bool",
        ),
        (
            {"LONGREAD_SERVER__GRACE_S": "soon"},
            "server.grace_s (LONGREAD_SERVER__GRACE_S): cannot parse 'soon' as float",
        ),
        ({"LONGREAD_SERVER__GRACE": "1"}, "server.grace (LONGREAD_SERVER__GRACE): unknown setting"),
        (
            {"LONGREAD_SERVER": '{"grace": 1}'},
            "server.grace (LONGREAD_SERVER): unknown setting",
        ),
        (
            {"LONGREAD_LISTEN__HOST": "x"},
            "listen (LONGREAD_LISTEN__HOST): has no settings under it",
        ),
        (
            {"LONGREAD_CACHE__TTL_S": "-1"},
            "cache.ttl_s (LONGREAD_CACHE__TTL_S): must be positive",
        ),
        (
            {"LONGREAD_TENANTS__ACME__API_KEYS_ENV": "ACME_KEYS"},
            "tenants[0] (LONGREAD_TENANTS__ACME__API_KEYS_ENV): 'acme' has no API keys",
        ),
    ],
)
def test_an_environment_error_names_the_setting_and_the_variable(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    assert error(config_file(tmp_path), {"MY_KEY": "k", **env}).startswith(line)


def test_a_json_error_does_not_echo_the_value() -> None:
    assert "sk-secret" not in error(None, {"LONGREAD_UPSTREAMS": '[{"api_key": sk-secret}]'})


def test_a_file_error_names_the_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, "[cache]\nttl_s = -1\n")
    assert error(path, {}) == f"cache.ttl_s (in {path}): must be positive"
    path = config_file(tmp_path, "[server]\nbogus = 1\nworse = 2\n")
    assert error(path, {}) == f"server.bogus (in {path}): unknown setting (nor worse)"
    missing = tmp_path / "missing.toml"
    assert error(missing, {}) == f"config file {missing}: cannot read it: No such file or directory"
    assert error(None, {"LONGREAD_CONFIG": str(missing)}).startswith(
        f"config file {missing} (LONGREAD_CONFIG): cannot read it"
    )


def test_other_longread_variables_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As Kubernetes sets them for a Service named longread.
    env = {"LONGREAD_PORT": "tcp://10.0.0.1:50051", "LONGREAD_SERVICE_HOST": "10.0.0.1"}
    with caplog.at_level("WARNING", logger="longread_server.config"):
        assert load_config(None, env).listen == "127.0.0.1:50051"
    assert len(caplog.records) == 2
