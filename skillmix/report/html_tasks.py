"""Reasoning tasks side by side as one self-contained HTML page: the boards of
:mod:`task_board` (each model's accuracy links to its problems), then, per task and model, every
problem with its reference answer and each response's verdict, extracted answer and text."""

from __future__ import annotations

import re

from skillmix.report.markup import Child, Safe, el, page, table
from skillmix.report.task_board import COLUMNS, TaskBoard, TaskRunData

MAX_RESPONSE_CHARS = 4000  # a reasoning trace can be very long; the page shows its start


def anchor(task: str, model: str) -> str:
    """The id of a (task, model) drill-down section."""
    return "p-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{task}--{model}").strip("-")


def tasks_html(boards: list[TaskBoard], runs: list[TaskRunData]) -> str:
    """The page: boards first, drill-downs after them."""
    by_key = {(r.metrics.task, r.metrics.model): r for r in runs}
    body: list[Child] = []
    for board in boards:
        body.append(el("section", el("h2", board.task), _board_table(board), id=f"t-{board.task}"))
    for board in boards:
        for line in board.lines:
            run = by_key.get((board.task, line.model))
            if run is not None:
                body.append(_drill_down(run))
    note = (
        "Intervals are 95%: Wilson over answers for accuracy, a bootstrap over problems for "
        "pass@k, maj@k and the paired difference to the task's best model."
    )
    nav = [(f"t-{b.task}", b.task) for b in boards]
    return page("Reasoning tasks", note, nav, body, "skillmix leaderboard")


def _board_table(board: TaskBoard) -> Safe:
    rows = []
    for line in board.lines:
        cells: list[Child] = [str(getattr(line, key)) for key, _ in COLUMNS]
        cells[3] = el("a", line.accuracy, href=f"#{anchor(board.task, line.model)}")
        rows.append(cells)
    return table([title for _, title in COLUMNS], rows, numeric=(1, 2, 7), class_="board")


def _drill_down(run: TaskRunData) -> Safe:
    m = run.metrics
    problems = []
    for index, entry in sorted(run.results.items(), key=lambda kv: _order(kv[0])):
        responses = entry.get("responses") or []
        right = sum(bool(r.get("correctness")) for r in responses)
        marks = "".join("✓" if r.get("correctness") else "✗" for r in responses)
        question = str(entry.get("prompt") or "")
        summary = el(
            "summary",
            f"#{index} {marks} ({right}/{len(responses)}) ",
            el("span", question[:160], class_="muted"),
        )
        problems.append(el("details", summary, _problem_body(entry, responses), class_="problem"))
    return el(
        "section",
        el("h3", f"{m.model} on {m.task}: {m.correct} of {m.responses} answers right"),
        *problems,
        id=anchor(m.task, m.model),
    )


def _problem_body(entry: dict[str, object], responses: list[dict[str, object]]) -> Safe:
    reference = entry.get("answer", entry.get("Answer", entry.get("final_answer", "")))
    items = []
    for i, r in enumerate(responses):
        verdict = "right" if r.get("correctness") else f"wrong: {r.get('reason') or ''}"
        content = str(r.get("content") or "")
        clipped = content[:MAX_RESPONSE_CHARS]
        more = (
            f"\n[... {len(content) - len(clipped)} more characters]" if clipped != content else ""
        )
        items.append(
            el(
                "li",
                f"response {i + 1}: {verdict}; answer ",
                el("code", str(r.get("answer") or "—")),
                el("details", el("summary", "text"), el("pre", clipped + more)),
            )
        )
    return el(
        "div",
        el("p", "reference answer ", el("code", str(reference))),
        el("pre", str(entry.get("prompt") or "")),
        el("ol", *items),
    )


def _order(index: str) -> tuple[int, str]:
    return (int(index), "") if index.isdigit() else (1 << 62, index)
