"""Math and multiple-choice scoring: SkyThought's verdicts, and a time limit that holds."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from skillmix.method.choices import choice_correct, multiple_choice_answer, shuffle_choices
from skillmix.method.math_answers import (
    convert_word_number,
    extract_answer,
    score_math,
    strip_answer_string,
)
from skillmix.method.math_equality import math_equal
from skillmix.pipeline.scoring import TIMED_OUT, score_math_answers, score_responses

AGREEMENT = Path(__file__).parent / "data" / "math_agreement.jsonl"


def test_verdicts_agree_with_skythought_on_the_held_out_set() -> None:
    """Cases written for the project; `skythought` is the verdict of SkyThought's own
    math_parsing_util (latex2sympy2 1.9.1, sympy 1.14), recorded once outside the repo."""
    cases = [json.loads(line) for line in AGREEMENT.read_text(encoding="utf-8").splitlines()]
    judged = [c for c in cases if isinstance(c["skythought"], bool)]
    assert len(judged) >= 300
    verdicts = score_math_answers([(c["response"], c["answer"]) for c in judged], 10.0, 2)
    differ = [
        f"{c['id']}: {c['response'][-60:]!r} vs {c['answer']!r}: skythought {c['skythought']}, "
        f"ours {v.correct} ({v.reason})"
        for c, v in zip(judged, verdicts, strict=True)
        if v.correct != c["skythought"]
    ]
    assert 1 - len(differ) / len(judged) >= 0.99, "\n".join(differ)


@pytest.mark.parametrize(
    ("response", "answer", "expected"),
    [  # SkyThought's tests/evals/tasks/test_math.py
        ("4", "4", True),
        ("5", "4", False),
        ("My reply is 0.75.", " 75%", True),
        ("The answer is $4.", "4.", True),
    ],
)
def test_skythought_published_cases(response: str, answer: str, expected: bool) -> None:
    assert score_math(response, answer).correct is expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [  # Qwen2.5-Math's math_equal examples, normalised as SkyThought does first
        ("0.0833333333333333", "\\frac{1}{12}", True),
        ("(1,4.5)", "(1,\\frac{9}{2})", True),
        ("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}", True),
        ("\\sec^2(y)", "\\tan^2(y)+1", True),
        (
            "\\begin{pmatrix}-\\frac{7}{4}&-2\\\\4&\\frac{1}{4}\\end{pmatrix}",
            "\\begin{pmatrix}-\\frac{7}{4}&-2\\\\4&\\frac{1}{4}\\end{pmatrix}",
            True,
        ),
        ("2", "3", False),
        ("[1,2)", "[1,3)", False),
    ],
)
def test_math_equal_published_examples(prediction: str, reference: str, expected: bool) -> None:
    assert math_equal(strip_answer_string(prediction), strip_answer_string(reference)) is expected


def test_extraction_prefers_the_last_balanced_box_then_phrases_then_numbers() -> None:
    assert extract_answer("\\boxed{1} then \\boxed{\\frac{\\sqrt{2}}{2}}") == "\\frac{\\sqrt{2}}{2}"
    assert extract_answer("so the answer is 12 apples") == "12apples"
    assert extract_answer("final answer is 7") == "7"
    assert extract_answer("we get 3 and then 1,024.") == "1024"
    assert extract_answer("nothing here") == ""
    assert score_math("nothing here", "5").reason == "No answer found."


def test_normalisation_follows_skythought() -> None:
    assert strip_answer_string("\\dfrac{1}{2}") == "\\frac{1}{2}"
    assert strip_answer_string("\\left( 1, 2 \\right)") == "(1,2)"
    assert strip_answer_string("30^\\circ") == "30"
    assert strip_answer_string("10\\text{ cm}") == "10"
    assert strip_answer_string("3,1,2") == "1,2,3"
    assert strip_answer_string("x = 5") == "5"
    assert convert_word_number("twenty-one") == "21"
    assert convert_word_number("007") == "7"
    assert convert_word_number("no solution") == "no solution"


def test_choice_letter_is_the_last_standalone_a_to_d() -> None:
    assert multiple_choice_answer("I think B, no wait, the answer is (C).") == "C"
    assert multiple_choice_answer("XYZ is the square.") == "XYZ is the square"
    assert multiple_choice_answer("it is a square") == "A"  # upper-cased first, as SkyThought
    assert choice_correct("Answer: D", "D")
    assert not choice_correct("Answer: D", "A")


def test_option_shuffle_is_fixed_by_seed_and_question() -> None:
    one = shuffle_choices("right", ["w1", "w2", "w3"], seed=7, key="q1")
    assert one == shuffle_choices("right", ["w1", "w2", "w3"], seed=7, key="q1")
    assert one.options[one.order.index(0)] == "right"
    assert one.options["ABCD".index(one.correct_letter)] == "right"
    assert sorted(one.options) == ["right", "w1", "w2", "w3"]
    letters = {shuffle_choices("r", ["a", "b", "c"], 7, f"q{i}").correct_letter for i in range(40)}
    assert letters == {"A", "B", "C", "D"}
    assert one.prompt_text().startswith("A) ")


def _my_scoring_workers() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(stat[1]) == os.getpid() and b"skillmix.pipeline.scoring" in cmd:
            found.append(int(entry.name))
    return found


def test_a_hanging_answer_times_out_within_the_limit_and_leaves_no_process() -> None:
    hostile = [("\\boxed{9^{9^{9^{9}}}}", "1"), ("\\boxed{(x+1)^{100000}}", "x")]
    start = time.monotonic()
    verdicts = score_responses(
        [("math", r, a) for r, a in hostile] + [("math", "\\boxed{2}", "2"), ("choice", "B", "B")],
        limit_s=2.0,
        workers=2,
    )
    elapsed = time.monotonic() - start
    assert [v.reason for v in verdicts[:2]] == [TIMED_OUT, TIMED_OUT]
    assert [v.correct for v in verdicts] == [False, False, True, True]
    assert elapsed < 2 * 2.0 + 12  # two hostile answers, plus start-ups on a busy machine
    assert _my_scoring_workers() == []
