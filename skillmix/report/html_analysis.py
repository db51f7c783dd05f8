"""report.html's analysis sections: per-skill, per-topic and per-category rates, grader
agreement across grading rounds, and the gallery of example answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skillmix.artifacts import (
    AgreementSection,
    CategoryRates,
    GalleryExample,
    SkillRates,
    TopicRates,
)
from skillmix.report.html_answers import answers_href
from skillmix.report.item_view import ItemFailuresView
from skillmix.report.markup import Child, Image, Safe, el, figure, fmt, number, pct, table
from skillmix.report.view import SMALL_N_MARK, RateCellView, rate_cell_view

KIND_TITLES = {"best": "best", "worst": "worst", "explicit_name": "names a skill"}
GROUP_TITLES = {
    "skills": "skills",
    "topic": "on topic",
    "sense": "makes sense",
    "length": "length (grader)",
}


def rates_details(
    table_data: SkillRates | TopicRates | CategoryRates,
    what: str,
    extra: Sequence[str] = (),
    *,
    open_: bool = False,
    links: bool = False,
) -> Safe:
    """``what``: the row's name field (skill, topic, category); ``extra``: more fields shown.
    Every cell shows its rate and n; ``links``: a cell opens the answer browser filtered to
    its model and its skill or topic."""
    columns = table_data.columns
    rows = []
    for row in table_data.rows:
        name = getattr(row, what)
        rows.append(
            [
                name,
                *[getattr(row, x) for x in extra],
                *[
                    _rate_td(
                        rate_cell_view(v, n, table_data.min_n),
                        answers_href(model.student, **{what: name}) if links else None,
                    )
                    for v, n, model in zip(row.values, row.n, table_data.models, strict=True)
                ],
                fmt(row.mean),
            ]
        )
    header = [what, *extra, *columns, "mean"]
    return el(
        "details",
        el("summary", f"All {len(rows)} {what} rows as a table (rate, n = combinations)"),
        el("p", rates_note(table_data), class_="note"),
        table(
            header,
            rows,
            numeric=range(1 + len(extra), len(header)),
            caption=f"Per {what} and model: rate (n = combinations)",
        ),
        open=open_,
    )


def _rate_td(cell: RateCellView | None, href: str | None = None) -> Safe:
    """A rate cell: its text, the interval in its tooltip, the exact numbers as data;
    ``href``: the link to its answers."""
    if cell is None:
        return el("td", "—", class_="num")
    return el(
        "td",
        el("a", cell.text, href=href, class_="drill") if href else cell.text,
        class_="num small-n" if cell.small else "num",
        title=cell.title,
        data_value=number(cell.value),
        data_n=cell.n,
        data_ci_low=number(cell.ci_low),
        data_ci_high=number(cell.ci_high),
    )


def rates_note(table_data: SkillRates | TopicRates | CategoryRates) -> str:
    """What a rate is and how rows are sorted (from the table itself)."""
    unit = f"Rate: {table_data.unit}. " if table_data.unit else ""
    return (
        f"{unit}Hardest first, by the mean over the cells with n ≥ {table_data.min_n} "
        f"combinations (rows without such a cell last). {SMALL_N_MARK}: fewer than "
        f"{table_data.min_n} combinations; hover a cell for its 95% Wilson interval."
    )


def rates_section(anchor: str, title: str, note: str, image: Image | None, details: Safe) -> Safe:
    return el(
        "section",
        el("h2", title),
        el("p", note, class_="note"),
        figure(image) if image else el("p", "Nothing graded yet.", class_="note"),
        details,
        id=anchor,
    )


def item_failures_section(view: ItemFailuresView | None, image: Image | None) -> Safe | None:
    """Which rubric items fail most, per model: the plot and the table (None without the
    section in the summary)."""
    if view is None:
        return None
    rows: list[list[Child]] = [
        [
            row.model,
            row.answers,
            *[
                el(
                    "td",
                    cell.text,
                    class_="num",
                    data_value=number(cell.rate),
                    data_failed=number(cell.failed),
                    data_points=cell.points,
                    data_group=cell.group,
                    data_student=row.student,
                    data_grader=row.grader,
                )
                for cell in row.cells
            ],
            row.worst,
        ]
        for row in view.rows
    ]
    header = ["model", "answers", *view.titles, "fails most"]
    return el(
        "section",
        el("h2", "Which rubric items fail"),
        el("p", view.note, class_="note"),
        figure(image) if image else None,
        table(
            header,
            rows,
            numeric=range(1, len(header) - 1),
            caption="Per model and rubric item group: failure rate (missed / points)",
            class_="items",
        ),
        id="items",
    )


def agreement_section(agreement: AgreementSection) -> Safe:
    groups = agreement.groups
    head1 = el(
        "tr",
        el("th", "grader", rowspan=2, scope="col"),
        el("th", "student", rowspan=2, scope="col"),
        el("th", "k", rowspan=2, scope="col"),
        *[el("th", GROUP_TITLES[g], colspan=2, scope="colgroup") for g in groups],
    )
    head2 = el(
        "tr",
        *[el("th", x, class_="num", scope="col") for _ in groups for x in ("agreement", "κ")],
    )
    rows = []
    for row in agreement.rows:
        cells = [
            el("td", row.grader),
            el("td", row.student),
            el("td", row.k, class_="num"),
        ]
        for g in groups:
            item = row.items[g]
            cells += [
                el(
                    "td",
                    pct(item.percent),
                    class_="num",
                    title=f"{item.subjects} items; unanimous {pct(item.unanimous)}",
                    data_value=number(item.percent),
                ),
                el(
                    "td",
                    fmt(item.kappa) if item.kappa is not None else "—",
                    class_="num",
                    title=(
                        f"chance agreement {pct(item.expected)}"
                        if item.kappa is not None
                        else "undefined: every verdict identical, or no item with 2 rounds"
                    ),
                    data_value=number(item.kappa),
                ),
            ]
        rows.append(el("tr", *cells))
    body: Any
    if agreement.grading_rounds < 2:
        body = el("p", "Agreement needs at least two grading rounds.", class_="note")
    else:
        body = el(
            "table",
            el("caption", "Agreement between grading rounds per rubric item group"),
            el("thead", head1, head2),
            el("tbody", *rows),
            class_="agreement",
        )
    return el(
        "section",
        el("h2", "Grader agreement across grading rounds"),
        el(
            "p",
            f"{agreement.grading_rounds} grading rounds. Agreement: mean share of agreeing "
            "pairs of rounds per rubric item; κ: Fleiss' kappa (agreement beyond chance; "
            "undefined when every verdict is identical). Skill items are pooled as "
            "“skills”; “length (grader)” is the grader's own verdict (the metrics compute "
            "the sentence count instead).",
            class_="note",
        ),
        *[el("div", el("strong", "Warning: "), w, class_="banner") for w in agreement.warnings],
        body,
        id="agreement",
    )


def example_card(item: GalleryExample) -> Safe:
    scores = item.scores
    named = set(item.named_skills)
    rounds = item.rounds
    voted = item.points
    rubric_rows = []
    for j, label in enumerate(item.rubric):
        cells = [el("td", label, class_="hit" if label in named and j < item.k else None)]
        for r in rounds:
            pts = r.points
            cells.append(
                el("td", fmt(pts[j], 0) if pts is not None and j < len(pts) else "—", class_="num")
            )
        cells.append(
            el(
                "td",
                (fmt(voted[j], 2 if voted[j] % 1 else 0) if voted is not None else "—"),
                class_="num",
            )
        )
        rubric_rows.append(el("tr", *cells))
    head = el(
        "tr",
        el("th", "rubric item", scope="col"),
        *[el("th", f"r{r.grading_round}", class_="num", scope="col") for r in rounds],
        el("th", "voted", class_="num", scope="col"),
    )
    note = None
    if named:
        note = el(
            "p",
            "Names its skill(s): "
            + ", ".join(sorted(named))
            + (
                " — point set to 0 by the explicit-name filter."
                if item.named_filtered
                else " — not filtered."
            ),
            class_="note",
        )
    return el(
        "div",
        el(
            "h4",
            el("span", KIND_TITLES.get(item.kind, item.kind), class_=f"badge {item.kind}"),
            f"{item.topic}",
        ),
        el(
            "div",
            f"skills: {', '.join(item.skills)} · generation round {item.generation_round} · "
            f"combination {item.index} · full marks "
            f"{fmt(scores.full_marks if scores else None, 0)} · "
            f"skill fraction {fmt(scores.skill_fraction if scores else None)}",
            class_="note",
        ),
        el("blockquote", item.answer),
        el(
            "table",
            el("caption", "Points per rubric item and grading round, and the vote"),
            el("thead", head),
            el("tbody", *rubric_rows),
        ),
        note,
        el(
            "details",
            el("summary", "grader's reply (round 1)"),
            el("pre", item.grader_reply),
        ),
        class_="card",
        data_kind=item.kind,
        data_student=item.student,
        data_k=item.k,
    )


def gallery_section(gallery: Sequence[GalleryExample]) -> Safe:
    groups: dict[tuple[str, str], dict[int, list[GalleryExample]]] = {}
    for item in gallery:
        groups.setdefault((item.student, item.grader), {}).setdefault(item.k, []).append(item)
    graders = {g for _, g in groups}
    parts: list[Any] = [
        el("h2", "Example answers"),
        el(
            "p",
            "Per model and k, folded (open a k to see them): the best and the worst graded "
            "answer and up to two answers that name one of their skills. Columns r1, r2, ...: the points each grading round gave "
            "(as the grader gave them); voted: the points the metrics use (rounds combined, "
            "the length point computed from the sentence count, the explicit-name filter "
            "applied).",
            class_="note",
        ),
    ]
    for (student, grader), by_k in groups.items():
        parts.append(el("h3", student if len(graders) == 1 else f"{student} (graded by {grader})"))
        for k in sorted(by_k):
            kinds = ", ".join(dict.fromkeys(KIND_TITLES.get(i.kind, i.kind) for i in by_k[k]))
            parts.append(
                el(
                    "details",
                    el("summary", f"k = {k}: {len(by_k[k])} examples ({kinds})"),
                    el("div", *[example_card(i) for i in by_k[k]], class_="cards"),
                    class_="examples",
                    data_student=student,
                    data_k=k,
                )
            )
    return el("section", *parts, id="gallery")
