"""Intervals, exact ranks, paired tests and tie groups (method/stats.py, report/leaderboard.py)."""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import numpy as np
import pytest

from skillmix.artifacts import CombinationScores, LeaderboardCell, MetricRowJson, MetricValueJson
from skillmix.method.stats import (
    exact_sum,
    paired_test,
    sign_test_p,
    tie_groups,
    wilson_interval,
)
from skillmix.report.html_report import leaderboard_table
from skillmix.report.leaderboard import (
    Entry,
    competition_ranks,
    leaderboard,
    leaderboards,
    rank_text,
    verdict_text,
)
from skillmix.report.markdown import leaderboard_markdown


def test_wilson_interval_known_values_and_never_a_point() -> None:
    assert wilson_interval(0, 30) == pytest.approx((0.0, 0.11351), abs=1e-5)
    assert wilson_interval(5, 5) == pytest.approx((0.56551, 1.0), abs=1e-5)
    assert wilson_interval(42, 90) == pytest.approx((0.36708, 0.56898), abs=1e-5)
    assert wilson_interval(0, 0) is None
    for n in (1, 2, 10, 1000, 3, 7, 30, 90, 12345):
        for hits in (0, n):
            low, high = wilson_interval(hits, n) or (0.0, 0.0)
            assert high - low > 0
        # none correct: the lower bound is 0 exactly, not a rounding residue such as 5.6e-17
        # (it is printed in summary.json and metrics.csv); all correct: the upper is 1 exactly
        assert wilson_interval(0, n)[0] == 0.0  # type: ignore[index]
        assert wilson_interval(n, n)[1] == 1.0  # type: ignore[index]


def test_exact_sum_ignores_summation_order() -> None:
    values = np.array([1 / 3, 2 / 3, 0.5, 1 / 3, 1.0])
    assert exact_sum(values) == Fraction(17, 6)
    assert exact_sum(values[::-1]) == exact_sum(values)


def test_sign_test_exact_values() -> None:
    assert sign_test_p(5, 0) == pytest.approx(0.0625)  # 2 * (1/2)^5: not significant
    assert sign_test_p(6, 0) == pytest.approx(0.03125)
    assert sign_test_p(3, 3) == 1.0 and sign_test_p(0, 0) == 1.0
    # the large-n branch agrees with the exact one at the boundary
    assert sign_test_p(480, 521) == pytest.approx(
        float(2 * sum(__import__("math").comb(1001, i) for i in range(481)) / 2**1001), rel=1e-9
    )


def test_tie_groups_chain_untested_and_insignificant_gaps() -> None:
    assert tie_groups([True, False, None, True]) == [1, 2, 2, 2, 3]
    assert tie_groups([]) == [1]


def test_ties_share_a_rank_despite_float_noise() -> None:
    """42/90 and 42/90 are one rank even when the floats differ in the last bit."""
    noisy = sum([1 / 90] * 42)
    assert noisy != 42 / 90
    assert competition_ranks([Fraction(42, 90), Fraction(42, 90), Fraction(1, 2)]) == [2, 2, 1]

    def entry(name: str, mean: float, exact: str | None) -> Entry:
        cell = LeaderboardCell(
            mean=mean, stderr=0.05, ci95=[0.3, 0.6], exact=exact, n=90, unparsed=0
        )
        return Entry(student=name, grader="g", ks=[2], metrics={"full_marks": {"2": cell}})

    for exact in ("7/15", None):  # None: a summary.json written before `exact` existed
        board = leaderboard(
            [
                entry("a", 0.5, "1/2" if exact else None),
                entry("b", 42 / 90, exact),
                entry("c", noisy, exact),
            ],
            "full_marks",
        )
        assert [(r.student, r.rank) for r in board.rows] == [("a", 1), ("b", 2), ("c", 2)]
        # rows without per-combination values (older files) are not tested, and say so
        assert {p.method for p in board.pairwise} == {"not tested: per-combination values missing"}
        assert all(r.tied for r in board.rows)


def row(student: str, hits: list[int], k: int = 2) -> MetricRowJson:
    """A metric row whose combinations 0..n-1 score ``hits`` (0/1) on every metric."""
    n = len(hits)
    mean = sum(hits) / n
    value = MetricValueJson(
        mean=mean, stderr=0.01, ci95=[0.0, 1.0], exact=str(Fraction(sum(hits), n))
    )
    scores = [float(h) for h in hits]
    return MetricRowJson(
        student=student,
        grader="judge",
        k=k,
        n=n,
        unparsed=0,
        full_marks=value,
        all_skills=value,
        skill_fraction=value,
        combinations=CombinationScores(
            index=list(range(n)), full_marks=scores, all_skills=scores, skill_fraction=scores
        ),
    )


def test_a_clear_winner_is_significant_and_a_narrow_lead_is_a_tie() -> None:
    rng = np.random.default_rng(0)
    n = 200
    strong = (rng.random(n) < 0.8).astype(int)
    weak = (rng.random(n) < 0.2).astype(int)
    # 0.520 against 0.515: 104 and 103 of 200, differing on 41 combinations (21 : 20)
    a = np.zeros(n, dtype=int)
    b = np.zeros(n, dtype=int)
    a[:21] = 1
    b[21:41] = 1
    a[41:124] = 1
    b[41:124] = 1
    assert (a.sum(), b.sum()) == (104, 103)
    rows = [row("strong", strong.tolist()), row("weak", weak.tolist())]
    rows += [row("lead", a.tolist()), row("close", b.tolist())]
    board = leaderboards(rows, samples=500)[0]
    assert [r.student for r in board.rows] == ["strong", "lead", "close", "weak"]
    first, second, third = board.pairwise
    assert (first.a, first.b) == ("strong", "lead") and first.significant
    assert first.p_value is not None and first.p_value < 1e-3
    assert (second.a, second.b) == ("lead", "close") and not second.significant
    assert second.diff == pytest.approx(0.005) and (second.wins, second.losses) == (21, 20)
    assert second.ci95 is not None and second.ci95[0] < 0 < second.ci95[1]
    assert third.significant  # close (0.515) against weak (about 0.2)
    groups = {r.student: (r.tie_group, r.tied) for r in board.rows}
    assert groups == {
        "strong": (1, False),
        "lead": (2, True),
        "close": (2, True),
        "weak": (3, False),
    }
    assert [rank_text(r) for r in board.rows] == ["1", "2≈", "3≈", "4"]
    # lines around the tie group of two, none between single rows
    classes = re.findall(r"<tr(?: class=\"([^\"]*)\")?>", leaderboard_table(board, []))[1:]
    assert ["group-start" in c for c in classes] == [False, True, False, True]
    assert verdict_text(second).startswith("tied: +0.005")
    assert verdict_text(first).startswith("better: ")
    table = "\n".join(leaderboard_markdown(board, label_columns=[("student", "student")]))
    assert "2≈" in table and "tied: +0.005" in table and "mean over k = 2" in table
    page = leaderboard_table(board, [("student", "student")])
    assert 'data-tie-group="2"' in page and ">2≈<" in page and "tied: +0.005" in page
    assert 'data-significant="true"' in page and "n=200" in page


def test_paired_test_pairs_by_k_and_combination() -> None:
    """Only shared (k, combination) pairs count; the difference is the mean over k."""
    idx = np.arange(4, dtype=np.int64)
    a = {2: (idx, np.array([1.0, 1, 0, 0])), 3: (idx, np.array([1.0, 1, 1, 1]))}
    b = {
        2: (np.array([1, 2, 3, 9], dtype=np.int64), np.array([0.0, 0, 0, 1])),
        3: (idx, np.zeros(4)),
    }
    result = paired_test(a, b, [2, 3], samples=100)
    assert result.pairs == 3 + 4
    assert result.diff == pytest.approx((1 / 3 + 1.0) / 2)
    assert (result.wins, result.losses) == (5, 0) and not result.significant  # p = 0.0625
    assert result == paired_test(a, b, [2, 3], samples=100)  # deterministic


def test_runs_with_other_combinations_are_not_paired() -> None:
    rows = [row("a", [1] * 20), row("b", [0] * 20)]
    entries = []
    for design, r in zip(("seed 1", "seed 2"), rows, strict=True):
        from skillmix.report.leaderboard import entries_from_rows

        (e,) = entries_from_rows([r])
        e.design = design
        entries.append(e)
    board = leaderboard(entries, "full_marks")
    (pair,) = board.pairwise
    assert pair.p_value is None and not pair.significant
    assert pair.method.startswith("not tested: the runs used other combinations")
    assert all(r.tied for r in board.rows)  # no win is claimed without a test


def test_score_label_and_own_score_name_their_ks() -> None:
    rows = [row("a", [1, 0, 1, 1], k=2), row("a", [0, 0, 0, 1], k=3), row("b", [1, 1, 0, 0], k=2)]
    board = leaderboards(rows)[0]
    assert board.score_label == "mean over k = 2"
    a = next(r for r in board.rows if r.student == "a")
    assert a.score == 0.75 and a.own_score == pytest.approx(0.5)
    assert "k = 2" in board.ranking_note and "own k values" in board.ranking_note
    # the model's own score does not change when a model with fewer ks is added
    alone = leaderboards(rows[:2])[0]
    assert alone.rows[0].score == a.own_score and alone.ranking_note == ""


def test_many_small_wins_do_not_beat_equal_means() -> None:
    """The sign test alone would call 20 wins : 5 losses significant; the means are equal
    (20 x +0.25 against 5 x -1.0), so the interval includes 0 and there is no win."""
    idx = np.arange(25, dtype=np.int64)
    a = np.concatenate([np.full(20, 0.75), np.zeros(5)])
    b = np.concatenate([np.full(20, 0.5), np.ones(5)])
    result = paired_test({2: (idx, a)}, {2: (idx, b)}, [2], samples=2000)
    assert (result.wins, result.losses) == (20, 5) and result.p_value is not None
    assert result.p_value < 0.01
    assert result.diff == pytest.approx(0.0) and not result.significant


def test_a_ladder_of_close_models_is_not_one_tie_group() -> None:
    """Each model only slightly above the next (no adjacent test significant), but the top and
    the bottom far apart: a tie group holds only rows tied with its top row as well, so the
    leaderboard does not call the best and the worst model tied."""
    rng = np.random.default_rng(1)
    ladder = [0.8, 0.72, 0.64, 0.56, 0.48, 0.40, 0.32, 0.24]
    rows = [row(f"m{i}", (rng.random(80) < p).astype(int).tolist()) for i, p in enumerate(ladder)]
    board = leaderboards(rows, samples=300)[0]
    assert [r.student for r in board.rows] == [f"m{i}" for i in range(8)]
    assert not any(p.significant for p in board.pairwise)  # neighbours: never significant
    groups = [r.tie_group or 0 for r in board.rows]
    assert groups[0] == 1 and groups[-1] != 1 and groups == sorted(groups)
    assert all(r.tied for r in board.rows)  # every row is tied with its neighbour above
    top = {r.student for r in board.rows if r.tie_group == 1}
    assert "m1" in top and len(top) < 8
    # the page draws a line between tie groups where one of them holds several rows
    sizes = {g: groups.count(g) for g in groups}
    lines = sum(1 for a, b in itertools.pairwise(groups) if a != b and max(sizes[a], sizes[b]) > 1)
    page = leaderboard_table(board, [("student", "student")])
    starts = re.findall(r'<tr class="([^"]*)"', page)
    assert sum("group-start" in c for c in starts) == lines >= 1
