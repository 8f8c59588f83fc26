"""The install test's program (the same in every language): Estimate, then Stream, of one file.

python main.py TARGET FILE QUESTION     (LONGREAD_API_KEY: the key)
"""

import os
import sys

from longread.client import Client, Options

target, path, question = sys.argv[1:4]
with open(path, encoding="utf-8") as f:
    text = f.read()
opts = Options(max_chunk_tokens=256, strategy="map_reduce")
with Client(target, api_key=os.environ["LONGREAD_API_KEY"], timeout=120) as client:
    est = client.estimate(text, question, options=opts)
    fit = sum(1 for m in est.candidates if m.fits_single_pass)
    calls, answer = 0, ""
    for event in client.stream(text, question, options=opts):
        if event.HasField("chunk_done"):
            calls += 1
        elif event.HasField("result"):
            answer = event.result.text
print(f"fit={fit} chunks={len(est.plan.chunks)} calls={calls} answer={len(answer)}")
