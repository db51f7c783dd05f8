"""Reasoning tasks side by side: for each task, every model's accuracy, pass@k and maj@k with
their intervals and its token use, then each model against the task's best on the problems
both answered (a paired comparison). A view model built once; Markdown and the terminal table
only format it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from skillmix.method.reasoning_metrics import Estimate, ReasoningMetrics, paired_accuracy
from skillmix.report.markdown import md_escape, md_table


@dataclass(frozen=True)
class TaskRunData:
    """One run folder's metrics and token use, and its problems (for the drill-down)."""

    folder: str
    metrics: ReasoningMetrics
    avg_completion_tokens: float
    results: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class BoardLine:
    """One model on one task, as every renderer shows it."""

    model: str
    problems: int
    n: int
    accuracy: str
    pass_at_1: str
    pass_at_n: str
    maj_at_n: str
    tokens: str
    vs_best: str  # the paired difference to the task's best model, or "" for the best


@dataclass
class TaskBoard:
    task: str
    lines: list[BoardLine] = field(default_factory=list)


def percent(e: Estimate | None) -> str:
    """``72.5 [65.1, 79.0]``: a proportion and its 95% interval, in percent."""
    if e is None:
        return "—"
    if e.ci95 is None:
        return f"{e.value * 100:.1f}"
    return f"{e.value * 100:.1f} [{e.ci95[0] * 100:.1f}, {e.ci95[1] * 100:.1f}]"


def task_boards(runs: list[TaskRunData]) -> list[TaskBoard]:
    """One board per task, models by accuracy (best first, then by name)."""
    by_task: dict[str, list[TaskRunData]] = defaultdict(list)
    for run in runs:
        by_task[run.metrics.task].append(run)
    boards = []
    for task in sorted(by_task):
        ranked = sorted(by_task[task], key=lambda r: (-r.metrics.accuracy.value, r.metrics.model))
        best = ranked[0].metrics
        board = TaskBoard(task)
        for run in ranked:
            board.lines.append(_line(run, best))
        boards.append(board)
    return boards


def _line(run: TaskRunData, best: ReasoningMetrics) -> BoardLine:
    m = run.metrics
    top = max(m.pass_at_k) if m.pass_at_k else None
    vs = ""
    if m is not best:
        paired = paired_accuracy(m.per_problem, best.per_problem)
        ci = f" [{paired.ci95[0] * 100:+.1f}, {paired.ci95[1] * 100:+.1f}]" if paired.ci95 else ""
        vs = f"{paired.diff * 100:+.1f}{ci} on {paired.pairs} problems"
    return BoardLine(
        model=m.model,
        problems=m.problems,
        n=m.n,
        accuracy=percent(m.accuracy),
        pass_at_1=percent(m.pass_at_k.get(1)),
        pass_at_n=percent(m.pass_at_k.get(top)) if top else "—",
        maj_at_n=percent(m.maj_at_k.get(top)) if top else "—",
        tokens=f"{run.avg_completion_tokens:,.0f}",
        vs_best=vs,
    )


COLUMNS = (
    ("model", "model"),
    ("problems", "problems"),
    ("n", "N"),
    ("accuracy", "accuracy %"),
    ("pass_at_1", "pass@1 %"),
    ("pass_at_n", "pass@N %"),
    ("maj_at_n", "maj@N %"),
    ("tokens", "tokens/answer"),
    ("vs_best", "vs best (paired)"),
)


def boards_markdown(boards: list[TaskBoard]) -> str:
    """The boards as Markdown: one table per task."""
    parts = ["# Reasoning tasks", ""]
    for board in boards:
        rows = [[md_escape(str(getattr(line, key))) for key, _ in COLUMNS] for line in board.lines]
        parts += [f"## {board.task}", "", *md_table([t for _, t in COLUMNS], rows), ""]
    parts.append(
        "Intervals are 95%: Wilson over answers for accuracy, a bootstrap over problems for "
        "pass@k and maj@k and for the paired difference to the best model."
    )
    return "\n".join(parts) + "\n"


def boards_tables(boards: list[TaskBoard]) -> list[Table]:
    """The boards as terminal tables."""
    tables = []
    for board in boards:
        table = Table(title=board.task)
        for _, title in COLUMNS:
            table.add_column(title)
        for line in board.lines:
            table.add_row(*(str(getattr(line, key)) for key, _ in COLUMNS))
        tables.append(table)
    return tables


def boards_json(boards: list[TaskBoard]) -> list[dict[str, Any]]:
    return [
        {"task": b.task, "models": [{k: getattr(line, k) for k, _ in COLUMNS} for line in b.lines]}
        for b in boards
    ]
