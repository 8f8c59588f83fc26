"""Helpers shared by benchmarks: deterministic corpora and timing.

The corpora are generated here from a seeded generator over small hand-written vocabularies,
so every run measures the same bytes and nothing is copied from elsewhere.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

S = TypeVar("S")
T = TypeVar("T")

_EN_WORDS = """
the of and to in a is that for it as was with be by on not he i this are or his from at which
but have an they you were her she there been one all we their has would when if so no will can
more other its into time only some could them these may than then new about also two any very
what first people over after most made such where through back years much before your should
way well down because each just those how too own good while both being under long same again
never here world last still great might since day life system between part house without place
around however work number small many every case left public given high end point water city
group report market river country night question often along order light change early young
state field power level table model change method result early history plan form story series
study letter member center course family voice answer road reason figure paper office moment
window garden village engine bridge silver valley winter summer morning evening station doctor
teacher student council program project process season record energy market network signal
careful quiet bright simple common recent certain strong heavy narrow ancient modern local
measure carry follow provide consider remain become include continue allow appear suggest
believe explain describe require produce return reach decide support develop improve report
slowly quickly finally rarely nearly almost perhaps clearly simply easily directly together
""".split()

_EN_NAMES = "Ada Brook Carter Dana Ellis Flynn Grace Harper Iris Jonah Kira Lowell Mara".split()

_ZH_WORDS = """
我们 他们 今天 明天 时间 问题 发展 经济 社会 国家 城市 人民 工作 生活 学习 研究 历史 文化
世界 方法 技术 系统 数据 分析 结果 过程 环境 能力 关系 教育 学生 老师 学校 朋友 家庭 孩子
市场 企业 公司 产品 服务 管理 政策 计划 项目 资源 信息 网络 科学 知识 语言 文字 文章 故事
重要 主要 必要 一般 特别 非常 已经 正在 可能 应该 需要 认为 觉得 希望 开始 继续 完成
提高 增加 减少 保持 改变 影响 提供 支持 参加 组织 建立 形成 表示 说明 发现 解决 进行 利用
山上 河边 天空 春天 夏天 秋天 冬天 早上 晚上 中午 雨水 风景 道路 桥梁 村庄 工厂 医院 车站
清楚 简单 复杂 安静 热闹 美丽 古老 现代 传统 普通 明显 长期 短期 全面 基本 具体 实际 共同
而且 但是 因为 所以 虽然 如果 然后 同时 还是 或者 不过 于是 甚至 尤其 总之 其实 当然 另外
一个 这些 那些 每个 许多 几个 各种 一些 所有 任何 自己 大家 别人 这里 那里 哪里 什么 怎么
""".split()

_ZH_OPEN_CLOSE = [("\u300c", "\u300d"), ("\u201c", "\u201d"), ("\u300e", "\u300f")]
_ZH_ENDS = ["\u3002"] * 15 + ["\uff01"] * 2 + ["\uff1f"] * 2 + ["\uff1b"] * 2


def _zipf_weights(n: int) -> list[float]:
    return [1.0 / (i + 1) ** 0.9 for i in range(n)]


def _english_sentences(rng: random.Random) -> Callable[[], str]:
    """A maker of English-like sentences: Zipf-weighted words, some names, numbers and
    decimals, a few commas, semicolons and colons; some quoted, some questions."""
    words, weights = _EN_WORDS, _zipf_weights(len(_EN_WORDS))

    def sentence() -> str:
        n = max(4, int(rng.gammavariate(4.0, 4.5)))
        ws = rng.choices(words, weights, k=n)
        if rng.random() < 0.15:
            ws[rng.randrange(n)] = rng.choice(_EN_NAMES)
        if rng.random() < 0.1:
            ws.insert(rng.randrange(n), f"{rng.randint(2, 2030)}")
        if rng.random() < 0.05:
            ws.insert(rng.randrange(n), f"{rng.randint(1, 99)}.{rng.randint(0, 9)}")
        out = []
        for i, w in enumerate(ws):
            out.append(w)
            if 2 < i < n - 2 and rng.random() < 0.07:
                out[-1] += rng.choice([",", ",", ",", ";", ":"])
        text = " ".join(out)
        text = text[0].upper() + text[1:]
        r = rng.random()
        if r < 0.08:
            return text + "?"
        if r < 0.12:
            return text + "!"
        if r < 0.17:
            return f'"{text}."'
        if r < 0.19:
            return f"({text}.)"
        return text + "."

    return sentence


def _wrap(text: str, width: int = 72) -> list[str]:
    lines, line = [], ""
    for w in text.split(" "):
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return lines


def english_corpus(size: int = 1_000_000, seed: int = 7, wrapped: float = 0.25) -> str:
    """~``size`` characters of English-like markdown: chapters, sections, paragraphs of
    sentences (some quoted, some questions), a few lists; a ``wrapped`` share of sections is
    hard-wrapped at 72 columns like plain-text documents."""
    rng = random.Random(seed)
    words, weights = _EN_WORDS, _zipf_weights(len(_EN_WORDS))
    sentence = _english_sentences(rng)

    def paragraph(wrap: bool) -> str:
        text = " ".join(sentence() for _ in range(rng.randint(2, 9)))
        return "\n".join(_wrap(text)) if wrap else text

    def title(k: int) -> str:
        return " ".join(w.capitalize() for w in rng.choices(words, weights, k=k))

    blocks: list[str] = []
    total, chapter = 0, 0
    while total < size:
        if not blocks or rng.random() < 0.1:
            chapter += 1
            blocks.append(f"# Chapter {chapter}: {title(3)}")
        blocks.append(f"## {title(rng.randint(2, 5))}")
        wrap = rng.random() < wrapped
        for _ in range(rng.randint(3, 14)):
            if rng.random() < 0.04:
                blocks.append("\n".join(f"- {title(rng.randint(2, 6)).lower()}" for _ in range(4)))
            blocks.append(paragraph(wrap))
        total = sum(len(b) + 2 for b in blocks)
    return "\n\n".join(blocks)[:size].rstrip() + "\n"


def paged_corpus(size: int = 1_000_000, seed: int = 13, page_lines: int = 44) -> str:
    """~``size`` characters of English-like prose as text extracted from a PDF of a book:
    paragraphs hard-wrapped at 72 columns (some set apart by a blank line), chapters
    starting on a new page, and pages of ``page_lines`` lines separated by a form feed, each
    with a running header (the book's title on even pages, the chapter's on odd ones, the page
    number on the outer side) and a footer page number in one of the usual forms. Sentences and
    paragraphs run on over page breaks as they fall."""
    rng = random.Random(seed)
    words, weights = _EN_WORDS, _zipf_weights(len(_EN_WORDS))
    sentence = _english_sentences(rng)
    book = " ".join(w.upper() for w in rng.choices(words, weights, k=3))
    footers = ["{n}", "- {n} -", "Page {n}", "{n} of {total}", "\u2014 {n} \u2014"]
    footer = rng.choice(footers)
    total = size // (page_lines * 60)
    body: list[tuple[str, str]] = []  # (chapter title, line); "" lines are paragraph gaps
    chapter, count = 0, 0
    while count < size:
        chapter += 1
        title = " ".join(w.capitalize() for w in rng.choices(words, weights, k=3))
        body.append((title, f"\fCHAPTER {chapter}"))
        body.append((title, ""))
        body.append((title, title.upper()))
        body.append((title, ""))
        for _ in range(rng.randint(12, 40)):
            lines = _wrap(" ".join(sentence() for _ in range(rng.randint(2, 8))))
            body.extend((title, line) for line in lines)
            count += sum(len(line) + 1 for line in lines)
            if rng.random() < 0.3:
                body.append((title, ""))
    pages: list[str] = []
    page: list[str] = []
    title = ""
    for chapter_title, line in body:
        if line.startswith("\f") or len(page) == page_lines:
            if page:
                pages.append(_page(page, len(pages) + 1, book, title, footer, total))
            page = []
            line = line.removeprefix("\f")
        title = chapter_title
        if page or line:
            page.append(line)
    pages.append(_page(page, len(pages) + 1, book, title, footer, total))
    return "\f".join(pages) + "\f"


def _page(lines: list[str], n: int, book: str, chapter: str, footer: str, total: int) -> str:
    head = f"{n}{' ' * 8}{book}" if n % 2 == 0 else f"{chapter}{' ' * 8}{n}"
    foot = footer.format(n=n, total=total).center(72).rstrip()
    return "\n".join([head, "", *lines, "", foot]) + "\n"


def chinese_corpus(size_bytes: int = 300_000, seed: int = 11, full_stop: str = "\u3002") -> str:
    """~``size_bytes`` UTF-8 bytes of Chinese-like text with no newlines: sentences of clauses
    ending in ``full_stop`` (the ideographic full stop, or the fullwidth one some texts use),
    exclamation/question marks or semicolon, some quoted."""
    rng = random.Random(seed)
    words, weights = _ZH_WORDS, _zipf_weights(len(_ZH_WORDS))
    clause_marks = ["\uff0c"] * 8 + ["\u3001", "\uff1a"]
    ends = [full_stop if e == "\u3002" else e for e in _ZH_ENDS]
    parts: list[str] = []
    total = 0
    while total < size_bytes:
        clauses = [
            "".join(rng.choices(words, weights, k=rng.randint(2, 7)))
            for _ in range(rng.randint(1, 4))
        ]
        body = "".join(c + rng.choice(clause_marks) for c in clauses[:-1]) + clauses[-1]
        end = rng.choice(ends)
        if rng.random() < 0.12:
            opening, closing = rng.choice(_ZH_OPEN_CLOSE)
            sentence = f"{opening}{body}{end}{closing}"
        else:
            sentence = body + end
        parts.append(sentence)
        total += len(sentence.encode())
    return "".join(parts)


@dataclass
class Contender(Generic[S, T]):
    """Something to time: ``run(setup())``, with ``setup`` untimed (fresh memo caches)."""

    name: str
    run: Callable[[S], T]
    setup: Callable[[], S]
    runs: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    result: T | None = None

    def once(self) -> None:
        state = self.setup()
        w0, c0 = time.perf_counter(), time.process_time()
        self.result = self.run(state)
        self.cpu.append(time.process_time() - c0)
        self.wall.append(time.perf_counter() - w0)

    def timing(self) -> dict[str, float]:
        return {
            "seconds": round(min(self.wall), 4),
            "median_seconds": round(statistics.median(self.wall), 4),
            "cpu_seconds": round(min(self.cpu), 4),
        }


def race(contenders: Sequence[Contender[Any, Any]]) -> None:
    """Runs the contenders round-robin, one run each per round until each has had its runs,
    so a noisy moment on a shared machine hits all of them alike."""
    for round_ in range(max(c.runs for c in contenders)):
        for c in contenders:
            if round_ < c.runs:
                c.once()
