"""The sandbox's pure parts: the extractive answer, completion shaping, header formats, faults."""

from __future__ import annotations

import pytest
from longread_sandbox.answer import LEAD, NO_TEXT_LEAD, extractive_answer, sentences_of
from longread_sandbox.completion import shape_completion
from longread_sandbox.faults import Fault, FaultPlanner, parse_script
from longread_sandbox.ratelimit import go_duration, rfc3339, round_thousands
from longread_sandbox.tokens import Tokenizer

from .documents import ANSWER, DOC, PROMPT

TOKENIZER = Tokenizer()


def test_answer_quotes_the_best_matching_sentence() -> None:
    assert extractive_answer([("user", PROMPT)]) == ANSWER


def test_question_defaults_to_the_last_paragraph() -> None:
    answer = extractive_answer([("user", DOC + "\n\nWhat is the capital of Germany?")])
    assert answer == LEAD + "Berlin is the capital of Germany."


def test_instruction_line_anywhere_and_system_text_is_read() -> None:
    sources = [
        ("system", "The launch code is stored in the red binder."),
        ("user", "Instruction: say where the launch code is stored.\n\n" + DOC),
        ("assistant", "The launch code is stored in the blue box."),  # never quoted
    ]
    assert extractive_answer(sources) == LEAD + "The launch code is stored in the red binder."


def test_best_sentences_come_out_in_document_order() -> None:
    text = "Rivers flood in spring. Cats sleep. Rivers and floods shape valleys.\n\nRivers flood?"
    assert extractive_answer([("user", text)]) == (
        LEAD + "Rivers flood in spring. Rivers and floods shape valleys."
    )


def test_cjk_text_is_matched_by_characters_and_bigrams() -> None:
    text = "巴黎是法国的首都。柏林是德国的首都！东京很大。\n\n德国的首都是哪里？"
    assert extractive_answer([("user", text)]) == LEAD + "柏林是德国的首都！"


def test_no_match_falls_back_to_the_opening_sentences() -> None:
    answer = extractive_answer([("user", DOC + "\n\nSummarize.")])
    first_two = sentences_of(DOC)[:2]
    assert answer == LEAD + " ".join(first_two)


def test_no_text_at_all() -> None:
    assert extractive_answer([("user", "Hello there")]) == NO_TEXT_LEAD + "Hello there"


def test_sentence_splitting_keeps_decimals_and_quotes() -> None:
    assert sentences_of('It costs 3.5 euros. He said "yes." Then left!\nNext line?') == [
        "It costs 3.5 euros.",
        'He said "yes."',
        "Then left!",
        "Next line?",
    ]


def test_completion_stops_at_earliest_stop_sequence_then_length() -> None:
    done = shape_completion(
        "alpha beta gamma", max_tokens=100, stop=["gamma", "beta"], tokenizer=TOKENIZER
    )
    assert (done.text, done.finish, done.stop_sequence) == ("alpha ", "stop_sequence", "beta")
    cut = shape_completion("alpha beta gamma", max_tokens=1, stop=["gamma"], tokenizer=TOKENIZER)
    assert (cut.finish, cut.tokens, cut.stop_sequence) == ("length", 1, None)


@pytest.mark.parametrize("step", [1, 2, 3, 4, 7])
def test_stream_pieces_concatenate_to_the_text(step: int) -> None:
    text = "Ünïcödé and 中文字符 and emoji 🎉🎉 mixed."
    for limit in (3, 5, 8, 100):
        completion = shape_completion(text, max_tokens=limit, stop=(), tokenizer=TOKENIZER)
        pieces = completion.pieces(TOKENIZER, step)
        assert "".join(p for p, _ in pieces) == completion.text
        assert sum(n for _, n in pieces) == completion.tokens
        assert "\ufffd" not in completion.text


def test_go_durations_and_rfc3339() -> None:
    assert go_duration(0.012) == "12ms"
    assert go_duration(0.0001) == "1ms"
    assert go_duration(1) == "1s"
    assert go_duration(3.89) == "3.89s"
    assert go_duration(360) == "6m0s"
    assert go_duration(3725.5) == "1h2m5.5s"
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert round_thousands(159_976) == 160_000


def test_fault_parsing_and_precedence() -> None:
    assert Fault.parse("429") == Fault("status", 429)
    assert Fault.parse(" Timeout ").label == "timeout"
    with pytest.raises(ValueError, match="unknown sandbox fault"):
        Fault.parse("418")
    planner = FaultPlanner(script=parse_script(["500", None]))
    marked = [("user", "text [[sandbox-fault:529]]")]
    assert planner.choose("reset", marked) == Fault("reset")  # header first
    assert planner.choose(None, marked) == Fault("status", 529)  # then the marker
    assert planner.choose(None, [("user", "plain")]) == Fault("status", 500)  # then the script
    assert planner.choose(None, [("user", "plain")]) is None
    assert planner.choose(None, [("user", "plain")]) is None  # script used up, rate 0
