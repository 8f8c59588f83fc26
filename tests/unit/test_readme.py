"""The README stays true: every TOML snippet in it is a config the gateway accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from longread_server.config import load_config

from tests.certs import make_certs

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = re.findall(r"```toml\n(.*?)```", README.read_text(), re.DOTALL)
ENV = {"ACME_KEYS": "k1,k2", "OPENAI_API_KEY": "sk", "ANTHROPIC_API_KEY": "ak"}


def test_readme_has_config_snippets() -> None:
    assert len(SNIPPETS) >= 4


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the TLS files the snippets name (load_config checks them)."""
    where = tmp_path_factory.mktemp("certs")
    make_certs(where)
    return where


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_config_snippet_loads(
    snippet: str, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(certs)
    path = certs / "longread.toml"
    path.write_text(snippet)
    load_config(path, ENV)
