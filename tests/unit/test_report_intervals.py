"""Intervals where the eye lands (issue 23): the ranked score's bootstrap interval, the
terminal's Wilson interval (no ± 0 at 0/1 and 1/1), heatmap cells' interval and small-n mark."""

from __future__ import annotations

import numpy as np

from skillmix.artifacts import LeaderboardCell, MetricValueJson, ModelRef, SkillRateRow, SkillRates
from skillmix.method.stats import bootstrap_mean_over_k, wilson_interval
from skillmix.report.html_analysis import rates_details
from skillmix.report.leaderboard import Entry, leaderboard
from skillmix.report.view import SMALL_N_MARK, board_view, cell_view, rate_cell_view


def test_the_score_interval_is_a_bootstrap_over_combinations_within_each_k() -> None:
    k2 = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    k3 = np.array([0.0, 0.0, 1.0, 0.0])
    ci = bootstrap_mean_over_k([k2, k3], 500, seed=3)
    assert ci is not None and ci == bootstrap_mean_over_k([k2, k3], 500, seed=3)
    score = (k2.mean() + k3.mean()) / 2
    assert ci[0] < score < ci[1] and ci[0] >= 0.0 and ci[1] <= 1.0
    assert bootstrap_mean_over_k([k2, k3], 0, seed=3) is None
    assert bootstrap_mean_over_k([np.ones(5)], 200, seed=0) == (1.0, 1.0)  # no variation


def _entry(name: str, values: dict[int, list[float]]) -> Entry:
    entry = Entry(name, "g", ks=sorted(values))
    for k, v in values.items():
        mean = sum(v) / len(v)
        cell = LeaderboardCell(mean=mean, stderr=0.1, ci95=[0.0, 1.0], n=len(v), unparsed=0)
        entry.metrics.setdefault("full_marks", {})[str(k)] = cell
        entry.samples.setdefault("full_marks", {})[k] = (
            np.arange(len(v), dtype=np.int64),
            np.asarray(v, dtype=float),
        )
    return entry


def test_leaderboard_rows_carry_their_score_interval() -> None:
    a = _entry("a", {2: [1, 1, 0, 1], 3: [1, 0, 0, 1]})
    b = _entry("b", {2: [0, 0, 1, 0], 3: [0, 0, 0, 1]})
    board = leaderboard([a, b], "full_marks", samples=300, seed=1)
    for row in board.rows:
        assert row.score_ci95 is not None and row.score is not None
        assert row.score_ci95[0] <= row.score <= row.score_ci95[1]
    view = board_view(board)
    low, high = view.rows[0].score_ci or (0.0, 0.0)
    assert view.rows[0].score_ci_text == f"[{low:.3f}, {high:.3f}]"
    assert "bootstrap interval of the mean over k" in view.note
    unsampled = leaderboard([a, b], "full_marks", samples=0)
    assert all(r.score_ci95 is None for r in unsampled.rows)


def test_the_terminal_cell_is_the_wilson_interval_not_a_collapsed_stderr() -> None:
    for successes, n in ((0, 1), (1, 1), (0, 30)):
        ci = wilson_interval(successes, n)
        assert ci is not None
        cell = cell_view(
            MetricValueJson(mean=successes / n, stderr=0.0 if n > 1 else None, ci95=list(ci)), n
        )
        assert cell.interval_text == f"{successes / n:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
        assert ci[1] - ci[0] > 0.1  # never ± 0


def test_heatmap_cells_show_their_interval_and_mark_a_small_n() -> None:
    small = rate_cell_view(0.0, 3, 5)
    assert small is not None and small.small and small.text == f"0.00 (n=3){SMALL_N_MARK}"
    assert small.ci_low is not None and small.ci_low < 1e-9 and (small.ci_high or 0) > 0.3
    large = rate_cell_view(1.0, 10, 5)
    assert large is not None and not large.small and SMALL_N_MARK not in large.text
    assert (large.ci_high or 0) > 1 - 1e-9 and large.ci_low is not None and large.ci_low < 0.8
    assert rate_cell_view(None, 0, 5) is None
    rates = SkillRates(
        columns=["a", "b"],
        models=[ModelRef(student="a", grader="g"), ModelRef(student="b", grader="g")],
        rows=[SkillRateRow(skill="metaphor", values=[0.0, 1.0], n=[3, 10], mean=0.5)],
        min_n=5,
    )
    html = str(rates_details(rates, "skill"))
    assert f'title="{small.title}"' in html and f'title="{large.title}"' in html
    assert html.count("small-n") == 1 and SMALL_N_MARK in html
