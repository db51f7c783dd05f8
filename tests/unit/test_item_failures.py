"""Issue 23: which rubric items fail most, per model (the length point, a skill, the topic?):
the method's pure function, the summary's section and its old-file compatibility."""

from __future__ import annotations

import pytest

from skillmix.artifacts.summary import ItemFailureCell, ItemFailureRow, ItemFailures
from skillmix.method.items import ITEM_GROUPS, ItemFailure, item_failures, item_group, worst_item
from skillmix.report.analysis import ReportAnswer, item_failure_section
from skillmix.report.item_view import item_failures_view


def test_rubric_positions_fall_into_the_four_groups() -> None:
    assert [item_group(j, 3) for j in range(6)] == [
        "skills",
        "skills",
        "skills",
        "topic",
        "sense",
        "length",
    ]


def test_failures_pool_the_skills_and_keep_each_other_item() -> None:
    answers = [
        (2, [1.0, 0.0, 1.0, 1.0, 0.0]),  # misses a skill and the length point
        (2, [1.0, 1.0, 1.0, 1.0, 0.0]),  # misses the length point
        (3, [0.0, 0.0, 1.0, 0.0, 1.0, 1.0]),  # misses two skills and the topic
        (2, [1.0, 1.0]),  # a point list of the wrong length: left out
    ]
    out = item_failures(answers)
    assert list(out) == list(ITEM_GROUPS)
    assert out["skills"] == ItemFailure(3.0, 7)
    assert out["topic"] == ItemFailure(1.0, 3)
    assert out["sense"] == ItemFailure(0.0, 3) and out["sense"].rate == 0.0
    assert out["length"].rate == pytest.approx(2 / 3)
    assert worst_item(out) == "length"


def test_a_mean_vote_counts_half_a_point_missed() -> None:
    out = item_failures([(1, [0.5, 1.0, 1.0, 2 / 3])])
    assert out["skills"].failed == 0.5 and out["length"].failed == pytest.approx(1 / 3)
    assert worst_item(out) == "skills"


def test_nothing_counted_or_nothing_failed_has_no_worst_item() -> None:
    assert item_failures([])["skills"].rate is None
    assert worst_item(item_failures([])) is None
    assert worst_item(item_failures([(1, [1.0, 1.0, 1.0, 1.0])])) is None


def _answer(student: str, k: int, voted: list[float] | None) -> ReportAnswer:
    unit = ReportAnswer(student, "g", k, 1, 0, "t", ["a", "b", "c"][:k], "x")
    unit.voted = voted
    return unit


def test_the_section_has_one_row_per_model_in_leaderboard_order() -> None:
    units = [
        _answer("a", 1, [1.0, 1.0, 1.0, 0.0]),
        _answer("b", 2, [0.0, 1.0, 1.0, 1.0, 1.0]),
        _answer("b", 2, None),  # no usable verdict: not counted
    ]
    section = item_failure_section(units, order=[("b", "g"), ("a", "g")])
    assert section is not None
    assert [(r.student, r.answers, r.worst) for r in section.rows] == [
        ("b", 1, "skills"),
        ("a", 1, "length"),
    ]
    assert section.rows[0].items["skills"].rate == 0.5
    assert item_failure_section([_answer("a", 1, None)]) is None
    view = item_failures_view(section)
    assert view is not None
    assert [c.text for c in view.rows[0].cells] == ["0.50 (1/2)", "0.00 (0/1)"] + ["0.00 (0/1)"] * 2
    assert view.rows[1].worst == "length (computed)"


def test_an_old_summary_has_no_section_and_no_view() -> None:
    assert item_failures_view(None) is None
    empty = ItemFailures(groups=list(ITEM_GROUPS), unit="u", rows=[])
    assert item_failures_view(empty) is None
    row = ItemFailureRow(
        student="s",
        grader="g",
        answers=1,
        items={"skills": ItemFailureCell(rate=0.25, failed=0.5, points=2)},
        worst="skills",
    )
    view = item_failures_view(ItemFailures(groups=list(ITEM_GROUPS), unit="u", rows=[row]))
    assert view is not None
    assert [c.text for c in view.rows[0].cells] == ["0.25 (0.5/2)", "—", "—", "—"]
