"""Metrics for a whole run folder: the code behind ``skillmix aggregate`` and the aggregation task."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from skillmix.artifacts import EvaluationRun, MetricsSection, PhaseProgress
from skillmix.config import Experiment
from skillmix.errors import SkillmixError
from skillmix.method.grading import parse_grader_output
from skillmix.method.metrics import MetricRow, aggregate
from skillmix.method.points import METRIC_NAMES, MetricOptions
from skillmix.method.reference_numbers import limit_rounds
from skillmix.method.stats import INTERVAL_METHOD, PAIRED_METHOD
from skillmix.records import GenerationRecord, GradeRecord
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.vocab import Phase


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


def aggregate_warnings(
    run: RunStore,
    metrics: RunMetrics,
    *,
    generation_rounds: int | None = None,
    grading_rounds: int | None = None,
) -> list[str]:
    """What ``skillmix aggregate`` warns about, as ``report`` does: units without a manifest,
    and per student the planned work missing or failed (a reference import, which records no
    plan: the failed verdicts)."""
    out = [w for w in [unfinished_warning(unfinished_units(run))] if w]
    info = run.read_run()
    if isinstance(info, EvaluationRun):
        plan = Plan.of(info.experiment)
        plan = replace(
            plan,
            generation_rounds=min(plan.generation_rounds, generation_rounds or 10**9),
            grading_rounds=min(plan.grading_rounds, grading_rounds or 10**9),
        )
        progress = work_progress(plan, run.generation_records(), run.grade_records())
        out += [f"{s}: not ranked, {why}" for s, why in incomplete_reasons(progress).items()]
    elif metrics.failed:
        out.append(f"{metrics.failed} of {metrics.records} grading verdicts failed after retries")
    return out


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


# planned against done: the rule that keeps ranks honest -----------------------------------
COMPLETENESS_RULE = (
    "A model is ranked only when all its planned work is in: every planned answer generated "
    "and every verdict of it given. A model with failed or missing records is marked partial "
    "and left out of the ranks, with the reason on its row (its per-k numbers, over the "
    "records it has, are still shown); paired tests use only the (k, combination) pairs both "
    "models have, and say how many."
)


@dataclass(frozen=True)
class Plan:
    """What the experiment plans per student: its k values, G generation rounds, M
    combinations, and R grading rounds by ``grader``."""

    students: Sequence[str]
    ks: Sequence[int]
    generation_rounds: int
    combinations: int
    grader: str
    grading_rounds: int

    @classmethod
    def of(cls, e: Experiment) -> Plan:
        return cls(
            students=[s.name for s in e.students],
            ks=list(e.ks),
            generation_rounds=e.generation_rounds,
            combinations=e.combinations,
            grader=e.grader.name,
            grading_rounds=e.grader.rounds,
        )


def work_progress(
    plan: Plan, generations: Iterable[GenerationRecord], grades: Iterable[GradeRecord]
) -> list[PhaseProgress]:
    """Per student, planned, done, failed and missing records of each phase. An answer is
    done with its text; a verdict when the grader answered (unparsed included). Records
    outside the plan (other k values or rounds) are not counted."""
    ks = set(plan.ks)
    answered: dict[str, set[tuple[int, int, int]]] = {s: set() for s in plan.students}
    gen_failed: dict[str, set[tuple[int, int, int]]] = {s: set() for s in plan.students}
    for g in generations:
        key = (g.k, g.generation_round, g.index)
        if (
            g.student not in answered
            or g.k not in ks
            or g.generation_round > plan.generation_rounds
        ):
            continue
        if g.status == "ok" and g.answer is not None:
            answered[g.student].add(key)
        elif g.status == "failed":
            gen_failed[g.student].add(key)
    given: dict[str, set[tuple[int, int, int, int]]] = {s: set() for s in plan.students}
    grade_failed: dict[str, set[tuple[int, int, int, int]]] = {s: set() for s in plan.students}
    for r in grades:
        if (
            r.grader != plan.grader
            or r.student not in given
            or r.grading_round > plan.grading_rounds
        ):
            continue
        if (r.k, r.generation_round, r.index) not in answered[r.student]:
            continue
        verdict = (r.k, r.generation_round, r.index, r.grading_round)
        (grade_failed if r.status == "failed" else given)[r.student].add(verdict)
    planned = len(plan.ks) * plan.generation_rounds * plan.combinations
    return [
        progress
        for s in plan.students
        for progress in (
            _phase_progress(s, "generate", planned, answered[s], gen_failed[s]),
            _phase_progress(s, "grade", planned * plan.grading_rounds, given[s], grade_failed[s]),
        )
    ]


def _phase_progress(
    student: str, phase: Phase, planned: int, done: set[Any], failed: set[Any]
) -> PhaseProgress:
    """Done, failed for good (no success since) and missing, of what the plan asked."""
    failed_for_good = len(failed - done)
    return PhaseProgress(
        student=student,
        phase=phase,
        planned=planned,
        done=len(done),
        failed=failed_for_good,
        missing=max(0, planned - len(done) - failed_for_good),
    )


_PHASE_WORDS = {"generate": "answers", "grade": "verdicts"}


def incomplete_reasons(progress: Iterable[PhaseProgress]) -> dict[str, str]:
    """Per student with planned work not done: why it is not ranked, in words ("12 of 30
    planned answers failed; 36 of 90 planned verdicts missing")."""
    parts: dict[str, list[str]] = {}
    for p in progress:
        words = _PHASE_WORDS.get(p.phase, p.phase)
        if p.failed:
            parts.setdefault(p.student, []).append(
                f"{p.failed} of {p.planned} planned {words} failed"
            )
        if p.missing:
            parts.setdefault(p.student, []).append(
                f"{p.missing} of {p.planned} planned {words} missing"
            )
    return {s: "partial: " + "; ".join(lines) for s, lines in parts.items()}


def unfinished_units(run: RunStore) -> list[str]:
    """Unit folders that hold parts but no ``_SUCCESS`` manifest (a task that has not
    finished, or crashed): their records are not read by any report."""
    out = []
    for top in (RunLayout.GENERATIONS, RunLayout.GRADES):
        run.check_folder(top)
        folders: dict[str, bool] = {}
        for key in run.store.list_keys(top):
            folder, _, name = key.rpartition("/")
            if name == RunLayout.MANIFEST:
                folders[folder] = True
            elif name.startswith(RunLayout.PART_PREFIX) and "/_damaged" not in folder:
                folders.setdefault(folder, False)
        out += sorted(folder for folder, finished in folders.items() if not finished)
    return out


def unfinished_warning(units: Sequence[str]) -> str | None:
    """The warning for units without a manifest, naming the first few."""
    if not units:
        return None
    shown = ", ".join(units[:3]) + (f" and {len(units) - 3} more" if len(units) > 3 else "")
    return (
        f"{len(units)} unit(s) have parts but no {RunLayout.MANIFEST} manifest (unfinished; "
        f"their records are left out): {shown}"
    )
