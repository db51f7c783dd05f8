"""``metrics.csv``: one row per model and k with exact numbers (``repr`` of each float, so a
reader gets the very values of summary.json; empty where a value is undefined or unknown):
the metrics with their intervals, then the model id, the planned, done and failed records
of that k, and per metric the model's rank, score and the score's interval."""

from __future__ import annotations

import csv
import io

from skillmix.report.row_facts import FACT_COLUMNS, RANK_PARTS, RankFact
from skillmix.report.view import MetricsView


def _number(x: float | None) -> str:
    if x is None or x != x:
        return ""
    return repr(float(x))


def _rank(fact: RankFact | None) -> list[object]:
    if fact is None:
        return ["", "", "", ""]
    rank = "" if fact.rank is None else fact.rank
    return [rank, _number(fact.score), _number(fact.ci_low), _number(fact.ci_high)]


def render_metrics_csv(view: MetricsView) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["student", "grader", "k", "n", "unparsed"]
    for name in view.metrics:
        header += [f"{name}_mean", f"{name}_stderr", f"{name}_ci95_low", f"{name}_ci95_high"]
    header += list(FACT_COLUMNS)
    header += [f"{name}_{part}" for name in view.metrics for part in RANK_PARTS]
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
        facts = row.facts
        line += list(facts.counts()) if facts else [""] * len(FACT_COLUMNS)
        for name in view.metrics:
            line += _rank(facts.ranks.get(name) if facts else None)
        writer.writerow(line)
    return buf.getvalue()
