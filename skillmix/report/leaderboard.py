"""Leaderboards: models ranked per metric by the mean of their per-k means.

Shared by the run report and ``skillmix compare``. Ranks are competition ranks ("1, 1, 3"):
equal scores share a rank, so a run compared with itself ranks equally. Metric values are
copied from the metric rows untouched; only the ranking score is new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from skillmix.method.metrics import METRIC_NAMES, METRIC_TITLES


def competition_ranks(scores: Sequence[float | None]) -> list[int | None]:
    """1 + the number of strictly better scores; None for a missing score."""
    present = [s for s in scores if s is not None]
    return [None if s is None else 1 + sum(1 for o in present if o > s) for s in scores]


def mean_over_k(cells: Mapping[str, Mapping[str, Any]], ks: Sequence[int]) -> float | None:
    """Mean of the per-k means over ``ks``; None if any of them is missing."""
    values = [cells.get(str(k), {}).get("mean") for k in ks]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def entries_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Metric rows (``RunMetrics.as_dict()['rows']``) grouped per (student, grader)."""
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["student"], row["grader"])
        entry = entries.setdefault(
            key,
            {"student": row["student"], "grader": row["grader"], "metrics": {}, "ks": []},
        )
        entry["ks"].append(row["k"])
        for name in METRIC_NAMES:
            cell = dict(row[name])
            cell["n"] = row["n"]
            cell["unparsed"] = row["unparsed"]
            entry["metrics"].setdefault(name, {})[str(row["k"])] = cell
    return [entries[key] for key in sorted(entries)]


def common_ks(entries: Sequence[Mapping[str, Any]]) -> list[int]:
    sets = [set(e["ks"]) for e in entries]
    return sorted(set.intersection(*sets)) if sets else []


def leaderboard(entries: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """Entries ranked by ``metric`` averaged over the k values every entry has."""
    ks = common_ks(entries)
    all_ks = sorted({k for e in entries for k in e["ks"]})
    scores = [mean_over_k(e["metrics"].get(metric, {}), ks) for e in entries]
    ranks = competition_ranks(scores)
    rows = []
    for entry, score, rank in zip(entries, scores, ranks, strict=True):
        rows.append(
            {
                "rank": rank,
                **{k: v for k, v in entry.items() if k != "metrics"},
                "score": score,
                "cells": {str(k): entry["metrics"].get(metric, {}).get(str(k)) for k in all_ks},
            }
        )
    order = sorted(
        range(len(rows)), key=lambda i: (rows[i]["rank"] is None, rows[i]["rank"] or 0, i)
    )
    return {
        "metric": metric,
        "title": METRIC_TITLES[metric],
        "ranked_over_ks": ks,
        "ks": all_ks,
        "rows": [rows[i] for i in order],
    }


def leaderboards(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    entries = entries_from_rows(rows)
    return [leaderboard(entries, name) for name in METRIC_NAMES]
