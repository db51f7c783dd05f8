"""``compare.md``: the comparison's view model (``report/compare_view.py``) as Markdown.

Only formats: every number, rank and difference comes from the ``Comparison``.
"""

from __future__ import annotations

from collections.abc import Sequence

from skillmix.artifacts import Leaderboard
from skillmix.identity import SETTING_LABELS
from skillmix.method.points import METRIC_TITLES
from skillmix.report.compare_view import Baseline, Comparison, plural, same_model_runs, setting_keys
from skillmix.report.leaderboard import LETTERS_NOTE
from skillmix.report.markdown import leaderboard_markdown, md_escape, md_table, plot_lines
from skillmix.report.markup import fmt


def compare_markdown(doc: Comparison, plots: Sequence[tuple[str, str]] = ()) -> str:
    """The comparison as Markdown (compare.md and ``compare --format md``). ``plots``: (name,
    title) of the plots written next to the file (``plots/NAME.png``)."""

    lines = ["# SKILL-MIX comparison", ""]
    if doc.mixed:
        lines += [
            "> **Mixed settings**: these runs differ in "
            + ", ".join(SETTING_LABELS[k] for k in doc.settings_differ)
            + "; their numbers are not directly comparable.",
            "",
        ]
    lines += [
        f"{plural(len(doc.runs), 'run')}; ranked by {METRIC_TITLES[doc.rank_by]}.",
        "",
        "## Runs",
        "",
        *md_table(
            ["#", "run id", "kind", "numbers from", "created", "folder"],
            [
                [
                    r.index,
                    md_escape(r.run_id),
                    r.kind,
                    r.source,
                    r.created_at,
                    md_escape(r.run),
                ]
                for r in doc.runs
            ],
            numeric=[0],
        ),
        "",
    ]
    for board in doc.leaderboards:
        ks = ", ".join(map(str, board.ranked_over_ks)) or "none in common"
        lines += [
            f"## {board.title}",
            "",
            f"Ranked by the mean over k = {ks}; cells: mean ± stderr [95% Wilson interval]. "
            + LETTERS_NOTE,
            "",
            *leaderboard_markdown(
                marked_board(board),
                label_columns=[("model", "student"), ("run_label", "run"), ("grader", "grader")],
            ),
            "",
        ]
    if plots:
        lines += ["## Metrics vs k", "", *plot_lines(plots)]
    keys = setting_keys(doc.runs)
    lines += [
        "## Settings",
        "",
        *md_table(
            ["setting", *[f"run {r.index}" for r in doc.runs], "same?"],
            [
                [
                    SETTING_LABELS[k],
                    *[md_escape(r.settings.get(k, "unknown")) for r in doc.runs],
                    "no" if k in doc.settings_differ else "yes",
                ]
                for k in keys
            ],
        ),
        "",
    ]
    if doc.baseline is not None:
        lines += baseline_markdown(doc.baseline)
    return "\n".join(lines)


def _signed_text(x: float | None, digits: int = 3) -> str:
    """A difference with its sign, so that gains and losses read apart."""
    if x is None:
        return "—"
    text = fmt(x, digits)
    return "+" + text if x > 0 and text.strip("0.") else text


def baseline_markdown(view: Baseline) -> list[str]:
    """The differences section: per metric and k, per skill category, per skill."""
    lines = [
        f"## Differences from {md_escape(view.model)} (run #{view.run})",
        "",
        "Every entry minus the baseline ("
        + ("chosen with --baseline" if view.chosen == "--baseline" else "the leader")
        + "); positive: better than the baseline. Per skill and per category: the mean over "
        "the shared k values.",
        "",
    ]
    for block in view.metrics:
        ks = sorted({k for r in block.rows for k in r.per_k}, key=int)
        lines += [
            f"### {METRIC_TITLES[block.metric]}",
            "",
            *md_table(
                ["model", "run", *[f"k={k}" for k in ks], block.score_label or "mean over k"],
                [
                    [
                        md_escape(r.model),
                        f"#{r.run}",
                        *[_signed_text(r.per_k.get(k)) for k in ks],
                        _signed_text(r.mean),
                    ]
                    for r in block.rows
                ],
                numeric=range(2, len(ks) + 3),
            ),
            "",
        ]
    for title, rows in (("Per skill category", view.categories), ("Per skill", view.skills)):
        lines += [
            f"### {title}",
            "",
            *md_table(
                ["name", f"{md_escape(view.model)} (baseline)", *map(md_escape, view.columns)],
                [
                    [
                        md_escape(r.name),
                        fmt(r.baseline),
                        *[_signed_text(d, 2) for d in r.differences],
                    ]
                    for r in rows
                ],
                numeric=range(1, len(view.columns) + 2),
            ),
            "",
        ]
    return lines


def marked_board(board: Leaderboard) -> Leaderboard:
    """The board with "same model in run #N" after each run label where it applies (text)."""
    rows = [
        row.model_copy(
            update={
                "run_label": f"{row.run_label} (same model in run "
                + ", ".join(f"#{i}" for i in also)
                + ")"
            }
        )
        if also
        else row
        for row, also in zip(board.rows, same_model_runs(board), strict=True)
    ]
    return board.model_copy(update={"rows": rows})
