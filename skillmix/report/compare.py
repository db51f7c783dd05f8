"""``skillmix compare``: one leaderboard across runs, refusing to rank apples against oranges.

A run is read from its ``report/summary.json`` when it has one (our evaluations), else its
metrics are computed from its records: with the experiment's metric options for our runs,
with the reference aggregator's options for runs made by ``skillmix import-reference``.
Runs can be ranked together only when every setting that changes the numbers is the same
(catalog, prompts, grader, rounds, M, k values, sampling, seed, metric options); otherwise
the comparison names the settings that differ and stops, unless mixing is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from skillmix.artifacts import (
    Leaderboard,
    LeaderboardRow,
    MetricRowJson,
    MetricSettings,
    PromptVersions,
    ReferenceImportRun,
    Summary,
)
from skillmix.config import Experiment
from skillmix.errors import SkillmixError
from skillmix.method.metrics import METRIC_NAMES, METRIC_TITLES, MetricOptions
from skillmix.report.leaderboard import Entry, entries_from_rows, leaderboard
from skillmix.store.layout import RunLayout
from skillmix.store.runs import SUMMARY_JSON, RunStore, utc_now
from skillmix.store.uri import open_store

SETTING_LABELS = {
    "catalog": "catalog hash",
    "generation_prompt": "generation prompt (version, hash)",
    "grading_prompt": "grading prompt (version, hash)",
    "grader": "grader model",
    "grading_rounds": "grading rounds (R)",
    "generation_rounds": "generation rounds (G)",
    "combinations": "M (combinations per k)",
    "ks": "k values",
    "sampling": "sampling",
    "seed": "seed",
    "metrics": "metric options",
}


class RunData(BaseModel):
    """One run as the comparison sees it (its JSON form leaves the rows out)."""

    index: int = Field(description="1-based position on the command line.")
    run: str = Field(description="The run folder (URI).")
    run_id: str = Field(description="The run id.")
    kind: str = Field(description="evaluation or reference-import.")
    source: str = Field(description="Where the numbers come from.")
    created_at: str = Field(description="UTC time the run was created.")
    settings: dict[str, str] = Field(description="The settings that change the numbers.")
    rows: list[MetricRowJson] = Field(
        default_factory=list, exclude=True, description="The run's metric rows."
    )


class SettingValue(BaseModel):
    value: str = Field(description="One value of a setting.")
    runs: list[int] = Field(description="The runs (1-based) with that value.")


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


def metric_settings(settings: MetricSettings) -> str:
    skills = ",".join(settings.filter_skills) or "none"
    return (
        f"mode={settings.mode} vote={settings.vote} "
        f"generation-agg={settings.generation_agg} "
        f"explicit-name={settings.filter_explicit_name} filter-skills={skills}"
    )


def options_settings(options: MetricOptions) -> MetricSettings:
    return MetricSettings.model_validate(options.as_dict())


def evaluation_settings(
    e: Experiment, catalog_hash: str, p: PromptVersions, metrics: MetricSettings
) -> dict[str, str]:
    """The comparable settings of an evaluation run (from its summary or its run.json)."""
    g = e.grader
    grader = str(g.model)
    if g.backend == "mock" and g.quality is not None:
        grader += f" (mock quality {g.quality})"
    return {
        "catalog": catalog_hash,
        "generation_prompt": f"{p.generation.name} ({p.generation.hash})",
        "grading_prompt": f"{p.grading.name} ({p.grading.hash})",
        "grader": grader,
        "grading_rounds": str(g.rounds),
        "generation_rounds": str(e.generation_rounds),
        "combinations": str(e.combinations),
        "ks": ",".join(str(k) for k in e.ks),
        "sampling": f"{e.sampling} (order seed {e.order_seed})",
        "seed": str(e.seed),
        "metrics": metric_settings(metrics),
    }


def summary_settings(summary: Summary, source: str = "summary.json") -> dict[str, str]:
    """The comparable settings of an evaluation run, from its summary."""
    from skillmix.config import parse_experiment

    return evaluation_settings(
        parse_experiment(summary.experiment, source),
        summary.catalog.hash,
        summary.prompts,
        summary.metrics.settings,
    )


def reference_settings(
    data: ReferenceImportRun, combinations: int, options: MetricOptions
) -> dict[str, str]:
    """Comparable settings of an imported reference run (what the import could discover)."""

    def versions(values: list[str]) -> str:
        return ",".join(values) or "unknown"

    return {
        "catalog": "unknown (reference import)",
        "generation_prompt": f"{versions(data.generation_prompt_versions)} (reference)",
        "grading_prompt": f"{versions(data.grading_prompt_versions)} (reference)",
        "grader": ",".join(data.graders) or "unknown",
        "grading_rounds": str(len(data.grading_rounds)),
        "generation_rounds": str(len(data.generation_rounds)),
        "combinations": str(combinations),
        "ks": ",".join(str(k) for k in data.ks),
        "sampling": "reference (order seed unknown)",
        "seed": str(data.seed),
        "metrics": metric_settings(options_settings(options)),
    }


def load_run(uri: str, index: int) -> RunData:
    """A run folder (or a report folder holding summary.json) for comparison."""
    from skillmix.pipeline.aggregate import aggregate_run

    run = RunStore(open_store(uri))
    data = run.read_run()
    summary = run.read_summary()
    if data is None and summary is None:
        summary = run.read_summary(RunLayout.SUMMARY)  # a folder written by `report --out`
    if data is None and summary is None:
        what = "no run found here" if run.is_empty() else "no run.json or report/summary.json here"
        raise SkillmixError(
            f"{uri}: {what}",
            hint="pass run folders made by `skillmix evaluate` or `skillmix import-reference`",
        )
    if isinstance(data, ReferenceImportRun):
        options = MetricOptions.reference()
        metrics = aggregate_run(run, options)
        per_unit: dict[tuple[str, int, int], set[int]] = {}
        for g in run.generation_records():
            per_unit.setdefault((g.student, g.k, g.generation_round), set()).add(g.index)
        combinations = max((len(v) for v in per_unit.values()), default=0)
        return RunData(
            index=index,
            run=run.uri,
            run_id=uri.rstrip("/").rsplit("/", 1)[-1] or uri,
            kind=data.kind,
            source="computed (reference options)",
            created_at=data.created_at,
            settings=reference_settings(data, combinations, options),
            rows=metrics.section(details=True).rows,
        )
    if summary is not None:
        return RunData(
            index=index,
            run=run.uri,
            run_id=summary.run_id,
            kind="evaluation",
            source=SUMMARY_JSON,
            created_at=summary.created_at or "",
            settings=summary_settings(summary, f"{uri}/report/summary.json"),
            rows=list(summary.metrics.rows),
        )
    from skillmix.pipeline.context import RunContext

    assert data is not None
    ctx = RunContext.from_run(data, f"{uri}/run.json")
    metrics = aggregate_run(run, ctx.experiment.metrics.options())
    return RunData(
        index=index,
        run=run.uri,
        run_id=ctx.run_id,
        kind="evaluation",
        source="computed (run's metric options)",
        created_at=ctx.created_at,
        settings=evaluation_settings(
            ctx.experiment,
            ctx.catalog.content_hash(),
            ctx.prompt_versions(),
            MetricSettings.model_validate(metrics.settings()),
        ),
        rows=metrics.section(details=True).rows,
    )


def differing_settings(runs: Sequence[RunData]) -> dict[str, dict[str, list[int]]]:
    """Per setting that is not the same everywhere: each value and the runs (1-based) with it."""
    out: dict[str, dict[str, list[int]]] = {}
    for key in SETTING_LABELS:
        values: dict[str, list[int]] = {}
        for r in runs:
            values.setdefault(r.settings.get(key, "unknown"), []).append(r.index)
        if len(values) > 1:
            out[key] = values
    return out


def describe_differences(diff: Mapping[str, Mapping[str, list[int]]]) -> str:
    parts = []
    for key, values in diff.items():
        shown = ", ".join(
            f"{value} (run {'/'.join(map(str, runs))})" for value, runs in values.items()
        )
        parts.append(f"{SETTING_LABELS[key]}: {shown}")
    return "; ".join(parts)


def entry_label(entry: Entry, runs: Sequence[RunData], clashes: set[str]) -> str:
    if entry.student not in clashes:
        return entry.student
    run = runs[run_of(entry) - 1]
    same_id = sum(1 for r in runs if r.run_id == run.run_id) > 1
    where = f"#{run.index} {run.run_id}" if same_id else run.run_id
    return f"{entry.student} ({where})"


def run_of(item: Entry | LeaderboardRow) -> int:
    """The 1-based run of a compared entry or leaderboard row."""
    assert item.run is not None, "a compared entry always has its run"
    return item.run


def compare_runs(
    uris: Sequence[str], *, allow_mixed: bool = False, rank_by: str = "full_marks"
) -> Comparison:
    """The comparison as one document (``compare.json``); raises SkillmixError on mixed settings
    unless ``allow_mixed``."""
    if not uris:
        raise SkillmixError("give at least one run folder to compare")
    if rank_by not in METRIC_NAMES:
        raise SkillmixError(
            f"unknown metric {rank_by!r}", hint=f"choose from {', '.join(METRIC_NAMES)}"
        )
    runs = [load_run(uri, i) for i, uri in enumerate(uris, start=1)]
    diff = differing_settings(runs)
    if diff and not allow_mixed:
        raise SkillmixError(
            f"runs differ in settings, so their numbers are not comparable: {describe_differences(diff)}",
            hint="pass --allow-mixed to rank them anyway",
        )
    entries: list[Entry] = []
    for run in runs:
        for entry in entries_from_rows(run.rows):
            entry.run = run.index
            entry.run_id = run.run_id
            entry.run_label = f"#{run.index} {run.run_id}"
            # paired tests pair (k, combination) only between runs drawing the same ones
            entry.design = "|".join(
                run.settings.get(key, "") for key in ("catalog", "seed", "sampling")
            )
            entries.append(entry)
    students: dict[str, set[int]] = {}
    for entry in entries:
        students.setdefault(entry.student, set()).add(run_of(entry))
    clashes = {s for s, where in students.items() if len(where) > 1}
    for entry in entries:
        entry.model = entry_label(entry, runs, clashes)
    order = [rank_by, *[m for m in METRIC_NAMES if m != rank_by]]
    return Comparison(
        compared_at=utc_now(),
        rank_by=rank_by,
        mixed=bool(diff),
        settings_differ={
            key: [SettingValue(value=value, runs=r) for value, r in values.items()]
            for key, values in diff.items()
        },
        setting_labels=SETTING_LABELS,
        runs=runs,
        leaderboards=[leaderboard(entries, metric) for metric in order],
    )


# rendering --------------------------------------------------------------------------------
def compare_markdown(doc: Comparison) -> str:
    from skillmix.report.markdown import leaderboard_markdown, md_escape, md_table

    lines = ["# SKILL-MIX comparison", ""]
    if doc.mixed:
        lines += [
            "> **Mixed settings**: these runs differ in "
            + ", ".join(SETTING_LABELS[k] for k in doc.settings_differ)
            + "; their numbers are not directly comparable.",
            "",
        ]
    lines += [
        "## Runs",
        "",
        *md_table(
            ["#", "run id", "kind", "numbers from", "created", "folder"],
            [
                [
                    r.index,
                    md_escape(r.run_id),
                    r.kind,
                    r.source,
                    r.created_at,
                    md_escape(r.run),
                ]
                for r in doc.runs
            ],
            numeric=[0],
        ),
        "",
    ]
    for board in doc.leaderboards:
        ks = ", ".join(map(str, board.ranked_over_ks)) or "none in common"
        lines += [
            f"## {board.title}",
            "",
            f"Ranked by the mean over k = {ks}; cells: mean ± stderr [95% Wilson interval].",
            "",
            *leaderboard_markdown(
                board,
                label_columns=[("model", "model"), ("run_label", "run"), ("grader", "grader")],
            ),
            "",
        ]
    keys = list(SETTING_LABELS)
    lines += [
        "## Settings",
        "",
        *md_table(
            ["setting", *[f"run {r.index}" for r in doc.runs], "same?"],
            [
                [
                    SETTING_LABELS[k],
                    *[md_escape(r.settings.get(k, "unknown")) for r in doc.runs],
                    "no" if k in doc.settings_differ else "yes",
                ]
                for k in keys
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def compare_html(doc: Comparison, *, dpi: int | None = None) -> str:
    from skillmix.report.html_report import leaderboard_table, metric_images
    from skillmix.report.markup import el, figure, page, table
    from skillmix.report.plots import DEFAULT_DPI

    boards = doc.leaderboards
    images = metric_images(boards, model_label, dpi or DEFAULT_DPI, prefix="compare")
    parts: list[Any] = []
    if doc.mixed:
        parts.append(
            el(
                "div",
                el("strong", "Mixed settings: "),
                "these runs differ in "
                + ", ".join(SETTING_LABELS[k] for k in doc.settings_differ)
                + "; their numbers are not directly comparable.",
                class_="banner",
            )
        )
    parts.append(
        el(
            "section",
            el("h2", "Runs"),
            table(
                ["#", "run id", "kind", "numbers from", "created", "folder"],
                [
                    [
                        r.index,
                        el("code", r.run_id),
                        r.kind,
                        r.source,
                        r.created_at,
                        el("code", r.run),
                    ]
                    for r in doc.runs
                ],
                numeric=[0],
            ),
            id="runs",
        )
    )
    board_parts: list[Any] = [
        el("h2", "Leaderboards"),
        el(
            "p",
            "Ranked by the mean of the per-k values over the k values every entry has. Cells: "
            "mean ± standard error, with the 95% Wilson score interval below. Equal scores share a rank.",
            class_="note",
        ),
    ]
    for board in boards:
        board_parts += [
            el("h3", board.title),
            leaderboard_table(
                board, [("model", "model"), ("run_label", "run"), ("grader", "grader")]
            ),
        ]
    parts.append(el("section", *board_parts, id="leaderboards"))
    parts.append(
        el(
            "section",
            el("h2", "Metrics vs k"),
            el("div", *[figure(i) for i in images], class_="plots"),
            id="plots",
        )
    )
    rows = []
    for key, label in SETTING_LABELS.items():
        differs = key in doc.settings_differ
        rows.append(
            el(
                "tr",
                el("th", label),
                *[el("td", r.settings.get(key, "unknown")) for r in doc.runs],
                el("td", "differs" if differs else "same"),
                class_="diff" if differs else None,
            )
        )
    head = el(
        "tr",
        el("th", "setting"),
        *[el("th", f"run {r.index}") for r in doc.runs],
        el("th", ""),
    )
    parts.append(
        el(
            "section",
            el("h2", "Settings"),
            el("table", el("thead", head), el("tbody", *rows), class_="settings"),
            id="settings",
        )
    )
    nav = [
        ("runs", "Runs"),
        ("leaderboards", "Leaderboards"),
        ("plots", "Metrics vs k"),
        ("settings", "Settings"),
    ]
    subtitle = el(
        "div",
        f"{len(doc.runs)} runs · ranked by {METRIC_TITLES[doc.rank_by]} · compared {doc.compared_at}",
    )
    return page("SKILL-MIX comparison", subtitle, nav, parts, el("span", "skillmix compare"))


def model_label(row: LeaderboardRow) -> str:
    """A compared row's label: its student, with the run when names clash."""
    return row.model or row.student


def compare_files(doc: Comparison, *, dpi: int | None = None) -> dict[str, bytes]:
    text = json.dumps(doc.model_dump(mode="json"), indent=2, ensure_ascii=False)
    return {
        "compare.json": text.encode() + b"\n",
        "compare.md": compare_markdown(doc).encode(),
        "compare.html": compare_html(doc, dpi=dpi).encode(),
    }
