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
    CategoryRates,
    GalleryExample,
    GpuUsageSection,
    Leaderboard,
    SkillRates,
    Summary,
    TopicRates,
)
from skillmix.report.analysis import QUALITY_COLUMNS
from skillmix.report.gpu_usage import GPU_TIME_COLUMNS, gpu_time_cells
from skillmix.report.item_view import ItemFailuresView
from skillmix.report.markup import fmt, pct
from skillmix.report.reproduction import ReproductionView
from skillmix.report.view import (
    USAGE_COLUMNS,
    BoardView,
    CellView,
    MetricsView,
    PartialView,
    ReportView,
    as_board_view,
    report_view,
)

GROUP_TITLES = {"skills": "skills", "topic": "topic", "sense": "sense", "length": "length"}
KIND_TITLES = {
    "best": "best",
    "worst": "worst",
    "explicit_name": "names a skill",
}


def md_escape(text: object) -> str:
    """Escape text for Markdown (table cells included): model output must not inject markup,
    and the file stays readable as plain text (no escape where nothing could start markup).

    ``|``, ``*`` and backticks always get a backslash; a backslash only where it would escape
    something (before punctuation, or at the end: a hard line break); ``_`` only where it could
    emphasise (not inside a word, as in ``mock_grader``); ``]`` only where it could close a link
    or define one (before ``(``, ``[`` or ``:``), so intervals like ``[0.1, 0.2]`` stay plain;
    ``<`` becomes ``&lt;`` only before what could open a tag or an autolink, ``&`` becomes
    ``&amp;`` only before what could be an entity; ``#``, ``>``, list markers and rules only at
    the start. Line breaks become spaces so a table row stays one line (:func:`md_block`
    keeps them)."""
    out = str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    out = re.sub(r"&(?=#?[0-9A-Za-z]+;)", "&amp;", out)
    out = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", out)
    out = re.sub(r"\\(?=[!-/:-@\[-`{-~]|$)", r"\\\\", out)
    out = re.sub(r"([|*`])", r"\\\1", out)
    out = re.sub(r"\](?=[(\[:])", r"\\]", out)
    out = re.sub(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])", r"\\_", out)
    out = out.replace("~~", "\\~\\~")
    if re.match(r" {0,3}(#{1,6}(\s|$)|[-+](\s|$)|>|[-=]+\s*$)", out):  # heading, list, quote, rule
        out = "\\" + out if not out.startswith(" ") else re.sub(r"^( *)", r"\1\\", out, count=1)
    out = re.sub(r"^( {0,3}\d{1,9})([.)])(\s|$)", r"\1\\\2\3", out)  # a numbered list item
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


def leaderboard_markdown(
    board: Leaderboard | BoardView, *, label_columns: Sequence[tuple[str, str]]
) -> list[str]:
    """One leaderboard; ``label_columns``: (row field, header) pairs shown before the k
    columns. The rank carries the tie mark; 'vs next' is the paired test against the row
    below."""
    view = as_board_view(board)
    header = [
        "rank",
        *(["groups"] if view.has_letters else []),
        *[h for _, h in label_columns],
        "model (backend: id, sampling)",
        *[f"k={k}" for k in view.ks],
        md_escape(view.score_label),
        *(["mean over own k"] if view.has_own else []),
        "vs next",
    ]
    rows = [
        [
            row.rank_text,
            *([row.letters] if view.has_letters else []),
            *[md_escape(row.labels[c]) for c, _ in label_columns],
            md_escape(row.model_text),
            *[_cell_text(row.cells[k]) for k in view.ks],
            f"{row.score_text} {row.score_ci_text}".strip(),
            *([row.own_score_text] if view.has_own else []),
            md_escape(row.verdict.text if row.verdict else ""),
        ]
        for row in view.rows
    ]
    first = len(label_columns) + 2 + view.has_letters
    return md_table(header, rows, numeric=[0, *range(first, len(header) - 1)])


def _cell_text(cell: CellView | None) -> str:
    """``mean ± stderr [low, high] n=N``, or a dash for a missing value."""
    return "—" if cell is None else cell.text


def metrics_markdown(metrics: MetricsView) -> list[str]:
    header = ["student", "grader", "k", "n", *metrics.titles, "unparsed"]
    rows = [
        [
            md_escape(row.student),
            md_escape(row.grader),
            row.k,
            row.n,
            *[cell.text for cell in row.cells.values()],
            row.unparsed,
        ]
        for row in metrics.rows
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
    table: SkillRates | TopicRates | CategoryRates, what: str, extra: Sequence[str] = ()
) -> list[str]:
    """``what``: the row's name field (skill, topic, category); ``extra``: more fields shown.
    Every cell shows its rate and n."""
    header = [what, *extra, *[md_escape(c) for c in table.columns], "mean"]
    rows = []
    for row in table.rows:
        rows.append(
            [
                md_escape(getattr(row, what)),
                *[md_escape(getattr(row, x)) for x in extra],
                *[
                    f"{fmt(v)} (n={n})" if v is not None else "—"
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


def settings_lines(summary: Summary, rounds: str = "") -> list[str]:
    """The run's settings; ``rounds``: the view's "R = ..." text."""
    e = summary.experiment
    settings = summary.metrics.settings
    g = e.grader
    prompts = summary.prompts
    catalog = summary.catalog
    return [
        f"- run: {md_escape(summary.run)} (status: {summary.status})",
        f"- created {summary.created_at}; reported {summary.reported_at}; skillmix {summary.skillmix_version}",
        "- students: "
        + ", ".join(
            f"{md_escape(s.name)} ({md_escape(s.backend)}: {md_escape(s.model)})"
            for s in e.students
        ),
        f"- grader: {md_escape(g.name)} ({md_escape(g.backend)}: {md_escape(g.model)}), "
        f"{rounds or f'R = {g.rounds} grading rounds'}, prompt {md_escape(prompts.grading.name)} "
        f"({prompts.grading.style}, hash {prompts.grading.hash})",
        f"- k = {', '.join(map(str, e.ks))}; M = {e.combinations} combinations per k; "
        f"G = {e.generation_rounds} generation rounds; seed {e.seed}; order seed "
        f"{md_escape(e.order_seed)}; sampling {e.sampling}",
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
        + f", bootstrap {settings.bootstrap_samples} resamples (paired tests)",
        f"- intervals: {md_escape(settings.interval_method)}",
        f"- paired tests: {md_escape(settings.paired_method or 'none')}",
    ]


def plot_lines(plots: Sequence[tuple[str, str]]) -> list[str]:
    """The report's plots as images (``plots/NAME.png`` next to report.md), one paragraph
    each; ``plots``: (name, title) pairs."""
    lines = []
    for name, title in plots:
        lines += [f"![{md_escape(title)}](plots/{name}.png)", ""]
    return lines


def render_markdown(
    summary: Summary, plots: Sequence[tuple[str, str]] = (), view: ReportView | None = None
) -> str:
    """``plots``: (name, title) of the plots written next to the file (shown as images);
    ``view``: the report's view model, when already built (else built here)."""
    view = view or report_view(summary)
    lines = [f"# SKILL-MIX report: {md_escape(summary.run_id)}", ""]
    lines += partial_markdown(view.partial)
    lines += [f"> **Note**: {md_escape(mark)}" for mark in view.header_marks]
    lines += [""] if view.header_marks else []
    lines += [
        *settings_lines(summary, view.rounds_text),
        "",
        *reproduction_markdown(view.reproduction),
    ]
    lines += leaderboards_markdown(view)
    lines += [
        "## Plots",
        "",
        *plot_lines(plots),
        "## Metrics (mean ± stderr [95% interval] n)",
        "",
        md_escape(view.metrics.interval_method),
        "",
        *metrics_markdown(view.metrics),
        "",
        *agreement_lines(summary.agreement),
        *quality_and_usage_markdown(summary),
        *gpu_usage_markdown(summary.gpu_usage),
    ]
    f = summary.failures
    lines += [
        f"- generations failed: {f.generation_failed}",
        f"- grading verdicts failed: {f.grading_failed}; unparsed after re-asks: "
        f"{f.grading_unparsed}; re-asked at least once: {f.grading_retried}",
        "",
        *items_markdown(view.items),
        *rates_sections_markdown(summary),
        "",
        *gallery_markdown(summary.gallery),
    ]
    return "\n".join(lines).rstrip() + "\n"


def reproduction_markdown(block: ReproductionView | None) -> list[str]:
    """The commands, version, revision and hashes behind the numbers, and the citation."""
    if block is None:
        return []
    lines = ["## Reproduce and cite", "", "```sh", *block.commands, "```", ""]
    lines += [f"- {md_escape(label)}: `{value}`" for label, value in block.facts]
    lines += ["", "Cite:", ""]
    lines += [f"- {md_escape(line)}" for line in block.citation]
    return [*lines, ""]


def partial_markdown(partial: PartialView | None) -> list[str]:
    """The banner of a partial run: what is finished, and who is not ranked yet."""
    if partial is None:
        return []
    missing = partial.ungraded
    return [
        f"> **Partial run**: {partial.generations} of {partial.planned_generations} "
        f"generations and {partial.grades} of {partial.planned_grades} grading verdicts "
        "are finished; numbers cover the finished part only."
        + (
            f" Not graded yet, so not ranked: {', '.join(md_escape(m) for m in missing)}."
            if missing
            else ""
        ),
        "",
    ]


def agreement_lines(agreement: AgreementSection) -> list[str]:
    return [
        "## Grader agreement across grading rounds",
        "",
        f"{agreement.grading_rounds} grading rounds; " + md_escape(agreement.note) + ".",
        "",
        *[line for w in agreement.warnings for line in (f"> **Warning**: {md_escape(w)}", "")],
        *agreement_markdown(agreement),
        "",
    ]


def quality_and_usage_markdown(summary: Summary) -> list[str]:
    """Parse failures per student and k, then tokens and cost per model and phase."""
    usage_header = [c for c in USAGE_COLUMNS if c != "model id"]
    return [
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
            usage_header,
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


def gallery_markdown(gallery: Sequence[GalleryExample]) -> list[str]:
    """The example answers, under a heading per model and k."""
    lines = ["## Example answers", ""]
    current = None
    for item in gallery:
        key = (item.student, item.grader, item.k)
        if key != current:
            current = key
            lines += [f"### {md_escape(item.student)}, k = {item.k}", ""]
        lines += example_markdown(item)
    return lines


def gpu_usage_markdown(section: GpuUsageSection | None) -> list[str]:
    """The "GPU time" table (Kubernetes runs with pod usage records), with its note and total
    row; nothing without usage records."""
    if section is None:
        return []
    rows = [[md_escape(student), *gpu_time_cells(t)] for student, t in section.students.items()]
    rows.append(["**total**", *gpu_time_cells(section.total)])
    return [
        "### GPU time",
        "",
        md_escape(section.note),
        "",
        *[line for w in section.warnings for line in (f"> **Warning**: {md_escape(w)}", "")],
        *md_table(
            ["student", *GPU_TIME_COLUMNS], rows, numeric=range(1, 1 + len(GPU_TIME_COLUMNS))
        ),
        "",
    ]


def leaderboards_markdown(view: ReportView) -> list[str]:
    """The leaderboards, with the warnings and the metrics defined in words above them."""
    lines = ["## Leaderboards", ""]
    for warning in view.warnings:
        lines += [f"> **Warning**: {md_escape(warning)}", ""]
    if view.metric_definitions:
        lines += [f"- {md_escape(text)}" for text in view.metric_definitions]
        lines += [""]
    lines += [
        "Cells: mean ± stderr [95% interval] n = combinations; intervals: "
        + md_escape(view.metrics.interval_method)
        + " "
        + md_escape(view.reading_note)
        + (f" {md_escape(view.rule)}" if view.rule else ""),
        "",
    ]
    for board in view.boards:
        lines += [
            f"### {board.title}",
            "",
            md_escape(board.note),
            "",
            *leaderboard_markdown(
                board, label_columns=[("student", "student"), ("grader", "grader")]
            ),
            "",
        ]
    return lines


def items_markdown(view: ItemFailuresView | None) -> list[str]:
    """Which rubric items fail most, per model (nothing for a summary without them)."""
    if view is None:
        return []
    return [
        "## Which rubric items fail (pooled over k)",
        "",
        md_escape(view.note),
        "",
        *md_table(
            ["model", "answers", *view.titles, "fails most"],
            [
                [md_escape(r.model), r.answers, *[c.text for c in r.cells], md_escape(r.worst)]
                for r in view.rows
            ],
            numeric=range(1, 2 + len(view.titles)),
        ),
        "",
    ]


def rates_sections_markdown(summary: Summary) -> list[str]:
    """Per-category, per-skill and per-topic tables, each saying its unit and sort order."""

    def note(table: SkillRates | TopicRates | CategoryRates) -> str:
        return md_escape(
            f"Rate: {table.unit}. Hardest first, by the mean over the cells with n ≥ "
            f"{table.min_n} combinations (rows without such a cell last)."
        )

    lines: list[str] = []
    if summary.category_rates is not None:
        lines += [
            "## Per-category success (pooled over k)",
            "",
            note(summary.category_rates),
            "",
            *rates_markdown(summary.category_rates, "category", extra=["skills"]),
            "",
        ]
    lines += [
        "## Per-skill success (pooled over k)",
        "",
        note(summary.skill_rates),
        "",
        *rates_markdown(summary.skill_rates, "skill", extra=["category"]),
        "",
        "## Per-topic full marks (pooled over k)",
        "",
        note(summary.topic_rates),
        "",
        *rates_markdown(summary.topic_rates, "topic"),
    ]
    return lines
