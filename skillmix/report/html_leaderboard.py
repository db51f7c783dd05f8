"""report.html's leaderboards (also compare.html's): tables laid out from the view model.

Cells carry the exact numbers in ``data-*`` attributes (JSON numbers, so they parse back to
the very floats of ``skillmix aggregate --format json``); the visible text is the view's
rounded text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skillmix.artifacts import Leaderboard
from skillmix.report.html_answers import answers_href
from skillmix.report.markup import Safe, el, number
from skillmix.report.view import BoardRowView, BoardView, CellView, ReportView, as_board_view


def metric_td(cell: CellView | None, href: str | None = None, **attrs: object) -> Safe:
    """A leaderboard cell: rounded text, exact numbers in data attributes; ``href``: the
    answer browser filtered to the cell's answers (the rounded value is the link)."""
    if cell is None:
        return el("td", "—", class_="num", data_value="null", **attrs)
    return el(
        "td",
        el("a", cell.mean_text, href=href, class_="drill") if href else cell.mean_text,
        el("span", f" ± {cell.stderr_text}", class_="se"),
        el("span", cell.ci_text, class_="ci") if cell.ci_text else None,
        el("span", f" n={cell.n}", class_="n"),
        class_="num",
        title=f"n = {cell.n} combinations; {cell.unparsed} verdicts unparsed",
        data_value=number(cell.mean),
        data_stderr=number(cell.stderr),
        data_ci_low=number(cell.ci_low),
        data_ci_high=number(cell.ci_high),
        data_exact=cell.exact,
        data_n=cell.n,
        **attrs,
    )


def score_td(row: BoardRowView, links: bool, title: str | None = None, **attrs: object) -> Safe:
    """A row's score cell: the rounded score (with ``links``, a link to the answer browser
    filtered to the student's answers), its interval, the exact score in ``data-score``."""
    return el(
        "td",
        el("a", row.score_text, href=answers_href(row.student), class_="drill")
        if links and row.score is not None
        else row.score_text,
        el("span", row.score_ci_text, class_="ci") if row.score_ci_text else None,
        class_="num",
        title=title,
        data_score=number(row.score),
        **attrs,
    )


def board_row(
    board: BoardView,
    row: BoardRowView,
    label_columns: Sequence[tuple[str, str]],
    links: bool = False,
) -> Safe:
    """One ``<tr>``: rank, labels, model, per-k cells, score, own score, vs next; ``links``:
    the per-k values and the score open the answer browser filtered to their answers."""
    classes = " ".join(
        c for c, on in (("first", row.first), ("group-start", row.group_start)) if on
    )
    ident = {
        "data_metric": board.metric,
        "data_student": row.student,
        "data_grader": row.grader,
        "data_run": row.run,
    }
    verdict = row.verdict
    own = el("td", row.own_score_text, class_="num", title=f"mean over k = {row.own_ks_text}")
    return el(
        "tr",
        el(
            "td",
            row.rank_text,
            class_="num",
            title=f"tie group {row.tie_group}" if row.tied else None,
            data_tie_group=row.tie_group,
        ),
        *(
            [el("td", row.letters, class_="letters", data_letters=row.letters)]
            if board.has_letters
            else []
        ),
        *[el("td", row.labels[key]) for key, _ in label_columns],
        el("td", row.model_text, class_="model"),
        *[
            metric_td(
                row.cells[k], answers_href(row.student, k) if links else None, data_k=k, **ident
            )
            for k in board.ks
        ],
        score_td(
            row,
            links,
            title=f"exactly {row.exact_score}" if row.exact_score else None,
            data_ci_low=number(row.score_ci[0]) if row.score_ci else None,
            data_ci_high=number(row.score_ci[1]) if row.score_ci else None,
            **ident,
        ),
        *([own] if board.has_own else []),
        el(
            "td",
            verdict.text if verdict else "",
            class_="verdict",
            data_significant=str(verdict.significant).lower() if verdict else None,
            data_p=number(verdict.p_value) if verdict else None,
        ),
        class_=classes or None,
    )


def leaderboard_table(
    board: Leaderboard | BoardView,
    label_columns: Sequence[tuple[str, str]],
    *,
    caption: str | None = None,
    links: bool = False,
    **table_attrs: object,
) -> Safe:
    """``label_columns``: (row field, header) pairs shown before the k columns; the student's
    backend, model id and sampling follow them in a column of their own. The rank carries the
    tie mark; 'vs next' is the paired test against the row below. ``caption``: the table's
    one caption (default: the metric and the ks its score averages)."""
    view = as_board_view(board)
    header = [
        "rank",
        *(["groups"] if view.has_letters else []),
        *[h for _, h in label_columns],
        "model (backend: id, sampling)",
        *[f"k = {k}" for k in view.ks],
        view.score_label,
        *(["mean over own k"] if view.has_own else []),
        "vs next",
    ]
    first_metric = 2 + len(label_columns) + view.has_letters
    head = el(
        "tr",
        *[
            el(
                "th",
                h,
                class_="num" if i == 0 or first_metric <= i < len(header) - 1 else None,
                scope="col",
            )
            for i, h in enumerate(header)
        ],
    )
    return el(
        "table",
        el("caption", caption or f"{view.title}, {view.score_label}"),
        el("thead", head),
        el("tbody", *[board_row(view, row, label_columns, links) for row in view.rows]),
        class_="leaderboard",
        data_metric=view.metric,
        **table_attrs,
    )


def ranking_table(board: BoardView, links: bool = False, graders: int = 1) -> Safe:
    """The headline ranking in three narrow columns (rank, model, score with its interval),
    first in the section, so that a phone's first screen shows who leads and by how much;
    the full tables follow."""
    rows = [
        el(
            "tr",
            el("td", row.rank_text, class_="num"),
            el("td", row.student if graders <= 1 else f"{row.student} / {row.grader}"),
            score_td(row, links, data_student=row.student, data_grader=row.grader),
        )
        for row in board.rows
    ]
    head = el(
        "tr",
        el("th", "rank", class_="num", scope="col"),
        el("th", "model", scope="col"),
        el("th", board.score_label, class_="num", scope="col"),
    )
    return el(
        "table",
        el("caption", f"Ranking: {board.title}, {board.score_label} (full tables below)"),
        el("thead", head),
        el("tbody", *rows),
        class_="ranking",
        data_metric=board.metric,
    )


def leaderboards_section(view: ReportView, links: bool = False) -> Safe:
    """The run's leaderboards, with the warnings and the metrics defined in words; ``links``:
    cells open the answer browser (report.html with its answers)."""
    parts: list[Any] = [el("h2", "Leaderboards")]
    if view.boards:
        parts.append(ranking_table(view.boards[0], links, len(view.graders)))
    for warning in view.warnings:
        parts.append(el("div", el("strong", "Warning: "), warning, class_="banner"))
    parts.append(
        el(
            "p",
            "Models ranked by the mean of their per-k values. Cells: mean over combinations ± "
            "standard error, the 95% interval below it and n (combinations). Intervals: "
            f"{view.metrics.interval_method} {view.reading_note} A thick line separates tie groups of several rows."
            + (f" {view.rule}" if view.rule else ""),
            class_="note",
        )
    )
    if view.metric_definitions:
        parts.append(
            el(
                "details",
                el("summary", "What the metrics mean"),
                el("ul", *[el("li", text) for text in view.metric_definitions]),
                open=True,
            )
        )
    graders = view.graders
    labels = [("student", "student")] + ([("grader", "grader")] if len(graders) > 1 else [])
    boards = [
        el(
            "div",
            el("h3", board.title),
            el("p", board.note, class_="note"),
            leaderboard_table(board, labels, caption=board.caption, links=links),
        )
        for board in view.boards
    ]
    if len(graders) == 1:
        parts.append(el("p", f"Grader: {graders[0]}.", class_="note"))
    parts.append(el("div", *boards))
    return el("section", *parts, id="leaderboards")
