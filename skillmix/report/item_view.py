"""The view of which rubric items fail (summary.json's ``item_failures``): per model, the share
of rubric points missed per item group, with the counts behind each rate, as report.html,
report.md and the plot show them."""

from __future__ import annotations

from dataclasses import dataclass

from skillmix.artifacts.summary import ItemFailureCell, ItemFailures
from skillmix.report.analysis import column_label
from skillmix.report.markup import fmt

ITEM_TITLES = {
    "skills": "skills (pooled)",
    "topic": "on topic",
    "sense": "makes sense",
    "length": "length (computed)",
}


@dataclass(frozen=True)
class ItemCellView:
    """One model's failure rate of one item group: the rate and the points behind it."""

    group: str
    rate: float | None
    failed: float
    points: int
    text: str  # "0.25 (3/12)"


@dataclass(frozen=True)
class ItemRowView:
    model: str  # the column label: the student, with its grader when there are several
    student: str
    grader: str
    answers: int
    cells: tuple[ItemCellView, ...]
    worst: str  # the title of the group that fails most, or "—"


@dataclass(frozen=True)
class ItemFailuresView:
    groups: tuple[str, ...]
    titles: tuple[str, ...]
    rows: tuple[ItemRowView, ...]
    note: str


def _count(x: float) -> str:
    return fmt(x, 0) if float(x).is_integer() else fmt(x, 1)


def item_cell_view(group: str, cell: ItemFailureCell) -> ItemCellView:
    text = f"{fmt(cell.rate)} ({_count(cell.failed)}/{cell.points})" if cell.points else "—"
    return ItemCellView(group, cell.rate, cell.failed, cell.points, text)


def item_failures_view(section: ItemFailures | None) -> ItemFailuresView | None:
    """None for a summary without the section (written before it existed, or nothing
    graded)."""
    if section is None or not section.rows:
        return None
    graders = len({r.grader for r in section.rows})
    groups = tuple(section.groups)
    rows = tuple(
        ItemRowView(
            model=column_label(r.student, r.grader, graders),
            student=r.student,
            grader=r.grader,
            answers=r.answers,
            cells=tuple(
                item_cell_view(g, r.items.get(g, ItemFailureCell(rate=None, failed=0, points=0)))
                for g in groups
            ),
            worst=ITEM_TITLES.get(r.worst, r.worst) if r.worst else "—",
        )
        for r in section.rows
    )
    note = (
        f"Failure rate: {section.unit}. Each cell: the rate (points missed / rubric points). "
        "The last column names the item group that fails most."
    )
    return ItemFailuresView(groups, tuple(ITEM_TITLES.get(g, g) for g in groups), rows, note)
