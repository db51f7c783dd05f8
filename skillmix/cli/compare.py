"""``skillmix compare``: a leaderboard across runs."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from skillmix.artifacts import MetricValueJson
from skillmix.cli._output import echo_json, format_option, info, stdout_console, warn
from skillmix.cli.options import choice_option, dpi_option, out_option
from skillmix.identity import SETTING_LABELS
from skillmix.method.points import METRIC_TITLES
from skillmix.report.compare import compare_runs
from skillmix.report.compare_files import compare_files
from skillmix.report.compare_view import Comparison
from skillmix.report.leaderboard import rank_text
from skillmix.report.markdown_compare import compare_markdown
from skillmix.report.view import board_view, cell_view


def _cell(cell: MetricValueJson | None) -> str:
    """``mean [95% interval]``, the view's texts (the report's Wilson interval)."""
    if cell is None or cell.mean is None:
        return "—"
    return cell_view(cell).interval_text


def compare_table(doc: Comparison) -> Table:

    primary, *others = doc.leaderboards
    others_by_entry = [
        {(r.run, r.student, r.grader): r.score for r in board.rows} for board in others
    ]
    table = Table(title=f"SKILL-MIX leaderboard: {primary.title} (mean [95% interval])")
    scores = {(r.run, r.student, r.grader): r for r in board_view(primary).rows}
    for column in ("rank", "model", "run", "grader"):
        table.add_column(column, justify="right" if column == "rank" else "left")
    for k in primary.ks:
        table.add_column(f"k={k}", justify="right")
    table.add_column(primary.score_label, justify="right")
    for board in others:
        table.add_column(f"{METRIC_TITLES[board.metric]} ({board.score_label})", justify="right")
    for row in primary.rows:
        key = (row.run, row.student, row.grader)
        extra = [scores.get(key) for scores in others_by_entry]
        table.add_row(
            rank_text(row),
            row.model,
            row.run_label,
            row.grader,
            *[_cell(row.cells.get(str(k))) for k in primary.ks],
            f"{shown.score_text} {shown.score_ci_text}".strip()
            if (shown := scores[key]).score is not None
            else "—",
            *[f"{x:.3f}" if x is not None else "—" for x in extra],
        )
    ks = ", ".join(map(str, primary.ranked_over_ks)) or "none in common"
    table.caption = (
        f"ranked by the mean over k = {ks}; equal scores share a rank; "
        "≈: statistically tied with a neighbour (paired test)"
        + (f"\n{primary.ranking_note}" if primary.ranking_note else "")
    )
    return table


@click.command("compare")
@click.argument("runs", nargs=-1, required=True)
@out_option("Write compare.html (self-contained), compare.md and compare.json into this folder.")
@click.option(
    "--allow-mixed",
    is_flag=True,
    help="Rank runs even when their settings differ (the differences are shown).",
)
@choice_option(
    "--rank-by",
    ["full_marks", "all_skills", "skill_fraction"],
    "full_marks",
    "Metric of the main leaderboard.",
)
@click.option(
    "--baseline",
    default=None,
    metavar="NAME",
    help="Show every model's differences from this one (per k, per skill, per skill category): "
    "a student name, or NAME@RUN (RUN: its 1-based position on the command line) when it is "
    "in several runs. Default: the leader.",
)
@dpi_option()
@format_option(("table", "json", "md"))
def compare_cmd(
    runs: tuple[str, ...],
    out: str | None,
    allow_mixed: bool,
    rank_by: str,
    baseline: str | None,
    dpi: int,
    fmt: str,
) -> None:
    """Rank the models of several runs in one leaderboard.

    RUNS are run folders (local or s3://): evaluations (their report/summary.json, or metrics
    computed from their records) and reference runs made by `skillmix import-reference`
    (scored with the reference aggregator's options). Runs whose settings differ (catalog,
    prompts, grader, rounds, M, k values, sampling, seed, metric options) are refused with
    the list of differences, unless --allow-mixed.
    """

    doc = compare_runs(runs, allow_mixed=allow_mixed, rank_by=rank_by, baseline=baseline)
    if doc.mixed:
        warn(
            "mixed settings ranked anyway: "
            + ", ".join(SETTING_LABELS[k] for k in doc.settings_differ)
        )
    for row in doc.leaderboards[0].rows:
        if row.excluded:
            warn(f"{row.model or row.student} ({row.run_label}): not ranked, {row.excluded}")
    if out:
        target = Path(out)
        target.mkdir(parents=True, exist_ok=True)
        for name, data in compare_files(doc, dpi=dpi).items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
    if fmt == "json":
        echo_json(doc.model_dump(mode="json"))
    elif fmt == "md":
        click.echo(compare_markdown(doc), nl=False)
    else:
        stdout_console().print(compare_table(doc))
    if out:
        info(f"comparison: {out.rstrip('/')}/compare.html (also compare.md, compare.json)")
