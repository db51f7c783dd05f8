"""The aggregation task: metrics, summary and report files of an evaluation run, written into
its folder. Report building lives here (not in pipeline/) so that dependencies point one way:
the executors call it, and it reads runs through pipeline/ and store/."""

from __future__ import annotations

import re

from skillmix.artifacts import (
    GpuUsageSection,
    LaunchPlanRecord,
    PodUsage,
    ReferenceImportRun,
    Summary,
    parse_artifact,
)
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.method.points import MetricOptions
from skillmix.pipeline.aggregate import (
    RunMetrics,
    aggregate_records,
    resume_hint,
    unfinished_units,
    unfinished_warning,
)
from skillmix.pipeline.context import RunContext
from skillmix.report.answers import answers_jsonl, collect_answers, scores_csv
from skillmix.report.files import report_files
from skillmix.report.gpu_usage import gpu_usage_section
from skillmix.report.header import IDENTICAL_ROUNDS
from skillmix.report.leaderboard import imported_board
from skillmix.report.reproduction import reproduction
from skillmix.report.summary import build_summary
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore

ANSWERS_JSONL = "answers.jsonl"
SCORES_CSV = "scores.csv"
_LAUNCH_RECORD = re.compile(r"attempt-(\d{3,})\.json")


class NoFinishedGrades(SkillmixError):
    """No grading unit of the run has finished: there is nothing to report."""


def build_report(
    run: RunStore, ctx: RunContext, options: MetricOptions | None = None, *, dpi: int | None = None
) -> tuple[Summary, dict[str, bytes], RunMetrics]:
    """Metrics + summary + report files for an evaluation run (nothing written).

    Files: summary.json, metrics.csv, report.md, report.html (self-contained, with the answer
    browser), the plots as plots/*.png, and every answer's scores as answers.jsonl and
    scores.csv. Raises SkillmixError when the run has no finished grading unit yet."""
    options = options or ctx.experiment.metrics.options()
    generations = run.generation_records()
    grades = run.grade_records()
    if not grades:
        raise NoFinishedGrades(f"{run.uri}: no finished grades yet", hint=resume_hint(run))
    metrics = aggregate_records(grades, options, run=run.uri)
    summary = build_summary(ctx, metrics, generations, grades, run_uri=run.uri)
    summary.gpu_usage = read_gpu_usage(run, [s.name for s in ctx.experiment.students])
    unfinished = unfinished_warning(unfinished_units(run))
    if unfinished:
        summary.warnings.append(unfinished)
    info = run.read_run()
    summary.reproduction = reproduction(
        run.uri,
        summary.skillmix_version,
        imported_from=info.root if isinstance(info, ReferenceImportRun) else None,
    )
    if isinstance(info, ReferenceImportRun):
        # byte-identical grading rounds (the reference's grade.py --nruns R writes one grading
        # R times) are named next to the agreement view, whose kappa would compare copies; the
        # rows do not claim a backend or sampling that the tree does not record
        copied = [issue for issue in info.issues if IDENTICAL_ROUNDS in issue]
        summary.warnings.extend(copied)
        summary.agreement.warnings.extend(copied)
        summary.leaderboards = [imported_board(b) for b in summary.leaderboards]
    order = [(r.student, r.grader) for r in summary.leaderboards[0].rows]
    answers = collect_answers(
        ctx.run_id, generations, grades, options, order, grader=ctx.experiment.grader.name
    )
    files = (
        report_files(summary, answers=answers)
        if dpi is None
        else report_files(summary, dpi=dpi, answers=answers)
    )
    files[ANSWERS_JSONL] = answers_jsonl(answers).encode()
    files[SCORES_CSV] = scores_csv(answers).encode()
    return summary, files, metrics


def read_gpu_usage(run: RunStore, students: list[str]) -> GpuUsageSection | None:
    """The GPU time of the run's generation pods (``usage/pods/*.json``, written by the
    coordinator of a Kubernetes run) beside each launch attempt's estimate; None without usage
    records. A record that cannot be read is left out and named in the section's warnings (the
    report is still built); a store that cannot be read stops as everywhere else."""
    keys = [k for k in run.store.list_keys(RunLayout.POD_USAGE) if k.endswith(".json")]
    if not keys:
        return None
    base = run.uri.rstrip("/")
    pods: list[PodUsage] = []
    problems: list[str] = []
    for key in keys:
        raw = run.store.read_bytes(key)
        try:
            pods.append(parse_artifact(PodUsage, raw, f"{base}/{key}"))
        except SkillmixError as exc:
            problems.append(f"{exc} (left out)")
    plans: dict[int, LaunchPlanRecord | None] = {}
    for key in run.store.list_keys(RunLayout.LAUNCHES):
        found = _LAUNCH_RECORD.fullmatch(key.rsplit("/", 1)[-1])
        if found is None:
            continue
        attempt = int(found.group(1))
        try:
            record = run.read_launch_record(attempt)
        except SkillmixError as exc:
            if isinstance(exc, RunFailedError):  # the store, not the file
                raise
            problems.append(f"{exc} (its estimate is left out)")
            record = None
        plans[attempt] = record.plan if record is not None else None
    return gpu_usage_section(pods, plans, students, problems)


def run_aggregate_task(run: RunStore, ctx: RunContext) -> tuple[Summary, RunMetrics]:
    """The aggregation task: compute everything and write ``report/`` in the run folder
    (summary.json last, so a reader that sees it finds the whole report)."""
    summary, files, metrics = build_report(run, ctx)
    for name in sorted(files, key=lambda n: n == RunLayout.SUMMARY):
        run.write_report_file(name, files[name])
    return summary, metrics
