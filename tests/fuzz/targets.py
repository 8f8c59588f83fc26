"""The fuzz targets by name: each takes one input's bytes and raises (an AssertionError, or
whatever escaped the component) when a guarantee breaks. ``corpus/<name>/`` holds its seeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.fuzz import canonical, chunker, responses, sse

Target = Callable[[bytes], None]

TARGETS: dict[str, Target] = {
    "chunker": chunker.fuzz,
    "sse": sse.fuzz,
    "openai": responses.fuzz_openai,
    "anthropic": responses.fuzz_anthropic,
    "canonical": canonical.fuzz,
}

CORPUS = Path(__file__).parent / "corpus"


def corpus(name: str) -> list[Path]:
    return sorted(p for p in (CORPUS / name).iterdir() if p.is_file())
