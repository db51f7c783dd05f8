"""``report.html``: one self-contained page for a run, built from ``summary.json`` plus, for
the answer browser, every answer of the run (:mod:`skillmix.report.answers`).

Leaderboard cells carry the exact numbers in ``data-*`` attributes (JSON numbers, so they
parse back to the very floats of ``skillmix aggregate --format json``); the visible text is
rounded for reading.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skillmix.artifacts import (
    AgreementSection,
    CategoryRates,
    FailedGeneration,
    FailedGrade,
    GalleryExample,
    GpuUsageSection,
    Leaderboard,
    LeaderboardCell,
    LeaderboardRow,
    SkillRates,
    Summary,
    TopicRates,
    UsageRow,
)
from skillmix.method.points import METRIC_TITLES
from skillmix.report.analysis import QUALITY_COLUMNS
from skillmix.report.answers import AnswerSet, browser_payload
from skillmix.report.gpu_usage import GPU_TIME_CAPTION, GPU_TIME_COLUMNS, gpu_time_cells
from skillmix.report.leaderboard import (
    READING_NOTE,
    board_note,
    model_text,
    pair_below,
    rank_text,
    verdict_text,
)
from skillmix.report.markup import (
    Image,
    Safe,
    el,
    figure,
    fmt,
    fmt_stderr,
    kv_table,
    number,
    page,
    pct,
    table,
)
from skillmix.report.plots import (
    DEFAULT_DPI,
    MAX_HEATMAP_ROWS,
    Point,
    Series,
    heatmap,
    metric_plot,
    scatter_plot,
)

KIND_TITLES = {"best": "best", "worst": "worst", "explicit_name": "names a skill"}
GROUP_TITLES = {
    "skills": "skills",
    "topic": "on topic",
    "sense": "makes sense",
    "length": "length (grader)",
}
NAV = (
    ("leaderboards", "Leaderboards"),
    ("plots", "Metrics vs k"),
    ("settings", "Settings"),
    ("skills", "Per skill"),
    ("topics", "Per topic"),
    ("agreement", "Grader agreement"),
    ("failures", "Failures & retries"),
    ("usage", "Usage & cost"),
    ("cost", "Score vs cost"),
    ("gallery", "Example answers"),
    ("answers", "All answers"),
)
# The answer browser's columns: (header, sort key or None, numeric).
ANSWER_COLUMNS = (
    ("", None, False),
    ("model", "model", False),
    ("k", "k", True),
    ("comb.", "combination", True),
    ("round", "round", True),
    ("topic", "topic", False),
    ("skills", None, False),
    ("full marks", "score", True),
    ("skill fraction", "score", True),
    ("points", "score", True),
)
SORT_OPTIONS = (
    ("model", "model"),
    ("k", "k"),
    ("combination", "combination"),
    ("round", "generation round"),
    ("topic", "topic"),
    ("score", "score"),
)


def metric_td(cell: LeaderboardCell | None, **attrs: object) -> Safe:
    """A leaderboard cell: rounded text, exact numbers in data attributes."""
    if cell is None:
        return el("td", "—", class_="num", data_value="null", **attrs)
    ci = cell.ci95 or [None, None]
    return el(
        "td",
        fmt(cell.mean),
        el("span", f" ± {fmt_stderr(cell.stderr, cell.n)}", class_="se"),
        el("span", f"[{fmt(ci[0])}, {fmt(ci[1])}]", class_="ci") if ci[0] is not None else None,
        el("span", f" n={cell.n}", class_="n"),
        class_="num",
        title=f"n = {cell.n} combinations; {cell.unparsed} verdicts unparsed",
        data_value=number(cell.mean),
        data_stderr=number(cell.stderr),
        data_ci_low=number(ci[0]),
        data_ci_high=number(ci[1]),
        data_exact=cell.exact,
        data_n=cell.n,
        **attrs,
    )


def leaderboard_table(
    board: Leaderboard,
    label_columns: Sequence[tuple[str, str]],
    *,
    caption: str | None = None,
    **table_attrs: object,
) -> Safe:
    """``label_columns``: (row field, header) pairs shown before the k columns; the student's
    backend, model id and sampling follow them in a column of their own. The rank carries the
    tie mark; 'vs next' is the paired test against the row below. ``caption``: the table's
    one caption (default: the metric and the ks its score averages)."""
    ks = board.ks
    own = any(r.own_score is not None for r in board.rows)
    header = [
        "rank",
        *[h for _, h in label_columns],
        "model (backend: id, sampling)",
        *[f"k = {k}" for k in ks],
        board.score_label,
        *(["mean over own k"] if own else []),
        "vs next",
    ]
    below = pair_below(board)
    rows = []
    sizes = Counter(r.tie_group for r in board.rows if r.tie_group is not None)
    previous_group: int | None = None
    for position, row in enumerate(board.rows):
        # a line between tie groups, where one of them holds several rows
        starts = (
            previous_group is not None
            and row.tie_group not in (None, previous_group)
            and max(sizes[previous_group], sizes[row.tie_group]) > 1
        )
        previous_group = row.tie_group if row.tie_group is not None else previous_group
        classes = " ".join(c for c, on in (("first", row.rank == 1), ("group-start", starts)) if on)
        ident = {
            "data_metric": board.metric,
            "data_student": row.student,
            "data_grader": row.grader,
            "data_run": row.run,
        }
        pair = below.get(position)
        rows.append(
            el(
                "tr",
                el(
                    "td",
                    rank_text(row),
                    class_="num",
                    title=f"tie group {row.tie_group}" if row.tied else None,
                    data_tie_group=row.tie_group,
                ),
                *[el("td", _or_empty(getattr(row, key))) for key, _ in label_columns],
                el("td", model_text(row), class_="model"),
                *[metric_td(row.cells.get(str(k)), data_k=k, **ident) for k in ks],
                el(
                    "td",
                    fmt(row.score, 3),
                    class_="num",
                    title=f"exactly {row.exact_score}" if row.exact_score else None,
                    data_score=number(row.score),
                    **ident,
                ),
                *(
                    [
                        el(
                            "td",
                            fmt(row.own_score, 3) if row.own_score is not None else "",
                            class_="num",
                            title=f"mean over k = {', '.join(map(str, sorted(row.ks)))}",
                        )
                    ]
                    if own
                    else []
                ),
                el(
                    "td",
                    verdict_text(pair),
                    class_="verdict",
                    data_significant=str(pair.significant).lower() if pair else None,
                    data_p=number(pair.p_value) if pair else None,
                ),
                class_=classes or None,
            )
        )
    first_metric = 2 + len(label_columns)
    head = el(
        "tr",
        *[
            el(
                "th",
                h,
                class_="num" if i == 0 or first_metric <= i < len(header) - 1 else None,
                scope="col",
            )
            for i, h in enumerate(header)
        ],
    )
    return el(
        "table",
        el("caption", caption or f"{board.title}, {board.score_label}"),
        el("thead", head),
        el("tbody", *rows),
        class_="leaderboard",
        data_metric=board.metric,
        **table_attrs,
    )


def _or_empty(value: str | int | None) -> str | int:
    return "" if value is None else value


RowLabel = Callable[[LeaderboardRow], str]


def metric_series(board: Leaderboard, label: RowLabel, styles: Mapping[str, int]) -> list[Series]:
    """Plot series of one leaderboard (one per row, in rank order); ``styles`` maps labels to
    style indexes so that a model looks the same in every plot."""
    out = []
    for row in board.rows:
        points = []
        for k in board.ks:
            cell = row.cells.get(str(k))
            if cell is None or cell.mean is None:
                continue
            ci = cell.ci95 or [None, None]
            points.append(Point(k, cell.mean, ci[0], ci[1]))
        name = label(row)
        out.append(Series(name, tuple(points), styles.get(name)))
    return out


def metric_images(
    boards: Sequence[Leaderboard], label: RowLabel, dpi: int, prefix: str = "metric"
) -> list[Image]:
    """One plot per leaderboard; styles follow the first board's order."""
    styles: dict[str, int] = {}
    for board in boards[:1]:
        for row in board.rows:
            styles.setdefault(label(row), len(styles))
    return [
        metric_plot(
            f"{prefix}-{board.metric}",
            metric_series(board, label, styles),
            ylabel=METRIC_TITLES[board.metric],
            title=f"{METRIC_TITLES[board.metric]} vs k",
            caption=(
                f"{METRIC_TITLES[board.metric]} per model and k: mean over combinations; "
                "error bars: 95% Wilson score interval."
            ),
            dpi=dpi,
        )
        for board in boards
    ]


# sections ---------------------------------------------------------------------------------
def settings_section(summary: Summary) -> Safe:
    e = summary.experiment  # the experiment's own (config) schema
    g = e["grader"]
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
            "k values": ", ".join(map(str, e["ks"])),
            "M (combinations per k)": e["combinations"],
            "G (generation rounds)": e["generation_rounds"],
            "R (grading rounds)": g["rounds"],
            "seed / order seed": f"{e['seed']} / {e['order_seed']}",
            "sampling": e["sampling"],
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
    students = table(
        ["student", "backend", "model", "temperature", "top_p", "max tokens", "system prompt"],
        [
            [
                s["name"],
                s["backend"],
                s["model"] + (f" (quality {s['quality']})" if s.get("quality") is not None else ""),
                _opt(s["sampling"].get("temperature")),
                _opt(s["sampling"].get("top_p")),
                _opt(s["sampling"].get("max_tokens")),
                s.get("system_prompt") or "—",
            ]
            for s in e["students"]
        ],
        caption="Each student's backend, model id and sampling settings",
    )
    grader = kv_table(
        {
            "grader": g["name"],
            "backend / model": f"{g['backend']} / {g['model']}"
            + (f" (quality {g['quality']})" if g.get("quality") is not None else ""),
            "rounds": g["rounds"],
            "style": f"{g['style']} → {prompts.grading.style}",
            "temperature / max tokens": f"{_opt(g['sampling'].get('temperature'))} / {_opt(g['sampling'].get('max_tokens'))}",
            "re-asks after unreadable reply": g.get("max_parse_retries", "—"),
        },
        caption="The grader: model, rounds and sampling",
    )
    return el(
        "section",
        el("h2", "Settings"),
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
        id="settings",
    )


def _opt(x: object) -> str:
    return "default" if x is None else str(x)


def leaderboards_section(summary: Summary) -> Safe:
    settings = summary.metrics.settings
    parts: list[Any] = [el("h2", "Leaderboards")]
    for warning in summary.warnings:
        parts.append(el("div", el("strong", "Warning: "), warning, class_="banner"))
    parts.append(
        el(
            "p",
            "Models ranked by the mean of their per-k values. Cells: mean over combinations ± "
            "standard error, the 95% interval below it and n (combinations). Intervals: "
            f"{settings.interval_method} {READING_NOTE} A thick line separates tie groups of several rows.",
            class_="note",
        )
    )
    if summary.metric_definitions:
        parts.append(
            el(
                "details",
                el("summary", "What the metrics mean"),
                el("ul", *[el("li", text) for text in summary.metric_definitions.values()]),
                open=True,
            )
        )
    graders = {r.grader for b in summary.leaderboards for r in b.rows}
    labels = [("student", "student")] + ([("grader", "grader")] if len(graders) > 1 else [])
    boards = [
        el(
            "div",
            el("h3", board.title),
            el("p", board_note(board), class_="note"),
            leaderboard_table(board, labels, caption=leaderboard_caption(board)),
        )
        for board in summary.leaderboards
    ]
    if len(graders) == 1:
        parts.append(el("p", f"Grader: {next(iter(graders))}.", class_="note"))
    parts.append(el("div", *boards))
    return el("section", *parts, id="leaderboards")


def plots_section(images: Sequence[Image]) -> Safe:
    return el(
        "section",
        el("h2", "Metrics vs k"),
        el("div", *[figure(i) for i in images], class_="plots"),
        id="plots",
    )


def rates_details(
    table_data: SkillRates | TopicRates | CategoryRates,
    what: str,
    extra: Sequence[str] = (),
    *,
    open_: bool = False,
) -> Safe:
    """``what``: the row's name field (skill, topic, category); ``extra``: more fields shown.
    Every cell shows its rate and n."""
    columns = table_data.columns
    rows = []
    for row in table_data.rows:
        rows.append(
            [
                getattr(row, what),
                *[getattr(row, x) for x in extra],
                *[
                    f"{fmt(v)} (n={n})" if v is not None else "—"
                    for v, n in zip(row.values, row.n, strict=True)
                ],
                fmt(row.mean),
            ]
        )
    header = [what, *extra, *columns, "mean"]
    return el(
        "details",
        el("summary", f"All {len(rows)} {what} rows as a table (rate, n = combinations)"),
        el("p", rates_note(table_data), class_="note"),
        table(
            header,
            rows,
            numeric=range(1 + len(extra), len(header)),
            caption=f"Per {what} and model: rate (n = combinations)",
        ),
        open=open_,
    )


def rates_note(table_data: SkillRates | TopicRates | CategoryRates) -> str:
    """What a rate is and how rows are sorted (from the table itself)."""
    unit = f"Rate: {table_data.unit}. " if table_data.unit else ""
    return (
        f"{unit}Hardest first, by the mean over the cells with n ≥ {table_data.min_n} "
        "combinations (rows without such a cell last)."
    )


def rates_section(anchor: str, title: str, note: str, image: Image | None, details: Safe) -> Safe:
    return el(
        "section",
        el("h2", title),
        el("p", note, class_="note"),
        figure(image) if image else el("p", "Nothing graded yet.", class_="note"),
        details,
        id=anchor,
    )


def rate_label(name: str, ns: Sequence[int], values: Sequence[float | None]) -> str:
    """A heatmap row's label with its n (combinations per cell; a range when the models'
    differ), the name shortened so that the n always shows."""
    counts = sorted({n for n, v in zip(ns, values, strict=False) if v is not None})
    n = "" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    suffix = f" (n={n})" if n else ""
    room = 38 - len(suffix)
    short = name if len(name) <= room else name[: room - 1].rstrip() + "…"
    return short + suffix


def rates_image(
    name: str,
    table_data: SkillRates | TopicRates,
    what: str,
    title: str,
    colorbar: str,
    dpi: int,
) -> Image | None:
    if not table_data.rows or not table_data.columns:
        return None
    rows = table_data.rows
    shown = "" if len(rows) <= MAX_HEATMAP_ROWS else f" ({MAX_HEATMAP_ROWS} of {len(rows)} shown)"
    return heatmap(
        name,
        [rate_label(getattr(r, what), r.n, r.values) for r in rows],
        table_data.columns,
        [r.values for r in rows],
        title=title,
        colorbar=colorbar,
        caption=(
            f"Sorted hardest first (by the mean over models, counting cells with n ≥ "
            f"{table_data.min_n}){shown}; grey: not sampled."
        ),
        dpi=dpi,
    )


def agreement_section(agreement: AgreementSection) -> Safe:
    groups = agreement.groups
    head1 = el(
        "tr",
        el("th", "grader", rowspan=2, scope="col"),
        el("th", "student", rowspan=2, scope="col"),
        el("th", "k", rowspan=2, scope="col"),
        *[el("th", GROUP_TITLES[g], colspan=2, scope="colgroup") for g in groups],
    )
    head2 = el(
        "tr",
        *[el("th", x, class_="num", scope="col") for _ in groups for x in ("agreement", "κ")],
    )
    rows = []
    for row in agreement.rows:
        cells = [
            el("td", row.grader),
            el("td", row.student),
            el("td", row.k, class_="num"),
        ]
        for g in groups:
            item = row.items[g]
            cells += [
                el(
                    "td",
                    pct(item.percent),
                    class_="num",
                    title=f"{item.subjects} items; unanimous {pct(item.unanimous)}",
                    data_value=number(item.percent),
                ),
                el(
                    "td",
                    fmt(item.kappa) if item.kappa is not None else "—",
                    class_="num",
                    title=(
                        f"chance agreement {pct(item.expected)}"
                        if item.kappa is not None
                        else "undefined: every verdict identical, or no item with 2 rounds"
                    ),
                    data_value=number(item.kappa),
                ),
            ]
        rows.append(el("tr", *cells))
    body: Any
    if agreement.grading_rounds < 2:
        body = el("p", "Agreement needs at least two grading rounds.", class_="note")
    else:
        body = el(
            "table",
            el("caption", "Agreement between grading rounds per rubric item group"),
            el("thead", head1, head2),
            el("tbody", *rows),
            class_="agreement",
        )
    return el(
        "section",
        el("h2", "Grader agreement across grading rounds"),
        el(
            "p",
            f"{agreement.grading_rounds} grading rounds. Agreement: mean share of agreeing "
            "pairs of rounds per rubric item; κ: Fleiss' kappa (agreement beyond chance; "
            "undefined when every verdict is identical). Skill items are pooled as "
            "“skills”; “length (grader)” is the grader's own verdict (the metrics compute "
            "the sentence count instead).",
            class_="note",
        ),
        *[el("div", el("strong", "Warning: "), w, class_="banner") for w in agreement.warnings],
        body,
        id="agreement",
    )


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
    return el(
        "section",
        el("h2", "Parse failures and retries"),
        el(
            "p",
            f"Generations failed: {f.generation_failed}. Grading verdicts failed: "
            f"{f.grading_failed}; unreadable after re-asks: {f.grading_unparsed}; "
            f"re-asked at least once: {f.grading_retried}.",
            class_="note",
        ),
        table(
            header,
            rows,
            numeric=range(1, len(header)),
            caption="Records per student and k, by outcome",
        ),
        reasons,
        id="failures",
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
    header = [
        "model",
        "model id",
        "role",
        "phase",
        "records",
        "cached",
        "prompt tokens",
        "completion tokens",
        "cost (USD)",
    ]
    return el(
        "section",
        el("h2", "Usage and estimated cost"),
        el(
            "p",
            "Tokens as reported by each backend; cost from the price table (or the "
            "experiment's prices); cached replies cost nothing again.",
            class_="note",
        ),
        table(
            header,
            rows,
            numeric=range(4, len(header)),
            caption="Tokens and estimated cost per model and phase",
            foot=total,
        ),
        gpu_time_part(gpu),
        id="usage",
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


def example_card(item: GalleryExample) -> Safe:
    scores = item.scores
    named = set(item.named_skills)
    rounds = item.rounds
    voted = item.points
    rubric_rows = []
    for j, label in enumerate(item.rubric):
        cells = [el("td", label, class_="hit" if label in named and j < item.k else None)]
        for r in rounds:
            pts = r.points
            cells.append(
                el("td", fmt(pts[j], 0) if pts is not None and j < len(pts) else "—", class_="num")
            )
        cells.append(
            el(
                "td",
                (fmt(voted[j], 2 if voted[j] % 1 else 0) if voted is not None else "—"),
                class_="num",
            )
        )
        rubric_rows.append(el("tr", *cells))
    head = el(
        "tr",
        el("th", "rubric item", scope="col"),
        *[el("th", f"r{r.grading_round}", class_="num", scope="col") for r in rounds],
        el("th", "voted", class_="num", scope="col"),
    )
    note = None
    if named:
        note = el(
            "p",
            "Names its skill(s): "
            + ", ".join(sorted(named))
            + (
                " — point set to 0 by the explicit-name filter."
                if item.named_filtered
                else " — not filtered."
            ),
            class_="note",
        )
    return el(
        "div",
        el(
            "h4",
            el("span", KIND_TITLES.get(item.kind, item.kind), class_=f"badge {item.kind}"),
            f"{item.topic}",
        ),
        el(
            "div",
            f"skills: {', '.join(item.skills)} · generation round {item.generation_round} · "
            f"combination {item.index} · full marks "
            f"{fmt(scores.full_marks if scores else None, 0)} · "
            f"skill fraction {fmt(scores.skill_fraction if scores else None)}",
            class_="note",
        ),
        el("blockquote", item.answer),
        el(
            "table",
            el("caption", "Points per rubric item and grading round, and the vote"),
            el("thead", head),
            el("tbody", *rubric_rows),
        ),
        note,
        el(
            "details",
            el("summary", "grader's reply (round 1)"),
            el("pre", item.grader_reply),
        ),
        class_="card",
        data_kind=item.kind,
        data_student=item.student,
        data_k=item.k,
    )


def gallery_section(gallery: Sequence[GalleryExample]) -> Safe:
    groups: dict[tuple[str, str], dict[int, list[GalleryExample]]] = {}
    for item in gallery:
        groups.setdefault((item.student, item.grader), {}).setdefault(item.k, []).append(item)
    graders = {g for _, g in groups}
    parts: list[Any] = [
        el("h2", "Example answers"),
        el(
            "p",
            "Per model and k: the best and the worst graded answer and up to two answers that "
            "name one of their skills. Columns r1, r2, ...: the points each grading round gave "
            "(as the grader gave them); voted: the points the metrics use (rounds combined, "
            "the length point computed from the sentence count, the explicit-name filter "
            "applied).",
            class_="note",
        ),
    ]
    for (student, grader), by_k in groups.items():
        parts.append(el("h3", student if len(graders) == 1 else f"{student} (graded by {grader})"))
        for k in sorted(by_k):
            parts.append(el("h4", f"k = {k}"))
            parts.append(el("div", *[example_card(i) for i in by_k[k]], class_="cards"))
    return el("section", *parts, id="gallery")


def render_html(
    summary: Summary, *, dpi: int = DEFAULT_DPI, answers: AnswerSet | None = None
) -> tuple[str, list[Image]]:
    """The page and the images embedded in it; ``answers``: every answer of the run for the
    answer browser (left out without)."""
    boards = summary.leaderboards
    metric_imgs = metric_images(boards, lambda row: _entry_label(row, boards), dpi)
    skills_img = rates_image(
        "skills-heatmap",
        summary.skill_rates,
        "skill",
        "Per-skill success across models",
        "mean voted skill point",
        dpi,
    )
    topics_img = rates_image(
        "topics-heatmap",
        summary.topic_rates,
        "topic",
        "Per-topic Ratio of Full Marks across models",
        "Ratio of Full Marks",
        dpi,
    )
    cost_img = cost_image(summary, dpi)
    banner = partial_banner(summary)
    e = summary.experiment
    subtitle = el(
        "div",
        el("code", summary.run_id),
        f" · {len(e['students'])} students · k = {', '.join(map(str, e['ks']))} · "
        f"M = {e['combinations']} · G = {e['generation_rounds']} · R = {e['grader']['rounds']} · "
        f"grader {e['grader']['model']} · reported {summary.reported_at}",
        banner,
    )
    body = [
        leaderboards_section(summary),
        plots_section(metric_imgs),
        settings_section(summary),
        rates_section(
            "skills",
            "Per-skill success",
            "Per skill and model, pooled over k: the skill's voted point per combination with "
            "generation rounds combined as the headline metrics combine them, averaged over "
            "combinations (n = combinations). Per category: the same over every skill of the "
            "category.",
            skills_img,
            el(
                "div",
                rates_details(summary.category_rates, "category", extra=["skills"], open_=True)
                if summary.category_rates is not None
                else None,
                rates_details(summary.skill_rates, "skill", extra=["category"]),
            ),
        ),
        rates_section(
            "topics",
            "Per-topic Ratio of Full Marks",
            "Share of combinations with full marks (generation rounds combined) per topic and "
            "model, pooled over k (n = combinations).",
            topics_img,
            rates_details(summary.topic_rates, "topic"),
        ),
        agreement_section(summary.agreement),
        failures_section(summary),
        usage_section(summary.usage, summary.gpu_usage),
        cost_section(summary, cost_img),
        gallery_section(summary.gallery),
        answers_section(answers) if answers is not None else None,
    ]
    footer = el(
        "span",
        f"skillmix {summary.skillmix_version} · run created {summary.created_at} · "
        f"report built {summary.reported_at} · SKILL-MIX (Yu et al. 2023, arXiv 2310.17567)",
    )
    images = [*metric_imgs, *[i for i in (skills_img, topics_img, cost_img) if i is not None]]
    title = f"SKILL-MIX report: {summary.run_id}"
    nav = [item for item in NAV if answers is not None or item[0] != "answers"]
    return page(title, subtitle, nav, body, footer), images


def _entry_label(row: LeaderboardRow, boards: Sequence[Leaderboard]) -> str:
    graders = {r.grader for b in boards for r in b.rows}
    return row.student if len(graders) <= 1 else f"{row.student} / {row.grader}"


# the answer browser -----------------------------------------------------------------------
def _select(ident: str, label: str, options: Sequence[tuple[str, str]]) -> Safe:
    return el(
        "label",
        label,
        el("select", *[el("option", text, value=value) for value, text in options], id=ident),
    )


def answers_section(data: AnswerSet) -> Safe:
    """Every answer, filterable and sortable; opening one shows its conversation, each grading
    round's reply and points, the vote and the grading prompt. The data are embedded
    compressed (:func:`skillmix.report.answers.browser_payload`) and rows are built by the
    page's script a page at a time, so a large run stays a fast page."""
    answers = data.answers
    students = list(dict.fromkeys(a.unit.student for a in answers))
    ks = sorted({a.unit.k for a in answers})
    rounds = sorted({a.unit.generation_round for a in answers})
    filters = el(
        "div",
        _select("ab-model", "model", [("", "all"), *[(x, x) for x in students]]),
        _select("ab-k", "k", [("", "all"), *[(str(k), str(k)) for k in ks]]),
        _select("ab-round", "generation round", [("", "all"), *[(str(r), str(r)) for r in rounds]]),
        el("label", "skill contains", el("input", type="search", id="ab-skill", size=16)),
        el("label", "topic contains", el("input", type="search", id="ab-topic", size=16)),
        _select(
            "ab-score",
            "score",
            [
                ("", "all"),
                ("full", "full marks"),
                ("not-full", "not full marks"),
                ("all-skills", "all skills shown"),
                ("unscored", "no usable verdict"),
                *([("ungraded", "not graded yet")] if any(not a.graded for a in answers) else []),
            ],
        ),
        _select("ab-sort", "sort by", SORT_OPTIONS),
        el("label", el("input", type="checkbox", id="ab-desc"), "descending", class_="inline"),
        id="ab-filters",
        class_="filters",
        hidden=True,
    )
    head = el(
        "tr",
        *[
            el(
                "th",
                title,
                scope="col",
                class_="num" if numeric else None,
                data_sort=key,
            )
            for title, key, numeric in ANSWER_COLUMNS
        ],
    )
    grid = el(
        "table",
        el(
            "caption",
            "Answers matching the filters; ▸ opens the conversation, the verdicts and the "
            "grading prompt.",
        ),
        el("thead", head),
        el("tbody"),
        id="ab-table",
    )
    return el(
        "section",
        el("h2", "All answers"),
        el(
            "p",
            f"{len(answers)} answers (one per model, k, generation round and combination"
            + (
                f"; {waiting} not graded yet: a partial run"
                if (waiting := sum(1 for a in answers if not a.graded))
                else ""
            )
            + "). Full marks, skill fraction and points are the answer's voted "
            "points, as the metrics count them (before generation rounds are combined). "
            "The same numbers, without the texts, are in answers.jsonl and scores.csv next "
            "to this page.",
            class_="note",
        ),
        filters,
        el("p", f"Loading {len(answers)} answers…", id="ab-status", aria_live="polite"),
        grid,
        el("button", "Show more", type="button", id="ab-more", hidden=True),
        el(
            "noscript",
            el("p", "The answer browser needs JavaScript; every answer is in answers.jsonl."),
        ),
        el(
            "script",
            Safe(browser_payload(data)),
            type="application/octet-stream",
            id="ab-data",
            data_count=len(answers),
        ),
        id="answers",
    )


# partial runs -----------------------------------------------------------------------------
def ungraded_models(summary: Summary) -> list[str]:
    """The experiment's students with no finished grade yet (so no leaderboard row)."""
    ranked = {r.student for b in summary.leaderboards for r in b.rows}
    return [s["name"] for s in summary.experiment["students"] if s["name"] not in ranked]


def partial_banner(summary: Summary) -> Safe | None:
    if summary.status != "partial":
        return None
    counts = summary.counts
    missing = ungraded_models(summary)
    return el(
        "div",
        el("strong", "Partial run: "),
        f"{counts.generations} of {counts.planned_generations} generations and "
        f"{counts.grades} of {counts.planned_grades} grading verdicts are finished; "
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


# score against cost -----------------------------------------------------------------------
@dataclass(frozen=True)
class CostPoint:
    student: str
    score: float
    tokens: int
    cost_usd: float | None


def cost_points(summary: Summary) -> list[CostPoint]:
    """Per student: the headline score (first leaderboard, mean over k) and what generating
    its answers took (tokens, and the cost when the price is known)."""
    if not summary.leaderboards:
        return []
    board = summary.leaderboards[0]
    usage: dict[str, list[UsageRow]] = {}
    for u in summary.usage:
        if u.role == "student":
            usage.setdefault(u.model, []).append(u)
    out = []
    for row in board.rows:
        rows = usage.get(row.student)
        if row.score is None or not rows:
            continue
        costs = [u.cost_usd for u in rows]
        out.append(
            CostPoint(
                row.student,
                row.score,
                sum(u.prompt_tokens + u.completion_tokens for u in rows),
                None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
            )
        )
    return out


def cost_image(summary: Summary, dpi: int) -> Image | None:
    points = cost_points(summary)
    if not points:
        return None
    # by cost when every price is known and something cost money (mock runs are free)
    priced = all(p.cost_usd is not None for p in points) and any(p.cost_usd for p in points)
    title = METRIC_TITLES[summary.leaderboards[0].metric]
    return scatter_plot(
        "score-vs-cost",
        [
            (
                p.student,
                float(p.cost_usd if priced and p.cost_usd is not None else p.tokens),
                p.score,
            )
            for p in points
        ],
        xlabel="generation cost (USD)" if priced else "generation tokens (prompt + completion)",
        ylabel=f"{title} ({summary.leaderboards[0].score_label})",
        title=f"{title} against {'cost' if priced else 'tokens'}",
        caption=(
            "Each point: a model's headline score against what its answers cost to generate"
            + ("" if priced else " (in tokens: some prices are unknown, or nothing was billed)")
            + "; up and to the left is better."
        ),
        dpi=dpi,
    )


def cost_section(summary: Summary, image: Image | None) -> Safe:
    points = cost_points(summary)
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
                fmt(1000 * p.score / p.tokens, 4) if p.tokens else "n/a",
                class_="num",
                data_value=number(1000 * p.score / p.tokens if p.tokens else None),
            ),
        ]
        for p in points
    ]
    metric = (
        f"{METRIC_TITLES[summary.leaderboards[0].metric]} ({summary.leaderboards[0].score_label})"
        if summary.leaderboards
        else "score"
    )
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


def leaderboard_caption(board: Leaderboard) -> str:
    """What a leaderboard table shows (its ``<caption>``)."""
    ks = ", ".join(map(str, board.ranked_over_ks)) or "none"
    counts = {c.n for r in board.rows for c in r.cells.values() if c is not None}
    n = (
        f"n = {counts.pop()} combinations in every cell"
        if len(counts) == 1
        else f"n = {min(counts)} to {max(counts)} combinations per cell"
        if counts
        else "no cells"
    )
    return (
        f"{board.title} per model and k: mean ± standard error, 95% interval below; {n}. "
        f"Ranked by the mean over k = {ks}."
    )


def model_descriptions(experiment: Mapping[str, Any]) -> dict[str, str]:
    """Per student: backend, model id and sampling settings, in one short line."""
    out = {}
    for spec in experiment.get("students", []):
        sampling = spec.get("sampling") or {}
        parts = [
            f"{name} {sampling[key]}"
            for key, name in (("temperature", "T"), ("top_p", "top_p"), ("max_tokens", "max"))
            if sampling.get(key) is not None
        ]
        out[spec["name"]] = f"{spec['backend']} · {spec['model']} · " + (
            ", ".join(parts) or "default sampling"
        )
    return out
