"""Reading one run for ``skillmix compare``: its metric rows and the settings that change them.

A run is read from its ``report/summary.json`` when it has one (our evaluations), else its
metrics are computed from its records: with the experiment's metric options for our runs,
with the reference aggregator's options for runs made by ``skillmix import-reference``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skillmix.artifacts import MetricSettings, PromptVersions, ReferenceImportRun, Summary
from skillmix.catalog import builtin_catalog
from skillmix.config import Experiment
from skillmix.errors import SkillmixError
from skillmix.identity import ResultIdentity, comparable_settings
from skillmix.method.points import MetricOptions
from skillmix.pipeline.aggregate import Plan, aggregate_run, incomplete_reasons, work_progress
from skillmix.pipeline.context import RunContext
from skillmix.report.compare_view import RunData
from skillmix.report.leaderboard import IMPORTED_BACKEND
from skillmix.report.view import model_descriptions
from skillmix.store.layout import RunLayout
from skillmix.store.runs import SUMMARY_JSON, RunStore
from skillmix.store.uri import open_store


def metric_settings(settings: MetricSettings) -> str:
    """The metric options in one comparable line (they change the numbers too)."""
    skills = ",".join(settings.filter_skills) or "none"
    return (
        f"mode={settings.mode} vote={settings.vote} "
        f"generation-agg={settings.generation_agg} "
        f"explicit-name={settings.filter_explicit_name} filter-skills={skills}"
    )


def options_settings(options: MetricOptions) -> MetricSettings:
    """Metric options as a summary records them, so both kinds of run compare alike."""
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


def summary_settings(summary: Summary) -> dict[str, str]:
    """The comparable settings of an evaluation run, from its summary."""

    return evaluation_settings(
        summary.experiment,
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
            settings=summary_settings(summary),
            rows=list(summary.metrics.rows),
            categories={r.skill: r.category for r in summary.skill_rates.rows if r.category},
            models=model_descriptions(summary.experiment),
            report=report_link(run.uri),
            excluded=incomplete_reasons(summary.progress or []),
            **_specs(summary.experiment),
        )

    assert data is not None
    ctx = RunContext.from_run(data, f"{uri}/run.json")
    metrics = aggregate_run(run, ctx.experiment.metrics.options())
    progress = work_progress(Plan.of(ctx.experiment), run.generation_records(), run.grade_records())
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
        models=model_descriptions(ctx.experiment),
        report=report_link(run.uri),
        excluded=incomplete_reasons(progress),
        **_specs(ctx.experiment),
    )


def _specs(experiment: Experiment) -> dict[str, dict[str, dict[str, Any]]]:
    """The experiment's student and grader specs by name (model id, backend, sampling), for
    the rows of the comparison."""
    return {
        "student_specs": {s.name: s.model_dump(mode="json") for s in experiment.students},
        "grader_specs": {experiment.grader.name: experiment.grader.model_dump(mode="json")},
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
