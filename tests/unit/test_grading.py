from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skillmix.method.grading import parse_grader_output, parse_points_output, parse_table_output

TABLE = """Sure.

Here's the grading table:

| Criteria | Points Earned |
|----------|---------------|
| Correctly illustrates metaphor | 1 |
| Correctly illustrates red herring | 0 |
| Pertains to Knots | 1/1 |
| Text makes sense | 1 point |
| At most one sentence | 0 |
| Total Points Earned | 3/5 |

Explanation: the table has a | pipe | 1 | inside the explanation too.
"""


def test_well_formed_table() -> None:
    parsed = parse_table_output(TABLE, k=2)
    assert parsed.points == (1.0, 0.0, 1.0, 1.0, 0.0)
    assert parsed.total == 3.0
    assert parsed.status == "ok" and parsed.ok


def test_table_uses_last_intro_and_first_explanation() -> None:
    text = "Here's the grading table:\n| a | 1 |\nHere's the grading table:\n| b | 0 |\n| c | 1 |\nExplanation: | d | 1 |"
    assert parse_table_output(text).points == (0.0, 1.0)


def test_table_without_intro_reads_whole_text() -> None:
    assert parse_table_output("| x | 1 |\n| y | 0 |").points == (1.0, 0.0)


def test_duplicate_keys_replace_value_but_keep_first_position() -> None:
    text = "| a | 1 |\n| b | 1 |\n| A | 0 |"
    assert parse_table_output(text).points == (0.0, 1.0)


def test_rows_the_reference_loses_are_lost_the_same_way() -> None:
    # a criterion containing "total" is taken as the total; "criteria" rows are skipped as headers
    text = "| Pertains to Total war | 1 |\n| Criteria of taste | 1 |\n| Text makes sense | 1 |"
    parsed = parse_table_output(text, k=0)
    assert parsed.points == (1.0,)
    assert parsed.total == 1.0
    assert parsed.status == "wrong_count"
    assert "1 points, expected 3" in parsed.detail


def test_malformed_cells_are_reported_not_raised() -> None:
    text = "| a | 1.0.0 |\n| b | |\n| c | yes |\n| d | 1 |\n| lonely |"
    parsed = parse_table_output(text, k=1)
    assert parsed.points == (1.0,)
    assert parsed.status == "wrong_count"
    assert "unreadable row" in parsed.detail


def test_empty_reply() -> None:
    parsed = parse_table_output("I cannot grade this.", k=2)
    assert parsed.points == () and parsed.status == "empty" and parsed.total is None


POINTS = """Contains metaphor: the hive is a city. Point earned: 1
Contains red herring: no. Point earned: 0/1
Pertains to Knots: yes Point earned: 1.
Text makes sense: Point earned:
1 point
At most one sentence: Point earned: n/a
Grade: 3.5 out of 5."""


def test_points_style() -> None:
    parsed = parse_points_output(POINTS, k=2)
    # "Point earned:" followed by a line break reads the next line's first token ("1")
    assert parsed.points == (1.0, 0.0, 1.0, 1.0, 0.0)
    assert parsed.total == 3.5
    assert parsed.status == "ok"


def test_points_style_total_is_first_number_after_last_grade() -> None:
    assert parse_points_output("Grade: 2\nGrade: about 4. ok").total == 4.0
    assert parse_points_output("Point earned: 1").total is None


def test_dispatch_on_style() -> None:
    assert parse_grader_output(TABLE, 2, "table").points == (1.0, 0.0, 1.0, 1.0, 0.0)
    assert parse_grader_output(POINTS, 2, "points").total == 3.5


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(
            list("|-/.:0123456789 abcTtotalcriteria\nHere's the grading table:Explanation")
        ),
        max_size=300,
    ),
    k=st.integers(1, 6),
)
def test_parsers_never_raise(text: str, k: int) -> None:
    for style in ("table", "points"):
        parsed = parse_grader_output(text, k, style)
        assert parsed.status in ("ok", "wrong_count", "empty")
        assert (parsed.status == "ok") == (len(parsed.points) == k + 3)


@pytest.mark.parametrize("value", ["1", " 1 ", "1/1", "**1**", "1.0", "1 (clear)"])
def test_table_value_forms(value: str) -> None:
    assert parse_table_output(f"| a | {value} |").points == (1.0,)
