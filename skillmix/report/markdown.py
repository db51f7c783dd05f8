"""``report.md``: the report's tables in Markdown (for pull requests and wikis).

Built from ``summary.json`` alone. Every piece of text that comes from a run (model names,
topics, skills, answers, grader replies) goes through :func:`md_escape`, so it cannot break
a table or inject markup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from skillmix.artifacts import (
    AgreementSection,
    GalleryExample,
    Leaderboard,
    MetricValueJson,
    SkillRates,
    Summary,
    TopicRates,
)
from skillmix.method.metrics import METRIC_NAMES, METRIC_TITLES
from skillmix.report.analysis import QUALITY_COLUMNS
from skillmix.report.markup import fmt, fmt_stderr, pct

GROUP_TITLES = {"skills": "skills", "topic": "topic", "sense": "sense", "length": "length"}
KIND_TITLES = {
    "best": "best",
    "worst": "worst",
    "explicit_name": "names a skill",
}


def md_escape(text: object) -> str:
    """Escape text for Markdown (table cells included): model output must not inject markup.

    ``&``, ``<`` and ``>`` become HTML entities (Markdown renderers show them as the
    characters, and no raw tag survives); the specials that can start markup anywhere in a
    line get a backslash; ``_`` only where it could (not inside a word, as in ``mock_grader``);
    ``#``, ``!`` and ``~`` only where they could (line start, before ``[``, doubled), so the
    file stays readable as plain text. Line breaks become spaces so a table row stays one
    line (:func:`md_block` keeps them)."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("\\", "\\\\").replace("|", "\\|")
    out = out.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    for ch in "`*[]":
        out = out.replace(ch, "\\" + ch)
    out = re.sub(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])", r"\\_", out)
    out = out.replace("!\\[", "\\!\\[").replace("~~", "\\~\\~")
    if re.match(r"#|[-+] ", out):  # a heading or list item at a line's start
        out = "\\" + out
    out = re.sub(r"^(\d+)([.)]) ", r"\1\\\2 ", out)  # a numbered list item
    return out


def md_block(text: str, prefix: str = "> ") -> list[str]:
    """A text as Markdown lines that keep its line breaks (each line escaped and prefixed,
    e.g. a blockquote); a blank line stays a (prefixed) blank line."""
    lines = str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(prefix + md_escape(line) if line.strip() else prefix.rstrip()) for line in lines]


def md_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Iterable[int] = ()
) -> list[str]:
    """A Markdown table; cells are used as given (escape text cells before)."""
    right = set(numeric)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def metric_cell(cell: MetricValueJson | None, n: int | None = None) -> str:
    """``mean ± stderr [low, high]`` (the reference's printed form plus the 95% interval);
    ``n``: the row's combinations (a leaderboard cell carries its own)."""
    if cell is None:
        return "—"
    n = getattr(cell, "n", n)
    ci = cell.ci95
    interval = f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci and ci[0] is not None else ""
    return f"{fmt(cell.mean)} ± {fmt_stderr(cell.stderr, n)}{interval}"


def leaderboard_markdown(
    board: Leaderboard, *, label_columns: Sequence[tuple[str, str]]
) -> list[str]:
    """One leaderboard; ``label_columns``: (row field, header) pairs shown before the k
    columns."""
    ks = board.ks
    header = ["rank", *[h for _, h in label_columns], *[f"k={k}" for k in ks], "mean over k"]
    rows = []
    for row in board.rows:
        rows.append(
            [
                row.rank if row.rank is not None else "—",
                *[md_escape(_or_empty(getattr(row, c))) for c, _ in label_columns],
                *[metric_cell(row.cells.get(str(k))) for k in ks],
                fmt(row.score, 3),
            ]
        )
    return md_table(header, rows, numeric=[0, *range(len(label_columns) + 1, len(header))])


def _or_empty(value: object) -> object:
    return "" if value is None else value


def metrics_markdown(summary: Summary) -> list[str]:
    header = ["student", "grader", "k", "n", *[METRIC_TITLES[m] for m in METRIC_NAMES], "unparsed"]
    rows = [
        [
            md_escape(row.student),
            md_escape(row.grader),
            row.k,
            row.n,
            *[metric_cell(row.metric(m), row.n) for m in METRIC_NAMES],
            row.unparsed,
        ]
        for row in summary.metrics.rows
    ]
    return md_table(header, rows, numeric=[2, 3, 4, 5, 6, 7])


def agreement_markdown(agreement: AgreementSection) -> list[str]:
    groups = agreement.groups
    header = ["grader", "student", "k"]
    for g in groups:
        header += [f"{GROUP_TITLES[g]} agree", f"{GROUP_TITLES[g]} κ"]
    rows = []
    for row in agreement.rows:
        cells: list[object] = [md_escape(row.grader), md_escape(row.student), row.k]
        for g in groups:
            item = row.items[g]
            cells += [pct(item.percent), fmt(item.kappa)]
        rows.append(cells)
    return md_table(header, rows, numeric=range(2, len(header)))


def rates_markdown(
    table: SkillRates | TopicRates, what: str, extra: Sequence[str] = ()
) -> list[str]:
    """``what``: the row's name field (skill, topic); ``extra``: more fields shown."""
    header = [what, *extra, *[md_escape(c) for c in table.columns], "mean"]
    rows = []
    for row in table.rows:
        rows.append(
            [
                md_escape(getattr(row, what)),
                *[md_escape(getattr(row, x)) for x in extra],
                *[
                    f"{fmt(v)} ({n})" if v is not None else "—"
                    for v, n in zip(row.values, row.n, strict=True)
                ],
                fmt(row.mean),
            ]
        )
    return md_table(header, rows, numeric=range(1 + len(extra), len(header)))


def example_markdown(item: GalleryExample) -> list[str]:
    scores = item.scores
    named = item.named_skills
    lines = [
        f"**{KIND_TITLES.get(item.kind, item.kind)}**: topic {md_escape(item.topic)}; "
        f"skills {', '.join(md_escape(s) for s in item.skills)} "
        f"(generation round {item.generation_round}, combination {item.index}); "
        f"full marks {fmt(scores.full_marks if scores else None, 0)}, "
        f"skill fraction {fmt(scores.skill_fraction if scores else None)}"
        + (
            f"; names {', '.join(md_escape(s) for s in named)}"
            + (" (point set to 0)" if item.named_filtered else " (not filtered)")
            if named
            else ""
        ),
        "",
        *md_block(item.answer),
        "",
    ]
    rounds = item.rounds
    header = ["rubric item", *[f"round {r.grading_round}" for r in rounds], "voted"]
    rows = []
    voted = item.points
    for j, label in enumerate(item.rubric):
        cells: list[object] = [md_escape(label)]
        for r in rounds:
            pts = r.points
            cells.append(fmt(pts[j], 0) if pts is not None and j < len(pts) else "—")
        cells.append(fmt(voted[j], 2 if voted[j] % 1 else 0) if voted is not None else "—")
        rows.append(cells)
    return [*lines, *md_table(header, rows, numeric=range(1, len(header))), ""]


def settings_lines(summary: Summary) -> list[str]:
    e = summary.experiment  # the experiment's own (config) schema
    settings = summary.metrics.settings
    g = e["grader"]
    prompts = summary.prompts
    catalog = summary.catalog
    return [
        f"- run: {md_escape(summary.run)} (status: {summary.status})",
        f"- created {summary.created_at}; reported {summary.reported_at}; skillmix {summary.skillmix_version}",
        "- students: "
        + ", ".join(
            f"{md_escape(s['name'])} ({md_escape(s['backend'])}: {md_escape(s['model'])})"
            for s in e["students"]
        ),
        f"- grader: {md_escape(g['name'])} ({md_escape(g['backend'])}: {md_escape(g['model'])}), "
        f"R = {g['rounds']} grading rounds, prompt {md_escape(prompts.grading.name)} "
        f"({prompts.grading.style}, hash {prompts.grading.hash})",
        f"- k = {', '.join(map(str, e['ks']))}; M = {e['combinations']} combinations per k; "
        f"G = {e['generation_rounds']} generation rounds; seed {e['seed']}; order seed "
        f"{md_escape(e['order_seed'])}; sampling {e['sampling']}",
        f"- catalog: {md_escape(catalog.source)} ({catalog.skills} skills, "
        f"{catalog.topics} topics, hash {catalog.hash}); generation prompt "
        f"{md_escape(prompts.generation.name)} (hash {prompts.generation.hash})",
        f"- metrics: mode {settings.mode}, vote {settings.vote}, generation rounds "
        f"{settings.generation_agg}, explicit-name filter {settings.filter_explicit_name}"
        + (
            f", skills filtered out: {', '.join(md_escape(s) for s in settings.filter_skills)}"
            if settings.filter_skills
            else ""
        )
        + f", bootstrap {settings.bootstrap_samples} resamples",
    ]


def plot_lines(plots: Sequence[tuple[str, str]]) -> list[str]:
    """The report's plots as images (``plots/NAME.png`` next to report.md), one paragraph
    each; ``plots``: (name, title) pairs."""
    lines = []
    for name, title in plots:
        lines += [f"![{md_escape(title)}](plots/{name}.png)", ""]
    return lines


def render_markdown(summary: Summary, plots: Sequence[tuple[str, str]] = ()) -> str:
    """``plots``: (name, title) of the plots written next to the file (shown as images)."""
    from skillmix.report.html_report import ungraded_models

    counts = summary.counts
    lines = [f"# SKILL-MIX report: {md_escape(summary.run_id)}", ""]
    if summary.status == "partial":
        missing = ungraded_models(summary)
        lines += [
            f"> **Partial run**: {counts.generations} of {counts.planned_generations} "
            f"generations and {counts.grades} of {counts.planned_grades} grading verdicts "
            "are finished; numbers cover the finished part only."
            + (
                f" Not graded yet, so not ranked: {', '.join(md_escape(m) for m in missing)}."
                if missing
                else ""
            ),
            "",
        ]
    lines += [*settings_lines(summary), "", "## Leaderboards", ""]
    for board in summary.leaderboards:
        ks = ", ".join(map(str, board.ranked_over_ks))
        lines += [
            f"### {board.title}",
            "",
            f"Ranked by the mean over k = {ks}; cells: mean ± stderr [95% bootstrap interval].",
            "",
            *leaderboard_markdown(
                board, label_columns=[("student", "student"), ("grader", "grader")]
            ),
            "",
        ]
    lines += [
        "## Plots",
        "",
        *plot_lines(plots),
        "## Metrics (mean ± stderr [95% bootstrap CI])",
        "",
        *metrics_markdown(summary),
        "",
        "## Grader agreement across grading rounds",
        "",
        f"{summary.agreement.grading_rounds} grading rounds; "
        + md_escape(summary.agreement.note)
        + ".",
        "",
        *agreement_markdown(summary.agreement),
        "",
        "## Parse failures and retries",
        "",
        *md_table(
            ["student", "k", *[t for _, t in QUALITY_COLUMNS]],
            [
                [md_escape(q.student), q.k, *[getattr(q, c) for c, _ in QUALITY_COLUMNS]]
                for q in summary.quality
            ],
            numeric=range(1, 2 + len(QUALITY_COLUMNS)),
        ),
        "",
        "## Usage and estimated cost",
        "",
        *md_table(
            [
                "model",
                "role",
                "phase",
                "records",
                "cached",
                "prompt tokens",
                "completion tokens",
                "cost (USD)",
            ],
            [
                [
                    md_escape(u.model),
                    u.role,
                    u.phase,
                    u.records,
                    u.cached_records,
                    u.prompt_tokens,
                    u.completion_tokens,
                    fmt(u.cost_usd, 4),
                ]
                for u in summary.usage
            ],
            numeric=range(3, 8),
        ),
        "",
    ]
    f = summary.failures
    lines += [
        f"- generations failed: {f.generation_failed}",
        f"- grading verdicts failed: {f.grading_failed}; unparsed after re-asks: "
        f"{f.grading_unparsed}; re-asked at least once: {f.grading_retried}",
        "",
        "## Per-skill success (pooled over k)",
        "",
        "Mean voted point of each skill (number of graded answers in parentheses), hardest first.",
        "",
        *rates_markdown(summary.skill_rates, "skill", extra=["category"]),
        "",
        "## Per-topic full marks (pooled over k)",
        "",
        *rates_markdown(summary.topic_rates, "topic"),
        "",
        "## Example answers",
        "",
    ]
    current = None
    for item in summary.gallery:
        key = (item.student, item.grader, item.k)
        if key != current:
            current = key
            lines += [f"### {md_escape(item.student)}, k = {item.k}", ""]
        lines += example_markdown(item)
    return "\n".join(lines).rstrip() + "\n"
