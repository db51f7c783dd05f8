"""The comparison's view model: ``compare.json`` and what its renderers read from it.

Built by ``report.compare.compare_runs``; the HTML, Markdown and terminal renderers only lay it
out, and the small helpers here are the questions they all ask of it (the run of a row, the
settings shown, which rows hold the same model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from skillmix.artifacts import Leaderboard, LeaderboardRow, MetricRowJson
from skillmix.identity import SETTING_LABELS
from skillmix.report.leaderboard import Entry


class RunData(BaseModel):
    """One run as the comparison sees it (its JSON form leaves the rows out)."""

    index: int = Field(description="1-based position on the command line.")
    run: str = Field(description="The run folder (URI).")
    run_id: str = Field(description="The run id.")
    kind: str = Field(description="evaluation or reference-import.")
    source: str = Field(description="Where the numbers come from.")
    created_at: str = Field(description="UTC time the run was created.")
    settings: dict[str, str] = Field(description="The settings that change the numbers.")
    report: str | None = Field(
        None, description="file:// URI of the run's report.html, when there is one to open."
    )
    rows: list[MetricRowJson] = Field(
        default_factory=list, exclude=True, description="The run's metric rows."
    )
    categories: dict[str, str] = Field(
        default_factory=dict, exclude=True, description="Skill name -> catalog category."
    )
    models: dict[str, str] = Field(
        default_factory=dict, description="Per student: backend, model id and sampling."
    )
    student_specs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, exclude=True, description="Per student: its experiment spec."
    )
    excluded: dict[str, str] = Field(
        default_factory=dict,
        exclude=True,
        description="Students with planned work missing or failed (not ranked), and why.",
    )
    grader_specs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, exclude=True, description="Per grader: its experiment spec."
    )


class SettingValue(BaseModel):
    """One value of a differing setting and the runs that have it."""

    value: str = Field(description="One value of a setting.")
    runs: list[int] = Field(description="The runs (1-based) with that value.")


class DifferenceRow(BaseModel):
    """One entry's differences from the baseline: per k and over the shared k values."""

    model: str = Field(description="The entry's label (student, with its run when names clash).")
    run: int = Field(description="1-based run of the entry.")
    per_k: dict[str, float | None] = Field(
        description="Per k: the entry's mean minus the baseline's (None where either is missing)."
    )
    mean: float | None = Field(description="Difference of the means over the ranked k values.")


class MetricDifferences(BaseModel):
    """One metric's differences from the baseline, one row per other entry."""

    metric: str = Field(description="Metric name.")
    score_label: str = Field(
        "", description="What the rows' ``mean`` differences average ('mean over k = 2, 3')."
    )
    rows: list[DifferenceRow] = Field(description="Every entry but the baseline, in rank order.")


class BreakdownRow(BaseModel):
    """One skill or category: the baseline's rate and every other entry's difference."""

    name: str = Field(description="Skill or category name.")
    category: str = Field("", description="The skill's catalog category (skills only).")
    baseline: float | None = Field(description="The baseline's rate.")
    differences: list[float | None] = Field(
        description="Per entry (``Baseline.columns``): its rate minus the baseline's."
    )


class Baseline(BaseModel):
    """Differences from one baseline model: per metric and k, per skill, per category."""

    model: str = Field(description="The baseline entry's label.")
    run: int = Field(description="1-based run of the baseline entry.")
    chosen: str = Field(description="'--baseline' or 'leader' (the top of the main ranking).")
    columns: list[str] = Field(description="The other entries' labels, in rank order.")
    metrics: list[MetricDifferences] = Field(description="Per metric: differences per k.")
    skills: list[BreakdownRow] = Field(
        description="Per skill: mean over k of the per-k skill rate, minus the baseline's."
    )
    categories: list[BreakdownRow] = Field(
        description="Per skill category: mean of its skills' rates, minus the baseline's."
    )


class Comparison(BaseModel):
    """``compare.json``: the comparison document every other compare file comes from."""

    schema_version: int = Field(1, description="Version of this file's format.")
    compared_at: str = Field(description="UTC time of the comparison.")
    rank_by: str = Field(description="Metric of the main leaderboard.")
    mixed: bool = Field(description="Whether runs with differing settings were ranked.")
    settings_differ: dict[str, list[SettingValue]] = Field(
        description="Per setting that differs: each value and its runs."
    )
    setting_labels: dict[str, str] = Field(description="Title of each compared setting.")
    runs: list[RunData] = Field(description="The runs, in command-line order.")
    leaderboards: list[Leaderboard] = Field(
        description="One ranking per metric, ``rank_by`` first."
    )
    baseline: Baseline | None = Field(None, description="Differences from a baseline model.")


def run_of(item: Entry | LeaderboardRow) -> int:
    """The 1-based run of a compared entry or leaderboard row."""
    assert item.run is not None, "a compared entry always has its run"
    return item.run


def setting_keys(runs: Sequence[RunData]) -> list[str]:
    """The settings any of the runs has, in SETTING_LABELS' order."""
    return [k for k in SETTING_LABELS if any(k in r.settings for r in runs)]


def model_label(row: LeaderboardRow) -> str:
    """A compared row's label: its student, with the run when names clash."""
    return row.model or row.student


def same_model_runs(board: Leaderboard) -> list[list[int]]:
    """Per row: the other compared runs holding the same model (same backend and model id; a
    student's name is only a label)."""

    def model_key(row: LeaderboardRow) -> tuple[str, str]:
        if row.model_id is not None:
            return (row.backend or "", row.model_id)
        return ("", row.student)

    runs_of: dict[tuple[str, str], set[int]] = {}
    for row in board.rows:
        runs_of.setdefault(model_key(row), set()).add(run_of(row))
    return [sorted(runs_of[model_key(row)] - {run_of(row)}) for row in board.rows]


def plural(n: int, noun: str) -> str:
    """A counted noun ("1 run", "2 runs"), as the HTML and Markdown pages both write it."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
