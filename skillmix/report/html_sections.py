"""report.html's run sections: settings, failures and retries, usage and cost (GPU time
included), score against cost, and the banner of a partial run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skillmix.artifacts import (
    FailedGeneration,
    FailedGrade,
    GpuUsageSection,
    Summary,
    UsageRow,
)
from skillmix.config import GraderSpec, StudentSpec
from skillmix.report.analysis import QUALITY_COLUMNS
from skillmix.report.gpu_usage import GPU_TIME_CAPTION, GPU_TIME_COLUMNS, gpu_time_cells
from skillmix.report.markup import Image, Safe, el, figure, fmt, kv_table, number, table
from skillmix.report.reproduction import ReproductionView
from skillmix.report.view import USAGE_COLUMNS, CostPoint, PartialView


def settings_section(summary: Summary) -> Safe:
    """The run's settings, folded behind a control (the header line says the design)."""
    run, design, sources, metric = _settings_tables(summary)
    e = summary.experiment
    students = students_table(e.students)
    grader = grader_table(e.grader, summary.prompts.grading.style)
    return el(
        "section",
        el("h2", "Settings"),
        el(
            "details",
            el(
                "summary",
                "The run, its design, catalog and prompts, metric options, students and grader",
            ),
            el(
                "div",
                el("div", el("h3", "Run"), run),
                el("div", el("h3", "Design"), design),
                el("div", el("h3", "Catalog and prompts"), sources),
                el("div", el("h3", "Metric options"), metric),
                class_="grid",
            ),
            el(
                "div",
                el("div", el("h3", "Students"), students),
                el("div", el("h3", "Grader"), grader),
                class_="grid",
            ),
            class_="settings",
        ),
        id="settings",
    )


def _settings_tables(summary: Summary) -> tuple[Safe, Safe, Safe, Safe]:
    """The run, design, sources and metric-option tables of the settings."""
    e = summary.experiment
    g = e.grader
    prompts = summary.prompts
    settings = summary.metrics.settings
    cat = summary.catalog
    run = kv_table(
        {
            "run id": el("code", summary.run_id),
            "run folder": el("code", summary.run),
            "status": summary.status,
            "created": summary.created_at,
            "reported": summary.reported_at,
            "skillmix": summary.skillmix_version,
        },
        caption="The run: id, folder, status and times",
    )
    design = kv_table(
        {
            "k values": ", ".join(map(str, e.ks)),
            "M (combinations per k)": e.combinations,
            "G (generation rounds)": e.generation_rounds,
            "R (grading rounds)": g.rounds,
            "seed / order seed": f"{e.seed} / {e.order_seed}",
            "sampling": e.sampling,
        },
        caption="The design: k values, combinations and rounds, seeds",
    )
    sources = kv_table(
        {
            "catalog": el(
                "span",
                f"{cat.source} ({cat.skills} skills, {cat.topics} topics) ",
                el("code", cat.hash),
            ),
            "generation prompt": el(
                "span",
                f"{prompts.generation.name} ",
                el("code", prompts.generation.hash),
            ),
            "grading prompt": el(
                "span",
                f"{prompts.grading.name} ({prompts.grading.style}) ",
                el("code", prompts.grading.hash),
            ),
        },
        caption="Catalog and prompt versions, with their content hashes",
    )
    metric = kv_table(
        {
            "mode": settings.mode,
            "grading rounds combined by": settings.vote,
            "generation rounds combined by": settings.generation_agg,
            "explicit-name filter": settings.filter_explicit_name,
            "skills filtered out": ", ".join(settings.filter_skills) or "none",
            "bootstrap": f"{settings.bootstrap_samples} resamples (seed {settings.bootstrap_seed})",
        },
        caption="How the metrics combine rounds and filter answers",
    )
    return run, design, sources, metric


def students_table(students: Sequence[StudentSpec]) -> Safe:
    """Each student's backend, model id and sampling settings."""
    return table(
        ["student", "backend", "model", "temperature", "top_p", "max tokens", "system prompt"],
        [
            [
                s.name,
                s.backend,
                s.model + (f" (quality {s.quality})" if s.quality is not None else ""),
                _opt(s.sampling.temperature),
                _opt(s.sampling.top_p),
                _opt(s.sampling.max_tokens),
                s.system_prompt or "—",
            ]
            for s in students
        ],
        caption="Each student's backend, model id and sampling settings",
    )


def grader_table(g: GraderSpec, style: str) -> Safe:
    """The grader: model, rounds and sampling; ``style``: the grading prompt's."""
    return kv_table(
        {
            "grader": g.name,
            "backend / model": f"{g.backend} / {g.model}"
            + (f" (quality {g.quality})" if g.quality is not None else ""),
            "rounds": g.rounds,
            "style": f"{g.style} → {style}",
            "temperature / max tokens": f"{_opt(g.sampling.temperature)} / {_opt(g.sampling.max_tokens)}",
            "re-asks after unreadable reply": g.max_parse_retries,
        },
        caption="The grader: model, rounds and sampling",
    )


def _opt(x: object) -> str:
    return "default" if x is None else str(x)


def failures_section(summary: Summary) -> Safe:
    f = summary.failures
    rows = [[q.student, q.k, *[getattr(q, c) for c, _ in QUALITY_COLUMNS]] for q in summary.quality]
    header = ["student", "k", *[t for _, t in QUALITY_COLUMNS]]
    listed: list[FailedGeneration | FailedGrade] = [*f.generation, *f.grading]
    reasons = (
        el(
            "details",
            el("summary", f"{len(listed)} failed or unreadable records"),
            table(
                ["student", "k", "generation round", "grading round", "combination", "reason"],
                [
                    [
                        x.student,
                        x.k,
                        x.generation_round,
                        getattr(x, "grading_round", "—"),
                        x.index,
                        x.reason or getattr(x, "status", ""),
                    ]
                    for x in listed
                ],
                caption="Failed generations and failed or unreadable grading verdicts",
            ),
        )
        if listed
        else None
    )
    return _table_section(
        "failures",
        "Parse failures and retries",
        f"Generations failed: {f.generation_failed}. Grading verdicts failed: "
        f"{f.grading_failed}; unreadable after re-asks: {f.grading_unparsed}; "
        f"re-asked at least once: {f.grading_retried}.",
        header,
        rows,
        first_numeric=1,
        caption="Records per student and k, by outcome",
        after=reasons,
    )


def usage_section(usage: Sequence[UsageRow], gpu: GpuUsageSection | None = None) -> Safe:
    rows: list[list[Any]] = [
        [
            u.model,
            u.model_id,
            u.role,
            u.phase,
            u.records,
            u.cached_records,
            f"{u.prompt_tokens:,}",
            f"{u.completion_tokens:,}",
            fmt(u.cost_usd, 4) if u.cost_usd is not None else "unknown price",
        ]
        for u in usage
    ]
    known = [u.cost_usd for u in usage if u.cost_usd is not None]
    total: list[list[Any]] = [
        [
            el("td", el("strong", "total")),
            "",
            "",
            "",
            sum(u.records for u in usage),
            sum(u.cached_records for u in usage),
            f"{sum(u.prompt_tokens for u in usage):,}",
            f"{sum(u.completion_tokens for u in usage):,}",
            fmt(sum(known), 4) + (" + unknown" if len(known) < len(usage) else ""),
        ]
    ]
    return _table_section(
        "usage",
        "Usage and estimated cost",
        "Tokens as reported by each backend; cost from the price table (or the "
        "experiment's prices); cached replies cost nothing again.",
        list(USAGE_COLUMNS),
        rows,
        first_numeric=4,
        caption="Tokens and estimated cost per model and phase",
        foot=total,
        after=gpu_time_part(gpu),
    )


def _table_section(
    anchor: str,
    title: str,
    note: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    first_numeric: int,
    caption: str,
    foot: Sequence[Sequence[Any]] = (),
    after: Safe | None = None,
) -> Safe:
    """A section of one table: its heading, a note on the numbers, the table (its columns
    from ``first_numeric`` on right-aligned) and what comes ``after`` it."""
    return el(
        "section",
        el("h2", title),
        el("p", note, class_="note"),
        table(
            header,
            rows,
            numeric=range(first_numeric, len(header)),
            caption=caption,
            foot=foot,
        ),
        after,
        id=anchor,
    )


def gpu_time_part(section: GpuUsageSection | None) -> Safe | None:
    """The "GPU time" table of a Kubernetes run with pod usage records (None without)."""
    if section is None:
        return None
    rows = [[student, *gpu_time_cells(t)] for student, t in section.students.items()]
    total = [[el("td", el("strong", "total")), *gpu_time_cells(section.total)]]
    return el(
        "div",
        el("h3", "GPU time"),
        el("p", section.note, class_="note"),
        *[el("div", el("strong", "Warning: "), w, class_="banner") for w in section.warnings],
        table(
            ["student", *GPU_TIME_COLUMNS],
            rows,
            numeric=range(1, 1 + len(GPU_TIME_COLUMNS)),
            caption=GPU_TIME_CAPTION,
            foot=total,
            class_="gpu-time",
        ),
        id="gpu-time",
    )


def partial_banner(partial: PartialView | None) -> Safe | None:
    """What a partial run has finished, and who is not ranked yet."""
    if partial is None:
        return None
    missing = partial.ungraded
    return el(
        "div",
        el("strong", "Partial run: "),
        f"{partial.generations} of {partial.planned_generations} generations and "
        f"{partial.grades} of {partial.planned_grades} grading verdicts are finished; "
        "numbers cover the finished part only.",
        el(
            "span",
            f" Not graded yet, so not ranked: {', '.join(missing)}.",
            class_="ungraded",
        )
        if missing
        else None,
        class_="banner",
    )


def cost_section(points: Sequence[CostPoint], metric: str, image: Image | None) -> Safe:
    """``metric``: the headline score's header (its metric and k values)."""
    rows = [
        [
            p.student,
            el("td", fmt(p.score, 3), class_="num", data_value=number(p.score)),
            el("td", f"{p.tokens:,}", class_="num", data_value=p.tokens),
            el(
                "td",
                fmt(p.cost_usd, 4) if p.cost_usd is not None else "unknown price",
                class_="num",
                data_value=number(p.cost_usd),
            ),
            el(
                "td",
                fmt(p.per_1000_tokens, 4) if p.tokens else "n/a",
                class_="num",
                data_value=number(p.per_1000_tokens),
            ),
        ]
        for p in points
    ]
    return el(
        "section",
        el("h2", "Score against cost"),
        figure(image) if image else el("p", "Nothing graded yet.", class_="note"),
        table(
            [
                "student",
                metric,
                "generation tokens",
                "cost (USD)",
                "score per 1,000 tokens",
            ],
            rows,
            numeric=range(1, 5),
            caption="Headline score and generation usage per model (grading costs are in Usage).",
            class_="sortable",
        ),
        id="cost",
    )


def reproduction_section(block: ReproductionView | None) -> Safe | None:
    """How to get the numbers again (commands, version, revision, hashes) and how to cite
    them; None for a summary written before the block existed."""
    if block is None:
        return None
    return el(
        "section",
        el("h2", "Reproduce and cite"),
        el("pre", el("code", "\n".join(block.commands)), class_="repro"),
        el(
            "details",
            el("summary", "Version, git revision, hashes and how to cite"),
            kv_table(
                {label: el("code", value) for label, value in block.facts},
                caption="What the numbers depend on: version, revision, hashes, seed",
            ),
            el("p", el("strong", "Cite:")),
            el("ul", *[el("li", line) for line in block.citation], class_="citation"),
        ),
        id="reproduce",
    )
