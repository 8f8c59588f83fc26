"""The Helm chart's values.yaml documents every value, and every value is used by a template
(`make chart` renders and validates the chart itself)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "longread"
KEY = re.compile(r"^( *)([A-Za-z_][\w-]*):(.*)$")


@dataclass
class Key:
    path: str
    line: int
    documented: bool  # a comment directly above it
    section: bool  # a map whose keys follow on the next lines


def read_keys(text: str) -> list[Key]:
    """The keys of a values file, without a YAML parser: by indentation, skipping the text of
    block scalars and of documented maps (their keys are the value's data, e.g. a Secret's keys)."""
    keys: list[Key] = []
    stack: list[tuple[int, str]] = []  # (indent, name) of the enclosing keys
    skip_deeper_than: int | None = None
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if line.lstrip().startswith("#"):
            continue
        m = KEY.match(line)
        assert m, f"values.yaml line {n + 1} is not a key: {line!r}"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name, value = m.group(2), m.group(3).strip()
        path = ".".join([s for _, s in stack] + [name])
        prev = next((p for p in reversed(lines[:n]) if p.strip()), "")
        documented = prev.lstrip().startswith("#") and n > 0 and bool(lines[n - 1].strip())
        section = value == ""
        keys.append(Key(path, n + 1, documented, section))
        if value.startswith("|") or (section and documented):
            skip_deeper_than = indent
        elif section:
            stack.append((indent, name))
    return keys


def test_every_value_is_documented() -> None:
    undocumented = [
        f"{k.path} (line {k.line})"
        for k in read_keys((CHART / "values.yaml").read_text())
        if not k.documented and not k.section
    ]
    assert not undocumented, f"values without a comment above them: {undocumented}"


def test_every_value_is_used_by_a_template() -> None:
    templates = "\n".join(p.read_text() for p in (CHART / "templates").iterdir())
    unused = []
    for k in read_keys((CHART / "values.yaml").read_text()):
        if k.section and not k.documented:
            continue  # its keys are checked one by one
        parts = k.path.split(".")
        # The key itself, or an enclosing map passed whole (toYaml .Values.resources).
        used = re.search(rf"\.Values\.{re.escape(k.path)}(?![\w])", templates) or any(
            re.search(rf"\.Values\.{re.escape('.'.join(parts[:i]))}(?![\w.])", templates)
            for i in range(1, len(parts))
        )
        if not used:
            unused.append(k.path)
    assert not unused, f"values no template reads: {unused}"


def test_read_keys() -> None:
    text = (
        "# -- a\na: 1\nsec:\n  # -- b\n  b: x\n  c: y\n"
        "# -- m\nm:\n  free: 1\nblock: |\n  not: a key\n"
    )
    got = {k.path: (k.documented, k.section) for k in read_keys(text)}
    assert got == {
        "a": (True, False),
        "sec": (False, True),
        "sec.b": (True, False),
        "sec.c": (False, False),
        "m": (True, True),
        "block": (False, False),
    }
