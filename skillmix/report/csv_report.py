"""``metrics.csv``: the metrics table with exact numbers (``repr`` of each float, so a
reader gets the very values of summary.json; empty where a value is undefined)."""

from __future__ import annotations

import csv
import io

from skillmix.report.view import MetricsView


def _number(x: float | None) -> str:
    if x is None or x != x:
        return ""
    return repr(float(x))


def render_metrics_csv(view: MetricsView) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["student", "grader", "k", "n", "unparsed"]
    for name in view.metrics:
        header += [f"{name}_mean", f"{name}_stderr", f"{name}_ci95_low", f"{name}_ci95_high"]
    writer.writerow(header)
    for row in view.rows:
        line: list[object] = [row.student, row.grader, row.k, row.n, row.unparsed]
        for cell in row.cells.values():
            line += [
                _number(cell.mean),
                _number(cell.stderr),
                _number(cell.ci_low),
                _number(cell.ci_high),
            ]
        writer.writerow(line)
    return buf.getvalue()
