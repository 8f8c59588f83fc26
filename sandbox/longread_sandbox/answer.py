"""The sandbox's "model": a deterministic extractive answer built from the prompt itself.

A mock provider that always says "lorem ipsum" makes demos and end-to-end tests useless: nobody
can tell whether the gateway sent the right chunk to the right call. So the sandbox answers
with the prompt sentences that best match the question, in document order. Same input, same
answer, every time, on every machine; and a test can check that the answer came from the text
it expected.

How: the question is the text after the last ``Question:``/``Instruction:`` line if there is
one, else the last paragraph of the last user message. Every other sentence of the system
prompt and the user messages is a candidate, scored by how many distinct question terms it
shares (lowercased words minus stopwords; CJK characters and character bigrams, since CJK text
has no spaces). Ties go to the earlier sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

LEAD = "Based on the text: "
NO_TEXT_LEAD = "There is no text to answer from. You asked: "
MAX_SENTENCES = 3
# When nothing matches the question at all, the opening sentences are the best summary.
FALLBACK_SENTENCES = 2
# Roles whose text the "model" reads; assistant turns are its own earlier output.
READABLE_ROLES = frozenset({"system", "developer", "user", "tool", "function"})

_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[^\W_{_CJK_RANGES}]+")
_CJK_RUN = re.compile(rf"[{_CJK_RANGES}]+")
_MARKER = re.compile(r"^[ \t]*(?:question|instruction)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# A sentence ends at Latin punctuation followed by whitespace (so "3.5" and "e.g.x" stay
# whole), at CJK punctuation (no space follows it), or at the end of the paragraph. Closing
# quotes and brackets stay with the sentence they close.
_SENTENCE = re.compile(
    r".+?(?:[.!?]+[\"'\u201d\u2019)\]]*(?=\s|$)|[\u3002\uff01\uff1f]+[\u300d\u300f\u201d\u2019\uff09)]*|$)",
    re.DOTALL,
)
_CJK_ENDINGS = frozenset("\u3002\uff01\uff1f\u300d\u300f\uff09")
_FAULT_MARKER = re.compile(r"\[\[sandbox-fault:[^\]]*\]\]")
# Prompt markup such as <document> or <notes part="3"> is structure, not content: a tag ends
# the sentence before it, and a lead from an earlier answer (a map note) is not repeated.
_LEAD_WORDS = LEAD.strip()
_MARKUP = re.compile(r"</?[A-Za-z_][\w-]*(?:\s[^<>\n]*)?>|" + re.escape(_LEAD_WORDS))

_STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves also may might must shall us per via
    according answer answers based briefly describe document documents explain give list
    mention mentioned passage please question say says show state states summarize summary
    tell text texts
    """.split()
)
_CJK_STOPCHARS = frozenset(
    "的了是在和与及或有我你他她它们这那吗呢啊吧么什哪谁怎样为请问也就都把被给对从而之其"
    "のはがをにでともたするか"
)


def extractive_answer(sources: Sequence[tuple[str, str]]) -> str:
    """Answer for a prompt given as ``(role, text)`` pairs in prompt order."""
    readable = [
        (role, _strip_markers(text)) for role, text in sources if role in READABLE_ROLES and text
    ]
    question, candidates = _split_question(readable)
    analysed = _dedupe(pair for text in candidates for pair in _analyse(text))
    if not analysed:
        return NO_TEXT_LEAD + " ".join(question.split())
    sentences = [sentence for sentence, _ in analysed]
    wanted = terms_of(question)
    scores = [len(wanted & terms) for _, terms in analysed]
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    best = scores[ranked[0]]
    if best == 0:
        chosen = list(range(min(FALLBACK_SENTENCES, len(sentences))))
    else:
        threshold = max(1, -(-best * 3 // 4))  # at least three quarters of the best score
        chosen = sorted(i for i in ranked[:MAX_SENTENCES] if scores[i] >= threshold)
    return LEAD + _join(sentences[i] for i in chosen)


def _join(sentences: Iterable[str]) -> str:
    """Sentences joined by a space, except after CJK punctuation (CJK text has no spaces)."""
    out = ""
    for s in sentences:
        out += s if not out or out[-1] in _CJK_ENDINGS else " " + s
    return out


def _strip_markers(text: str) -> str:
    if "[[sandbox-fault:" in text:
        text = _FAULT_MARKER.sub("", text)
    if "<" in text or _LEAD_WORDS in text:
        text = _MARKUP.sub("\n\n", text)
    return text


def _split_question(readable: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """The question and the texts left to answer from (question region cut out)."""
    texts = [text for _, text in readable]
    user_indexes = [i for i, (role, _) in enumerate(readable) if role == "user"]
    search_order = list(reversed(user_indexes)) + [
        i for i in range(len(readable)) if i not in user_indexes
    ]
    for i in search_order:
        found = _marked_question(texts[i])
        if found is not None:
            question, start, end = found
            texts[i] = texts[i][:start] + "\n\n" + texts[i][end:]
            return question, texts
    if not user_indexes:
        return "", texts
    last = user_indexes[-1]
    body = texts[last].rstrip()
    breaks = list(_PARAGRAPH_BREAK.finditer(body))
    cut = breaks[-1].end() if breaks else 0
    texts[last] = body[:cut]
    return body[cut:], texts


def _marked_question(text: str) -> tuple[str, int, int] | None:
    """``(question, region_start, region_end)`` for the last Question:/Instruction: line."""
    if ":" not in text:
        return None
    last = None
    for last in _MARKER.finditer(text):  # noqa: B007 - we want the last match
        pass
    if last is None:
        return None
    rest = text[last.end() :]
    lead = len(rest) - len(rest.lstrip())
    rest = rest[lead:]
    brk = _PARAGRAPH_BREAK.search(rest)
    question = rest[: brk.start()] if brk else rest
    if not question.strip():
        return None
    return question, last.start(), last.end() + lead + len(question)


def sentences_of(text: str) -> list[str]:
    """Sentences of ``text``; paragraphs never merge, line wraps inside one do."""
    out: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        flat = " ".join(paragraph.split())
        if flat:
            out.extend(s for m in _SENTENCE.finditer(flat) if (s := m.group().strip()))
    return out


def terms_of(text: str) -> set[str]:
    """Content terms: words (light plural folding) minus stopwords, CJK chars and bigrams."""
    low = text.lower()
    terms = {_fold(w) for w in _WORD.findall(low) if w not in _STOPWORDS}
    for run in _CJK_RUN.findall(low):
        terms.update(c for c in run if c not in _CJK_STOPCHARS)
        terms.update(run[i : i + 2] for i in range(len(run) - 1))
    return terms


def _fold(word: str) -> str:
    if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _dedupe(analysed: Iterable[_Analysed]) -> list[_Analysed]:
    """Drop repeated sentences (a document sent twice must not be quoted twice)."""
    seen: set[str] = set()
    out: list[_Analysed] = []
    for pair in analysed:
        if pair[0] not in seen:
            seen.add(pair[0])
            out.append(pair)
    return out


_Analysed = tuple[str, frozenset[str]]
# Long texts recur (the same document chunk under different questions), and splitting and
# scoring them costs milliseconds; their analysis is kept, bounded by total characters.
_MEMO_MIN_CHARS = 2048
_MEMO_MAX_CHARS = 2_000_000
_memo: dict[str, list[_Analysed]] = {}
_memo_chars = 0


def _analyse(text: str) -> list[_Analysed]:
    """Sentences of ``text`` with their terms; memoized for long texts."""
    global _memo_chars
    if len(text) < _MEMO_MIN_CHARS:
        return [(s, frozenset(terms_of(s))) for s in sentences_of(text)]
    cached = _memo.get(text)
    if cached is None:
        cached = [(s, frozenset(terms_of(s))) for s in sentences_of(text)]
        if len(text) <= _MEMO_MAX_CHARS // 4:
            while _memo and _memo_chars + len(text) > _MEMO_MAX_CHARS:
                oldest = next(iter(_memo))
                del _memo[oldest]
                _memo_chars -= len(oldest)
            _memo[text] = cached
            _memo_chars += len(text)
    return cached
