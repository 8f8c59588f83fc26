"""The facts a reuse must agree on: each kind of near miss is told apart, each kind of
rewording is not, in English and Chinese."""

from __future__ import annotations

import pytest
from longread_server.semantic.facts import Lexicon, agree, question_facts

DOC = (
    "Halvard's Northfield plant was delayed in March because a turbine supplier failed. "
    "The Southfield plant opened on time. Revenue in Q3 2024 rose 12% to $4.5 million; "
    "nausea affected 8% of patients on 50 mg and dizziness 3%. "
    "北田工厂因供应商问题延误，南田工厂按时投产。华东区营收增长，华南区下降。"
    "调整后7号线高峰间隔为4分钟。智能门锁和扫地机器人是两条产品线。"
)
LEXICON = Lexicon.of(DOC)


def same(a: str, b: str) -> bool:
    return agree(question_facts(a, LEXICON).signature(), question_facts(b, LEXICON).signature())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What was revenue in Q3?", "What was revenue in Q4?"),
        ("What was revenue in Q3?", "What was revenue in the fourth quarter?"),
        ("What was revenue in 2023?", "What was revenue in 2024?"),
        ("Why was the Northfield plant delayed?", "Why was the Southfield plant delayed?"),
        ("why was the northfield plant delayed?", "why was the southfield plant delayed?"),
        ("What are the top 3 risks?", "What are the top 5 risks?"),
        ("What is the dose in mg?", "What is the dose in g?"),
        ("Which obligations apply?", "Which obligations do not apply?"),
        ("Which region had the highest revenue?", "Which region had the lowest revenue?"),
        ("What caused the delay?", "What were the consequences of the delay?"),
        ("What was the nausea rate on 50 mg?", "What was the dizziness rate on 50 mg?"),
        ("Is version 2.3 affected by BUG-1234?", "Is version 2.3 affected by BUG-1235?"),
        ("What happened on May 5?", "What happened on May 6?"),
        ("What is the contribution per square foot?", "What is the total contribution?"),
        ("北田工厂为什么延误？", "南田工厂为什么延误？"),
        ("2023年华东区营收是多少？", "2024年华东区营收是多少？"),
        ("华东区营收是多少？", "华南区营收是多少？"),
        ("前三名客户是谁？", "前五名客户是谁？"),
        ("哪些义务适用？", "哪些义务不适用？"),
        ("营收最高的是哪个区域？", "营收最低的是哪个区域？"),
        ("公司计划在华南新开60家门店吗？", "公司计划在华南新开46家门店吗？"),
        ("J4路发车间隔是多少？", "J7路发车间隔是多少？"),
        ("调整前7号线高峰间隔多少？", "调整后7号线高峰间隔多少？"),
        ("2024年智能门锁营收多少？", "2024年扫地机器人营收多少？"),
        ("华北区域营收为什么下滑？", "华北区域营收下滑了多少？"),
        ("生鲜GMV同比增长多少？", "生鲜GMV环比增长多少？"),
        ("What was revenue growth year-on-year?", "What was revenue growth quarter-on-quarter?"),
        ("东湖区停水开始得比西城区早吗？", "东湖区停水开始得比西城区晚吗？"),
        ("计划在昆明新建仓库吗？", "计划在成都新建仓库吗？"),
        ("How many flights were cancelled?", "How many flights were cancelled because of weather?"),
        ("What is the adult dose?", "What are the doses for adults and children?"),
        ("What is the rent per year?", "What is the rent per month?"),
        ("Which plant was shut for 30 days?", "Which plant was shut for 30 weeks?"),
    ],
)
def test_near_misses_state_other_facts(a: str, b: str) -> None:
    assert not same(a, b)
    assert not same(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What caused the delay at the Northfield plant?", "Why was the Northfield plant delayed?"),
        ("What was revenue in Q3?", "How much revenue was there in the third quarter?"),
        ("What are the top 3 risks?", "What are the top three risks?"),
        ("What was revenue in fiscal year 2025?", "What was FY2025 revenue?"),
        ("What is the annual rent?", "How much is the rent per year?"),
        ("When did the Northfield plant restart?", "What date did the Northfield plant restart?"),
        ("北田工厂为什么延误？", "北田工厂延误的原因是什么？"),
        ("Summarize the main risks.", "What are the key risks?"),
    ],
)
def test_rewordings_state_the_same_facts(a: str, b: str) -> None:
    assert same(a, b)
    assert same(b, a)


def test_names_come_from_the_document() -> None:
    assert {"northfield", "southfield", "北田", "南田", "华东", "华南"} <= LEXICON.names
    # A period code is a period, never a name.
    assert "q3" not in LEXICON.names
    assert question_facts("northfield output?", LEXICON).names == {"northfield"}


def test_words_that_only_contain_a_negation_do_not_negate() -> None:
    assert not question_facts("各区域营收有什么不同？").negated
    assert not question_facts("是否需要召回？").negated
    assert question_facts("哪些产品没有召回？").negated


def test_agree_refuses_what_is_not_a_signature() -> None:
    good = question_facts("What was revenue in Q3?").signature()
    assert not agree(good, "garbage")
    assert not agree("a|b", good)
