"""The run summary: metrics, usage and cost per model and phase, failures, provenance, grader
agreement, per-skill and per-topic rates, and example answers.

``summary.json`` is the machine-readable report; ``metrics.csv``, ``report.md`` and the
self-contained ``report.html`` (with its plots, also written as ``plots/*.png``) are laid out
from one view model built from it (:mod:`skillmix.report.view`, :mod:`skillmix.report.files`),
so they never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from skillmix import __version__
from skillmix.artifacts import (
    Counts,
    FailedGeneration,
    FailedGrade,
    Failures,
    Summary,
    SummaryCatalog,
    UsageRow,
)
from skillmix.backends.pricing import cost_usd, price_for
from skillmix.method.points import METRIC_DEFINITIONS
from skillmix.pipeline.aggregate import Plan, RunMetrics, incomplete_reasons, work_progress
from skillmix.pipeline.context import RunContext
from skillmix.records import GenerationRecord, GradeRecord
from skillmix.report.analysis import (
    agreement_section,
    category_rates,
    item_failure_section,
    quality_rows,
    select_examples,
    self_grading_warnings,
    skill_rates,
    topic_rates,
    voted_units,
)
from skillmix.report.leaderboard import leaderboards
from skillmix.report.markdown import md_escape, render_markdown
from skillmix.store.runs import utc_now

__all__ = [
    "build_summary",
    "failure_lists",
    "md_escape",
    "render_markdown",
    "usage_rows",
]

MAX_LISTED_FAILURES = 200


@dataclass
class _UsageTotals:
    model: str
    role: str
    phase: str
    records: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0


def usage_rows(
    ctx: RunContext, generations: Iterable[GenerationRecord], grades: Iterable[GradeRecord]
) -> list[UsageRow]:
    rows: dict[tuple[str, str], _UsageTotals] = {}

    def add(model: str, role: str, phase: str, usage: Any) -> None:
        row = rows.setdefault((model, phase), _UsageTotals(model, role, phase))
        row.records += 1
        row.prompt_tokens += usage.prompt_tokens
        row.completion_tokens += usage.completion_tokens
        if usage.cached:
            row.cached += 1
        else:
            row.billed_prompt_tokens += usage.prompt_tokens
            row.billed_completion_tokens += usage.completion_tokens

    for g in generations:
        add(g.student, "student", "generate", g.usage)
    for r in grades:
        add(r.grader, "grader", "grade", r.usage)
    overrides = {m: (p.prompt, p.completion) for m, p in ctx.experiment.prices.items()}
    specs = {s.name: s for s in ctx.model_specs()}
    out = []
    for (model, _phase), row in sorted(rows.items()):
        spec = specs.get(model)
        price = price_for(spec.backend, spec.model, overrides) if spec else None
        out.append(
            UsageRow.model_validate(
                {
                    **asdict(row),  # the billed counts stay here; the model keeps its fields
                    "model_id": spec.model if spec else model,
                    "cached_records": row.cached,
                    "cost_usd": cost_usd(
                        row.billed_prompt_tokens, row.billed_completion_tokens, price
                    ),
                    "cost_usd_including_cached": cost_usd(
                        row.prompt_tokens, row.completion_tokens, price
                    ),
                }
            )
        )
    return out


def failure_lists(
    generations: Iterable[GenerationRecord], grades: Iterable[GradeRecord]
) -> Failures:
    # the models keep the fields they describe, in their order, from each record
    gen_failed = [
        FailedGeneration.model_validate({**g.model_dump(), "reason": g.error})
        for g in generations
        if g.status == "failed"
    ]
    grade_failed = [
        FailedGrade.model_validate({**r.model_dump(), "reason": r.error or r.parse_detail})
        for r in grades
        if r.status != "ok"
    ]
    return Failures(
        generation_failed=len(gen_failed),
        grading_failed=sum(1 for r in grades if r.status == "failed"),
        grading_unparsed=sum(1 for r in grades if r.status == "unparsed"),
        grading_retried=sum(1 for r in grades if r.attempts > 1),
        generation=gen_failed[:MAX_LISTED_FAILURES],
        grading=grade_failed[:MAX_LISTED_FAILURES],
    )


def _verdict_key(r: GradeRecord) -> tuple[str, str, int, int, int, int]:
    return (r.grader, r.student, r.k, r.generation_round, r.index, r.grading_round)


def _verdicts_due(
    ctx: RunContext, generations: list[GenerationRecord]
) -> set[tuple[str, str, int, int, int, int]]:
    """One verdict per grading round for every answer the grading task grades (a successful
    generation with an answer): the planned and the found count both count these keys, so
    grades of an unfinished generation unit or of rounds outside the plan never make the found
    count exceed the planned one."""
    grader = ctx.experiment.grader
    return {
        (grader.name, g.student, g.k, g.generation_round, g.index, r)
        for g in generations
        if g.status == "ok" and g.answer is not None
        for r in range(1, grader.rounds + 1)
    }


def build_summary(
    ctx: RunContext,
    metrics: RunMetrics,
    generations: list[GenerationRecord],
    grades: list[GradeRecord],
    *,
    run_uri: str,
) -> Summary:
    e = ctx.experiment
    planned_generations = len(e.students) * len(e.ks) * e.generation_rounds * e.combinations
    due = _verdicts_due(ctx, generations)
    found = len(due & {_verdict_key(r) for r in grades})
    planned_grades = len(due)
    progress = work_progress(Plan.of(e), generations, grades)
    excluded = incomplete_reasons(progress)
    complete = len(generations) >= planned_generations and found >= planned_grades and not excluded
    section = metrics.section(details=True)
    boards = leaderboards(
        section.rows,
        samples=metrics.options.bootstrap_samples,
        seed=metrics.options.bootstrap_seed,
        students={s.name: s.model_dump(mode="json") for s in e.students},
        graders={e.grader.name: e.grader.model_dump(mode="json")},
        excluded=excluded,
    )
    order = [(r.student, r.grader) for r in boards[0].rows]  # by Full Marks
    units = voted_units(grades, metrics.options)
    categories = {s.name: s.category for s in ctx.catalog.skills}
    return Summary(
        run_id=ctx.run_id,
        run=run_uri,
        created_at=ctx.created_at,
        reported_at=utc_now(),
        skillmix_version=__version__,
        experiment=e.stored(),
        catalog=SummaryCatalog(
            source=ctx.catalog.source,
            hash=ctx.catalog.content_hash(),
            skills=len(ctx.catalog.skills),
            topics=len(ctx.catalog.topics),
        ),
        prompts=ctx.prompt_versions(),
        counts=Counts(
            planned_generations=planned_generations,
            generations=len(generations),
            planned_grades=planned_grades,
            grades=found,
        ),
        status="complete" if complete else "partial",
        progress=progress,
        metrics=section,
        leaderboards=boards,
        usage=usage_rows(ctx, generations, grades),
        failures=failure_lists(generations, grades),
        quality=quality_rows(generations, grades),
        agreement=agreement_section(grades),
        item_failures=item_failure_section(units, order),
        skill_rates=skill_rates(metrics.rows, order, categories),
        topic_rates=topic_rates(metrics.rows, order),
        category_rates=category_rates(metrics.rows, categories, order),
        gallery=select_examples(units, metrics.options, order),
        metric_definitions=dict(METRIC_DEFINITIONS),
        warnings=[
            *self_grading_warnings(e),
            *(f"{student}: not ranked, {why}" for student, why in excluded.items()),
        ],
    )
