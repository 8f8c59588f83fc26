"""The image's inputs agree with each other: .dockerignore lets in what the Dockerfile copies and
keeps the rest out (read as the image builders read it, by deploy/image/check_build.py, which
`make image-check` uses to run the build), and the Dockerfile's version label is pyproject's."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _check_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_build", ROOT / "deploy/image/check_build.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


CB = _check_build()
RULES = CB.read_dockerignore(ROOT / ".dockerignore")


def test_dockerignore_matcher() -> None:
    rules = CB.read_dockerignore(ROOT / "nonexistent")
    assert rules == [] and not CB.ignored("anything", rules)
    star = CB._pattern_regex("*")
    assert star.match("a") and not star.match("a/b")
    assert CB._pattern_regex("**/x").match("x") and CB._pattern_regex("**/x").match("a/b/x")
    assert not CB._pattern_regex("a/*/c").match("a/b/b/c")
    # A later exception wins; a pattern that matches a parent directory matches its files.
    rules = [(False, star), (True, CB._pattern_regex("src"))]
    assert not CB.ignored("src/a/b.py", rules) and CB.ignored("other/b.py", rules)


def test_context_has_what_the_dockerfile_copies() -> None:
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    sources = [s for line in copied for s in line.split()]
    assert "requirements.lock" in sources and "server" in sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")][:20]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            assert not CB.ignored(rel, RULES), f"{rel} is copied by the Dockerfile but ignored"


def test_context_leaves_out_local_state() -> None:
    for rel in (
        ".venv/bin/python",
        "client/ts/node_modules/x/index.js",
        ".git/HEAD",
        ".tools/helm",
        "dist/longread-0.1.0-py3-none-any.whl",
        "server/longread_server/__pycache__/app.cpython-311.pyc",
        "server/longread.egg-info/PKG-INFO",
        ".mypy_cache/x.json",
        "client/go/go.mod",
        "tests/unit/test_config.py",
        "bench/overload.py",
        "deploy/longread.toml",
    ):
        assert CB.ignored(rel, RULES), f"{rel} would be in the build context"


def test_version_label_is_pyproject_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^ARG VERSION={re.escape(version)}$", dockerfile, re.M)
    assert re.search(r"^ARG PYTHON_DIGEST=sha256:[0-9a-f]{64}$", dockerfile, re.M)
