"""Leaderboards: models ranked per metric by the mean of their per-k means.

Shared by the run report and ``skillmix compare``. Ranks are competition ranks ("1, 1, 3"):
equal scores share a rank, so a run compared with itself ranks equally. Metric values are
copied from the metric rows untouched; only the ranking score is new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from skillmix.artifacts import (
    Leaderboard,
    LeaderboardCell,
    LeaderboardRow,
    MetricRowJson,
    MetricValueJson,
)
from skillmix.method.metrics import METRIC_NAMES, METRIC_TITLES


@dataclass
class Entry:
    """One model (student, grader) of one run: its metric cells per metric and k (as text).
    The run fields are set by ``skillmix compare`` only."""

    student: str
    grader: str
    metrics: dict[str, dict[str, LeaderboardCell]] = field(default_factory=dict)
    ks: list[int] = field(default_factory=list)
    run: int | None = None
    run_id: str | None = None
    run_label: str | None = None
    model: str | None = None


def competition_ranks(scores: Sequence[float | None]) -> list[int | None]:
    """1 + the number of strictly better scores; None for a missing score."""
    present = [s for s in scores if s is not None]
    return [None if s is None else 1 + sum(1 for o in present if o > s) for s in scores]


def mean_over_k(cells: Mapping[str, MetricValueJson], ks: Sequence[int]) -> float | None:
    """Mean of the per-k means over ``ks``; None if any of them is missing."""
    values = [cell.mean if (cell := cells.get(str(k))) else None for k in ks]
    present = [v for v in values if v is not None]
    if not values or len(present) < len(values):
        return None
    return sum(present) / len(present)


def entries_from_rows(rows: Sequence[MetricRowJson]) -> list[Entry]:
    """Metric rows (``RunMetrics.section().rows``) grouped per (student, grader)."""
    entries: dict[tuple[str, str], Entry] = {}
    for row in rows:
        key = (row.student, row.grader)
        entry = entries.setdefault(key, Entry(student=row.student, grader=row.grader))
        entry.ks.append(row.k)
        for name in METRIC_NAMES:
            cell = LeaderboardCell(**row.metric(name).model_dump(), n=row.n, unparsed=row.unparsed)
            entry.metrics.setdefault(name, {})[str(row.k)] = cell
    return [entries[key] for key in sorted(entries)]


def common_ks(entries: Sequence[Entry]) -> list[int]:
    sets = [set(e.ks) for e in entries]
    return sorted(set.intersection(*sets)) if sets else []


def leaderboard(entries: Sequence[Entry], metric: str) -> Leaderboard:
    """Entries ranked by ``metric`` averaged over the k values every entry has."""
    ks = common_ks(entries)
    all_ks = sorted({k for e in entries for k in e.ks})
    scores = [mean_over_k(e.metrics.get(metric, {}), ks) for e in entries]
    ranks = competition_ranks(scores)
    rows = []
    for entry, score, rank in zip(entries, scores, ranks, strict=True):
        cells = entry.metrics.get(metric, {})
        rows.append(
            LeaderboardRow(
                rank=rank,
                student=entry.student,
                grader=entry.grader,
                ks=entry.ks,
                run=entry.run,
                run_id=entry.run_id,
                run_label=entry.run_label,
                model=entry.model,
                score=score,
                cells={str(k): cells.get(str(k)) for k in all_ks},
            )
        )
    order = sorted(range(len(rows)), key=lambda i: (rows[i].rank is None, rows[i].rank or 0, i))
    return Leaderboard(
        metric=metric,
        title=METRIC_TITLES[metric],
        ranked_over_ks=ks,
        ks=all_ks,
        rows=[rows[i] for i in order],
    )


def leaderboards(rows: Sequence[MetricRowJson]) -> list[Leaderboard]:
    entries = entries_from_rows(rows)
    return [leaderboard(entries, name) for name in METRIC_NAMES]
