"""Estimate of a 1M-token document over gRPC, beside a bare tiktoken encode of the same text.

Prints one JSON object: document tokens, chunks, best-of-N seconds for the Estimate RPC
(client -> gateway on loopback -> plan, no model call; a document the gateway has not seen
each time), and for one bare encode, and their ratio. Run: python -m bench.estimate
"""

from __future__ import annotations

import asyncio
import json
import time

from longread.client import AsyncClient, Options
from longread_sandbox.sample import DEMO_QUESTION, generate_report
from longread_server.app import start
from longread_server.config import load_config
from longread_server.plan.tokenizers import get_tokenizer

RUNS = 5


async def main() -> dict[str, object]:
    text = generate_report(5_100_000)
    tok = get_tokenizer("cl100k_base")
    encode_s = []
    for _ in range(RUNS):
        t = time.perf_counter()
        n = len(tok.encode(text))
        encode_s.append(time.perf_counter() - t)
    cfg = load_config(env={})
    cfg.listen = "127.0.0.1:0"
    gw = await start(cfg)
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}", timeout=60) as c:
            times = []
            for i in range(RUNS):
                # A document of its own each run: the gateway remembers recent long documents'
                # encodings, and this measures tokenizing and planning one it has not seen.
                doc = f"{text}\n\n(run {i})"
                t = time.perf_counter()
                r = await c.estimate(doc, DEMO_QUESTION, options=Options(model="gpt-4o-mini"))
                times.append(time.perf_counter() - t)
    finally:
        await gw.stop(0.5)
    return {
        "document_chars": len(text),
        "document_tokens": r.plan.document_tokens,
        "bare_encode_tokens": n,
        "chunks": len(r.plan.chunks),
        "estimate_s": round(min(times), 4),
        "estimate_s_median": round(sorted(times)[RUNS // 2], 4),
        "bare_encode_s": round(min(encode_s), 4),
        "estimate_over_encode": round(min(times) / min(encode_s), 2),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
