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
from pathlib import Path
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
from skillmix.catalog import builtin_catalog
from skillmix.config import Experiment
from skillmix.errors import SkillmixError
from skillmix.identity import SETTING_LABELS, ResultIdentity, comparable_settings
from skillmix.loading import parse_experiment
from skillmix.method.points import METRIC_NAMES, METRIC_TITLES, MetricOptions
from skillmix.pipeline.aggregate import aggregate_run
from skillmix.pipeline.context import RunContext
from skillmix.report.figures import metric_images
from skillmix.report.html_leaderboard import leaderboard_table
from skillmix.report.leaderboard import (
    IMPORTED_BACKEND,
    READING_NOTE,
    Entry,
    describe_entry,
    entries_from_rows,
    leaderboard,
)
from skillmix.report.markdown import leaderboard_markdown, md_escape, md_table, plot_lines
from skillmix.report.markup import Image, Safe, el, figure, fmt, number, page, table
from skillmix.report.plots import DEFAULT_DPI
from skillmix.report.view import model_descriptions
from skillmix.store.layout import RunLayout
from skillmix.store.runs import SUMMARY_JSON, RunStore, utc_now
from skillmix.store.uri import open_store


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
    grader_specs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, exclude=True, description="Per grader: its experiment spec."
    )


class SettingValue(BaseModel):
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
    metric: str = Field(description="Metric name.")
    score_label: str = Field(
        "", description="What the rows' ``mean`` differences average ('mean over k = 2, 3')."
    )
    rows: list[DifferenceRow] = Field(description="Every entry but the baseline, in rank order.")


class BreakdownRow(BaseModel):
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
    """The comparable settings of an evaluation run (from its summary or its run.json): its
    result identity's (skillmix/identity.py, which the run id hashes too) and the metric
    options."""
    identity = ResultIdentity(
        e, catalog_hash, {"generation": p.generation.hash, "grading": p.grading.hash}
    )
    names = {"generation": p.generation.name, "grading": p.grading.name}
    settings = comparable_settings(identity.fields(), names)
    return {**settings, "metrics": metric_settings(metrics)}


def summary_settings(summary: Summary, source: str = "summary.json") -> dict[str, str]:
    """The comparable settings of an evaluation run, from its summary."""

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
            categories=builtin_categories(),
            report=report_link(run.uri),
            # a reference tree names its models, not how they were served or sampled
            student_specs={s: {"model": s, "backend": IMPORTED_BACKEND} for s in data.students},
            grader_specs={g: {"model": g, "backend": IMPORTED_BACKEND} for g in data.graders},
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
            categories={r.skill: r.category for r in summary.skill_rates.rows if r.category},
            models=model_descriptions(summary.experiment),
            report=report_link(run.uri),
            **_specs(summary.experiment),
        )

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
        categories={s.name: s.category for s in ctx.catalog.skills},
        models=model_descriptions(ctx.experiment.model_dump(mode="json")),
        report=report_link(run.uri),
        **_specs(ctx.experiment.model_dump(mode="json")),
    )


def _specs(experiment: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The experiment's student and grader specs by name (model id, backend, sampling), for
    the rows of the comparison."""
    grader = experiment.get("grader") or {}
    return {
        "student_specs": {s["name"]: dict(s) for s in experiment.get("students") or []},
        "grader_specs": {grader["name"]: dict(grader)} if grader.get("name") else {},
    }


def builtin_categories() -> dict[str, str]:
    """Skill categories of the built-in catalog (for runs that carry no catalog)."""

    return {s.name: s.category for s in builtin_catalog().skills}


def report_link(run_uri: str) -> str | None:
    """A local run's report.html as a file:// URI (in RUN/report/, or RUN itself for a
    folder written by ``report --out``); None for object stores or a run without one."""
    if run_uri.startswith("s3://"):
        return None
    base = Path(run_uri.removeprefix("file://"))
    for candidate in (
        base / RunLayout.REPORT / RunLayout.REPORT_HTML,
        base / RunLayout.REPORT_HTML,
    ):
        if candidate.is_file():
            return candidate.resolve().as_uri()
    return None


def setting_keys(runs: Sequence[RunData]) -> list[str]:
    """The settings any of the runs has, in SETTING_LABELS' order."""
    return [k for k in SETTING_LABELS if any(k in r.settings for r in runs)]


def differing_settings(runs: Sequence[RunData]) -> dict[str, dict[str, list[int]]]:
    """Per setting that is not the same everywhere: each value and the runs (1-based) with it."""
    out: dict[str, dict[str, list[int]]] = {}
    for key in setting_keys(runs):
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
    uris: Sequence[str],
    *,
    allow_mixed: bool = False,
    rank_by: str = "full_marks",
    baseline: str | None = None,
) -> Comparison:
    """The comparison as one document (``compare.json``); raises SkillmixError on mixed settings
    unless ``allow_mixed``. ``baseline``: the model the differences are taken from (a student
    name, or its label with the run when it is in several runs); default: the leader."""
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
            describe_entry(entry, run.student_specs, run.grader_specs)
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
    boards = [leaderboard(entries, metric) for metric in order]
    return Comparison(
        baseline=baseline_view(boards, runs, baseline),
        compared_at=utc_now(),
        rank_by=rank_by,
        mixed=bool(diff),
        settings_differ={
            key: [SettingValue(value=value, runs=r) for value, r in values.items()]
            for key, values in diff.items()
        },
        setting_labels=SETTING_LABELS,
        runs=runs,
        leaderboards=boards,
    )


_EntryKey = tuple[int, str, str]  # run, student, grader


def _entry_key(row: LeaderboardRow) -> _EntryKey:
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
    return None if a is None or b is None else a - b


def _mean(values: Sequence[float]) -> float | None:
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


# rendering --------------------------------------------------------------------------------
def compare_markdown(doc: Comparison, plots: Sequence[tuple[str, str]] = ()) -> str:
    """``plots``: (name, title) of the plots written next to the file (``plots/NAME.png``)."""

    lines = ["# SKILL-MIX comparison", ""]
    if doc.mixed:
        lines += [
            "> **Mixed settings**: these runs differ in "
            + ", ".join(SETTING_LABELS[k] for k in doc.settings_differ)
            + "; their numbers are not directly comparable.",
            "",
        ]
    lines += [
        f"{plural(len(doc.runs), 'run')}; ranked by {METRIC_TITLES[doc.rank_by]}.",
        "",
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
            f"Ranked by the mean over k = {ks}; cells: mean ± stderr [95% Wilson interval]. "
            + READING_NOTE,
            "",
            *leaderboard_markdown(
                marked_board(board),
                label_columns=[("model", "student"), ("run_label", "run"), ("grader", "grader")],
            ),
            "",
        ]
    if plots:
        lines += ["## Metrics vs k", "", *plot_lines(plots)]
    keys = setting_keys(doc.runs)
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
    if doc.baseline is not None:
        lines += baseline_markdown(doc.baseline)
    return "\n".join(lines)


def _signed_text(x: float | None, digits: int = 3) -> str:

    if x is None:
        return "—"
    text = fmt(x, digits)
    return "+" + text if x > 0 and text.strip("0.") else text


def baseline_markdown(view: Baseline) -> list[str]:

    lines = [
        f"## Differences from {md_escape(view.model)} (run #{view.run})",
        "",
        "Every entry minus the baseline ("
        + ("chosen with --baseline" if view.chosen == "--baseline" else "the leader")
        + "); positive: better than the baseline. Per skill and per category: the mean over "
        "the shared k values.",
        "",
    ]
    for block in view.metrics:
        ks = sorted({k for r in block.rows for k in r.per_k}, key=int)
        lines += [
            f"### {METRIC_TITLES[block.metric]}",
            "",
            *md_table(
                ["model", "run", *[f"k={k}" for k in ks], block.score_label or "mean over k"],
                [
                    [
                        md_escape(r.model),
                        f"#{r.run}",
                        *[_signed_text(r.per_k.get(k)) for k in ks],
                        _signed_text(r.mean),
                    ]
                    for r in block.rows
                ],
                numeric=range(2, len(ks) + 3),
            ),
            "",
        ]
    for title, rows in (("Per skill category", view.categories), ("Per skill", view.skills)):
        lines += [
            f"### {title}",
            "",
            *md_table(
                ["name", f"{md_escape(view.model)} (baseline)", *map(md_escape, view.columns)],
                [
                    [
                        md_escape(r.name),
                        fmt(r.baseline),
                        *[_signed_text(d, 2) for d in r.differences],
                    ]
                    for r in rows
                ],
                numeric=range(1, len(view.columns) + 2),
            ),
            "",
        ]
    return lines


def compare_html(
    doc: Comparison, *, dpi: int | None = None, images: Sequence[Image] | None = None
) -> str:
    """``images``: the metric plots when already drawn (else drawn here)."""

    boards = doc.leaderboards
    if images is None:
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
                ["#", "run id", "kind", "numbers from", "created", "folder", "report"],
                [
                    [
                        r.index,
                        el("code", r.run_id),
                        r.kind,
                        r.source,
                        r.created_at,
                        el("code", r.run),
                        report_anchor(r),
                    ]
                    for r in doc.runs
                ],
                numeric=[0],
                caption=f"{plural(len(doc.runs), 'run')} in command-line order",
            ),
            id="runs",
        )
    )
    board_parts: list[Any] = [
        el("h2", "Leaderboards"),
        el(
            "p",
            "Ranked by the mean of the per-k values over the k values every entry has. Cells: "
            "mean ± standard error, with the 95% Wilson score interval below. "
            + READING_NOTE
            + " A thick line separates tie groups of several rows.",
            class_="note",
        ),
    ]
    for board in boards:
        board_parts += [
            el("h3", board.title),
            leaderboard_table(  # captioned with the ks its score averages
                linked_board(board, doc),
                [("model", "student"), ("run_label", "run"), ("grader", "grader")],
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
    for key in setting_keys(doc.runs):
        label = SETTING_LABELS[key]
        differs = key in doc.settings_differ
        rows.append(
            el(
                "tr",
                el("th", label, scope="row"),
                *[el("td", r.settings.get(key, "unknown")) for r in doc.runs],
                el("td", "differs" if differs else "same"),
                class_="diff" if differs else None,
            )
        )
    head = el(
        "tr",
        el("th", "setting", scope="col"),
        *[el("th", f"run {r.index}", scope="col") for r in doc.runs],
        el("th", "same?", scope="col"),
    )
    parts.append(
        el(
            "section",
            el("h2", "Settings"),
            el(
                "table",
                el("caption", "The settings that change the numbers, per run"),
                el("thead", head),
                el("tbody", *rows),
                class_="settings",
            ),
            id="settings",
        )
    )
    if doc.baseline is not None:
        parts.append(baseline_html(doc.baseline))
    nav = [
        ("runs", "Runs"),
        ("leaderboards", "Leaderboards"),
        ("plots", "Metrics vs k"),
        ("settings", "Settings"),
        *([("baseline", "Differences")] if doc.baseline is not None else []),
    ]
    subtitle = el(
        "div",
        f"{plural(len(doc.runs), 'run')} · ranked by {METRIC_TITLES[doc.rank_by]} · "
        f"compared {doc.compared_at}",
    )
    return page("SKILL-MIX comparison", subtitle, nav, parts, el("span", "skillmix compare"))


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def report_anchor(run: RunData) -> Any:

    if run.report is None:
        return "—"
    return el("a", "report.html", href=run.report, class_="run-report")


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


def marked_board(board: Leaderboard) -> Leaderboard:
    """The board with "same model in run #N" after each run label where it applies (text)."""
    rows = [
        row.model_copy(
            update={
                "run_label": f"{row.run_label} (same model in run "
                + ", ".join(f"#{i}" for i in also)
                + ")"
            }
        )
        if also
        else row
        for row, also in zip(board.rows, same_model_runs(board), strict=True)
    ]
    return board.model_copy(update={"rows": rows})


def linked_board(board: Leaderboard, doc: Comparison) -> Leaderboard:
    """The board with each row's run cell as markup: a link to that run's report, and a
    badge when the same model is also in another compared run."""

    rows = []
    for row, also in zip(board.rows, same_model_runs(board), strict=True):
        run = doc.runs[run_of(row) - 1]
        label = el(
            "span",
            el("a", row.run_label, href=run.report, class_="run-report")
            if run.report
            else row.run_label,
            el(
                "span",
                "same model in run " + ", ".join(f"#{i}" for i in also),
                class_="badge same",
                title=f"{row.model_id or row.student} is also in run(s) "
                + ", ".join(f"#{i}" for i in also),
            )
            if also
            else None,
        )
        # the student's backend, model id and sampling have their own column
        rows.append(row.model_copy(update={"run_label": Safe(label)}))
    return board.model_copy(update={"rows": rows})


def _signed(x: float | None, digits: int = 3) -> Any:

    if x is None:
        return el("td", "—", class_="num", data_value="null")
    text = fmt(x, digits)
    if not text.startswith("-") and text.strip("0.") != "":
        text = "+" + text
    cls = "num pos" if x > 0 else "num neg" if x < 0 else "num"
    return el("td", text.replace("-", "−"), class_=cls, data_value=number(x))


def baseline_html(view: Baseline) -> Any:

    intro = el(
        "p",
        f"Every entry minus the baseline, {view.model} (run #{view.run}; "
        + (
            "chosen with --baseline"
            if view.chosen == "--baseline"
            else "the leader; choose another with compare --baseline NAME"
        )
        + "). Positive: better than the baseline. Per k: difference of the means over "
        "combinations; mean over k: difference of the leaderboard scores. Per skill: the mean "
        "voted skill point; per category: the mean of its skills' rates; both as the mean over "
        "the k values the two entries share.",
        class_="note",
    )
    parts: list[Any] = [el("h2", f"Differences from {view.model}"), intro]
    for block in view.metrics:
        ks = sorted({k for r in block.rows for k in r.per_k}, key=int)
        parts += [
            el("h3", METRIC_TITLES[block.metric]),
            table(
                ["model", "run", *[f"k = {k}" for k in ks], block.score_label or "mean over k"],
                [
                    [r.model, f"#{r.run}", *[_signed(r.per_k.get(k)) for k in ks], _signed(r.mean)]
                    for r in block.rows
                ],
                numeric=range(1, len(ks) + 3),
                caption=f"{METRIC_TITLES[block.metric]}: entry minus {view.model}, per k",
                class_="sortable",
            ),
        ]
    for title, rows, extra in (
        ("Per skill category", view.categories, False),
        ("Per skill", view.skills, True),
    ):
        header = [
            "category" if not extra else "skill",
            *(["category"] if extra else []),
            f"{view.model} (baseline)",
            *view.columns,
        ]
        body = [
            [
                r.name,
                *([r.category] if extra else []),
                el("td", fmt(r.baseline), class_="num", data_value=json.dumps(r.baseline)),
                *[_signed(d, 2) for d in r.differences],
            ]
            for r in rows
        ]
        grid = table(
            header,
            body,
            numeric=range(2 if extra else 1, len(header)),
            caption=f"{title}: the baseline's rate, and each entry's difference from it",
            class_="sortable",
        )
        parts += [
            el("h3", title),
            el("details", el("summary", f"{len(rows)} skills"), grid) if extra else grid,
        ]
    return el("section", *parts, id="baseline")


def model_label(row: LeaderboardRow) -> str:
    """A compared row's label: its student, with the run when names clash."""
    return row.model or row.student


def compare_files(doc: Comparison, *, dpi: int | None = None) -> dict[str, bytes]:
    """compare.json, compare.md, compare.html and the plots as ``plots/NAME.png`` (the same
    images are embedded in compare.html and shown by compare.md)."""

    images = metric_images(doc.leaderboards, model_label, dpi or DEFAULT_DPI, prefix="compare")
    text = json.dumps(doc.model_dump(mode="json"), indent=2, ensure_ascii=False)
    files = {
        "compare.json": text.encode() + b"\n",
        "compare.md": compare_markdown(doc, [(i.name, i.title) for i in images]).encode(),
        "compare.html": compare_html(doc, dpi=dpi, images=images).encode(),
    }
    for image in images:
        files[f"plots/{image.name}.png"] = image.png
    return files
