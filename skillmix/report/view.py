"""The report's view model: every number, interval, rank, tie mark and warning that a report
shows, with the text each is shown as, built once from ``summary.json`` (or a metrics
section).

The renderers (``report.html``, ``report.md``, ``metrics.csv`` and the terminal table) only
lay these out; none of them computes or rounds a number itself, so they cannot disagree
(``tests/unit/test_report_parity.py`` checks that they show the same numbers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from skillmix.artifacts import (
    Leaderboard,
    LeaderboardCell,
    LeaderboardRow,
    MetricSettings,
    MetricsSection,
    MetricValueJson,
    PairwiseResult,
    Summary,
    UsageRow,
)
from skillmix.config import Experiment
from skillmix.method.points import METRIC_NAMES, METRIC_TITLES
from skillmix.method.reference_numbers import reference_print
from skillmix.method.stats import wilson_interval
from skillmix.pipeline.aggregate import COMPLETENESS_RULE
from skillmix.report.header import SELF_GRADED, header_marks, rounds_text
from skillmix.report.item_view import ItemFailuresView, item_failures_view
from skillmix.report.leaderboard import (
    LETTERS_NOTE,
    READING_NOTE,
    board_note,
    model_text,
    pair_below,
    rank_text,
    verdict_text,
)
from skillmix.report.markup import fmt, fmt_stderr
from skillmix.report.reproduction import ReproductionView, reproduction_view
from skillmix.report.row_facts import RowFacts, row_facts

# the row fields a leaderboard can show before its k columns (compare shows run and model)
LABEL_FIELDS = ("student", "grader", "run", "run_id", "run_label", "model")
USAGE_COLUMNS = (
    "model",
    "model id",
    "role",
    "phase",
    "records",
    "cached",
    "prompt tokens",
    "completion tokens",
    "cost (USD)",
)
"""The usage table's columns (report.md leaves out the model id)."""


@dataclass(frozen=True)
class CellView:
    """One metric value: the exact numbers (for data attributes and CSV) and the rounded texts
    every renderer shows, so a cell reads the same on each page."""

    mean: float | None
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    exact: str | None
    n: int | None  # the combinations behind the value (for the stderr's "n<2")
    unparsed: int | None  # leaderboard cells only
    own_n: bool  # a leaderboard cell names its n ("n=6"); a metric row has an n column
    mean_text: str
    stderr_text: str
    ci_text: str | None  # "[low, high]", None without an interval
    reference_text: str  # the reference's own print of mean and stderr

    @property
    def short_text(self) -> str:
        """``mean ± stderr``."""
        return f"{self.mean_text} ± {self.stderr_text}"

    @property
    def interval_text(self) -> str:
        """``mean [low, high]`` (the Wilson interval the report shows): the terminal's cell,
        which, unlike ± stderr, does not collapse at 0/n and n/n."""
        return f"{self.mean_text} {self.ci_text}" if self.ci_text else self.mean_text

    @property
    def text(self) -> str:
        """``mean ± stderr [low, high] n=N``: the Markdown cell."""
        interval = f" {self.ci_text}" if self.ci_text else ""
        count = f" n={self.n}" if self.own_n else ""
        return f"{self.short_text}{interval}{count}"


def cell_view(cell: MetricValueJson, n: int | None = None) -> CellView:
    """``n``: the row's combinations, for a metric row's value (a leaderboard cell carries its
    own)."""
    own = cell.n if isinstance(cell, LeaderboardCell) else None
    count = own if own is not None else n
    ci = cell.ci95 or [None, None]
    has_ci = bool(cell.ci95) and ci[0] is not None
    return CellView(
        mean=cell.mean,
        stderr=cell.stderr,
        ci_low=ci[0],
        ci_high=ci[1],
        exact=cell.exact,
        n=count,
        unparsed=cell.unparsed if isinstance(cell, LeaderboardCell) else None,
        own_n=own is not None,
        mean_text=fmt(cell.mean),
        stderr_text=fmt_stderr(cell.stderr, count),
        ci_text=f"[{fmt(ci[0])}, {fmt(ci[1])}]" if has_ci else None,
        reference_text=reference_print(cell.mean, cell.stderr),
    )


@dataclass(frozen=True)
class VerdictView:
    """The paired test of a row against the next ranked row."""

    text: str
    significant: bool  # on the Holm-adjusted p where there is one
    p_value: float | None  # raw
    p_adjusted: float | None = None


@dataclass(frozen=True)
class BoardRowView:
    """One leaderboard row: rank, labels, per-k cells, score and the test against the next."""

    rank: int | None
    rank_text: str  # with the tie mark
    tied: bool
    tie_group: int | None
    letters: str  # the compact letter display ("" without one)
    first: bool  # rank 1
    group_start: bool  # a line above: a new tie group, where one of the two has several rows
    student: str
    grader: str
    run: int | None
    labels: Mapping[str, str | int]  # LABEL_FIELDS, "" where absent
    model_text: str
    cells: Mapping[int, CellView | None]  # every k of the board
    score: float | None
    score_text: str
    exact_score: str | None
    score_ci: tuple[float, float] | None  # the score's bootstrap interval
    score_ci_text: str  # "[low, high]", "" without one
    own_score_text: str  # "" unless the model has more k values than the ranked ones
    own_ks_text: str
    verdict: VerdictView | None
    excluded: str  # why the row is not ranked ("" when it is)


@dataclass(frozen=True)
class BoardView:
    """One leaderboard as shown: its rows in rank order and the texts around the table."""

    metric: str
    title: str
    ks: tuple[int, ...]
    score_label: str
    note: str  # what the score is
    caption: str  # the report page's table caption
    has_own: bool  # a "mean over own k" column
    rows: tuple[BoardRowView, ...]
    has_letters: bool = False  # a "groups" column (boards written before letters have none)
    reading_note: str = READING_NOTE  # how to read ranks, groups and 'vs next'


def _group_starts(board: Leaderboard) -> list[bool]:
    """Whether each row starts a new tie group, where one of the two groups has several
    rows (the page draws a line there)."""
    sizes = Counter(r.tie_group for r in board.rows if r.tie_group is not None)
    previous: int | None = None
    starts = []
    for row in board.rows:
        starts.append(
            previous is not None
            and row.tie_group not in (None, previous)
            and max(sizes[previous], sizes[row.tie_group]) > 1
        )
        previous = row.tie_group if row.tie_group is not None else previous
    return starts


def _labels(row: LeaderboardRow) -> dict[str, str | int]:
    values = {key: getattr(row, key) for key in LABEL_FIELDS}
    return {key: "" if value is None else value for key, value in values.items()}


def board_view(board: Leaderboard) -> BoardView:
    """A leaderboard (of a run or a comparison) as every renderer shows it."""
    below = pair_below(board)
    rows = []
    for position, (row, starts) in enumerate(zip(board.rows, _group_starts(board), strict=True)):
        pair = below.get(position)
        rows.append(
            BoardRowView(
                rank=row.rank,
                rank_text=rank_text(row),
                tied=row.tied,
                tie_group=row.tie_group,
                letters=row.letters or "",
                first=row.rank == 1,
                group_start=starts,
                student=row.student,
                grader=row.grader,
                run=row.run,
                labels=_labels(row),
                model_text=model_text(row)
                + (
                    f" · {SELF_GRADED}"
                    if row.model_id and row.model_id == row.grader_model_id
                    else ""
                ),
                cells={
                    k: cell_view(cell) if (cell := row.cells.get(str(k))) else None
                    for k in board.ks
                },
                score=row.score,
                score_text=fmt(row.score, 3),
                exact_score=row.exact_score,
                score_ci=(row.score_ci95[0], row.score_ci95[1]) if row.score_ci95 else None,
                score_ci_text=f"[{fmt(row.score_ci95[0], 3)}, {fmt(row.score_ci95[1], 3)}]"
                if row.score_ci95
                else "",
                own_score_text=fmt(row.own_score, 3) if row.own_score is not None else "",
                own_ks_text=", ".join(map(str, sorted(row.ks))),
                verdict=_verdict(pair, row.excluded),
                excluded=row.excluded or "",
            )
        )
    return BoardView(
        metric=board.metric,
        title=board.title,
        ks=tuple(board.ks),
        score_label=board.score_label,
        note=board_note(board),
        caption=leaderboard_caption(board),
        has_own=any(r.own_score is not None for r in board.rows),
        rows=tuple(rows),
        has_letters=has_letters(board),
        reading_note=LETTERS_NOTE if has_letters(board) else READING_NOTE,
    )


def has_letters(board: Leaderboard) -> bool:
    """Whether the board carries a compact letter display (summaries before it do not)."""
    return any(r.letters for r in board.rows)


def _verdict(pair: PairwiseResult | None, excluded: str | None) -> VerdictView | None:
    """The 'vs next' cell: the paired test, or why the row is not ranked."""
    if excluded:
        return VerdictView(f"not ranked ({excluded})", False, None)
    if pair is None:
        return None
    return VerdictView(verdict_text(pair), pair.significant, pair.p_value, pair.p_adjusted)


def as_board_view(board: Leaderboard | BoardView) -> BoardView:
    """Renderers take a view; a leaderboard passed as is (compare, tests) is viewed first."""
    return board if isinstance(board, BoardView) else board_view(board)


def leaderboard_caption(board: Leaderboard) -> str:
    """What a leaderboard table shows (its ``<caption>`` in report.html)."""
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


# the metrics table (report.md, metrics.csv, the terminal) ---------------------------------
@dataclass(frozen=True)
class MetricRowView:
    """One (student, grader, k) row of the metrics table."""

    student: str
    grader: str
    k: int
    n: int
    unparsed: int
    cells: Mapping[str, CellView]  # by metric name, in METRIC_NAMES order
    facts: RowFacts | None = None  # model id, counts and ranks (a run's report; not aggregate)

    def terminal_cells(self, reference: bool) -> list[str]:
        """The terminal's cells: the reference's exact print in reference mode ("nan"
        included), else ``mean [95% interval]`` (a value that cannot be computed says "n/a")."""
        return [c.reference_text if reference else c.interval_text for c in self.cells.values()]


@dataclass(frozen=True)
class MetricsView:
    """The metrics table and the settings that produced it."""

    metrics: tuple[str, ...]  # names (CSV headers)
    titles: tuple[str, ...]  # titles (table headers)
    rows: tuple[MetricRowView, ...]
    reference: bool  # reference mode: the terminal prints as the reference does
    interval_method: str
    settings_caption: str  # the terminal table's caption


def settings_caption(settings: MetricSettings) -> str:
    """The options behind the numbers, in the flags' own words."""
    return (
        f"mode={settings.mode} vote={settings.vote} generation-agg={settings.generation_agg} "
        f"filter-explicit-name={settings.filter_explicit_name}"
        + (f" filter-skills={','.join(settings.filter_skills)}" if settings.filter_skills else "")
        + (" reparse" if settings.reparse else "")
    )


def metrics_view(
    section: MetricsSection, facts: Mapping[tuple[str, str, int], RowFacts] | None = None
) -> MetricsView:
    """The metrics section (``RunMetrics.section()`` or a summary's) as shown; ``facts``: each
    row's model id, counts and ranks (``row_facts`` of the summary)."""
    rows = tuple(
        MetricRowView(
            student=row.student,
            grader=row.grader,
            k=row.k,
            n=row.n,
            unparsed=row.unparsed,
            cells={name: cell_view(row.metric(name), row.n) for name in METRIC_NAMES},
            facts=(facts or {}).get((row.student, row.grader, row.k)),
        )
        for row in section.rows
    )
    settings = section.settings
    return MetricsView(
        metrics=tuple(METRIC_NAMES),
        titles=tuple(METRIC_TITLES[m] for m in METRIC_NAMES),
        rows=rows,
        reference=settings.mode == "reference",
        interval_method=settings.interval_method,
        settings_caption=settings_caption(settings),
    )


# per-skill, per-topic and per-category rates -----------------------------------------------
SMALL_N_MARK = "†"


@dataclass(frozen=True)
class RateCellView:
    """One heatmap cell (a rate over n combinations) as the page's rate tables show it: the
    rate and n, a mark where n is below the table's ``min_n``, and its 95% Wilson interval
    (the metrics' interval) for the tooltip."""

    value: float
    n: int
    ci_low: float | None
    ci_high: float | None
    small: bool
    text: str  # "0.50 (n=6)", with the mark when small
    title: str  # "95% interval [0.19, 0.81]; n = 6 combinations"


def rate_cell_view(value: float | None, n: int, min_n: int) -> RateCellView | None:
    """None for a cell the model never sampled."""
    if value is None:
        return None
    ci = wilson_interval(value * n, n)
    small = n < min_n
    interval = f"95% interval [{fmt(ci[0])}, {fmt(ci[1])}]; " if ci else ""
    return RateCellView(
        value=value,
        n=n,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        small=small,
        text=f"{fmt(value)} (n={n})" + (SMALL_N_MARK if small else ""),
        title=f"{interval}n = {n} combinations"
        + (f" (fewer than {min_n}: read with care)" if small else ""),
    )


# score against cost -----------------------------------------------------------------------
@dataclass(frozen=True)
class CostPoint:
    """A student's headline score and what generating its answers took."""

    student: str
    score: float
    tokens: int
    cost_usd: float | None

    @property
    def per_1000_tokens(self) -> float | None:
        return 1000 * self.score / self.tokens if self.tokens else None


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


# the whole report ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PartialView:
    """What a partial run has finished, and the students it cannot rank yet."""

    generations: int
    planned_generations: int
    grades: int
    planned_grades: int
    ungraded: tuple[str, ...]


@dataclass(frozen=True)
class ReportView:
    """Everything with a number in it that report.html, report.md, metrics.csv and the
    terminal show for one run."""

    run_id: str
    boards: tuple[BoardView, ...]
    metrics: MetricsView
    warnings: tuple[str, ...]
    metric_definitions: tuple[str, ...]
    graders: tuple[str, ...]  # the leaderboards' graders (a grader column when several)
    partial: PartialView | None
    cost: tuple[CostPoint, ...] = field(default=())
    cost_metric: str = "score"  # the score column of the cost table: metric and k values
    rule: str = ""  # how models with missing planned work are ranked ("" in old summaries)
    reading_note: str = READING_NOTE  # how to read ranks, groups and 'vs next'
    reproduction: ReproductionView | None = None  # None in summaries before the block
    header_marks: tuple[str, ...] = ()  # self-grading, copied rounds, the name filter
    rounds_text: str = ""  # "R = 3", or what copied rounds are in effect
    items: ItemFailuresView | None = None  # which rubric items fail (None in old summaries)


def ungraded_models(summary: Summary) -> list[str]:
    """The experiment's students with no finished grade yet (so no leaderboard row)."""
    ranked = {r.student for b in summary.leaderboards for r in b.rows}
    return [s.name for s in summary.experiment.students if s.name not in ranked]


def partial_view(summary: Summary) -> PartialView | None:
    if summary.status != "partial":
        return None
    counts = summary.counts
    if summary.progress:  # done records against the plan (a failed one is not finished)
        total = {
            (phase, what): sum(getattr(p, what) for p in summary.progress if p.phase == phase)
            for phase in ("generate", "grade")
            for what in ("done", "planned")
        }
        return PartialView(
            generations=total["generate", "done"],
            planned_generations=total["generate", "planned"],
            grades=total["grade", "done"],
            planned_grades=total["grade", "planned"],
            ungraded=tuple(ungraded_models(summary)),
        )
    return PartialView(
        generations=counts.generations,
        planned_generations=counts.planned_generations,
        grades=counts.grades,
        planned_grades=counts.planned_grades,
        ungraded=tuple(ungraded_models(summary)),
    )


def report_view(summary: Summary) -> ReportView:
    """The view of a run's summary; built once, shared by every renderer."""
    first = summary.leaderboards[0] if summary.leaderboards else None
    return ReportView(
        run_id=summary.run_id,
        boards=tuple(board_view(b) for b in summary.leaderboards),
        metrics=metrics_view(summary.metrics, row_facts(summary)),
        warnings=tuple(summary.warnings),
        metric_definitions=tuple(summary.metric_definitions.values()),
        graders=tuple(sorted({r.grader for b in summary.leaderboards for r in b.rows})),
        partial=partial_view(summary),
        cost=tuple(cost_points(summary)),
        cost_metric=f"{METRIC_TITLES[first.metric]} ({first.score_label})" if first else "score",
        rule=COMPLETENESS_RULE if summary.progress is not None else "",
        reading_note=LETTERS_NOTE
        if any(has_letters(b) for b in summary.leaderboards)
        else READING_NOTE,
        reproduction=reproduction_view(summary),
        header_marks=header_marks(summary),
        rounds_text=rounds_text(summary),
        items=item_failures_view(summary.item_failures),
    )


def entry_label(row: LeaderboardRow, boards: Sequence[Leaderboard]) -> str:
    """A model's name in the plots: with its grader when several graders are ranked."""
    graders = {r.grader for b in boards for r in b.rows}
    return row.student if len(graders) <= 1 else f"{row.student} / {row.grader}"


def model_descriptions(experiment: Experiment) -> dict[str, str]:
    """Per student: backend, model id and sampling settings, in one short line."""
    out = {}
    for spec in experiment.students:
        sampling = spec.sampling
        parts = [
            f"{name} {value}"
            for name, value in (
                ("T", sampling.temperature),
                ("top_p", sampling.top_p),
                ("max", sampling.max_tokens),
            )
            if value is not None
        ]
        out[spec.name] = f"{spec.backend} · {spec.model} · " + (
            ", ".join(parts) or "default sampling"
        )
    return out
