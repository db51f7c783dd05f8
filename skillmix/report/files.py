"""Every file of a run's ``report/``: the view model is built once from the summary, and
each renderer lays it out (summary.json, metrics.csv, report.md, report.html and the plots as
PNG files, the same images embedded in report.html)."""

from __future__ import annotations

import json

from skillmix.artifacts import Summary
from skillmix.report.answers import AnswerSet
from skillmix.report.csv_report import render_metrics_csv
from skillmix.report.html_report import render_html
from skillmix.report.markdown import render_markdown
from skillmix.report.plots import DEFAULT_DPI
from skillmix.report.view import report_view
from skillmix.store.layout import RunLayout


def report_files(
    summary: Summary, *, dpi: int = DEFAULT_DPI, answers: AnswerSet | None = None
) -> dict[str, bytes]:
    """``answers``: every answer, for report.html's answer browser."""
    view = report_view(summary)
    page, images = render_html(summary, dpi=dpi, answers=answers, view=view)
    files = {
        RunLayout.SUMMARY: json.dumps(
            summary.model_dump(mode="json"), indent=2, ensure_ascii=False
        ).encode()
        + b"\n",
        RunLayout.METRICS_CSV: render_metrics_csv(view.metrics).encode(),
        RunLayout.REPORT_MD: render_markdown(
            summary, [(i.name, i.title) for i in images], view
        ).encode(),
        RunLayout.REPORT_HTML: page.encode(),
    }
    for image in images:
        files[RunLayout.plot(image.name)] = image.png
    return files
