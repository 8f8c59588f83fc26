"""A deterministic, generated sample document: the operations report of a fictional company.

Written by this project (no text copied from elsewhere). A few facts are planted at known
places so a demo or a test can ask about them and check that the answer finds them.
"""

from __future__ import annotations

import random

SITES = [
    "Northfield",
    "Ashgrove",
    "Ridgeway",
    "Lakeside",
    "Corran Bay",
    "Westmere",
    "Halden",
    "Brightwater",
    "Eastcliff",
    "Marrow Point",
    "Stonebridge",
    "Fenwick",
]
TOPICS = [
    ("logistics", "freight volumes", "delivery times", "warehouse capacity"),
    ("maintenance", "inspection rounds", "spare parts", "unplanned outages"),
    ("staffing", "training hours", "overtime", "new hires"),
    ("safety", "incident reports", "audits", "near misses"),
    ("energy", "electricity use", "heat recovery", "solar output"),
    ("procurement", "supplier contracts", "lead times", "price reviews"),
]
VERBS = ["rose", "fell", "held steady", "recovered", "improved", "slipped"]
CAUSES = [
    "a late delivery of replacement parts",
    "a new scheduling system",
    "heavy rain in the region",
    "a change of supplier",
    "an extended night shift",
    "a software upgrade at the depot",
    "a shortage of qualified technicians",
    "the reopening of the northern rail link",
]

# Facts a demo can ask about; each appears exactly once, in the section noted.
FACTS = {
    "northfield_delay": (
        "The commissioning of the second line at the Northfield plant was delayed by eleven "
        "weeks because the turbine bearings ordered in March failed their acceptance test."
    ),
    "q3_revenue": (
        "Revenue in the third quarter reached 48.2 million euros, the highest quarterly figure "
        "in the company's history."
    ),
    "ceo_successor": (
        "The board appointed Ingrid Valtonen as chief executive, effective the first of "
        "January, succeeding Tomas Reed."
    ),
}
DEMO_QUESTION = "Why was the commissioning at the Northfield plant delayed?"


def _sentence(rng: random.Random, site: str, topic: tuple[str, str, str, str]) -> str:
    area, a, b, c = topic
    pct = rng.randint(2, 19)
    kind = rng.randrange(4)
    if kind == 0:
        return f"At {site}, {a} {rng.choice(VERBS)} by {pct} percent after {rng.choice(CAUSES)}."
    if kind == 1:
        return (
            f"The {area} team at {site} reported that {b} {rng.choice(VERBS)}, "
            f"while {c} {rng.choice(VERBS)} over the same period."
        )
    if kind == 2:
        cause = rng.choice(CAUSES)
        return f"Managers expect {c} at {site} to change little until {cause} is resolved."
    return f"In {area}, {site} recorded {rng.randint(3, 480)} {b} and {pct} reviews of {a}."


def generate_report(target_chars: int = 600_000, seed: int = 7) -> str:
    """A markdown report of about ``target_chars`` characters, the same for the same seed."""
    rng = random.Random(seed)
    parts = ["# Annual Operations Report of Harbor & Vale Industrial\n"]
    section = 0
    planted = {k: False for k in FACTS}
    fact_at = {
        "q3_revenue": target_chars // 5,
        "northfield_delay": target_chars * 3 // 5,
        "ceo_successor": target_chars * 9 // 10,
    }
    size = len(parts[0])
    while size < target_chars:
        section += 1
        site = rng.choice(SITES)
        topic = rng.choice(TOPICS)
        heading = f"\n## {section}. {site}: {topic[0]}\n\n"
        parts.append(heading)
        size += len(heading)
        for _ in range(rng.randint(3, 6)):
            sentences = [_sentence(rng, site, topic) for _ in range(rng.randint(3, 7))]
            for key, at in fact_at.items():
                if not planted[key] and size >= at:
                    sentences.insert(rng.randrange(len(sentences) + 1), FACTS[key])
                    planted[key] = True
            para = " ".join(sentences) + "\n\n"
            parts.append(para)
            size += len(para)
    for key, done in planted.items():
        if not done:
            parts.append(FACTS[key] + "\n")
    return "".join(parts)


ZH_SITES = ["北原", "南湖", "西山", "东港", "青石", "白河", "金桥", "云岭"]
ZH_TOPICS = ["物流", "维修", "人员", "安全", "能源", "采购"]
ZH_VERBS = ["上升", "下降", "保持稳定", "有所恢复", "明显改善"]
ZH_CAUSES = ["新的排班制度", "零部件延迟交付", "地区持续降雨", "更换了供应商", "软件系统升级"]
ZH_FACT = "北原工厂第二条生产线的投产推迟了十一周，原因是三月订购的涡轮轴承未能通过验收测试。"
ZH_QUESTION = "北原工厂第二条生产线的投产为什么推迟？"


def generate_chinese_report(target_chars: int = 100_000, seed: int = 5) -> str:
    """A Chinese report without newlines (one long run of sentences), with ZH_FACT planted
    at about 60 % of its length."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    planted = False
    while size < target_chars:
        site, topic = rng.choice(ZH_SITES), rng.choice(ZH_TOPICS)
        kind = rng.randrange(3)
        if kind == 0:
            s = f"{site}的{topic}指标{rng.choice(ZH_VERBS)}了百分之{rng.randint(2, 19)}。"
        elif kind == 1:
            s = f"由于{rng.choice(ZH_CAUSES)}，{site}的{topic}团队调整了工作计划！"
        else:
            cause, verb = rng.choice(ZH_CAUSES), rng.choice(ZH_VERBS)
            s = f"管理层认为{site}的{topic}状况在{cause}之后将{verb}；"
        if rng.random() < 0.1:
            s = f"「{s}」"
        if not planted and size >= target_chars * 3 // 5:
            s += ZH_FACT
            planted = True
        parts.append(s)
        size += len(s)
    if not planted:
        parts.append(ZH_FACT)
    return "".join(parts)
