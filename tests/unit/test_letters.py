"""Issue 23: tie groups as a compact letter display, and Holm's adjustment over the pairwise
tests (the raw p kept beside the adjusted one)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from skillmix.artifacts import PairwiseResult
from skillmix.method.stats import compact_letters, holm_adjust
from skillmix.report.html_leaderboard import leaderboard_table
from skillmix.report.leaderboard import (
    LETTERS_NOTE,
    all_pair_tests,
    entries_from_rows,
    leaderboards,
    verdict_text,
)
from skillmix.report.markdown import leaderboard_markdown
from skillmix.report.view import board_view
from tests.unit.test_stats import row


def _chain() -> list[list[int]]:
    """a ties b, b ties c, a beats c: each neighbour 10 wins : 2 losses (raw p = 0.039), a
    against c 18 : 2."""
    n = 60
    a, b, c = (np.zeros(n, dtype=int) for _ in range(3))
    a[0:10] = 1
    b[11:13] = 1
    a[13:21] = b[13:21] = 1
    c[22:24] = 1
    a[30:50] = b[30:50] = c[30:50] = 1
    return [a.tolist(), b.tolist(), c.tolist()]


def test_holm_adjusts_step_down_and_keeps_untested_out_of_the_family() -> None:
    adjusted = holm_adjust([0.01, 0.04, 0.03, None])
    assert adjusted[3] is None
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])  # 3 x, 2 x, then monotone
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjust([]) == []


def test_letters_share_a_letter_exactly_when_not_different() -> None:
    assert compact_letters(3, [(0, 2)]) == ["a", "ab", "b"]  # the chain the issue describes
    assert compact_letters(3, []) == ["a", "a", "a"]
    assert compact_letters(3, [(0, 1), (0, 2), (1, 2)]) == ["a", "b", "c"]
    differs = {(0, 3), (0, 4), (1, 4), (2, 4)}
    letters = compact_letters(5, sorted(differs))
    for i, j in itertools.combinations(range(5), 2):
        shared = bool(set(letters[i]) & set(letters[j]))
        assert shared == ((i, j) not in differs), (i, j, letters)


def test_a_chain_of_ties_is_shown_as_overlapping_letter_groups() -> None:
    rows = [row(name, hits) for name, hits in zip("abc", _chain(), strict=True)]
    board = leaderboards(rows, samples=1000)[0]
    assert [(r.student, r.letters) for r in board.rows] == [("a", "a"), ("b", "ab"), ("c", "b")]
    view = board_view(board)
    assert view.has_letters and view.reading_note == LETTERS_NOTE
    assert "share a letter are not significantly different" in LETTERS_NOTE
    page = leaderboard_table(view, [("student", "student")])
    assert ">groups</th>" in page and 'data-letters="ab"' in page
    table = leaderboard_markdown(view, label_columns=[("student", "student")])
    assert table[0].startswith("| rank | groups | student |")
    assert table[3].startswith("| 2≈ | ab | b |")
    dumped = json.loads(board.model_dump_json())
    assert [r["letters"] for r in dumped["rows"]] == ["a", "ab", "b"]


def test_significance_is_decided_on_the_holm_adjusted_p() -> None:
    """Each neighbour wins 10 : 2 (raw p = 0.039 < 0.05, interval above 0): significant
    alone, not after Holm's adjustment over the three pairs (0.077)."""
    rows = [row(name, hits) for name, hits in zip("abc", _chain(), strict=True)]
    board = leaderboards(rows, samples=1000)[0]
    for pair in board.pairwise:
        assert pair.p_value is not None
        assert pair.p_value == pytest.approx(0.0386, abs=1e-4)  # the raw p is kept
        assert pair.p_adjusted == pytest.approx(2 * pair.p_value)
        assert pair.ci95 is not None and pair.ci95[0] > 0
        assert not pair.significant
    assert verdict_text(board.pairwise[0]).startswith("tied: +0.133")
    assert "p = 0.0386, Holm p = 0.0771" in verdict_text(board.pairwise[0])
    tests = all_pair_tests(entries_from_rows(rows), "full_marks", [2], samples=500, seed=0)
    assert set(tests) == {(0, 1), (0, 2), (1, 2)}
    assert tests[0, 2].significant and not tests[0, 1].significant


def test_a_pairwise_result_without_adjusted_p_writes_as_before() -> None:
    old = {
        "a": "x", "b": "y", "a_rank": 1, "b_rank": 2, "diff": 0.1, "ci95": [0.0, 0.2],
        "p_value": 0.5, "significant": False, "pairs": 4, "wins": 2, "losses": 1, "method": "m",
    }  # fmt: skip
    assert PairwiseResult.model_validate(old).model_dump(mode="json") == old
