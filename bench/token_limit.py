"""Refusing a document over the token limit: counting stops at the limit.

A ~5M-character Chinese text (~4.9M tokens) against the default limit of 2M tokens: the
time and peak memory of encoding it whole (what refusing it used to cost) beside those of
``Tokenizer.encode_at_most``, which raises as soon as the count passes the limit. Each is
measured in a child process of its own, so the peaks do not mix; best of ``RUNS``.
Prints one JSON object. Run: python -m bench.token_limit
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import time

from bench._common import chinese_corpus

RUNS = 3
LIMIT = 2_000_000
CHINESE_BYTES = 15_000_000  # ~5M characters


def measure(way: str) -> dict[str, float]:
    """One measurement in this process: seconds and peak RSS growth of ``way``."""
    from longread_server.plan.tokenizers import TooManyTokens, get_tokenizer

    text = chinese_corpus(CHINESE_BYTES)
    tok = get_tokenizer("cl100k_base")
    tok.encode("warm up")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    tokens = -1
    if way == "whole":
        tokens = len(tok.encode(text))
    else:
        with contextlib.suppress(TooManyTokens):
            tokens = len(tok.encode_at_most(text, LIMIT))
    seconds = time.perf_counter() - t
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"chars": len(text), "tokens": tokens, "seconds": seconds, "peak_rss_mb": peak_mb}


def main() -> dict[str, object]:
    out: dict[str, object] = {"benchmark": "token_limit", "limit": LIMIT}
    for way in ("whole", "bounded"):
        runs = [
            json.loads(
                subprocess.run(
                    [sys.executable, "-m", "bench.token_limit", "--one", way],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            for _ in range(RUNS)
        ]
        best = min(runs, key=lambda r: r["seconds"])
        out[way] = {
            "chars": best["chars"],
            "tokens": best["tokens"],  # -1: refused before the end
            "seconds": round(best["seconds"], 3),
            "peak_rss_mb": round(min(r["peak_rss_mb"] for r in runs), 1),
        }
    whole, bounded = out["whole"], out["bounded"]
    assert isinstance(whole, dict) and isinstance(bounded, dict)
    out["refusal_time_ratio"] = round(bounded["seconds"] / whole["seconds"], 3)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(measure(sys.argv[2])))
    else:
        print(json.dumps(main()))
