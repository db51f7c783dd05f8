"""The terminal's metrics table (``skillmix aggregate``, ``report``, ``evaluate``): a rich
table laid out from the view model, so it shows the numbers report.md shows."""

from __future__ import annotations

from rich.table import Table

from skillmix.report.view import MetricsView

DEFAULT_TITLE = "SKILL-MIX metrics (mean ± stderr)"


def metrics_terminal_table(view: MetricsView, title: str = DEFAULT_TITLE) -> Table:
    """The reference's ``mean ± stderr`` per metric (its exact print in reference mode)."""
    table = Table(title=title)
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
