"""BM25 relevance of chunks to a question, for the select strategy. No model call.

Terms are lowercase words, plus single characters and bigrams of CJK runs (CJK text has no
spaces, so characters and their pairs stand in for words).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TERM = re.compile(rf"[^\W_{_CJK}]+|[{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]")

_STOP = frozenset(
    "a an and are as at be by did do does for from had has have how i in is it its of on or "
    "that the their there these this to was were what when where which who whom why will with "
    "you your about into than then they them so not no can could would should may".split()
)

K1 = 1.2
B = 0.75


def terms(text: str) -> list[str]:
    out: list[str] = []
    for m in _TERM.finditer(text.lower()):
        tok = m.group()
        if _CJK_RUN.match(tok):
            out.extend(tok)
            out.extend(tok[i : i + 2] for i in range(len(tok) - 1))
        elif tok not in _STOP:
            out.append(tok)
    return out


def bm25_scores(query: str, docs: Sequence[str]) -> list[float]:
    """The Okapi BM25 score of each of ``docs`` for ``query``."""
    wanted = set(terms(query))
    if not wanted or not docs:
        return [0.0] * len(docs)
    counts: list[Counter[str]] = []
    lengths: list[int] = []
    df: Counter[str] = Counter()
    for d in docs:
        ts = terms(d)
        lengths.append(len(ts))
        c = Counter(t for t in ts if t in wanted)
        counts.append(c)
        df.update(c.keys())
    n = len(docs)
    avg = (sum(lengths) / n) or 1.0
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in wanted}
    scores = []
    for c, length in zip(counts, lengths, strict=True):
        norm = K1 * (1 - B + B * length / avg)
        scores.append(sum(idf[t] * f * (K1 + 1) / (f + norm) for t, f in c.items()))
    return scores


def select(scores: Sequence[float], costs: Sequence[int], budget: int) -> list[int]:
    """The best-scoring items whose costs fit ``budget``, in their original order.

    Greedy by score (ties to the earlier item); an item that does not fit is skipped so
    smaller relevant items can still fill the budget. Items scoring zero are taken only when
    nothing scores above zero (then the document's opening is the best guess).
    """
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    any_relevant = any(s > 0 for s in scores)
    chosen: list[int] = []
    used = 0
    for i in order:
        if any_relevant and scores[i] <= 0:
            break
        if used + costs[i] <= budget:
            chosen.append(i)
            used += costs[i]
    return sorted(chosen)
