"""Exact counts for OpenAI's encodings, against two independent implementations.

A ~1M-token English text and a ~1M-token Chinese text (generated in ``bench._common``),
counted with the gateway's tokenizers (tiktoken's BPE; o200k_base over the ranks bpe-openai
ships) and with js-tiktoken, OpenAI's encodings reimplemented in JavaScript with ranks of its
own (installed by this benchmark from npm into a temporary folder, run with node). Also the
two encodings' ratio, which is why o200k models need their own counts. Prints one JSON
object. Run: python -m bench.token_counts
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from longread_server.plan.tokenizers import get_tokenizer

from bench._common import chinese_corpus, english_corpus

JS_TIKTOKEN = "js-tiktoken@1.0.21"
COUNT_JS = """
import { getEncoding } from "js-tiktoken";
import { readFileSync } from "fs";
const enc = getEncoding(process.argv[2]);
const text = readFileSync(process.argv[3], "utf8");
const t = Date.now();
const n = enc.encode(text, [], []).length;
console.log(JSON.stringify({ tokens: n, seconds: (Date.now() - t) / 1000 }));
"""


def js_counts(folder: Path, texts: dict[str, Path]) -> dict[str, Any]:
    """js-tiktoken's count of every text in each encoding, or why there is none."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return {"unavailable": "node and npm are needed"}
    subprocess.run(["npm", "init", "-y"], cwd=folder, capture_output=True, check=True)
    subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", JS_TIKTOKEN],
        cwd=folder,
        capture_output=True,
        check=True,
        timeout=300,
    )
    (folder / "count.mjs").write_text(COUNT_JS)
    out: dict[str, Any] = {}
    for name, path in texts.items():
        for encoding in ("o200k_base", "cl100k_base"):
            run = subprocess.run(
                ["node", "count.mjs", encoding, str(path)],
                cwd=folder,
                capture_output=True,
                text=True,
                check=True,
                timeout=900,
            )
            out[f"{name}/{encoding}"] = json.loads(run.stdout)
    return out


def main() -> dict[str, Any]:
    texts = {"english": english_corpus(4_200_000), "chinese": chinese_corpus(8_200_000)}
    out: dict[str, Any] = {"benchmark": "token_counts", "js_tiktoken": JS_TIKTOKEN}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = {}
        for name, text in texts.items():
            paths[name] = folder / f"{name}.txt"
            paths[name].write_text(text, encoding="utf-8")
        ours: dict[str, Any] = {}
        for name, text in texts.items():
            for encoding in ("o200k_base", "cl100k_base"):
                tok = get_tokenizer(encoding)
                tok.count("warm up")
                t = time.perf_counter()
                n = tok.count(text)
                ours[f"{name}/{encoding}"] = {
                    "tokens": n,
                    "seconds": round(time.perf_counter() - t, 3),
                }
        js = js_counts(folder, paths)
    out["chars"] = {name: len(text) for name, text in texts.items()}
    out["ours"] = ours
    out["js_tiktoken"] = js
    if "unavailable" not in js:
        out["equal"] = {key: ours[key]["tokens"] == js[key]["tokens"] for key in ours}
    out["cl100k_over_o200k"] = {
        name: round(ours[f"{name}/cl100k_base"]["tokens"] / ours[f"{name}/o200k_base"]["tokens"], 3)
        for name in texts
    }
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
