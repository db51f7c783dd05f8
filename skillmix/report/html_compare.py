"""``compare.html``: the comparison's view model (``report/compare_view.py``) as one
self-contained page.

Only formats: every number, rank and difference comes from the ``Comparison``; the plots are
drawn from its leaderboards when the caller has not drawn them already.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from skillmix.artifacts import Leaderboard
from skillmix.identity import SETTING_LABELS
from skillmix.method.points import METRIC_TITLES
from skillmix.report.compare_view import (
    Baseline,
    Comparison,
    RunData,
    model_label,
    plural,
    run_of,
    same_model_runs,
    setting_keys,
)
from skillmix.report.figures import metric_images
from skillmix.report.html_leaderboard import leaderboard_table
from skillmix.report.leaderboard import LETTERS_NOTE
from skillmix.report.markup import Image, Safe, el, figure, fmt, number, page, table
from skillmix.report.plots import DEFAULT_DPI


def compare_html(
    doc: Comparison, *, dpi: int | None = None, images: Sequence[Image] | None = None
) -> str:
    """``images``: the metric plots when already drawn (else drawn here)."""

    if images is None:
        images = metric_images(doc.leaderboards, model_label, dpi or DEFAULT_DPI, prefix="compare")
    parts: list[Any] = []
    if doc.mixed:
        parts.append(mixed_banner(doc))
    parts += [
        runs_section(doc),
        leaderboards_section(doc),
        el(
            "section",
            el("h2", "Metrics vs k"),
            el("div", *[figure(i) for i in images], class_="plots"),
            id="plots",
        ),
        settings_section(doc),
    ]
    if doc.baseline is not None:
        parts.append(baseline_html(doc.baseline))
    nav = [
        ("runs", "Runs"),
        ("leaderboards", "Leaderboards"),
        ("plots", "Metrics vs k"),
        ("settings", "Settings"),
        *([("baseline", "Differences")] if doc.baseline is not None else []),
    ]
    subtitle = el(
        "div",
        f"{plural(len(doc.runs), 'run')} · ranked by {METRIC_TITLES[doc.rank_by]} · "
        f"compared {doc.compared_at}",
    )
    return page("SKILL-MIX comparison", subtitle, nav, parts, el("span", "skillmix compare"))


def mixed_banner(doc: Comparison) -> Safe:
    """The warning on top of a page that ranks runs whose settings differ."""
    return el(
        "div",
        el("strong", "Mixed settings: "),
        "these runs differ in "
        + ", ".join(SETTING_LABELS[k] for k in doc.settings_differ)
        + "; their numbers are not directly comparable.",
        class_="banner",
    )


def runs_section(doc: Comparison) -> Safe:
    """The compared runs in command-line order, each linked to its own report."""
    return el(
        "section",
        el("h2", "Runs"),
        table(
            ["#", "run id", "kind", "numbers from", "created", "folder", "report"],
            [
                [
                    r.index,
                    el("code", r.run_id),
                    r.kind,
                    r.source,
                    r.created_at,
                    el("code", r.run),
                    report_anchor(r),
                ]
                for r in doc.runs
            ],
            numeric=[0],
            caption=f"{plural(len(doc.runs), 'run')} in command-line order",
        ),
        id="runs",
    )


def leaderboards_section(doc: Comparison) -> Safe:
    """One leaderboard per metric, after a note on how to read them."""
    parts: list[Any] = [
        el("h2", "Leaderboards"),
        el(
            "p",
            "Ranked by the mean of the per-k values over the k values every entry has. Cells: "
            "mean ± standard error, with the 95% Wilson score interval below. "
            + LETTERS_NOTE
            + " A thick line separates tie groups of several rows.",
            class_="note",
        ),
    ]
    for board in doc.leaderboards:
        parts += [
            el("h3", board.title),
            leaderboard_table(  # captioned with the ks its score averages
                linked_board(board, doc),
                [("model", "student"), ("run_label", "run"), ("grader", "grader")],
            ),
        ]
    return el("section", *parts, id="leaderboards")


def settings_section(doc: Comparison) -> Safe:
    """Every compared setting per run, the ones that differ highlighted."""
    rows = []
    for key in setting_keys(doc.runs):
        label = SETTING_LABELS[key]
        differs = key in doc.settings_differ
        rows.append(
            el(
                "tr",
                el("th", label, scope="row"),
                *[el("td", r.settings.get(key, "unknown")) for r in doc.runs],
                el("td", "differs" if differs else "same"),
                class_="diff" if differs else None,
            )
        )
    head = el(
        "tr",
        el("th", "setting", scope="col"),
        *[el("th", f"run {r.index}", scope="col") for r in doc.runs],
        el("th", "same?", scope="col"),
    )
    return el(
        "section",
        el("h2", "Settings"),
        el(
            "table",
            el("caption", "The settings that change the numbers, per run"),
            el("thead", head),
            el("tbody", *rows),
            class_="settings",
        ),
        id="settings",
    )


def report_anchor(run: RunData) -> Safe | str:
    """A link to the run's own report.html, or a dash when it has none to open."""
    if run.report is None:
        return "—"
    return el("a", "report.html", href=run.report, class_="run-report")


def linked_board(board: Leaderboard, doc: Comparison) -> Leaderboard:
    """The board with each row's run cell as markup: a link to that run's report, and a
    badge when the same model is also in another compared run."""

    rows = []
    for row, also in zip(board.rows, same_model_runs(board), strict=True):
        run = doc.runs[run_of(row) - 1]
        label = el(
            "span",
            el("a", row.run_label, href=run.report, class_="run-report")
            if run.report
            else row.run_label,
            el(
                "span",
                "same model in run " + ", ".join(f"#{i}" for i in also),
                class_="badge same",
                title=f"{row.model_id or row.student} is also in run(s) "
                + ", ".join(f"#{i}" for i in also),
            )
            if also
            else None,
        )
        # the student's backend, model id and sampling have their own column
        rows.append(row.model_copy(update={"run_label": Safe(label)}))
    return board.model_copy(update={"rows": rows})


def _signed(x: float | None, digits: int = 3) -> Safe:
    """A difference cell: signed, coloured by its direction, sortable by its value."""
    if x is None:
        return el("td", "—", class_="num", data_value="null")
    text = fmt(x, digits)
    if not text.startswith("-") and text.strip("0.") != "":
        text = "+" + text
    cls = "num pos" if x > 0 else "num neg" if x < 0 else "num"
    return el("td", text.replace("-", "−"), class_=cls, data_value=number(x))


def baseline_html(view: Baseline) -> Safe:
    """The differences section: per metric and k, per skill category, per skill."""
    intro = el(
        "p",
        f"Every entry minus the baseline, {view.model} (run #{view.run}; "
        + (
            "chosen with --baseline"
            if view.chosen == "--baseline"
            else "the leader; choose another with compare --baseline NAME"
        )
        + "). Positive: better than the baseline. Per k: difference of the means over "
        "combinations; mean over k: difference of the leaderboard scores. Per skill: the mean "
        "voted skill point; per category: the mean of its skills' rates; both as the mean over "
        "the k values the two entries share.",
        class_="note",
    )
    parts: list[Any] = [el("h2", f"Differences from {view.model}"), intro]
    for block in view.metrics:
        ks = sorted({k for r in block.rows for k in r.per_k}, key=int)
        parts += [
            el("h3", METRIC_TITLES[block.metric]),
            table(
                ["model", "run", *[f"k = {k}" for k in ks], block.score_label or "mean over k"],
                [
                    [r.model, f"#{r.run}", *[_signed(r.per_k.get(k)) for k in ks], _signed(r.mean)]
                    for r in block.rows
                ],
                numeric=range(1, len(ks) + 3),
                caption=f"{METRIC_TITLES[block.metric]}: entry minus {view.model}, per k",
                class_="sortable",
            ),
        ]
    for title, rows, extra in (
        ("Per skill category", view.categories, False),
        ("Per skill", view.skills, True),
    ):
        header = [
            "category" if not extra else "skill",
            *(["category"] if extra else []),
            f"{view.model} (baseline)",
            *view.columns,
        ]
        body = [
            [
                r.name,
                *([r.category] if extra else []),
                el("td", fmt(r.baseline), class_="num", data_value=json.dumps(r.baseline)),
                *[_signed(d, 2) for d in r.differences],
            ]
            for r in rows
        ]
        grid = table(
            header,
            body,
            numeric=range(2 if extra else 1, len(header)),
            caption=f"{title}: the baseline's rate, and each entry's difference from it",
            class_="sortable",
        )
        parts += [
            el("h3", title),
            el("details", el("summary", f"{len(rows)} skills"), grid) if extra else grid,
        ]
    return el("section", *parts, id="baseline")
