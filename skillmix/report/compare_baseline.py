"""Differences from one baseline model: per metric and k, per skill and per skill category.

Part of the comparison's view model: the numbers are computed here, so the HTML and Markdown
pages only format them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from skillmix.artifacts import Leaderboard, LeaderboardRow
from skillmix.errors import SkillmixError
from skillmix.report.compare_view import (
    Baseline,
    BreakdownRow,
    DifferenceRow,
    MetricDifferences,
    RunData,
    run_of,
)

_EntryKey = tuple[int, str, str]  # run, student, grader


def _entry_key(row: LeaderboardRow) -> _EntryKey:
    """What identifies an entry across the boards (labels may repeat)."""
    return (run_of(row), row.student, row.grader)


def choose_baseline(board: Leaderboard, name: str | None) -> LeaderboardRow | None:
    """The baseline row of the main leaderboard: ``name`` (a label, else a student name
    that is in one run only), or the leader. Bad names are one line, exit 2."""
    if not board.rows:
        return None
    if name is None:
        return board.rows[0]
    student, _, run = name.rpartition("@")
    matches = [r for r in board.rows if r.model == name] or [
        r for r in board.rows if r.student == name
    ]
    if not matches and student and run.isdigit():  # NAME@RUN: the student of run RUN
        matches = [r for r in board.rows if r.student == student and r.run == int(run)]
    labels = ", ".join(repr(r.model or r.student) for r in board.rows)
    if not matches:
        raise SkillmixError(
            f"--baseline {name!r}: no such model here", hint=f"choose from {labels}"
        )
    if len(matches) > 1:
        raise SkillmixError(
            f"--baseline {name!r} is in {len(matches)} runs (or graded by several graders)",
            hint="name one entry as NAME@RUN: "
            + ", ".join(f"{r.student}@{r.run}" for r in matches),
        )
    return matches[0]


def _minus(a: float | None, b: float | None) -> float | None:
    """a - b, or None when either is missing."""
    return None if a is None or b is None else a - b


def _mean(values: Sequence[float]) -> float | None:
    """The mean, or None for no values (no k in common)."""
    return sum(values) / len(values) if values else None


def _breakdown(
    per_k: Mapping[_EntryKey, Mapping[int, Mapping[str, float]]],
    base: _EntryKey,
    others: Sequence[_EntryKey],
    names: Sequence[str],
    categories: Mapping[str, str],
) -> list[BreakdownRow]:
    """Per name: the baseline's mean over k, and each entry's mean over the k values both
    have of (entry rate - baseline rate)."""
    rows = []
    for name in names:
        b_by_k = {k: v[name] for k, v in per_k.get(base, {}).items() if name in v}
        diffs: list[float | None] = []
        for other in others:
            mine = per_k.get(other, {})
            shared = [
                mine[k][name] - b_by_k[k] for k in sorted(mine) if name in mine[k] and k in b_by_k
            ]
            diffs.append(_mean(shared))
        rows.append(
            BreakdownRow(
                name=name,
                category=categories.get(name, ""),
                baseline=_mean(list(b_by_k.values())),
                differences=diffs,
            )
        )
    return rows


def baseline_view(
    boards: Sequence[Leaderboard], runs: Sequence[RunData], name: str | None
) -> Baseline | None:
    """Differences of every entry from the baseline: per metric and k (means over
    combinations), per skill (mean voted skill point) and per skill category (mean of its
    skills' rates), each a mean over the k values both entries have."""
    base = choose_baseline(boards[0], name)
    if base is None:
        return None
    base_key = _entry_key(base)
    ordered = [r for r in boards[0].rows if _entry_key(r) != base_key]
    others = [_entry_key(r) for r in ordered]
    metrics = []
    for board in boards:
        by_key = {_entry_key(r): r for r in board.rows}
        b = by_key[base_key]
        rows = []
        for key in others:
            x = by_key[key]
            per_k = {}
            for k in board.ks:
                xc, bc = x.cells.get(str(k)), b.cells.get(str(k))
                per_k[str(k)] = _minus(xc.mean if xc else None, bc.mean if bc else None)
            rows.append(
                DifferenceRow(
                    model=x.model or x.student,
                    run=run_of(x),
                    per_k=per_k,
                    mean=_minus(x.score, b.score),
                )
            )
        metrics.append(
            MetricDifferences(metric=board.metric, score_label=board.score_label, rows=rows)
        )
    categories: dict[str, str] = {}
    for run in runs:
        categories.update(run.categories)
    skill_k: dict[_EntryKey, dict[int, dict[str, float]]] = {}
    cat_k: dict[_EntryKey, dict[int, dict[str, float]]] = {}
    for run in runs:
        for row in run.rows:
            rates = {s: v for s, v in (row.per_skill or {}).items() if v is not None}
            key = (run.index, row.student, row.grader)
            skill_k.setdefault(key, {})[row.k] = rates
            grouped: dict[str, list[float]] = {}
            for skill, value in rates.items():
                grouped.setdefault(categories.get(skill) or "uncategorised", []).append(value)
            cat_k.setdefault(key, {})[row.k] = {c: sum(v) / len(v) for c, v in grouped.items()}
    skills = sorted({s for by_k in skill_k.values() for rates in by_k.values() for s in rates})
    cats = sorted({c for by_k in cat_k.values() for rates in by_k.values() for c in rates})
    return Baseline(
        model=base.model or base.student,
        run=run_of(base),
        chosen="leader" if name is None else "--baseline",
        columns=[r.model or r.student for r in ordered],
        metrics=metrics,
        skills=_breakdown(skill_k, base_key, others, skills, categories),
        categories=_breakdown(cat_k, base_key, others, cats, {}),
    )
