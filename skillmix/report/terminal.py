"""The terminal's metrics table (``skillmix aggregate``, ``report``, ``evaluate``): a rich
table laid out from the view model, so it shows the numbers report.md shows."""

from __future__ import annotations

from rich.table import Table

from skillmix.report.view import MetricsView

DEFAULT_TITLE = "SKILL-MIX metrics"


def metrics_terminal_table(view: MetricsView, title: str = DEFAULT_TITLE) -> Table:
    """Per metric ``mean [95% interval]``, the interval the report shows (in reference mode
    the reference's own ``mean ± stderr`` print); the title says which."""
    shown = "mean ± stderr, as the reference prints" if view.reference else "mean [95% interval]"
    table = Table(title=f"{title} ({shown})")
    for column in ("student", "grader", "k", "n"):
        table.add_column(column, justify="right" if column in ("k", "n") else "left")
    for metric_title in view.titles:
        table.add_column(metric_title, justify="right")
    table.add_column("unparsed", justify="right")
    for row in view.rows:
        table.add_row(
            row.student,
            row.grader,
            str(row.k),
            str(row.n),
            *row.terminal_cells(view.reference),
            str(row.unparsed),
        )
    table.caption = view.settings_caption
    return table
