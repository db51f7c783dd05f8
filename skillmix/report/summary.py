"""The run summary: metrics, usage and cost per model and phase, failures, provenance.

``summary.json`` is the machine-readable report; ``metrics.csv`` and ``report.md`` are built
from the same data. (The HTML report adds plots on top of this.)
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from skillmix import __version__
from skillmix.backends.pricing import cost_usd, price_for
from skillmix.method.metrics import METRIC_NAMES, METRIC_TITLES
from skillmix.pipeline.aggregate import RunMetrics
from skillmix.pipeline.context import RunContext
from skillmix.records import GenerationRecord, GradeRecord
from skillmix.store.runs import utc_now

MAX_LISTED_FAILURES = 200


@dataclass
class UsageRow:
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
) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], UsageRow] = {}

    def add(model: str, role: str, phase: str, usage: Any) -> None:
        row = rows.setdefault((model, phase), UsageRow(model, role, phase))
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
            {
                "model": model,
                "model_id": spec.model if spec else model,
                "role": row.role,
                "phase": row.phase,
                "records": row.records,
                "cached_records": row.cached,
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "cost_usd": cost_usd(row.billed_prompt_tokens, row.billed_completion_tokens, price),
                "cost_usd_including_cached": cost_usd(
                    row.prompt_tokens, row.completion_tokens, price
                ),
            }
        )
    return out


def failure_lists(
    generations: Iterable[GenerationRecord], grades: Iterable[GradeRecord]
) -> dict[str, Any]:
    gen_failed = [
        {
            "student": g.student,
            "k": g.k,
            "generation_round": g.generation_round,
            "index": g.index,
            "reason": g.error,
        }
        for g in generations
        if g.status == "failed"
    ]
    grade_failed = [
        {
            "student": r.student,
            "k": r.k,
            "generation_round": r.generation_round,
            "grading_round": r.grading_round,
            "index": r.index,
            "status": r.status,
            "reason": r.error or r.parse_detail,
        }
        for r in grades
        if r.status != "ok"
    ]
    reasons: dict[str, int] = defaultdict(int)
    for item in gen_failed + grade_failed:
        reasons[str(item["reason"]).split(":")[0][:80]] += 1
    return {
        "generation_failed": len(gen_failed),
        "grading_failed": sum(1 for r in grades if r.status == "failed"),
        "grading_unparsed": sum(1 for r in grades if r.status == "unparsed"),
        "grading_retried": sum(1 for r in grades if r.attempts > 1),
        "generation": gen_failed[:MAX_LISTED_FAILURES],
        "grading": grade_failed[:MAX_LISTED_FAILURES],
    }


def build_summary(
    ctx: RunContext,
    metrics: RunMetrics,
    generations: list[GenerationRecord],
    grades: list[GradeRecord],
    *,
    run_uri: str,
) -> dict[str, Any]:
    e = ctx.experiment
    planned_generations = len(e.students) * len(e.ks) * e.generation_rounds * e.combinations
    return {
        "schema_version": 1,
        "run_id": ctx.run_id,
        "run": run_uri,
        "created_at": ctx.created_at,
        "reported_at": utc_now(),
        "skillmix_version": __version__,
        "experiment": e.model_dump(mode="json"),
        "catalog": {
            "source": ctx.catalog.source,
            "hash": ctx.catalog.content_hash(),
            "skills": len(ctx.catalog.skills),
            "topics": len(ctx.catalog.topics),
        },
        "prompts": {
            "generation": {
                "name": ctx.generation_prompt.name,
                "hash": ctx.generation_prompt.content_hash(),
            },
            "grading": {
                "name": ctx.grading_prompt.name,
                "hash": ctx.grading_prompt.content_hash(),
                "style": ctx.grading_style,
            },
        },
        "counts": {
            "planned_generations": planned_generations,
            "generations": len(generations),
            "planned_grades": sum(1 for g in generations if g.status == "ok") * e.grader.rounds,
            "grades": len(grades),
        },
        "metrics": metrics.as_dict(details=True),
        "usage": usage_rows(ctx, generations, grades),
        "failures": failure_lists(generations, grades),
    }


def _fmt(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(metric: dict[str, Any]) -> str:
    ci = metric.get("ci95")
    return "" if not ci or ci[0] is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def metrics_markdown(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| student | grader | k | n | "
        + " | ".join(METRIC_TITLES[m] for m in METRIC_NAMES)
        + " | unparsed |",
        "|---|---|---:|---:|" + "---:|" * len(METRIC_NAMES) + "---:|",
    ]
    for row in summary["metrics"]["rows"]:
        cells = [
            f"{_fmt(row[m]['mean'], 2)} ± {_fmt(row[m]['stderr'], 3)}{_ci(row[m])}"
            for m in METRIC_NAMES
        ]
        lines.append(
            f"| {md_escape(row['student'])} | {md_escape(row['grader'])} | {row['k']} | {row['n']} | "
            + " | ".join(cells)
            + f" | {row['unparsed']} |"
        )
    return lines


def md_escape(text: str) -> str:
    """Escape text for a Markdown table cell (model output must not inject markup)."""
    out = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "`*_[]<>#":
        out = out.replace(ch, "\\" + ch)
    return out


def render_markdown(summary: dict[str, Any]) -> str:
    e = summary["experiment"]
    settings = summary["metrics"]["settings"]
    lines = [
        f"# SKILL-MIX report: {md_escape(summary['run_id'])}",
        "",
        f"- run: `{summary['run']}`",
        f"- created: {summary['created_at']}; reported: {summary['reported_at']}; skillmix {summary['skillmix_version']}",
        f"- students: {', '.join(md_escape(s['name']) + ' (' + md_escape(s['model']) + ')' for s in e['students'])}",
        f"- grader: {md_escape(e['grader']['name'])} ({md_escape(e['grader']['model'])}), {e['grader']['rounds']} grading rounds, "
        f"prompt {summary['prompts']['grading']['name']} ({summary['prompts']['grading']['style']})",
        f"- k: {', '.join(map(str, e['ks']))}; M = {e['combinations']} combinations; {e['generation_rounds']} generation rounds; "
        f"seed {e['seed']}; sampling {e['sampling']}",
        f"- catalog: {md_escape(summary['catalog']['source'])} ({summary['catalog']['skills']} skills, {summary['catalog']['topics']} topics, "
        f"hash {summary['catalog']['hash']}); generation prompt {summary['prompts']['generation']['name']} ({summary['prompts']['generation']['hash']})",
        f"- metrics: mode {settings['mode']}, vote {settings['vote']}, generation rounds {settings['generation_agg']}, "
        f"explicit-name filter {settings['filter_explicit_name']}",
        "",
        "## Metrics (mean ± stderr [95% bootstrap CI])",
        "",
        *metrics_markdown(summary),
        "",
        "## Usage and estimated cost",
        "",
        "| model | role | phase | records | cached | prompt tokens | completion tokens | cost (USD) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for u in summary["usage"]:
        lines.append(
            f"| {md_escape(u['model'])} | {u['role']} | {u['phase']} | {u['records']} | {u['cached_records']} | "
            f"{u['prompt_tokens']} | {u['completion_tokens']} | {_fmt(u['cost_usd'], 4)} |"
        )
    f = summary["failures"]
    lines += [
        "",
        "## Failures",
        "",
        f"- generations failed: {f['generation_failed']}",
        f"- grading verdicts failed: {f['grading_failed']}; unparsed after re-asks: {f['grading_unparsed']}; "
        f"re-asked at least once: {f['grading_retried']}",
        "",
    ]
    return "\n".join(lines)


def report_files(summary: dict[str, Any], metrics: RunMetrics) -> dict[str, bytes]:
    return {
        "summary.json": json.dumps(summary, indent=2, ensure_ascii=False).encode() + b"\n",
        "metrics.csv": metrics.to_csv().encode(),
        "report.md": render_markdown(summary).encode(),
    }
