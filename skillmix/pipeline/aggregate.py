"""Metrics for a whole run folder: the code behind ``skillmix aggregate`` and the aggregation task."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from skillmix.artifacts import EvaluationRun, MetricsSection
from skillmix.errors import SkillmixError
from skillmix.method.grading import parse_grader_output
from skillmix.method.metrics import MetricRow, aggregate
from skillmix.method.points import METRIC_NAMES, MetricOptions
from skillmix.method.reference_numbers import limit_rounds
from skillmix.method.stats import INTERVAL_METHOD, PAIRED_METHOD
from skillmix.records import GradeRecord
from skillmix.store.runs import RunStore
from skillmix.store.layout import RunLayout


@dataclass
class RunMetrics:
    """Metric rows of a run plus the settings that produced them."""

    rows: list[MetricRow]
    options: MetricOptions
    reparse: bool = False
    run: str = ""
    records: int = 0
    failed: int = 0

    def settings(self) -> dict[str, Any]:
        return {
            **self.options.as_dict(),
            "reparse": self.reparse,
            "run": self.run,
            "interval_method": INTERVAL_METHOD,
            "paired_method": PAIRED_METHOD,
        }

    def as_dict(self, *, details: bool = False) -> dict[str, Any]:
        return {
            "rows": [r.as_dict(details=details) for r in self.rows],
            "settings": self.settings(),
        }

    def section(self, *, details: bool = False) -> MetricsSection:
        """The JSON form as the model of summary.json's ``metrics``."""
        return MetricsSection.model_validate(self.as_dict(details=details))

    def to_json(self, *, details: bool = False) -> str:
        return json.dumps(self.as_dict(details=details), indent=2, ensure_ascii=False)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        header = ["student", "grader", "k", "n", "unparsed"]
        for name in METRIC_NAMES:
            header += [f"{name}_mean", f"{name}_stderr", f"{name}_ci95_low", f"{name}_ci95_high"]
        writer.writerow(header)
        for row in self.rows:
            line: list[object] = [row.student, row.grader, row.k, row.n, row.unparsed]
            for name in METRIC_NAMES:
                value = row.metric(name)
                ci = value.ci95 or (None, None)
                line += [_cell(value.mean), _cell(value.stderr), _cell(ci[0]), _cell(ci[1])]
            writer.writerow(line)
        return buf.getvalue()


def _cell(x: float | None) -> str:
    if x is None or x != x:
        return ""
    return repr(float(x))


def reparsed_points(record: GradeRecord) -> tuple[float, ...] | None:
    if record.raw is None:
        return None
    return parse_grader_output(record.raw, record.k, record.style).points


def aggregate_records(
    records: list[GradeRecord], options: MetricOptions, *, reparse: bool = False, run: str = ""
) -> RunMetrics:
    answers = [
        r.to_graded_answer(reparsed_points(r) if reparse and r.raw is not None else None)
        for r in records
    ]
    rows = aggregate(answers, options)
    failed = sum(1 for r in records if r.status == "failed")
    return RunMetrics(
        rows=rows, options=options, reparse=reparse, run=run, records=len(records), failed=failed
    )


def resume_hint(run: RunStore) -> str:
    """How to finish the run: cluster commands only for a run launched on Kubernetes. A run
    with no finished generation unit says so, rather than naming grading."""
    info = run.read_run()
    phase = "grading" if run.manifest_prefixes(RunLayout.GENERATIONS) else "generation"
    if isinstance(info, EvaluationRun) and info.sharded:
        return f"{phase} has not completed for any unit; see `skillmix status RUN_ID` or relaunch"
    return f"{phase} has not completed for any unit; resume the run (`skillmix evaluate --resume`)"


def aggregate_run(
    run: RunStore,
    options: MetricOptions,
    *,
    reparse: bool = False,
    check_filter: bool = False,
    generation_rounds: int | None = None,
    grading_rounds: int | None = None,
) -> RunMetrics:
    """Metrics from every finished grading unit of the run. ``check_filter``: a filtered skill
    that no graded combination contains is an error (a typo on the command line, not a no-op).
    ``generation_rounds``/``grading_rounds`` N: only rounds 1..N (as the reference's
    ``--num_generation_rounds``/``--num_grading_rounds``)."""
    if run.read_run() is None and run.is_empty():  # reading checks a run.json that exists
        raise SkillmixError(
            f"{run.uri}: no run found here", hint="pass a run folder (it holds run.json)"
        )
    records = run.grade_records()
    if not records:
        raise SkillmixError(f"{run.uri}: no finished grades yet", hint=resume_hint(run))
    known = {skill for record in records for skill in record.skills}
    for name in options.filter_skills if check_filter else ():
        if name not in known:
            raise SkillmixError(
                f"--filter-skills: unknown skill {name!r}: no graded combination of {run.uri} "
                "contains it",
                hint="names must match the catalog's `skill` column exactly "
                "(see `skillmix catalog list`)",
            )
    if generation_rounds is not None or grading_rounds is not None:
        records = limit_rounds(records, generation_rounds, grading_rounds, run.uri)
    return aggregate_records(records, options, reparse=reparse, run=run.uri)
