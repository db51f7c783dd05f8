"""Leaderboards: models ranked per metric by the mean of their per-k means, with paired tests
of adjacent rows and groups of statistically tied models.

Shared by the run report and ``skillmix compare``. Ranks are competition ranks ("1, 1, 3")
over exact fractions: equal scores (42/90 and 42/90) share a rank whatever the float noise,
so a run compared with itself ranks equally. Metric values are copied from the metric rows
untouched; only the ranking score, the tests and the tie groups are new.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from skillmix.artifacts import (
    Leaderboard,
    LeaderboardCell,
    LeaderboardRow,
    MetricRowJson,
    MetricValueJson,
    PairwiseResult,
)
from skillmix.method.points import METRIC_NAMES, METRIC_TITLES
from skillmix.method.stats import (
    ALPHA,
    HOLM_METHOD,
    PAIRED_METHOD,
    SCORE_INTERVAL_METHOD,
    bootstrap_mean_over_k,
    compact_letters,
    exact_fraction,
    holm_adjust,
    paired_test,
    tie_groups,
)

if TYPE_CHECKING:
    import numpy.typing as npt

    Sample = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]


@dataclass
class Entry:
    """One model (student, grader) of one run: its metric cells per metric and k (as text),
    and, when the rows carry them, its per-combination values per metric and k (for paired
    tests). The run fields are set by ``skillmix compare`` only; ``design`` names the
    combinations (entries are paired only when it is equal)."""

    student: str
    grader: str
    metrics: dict[str, dict[str, LeaderboardCell]] = field(default_factory=dict)
    ks: list[int] = field(default_factory=list)
    run: int | None = None
    run_id: str | None = None
    run_label: str | None = None
    model: str | None = None
    samples: dict[str, dict[int, Sample]] = field(default_factory=dict)
    design: str | None = None
    model_id: str | None = None
    backend: str | None = None
    sampling: dict[str, Any] | None = None
    grader_model_id: str | None = None
    excluded: str | None = None  # why it is not ranked (planned work missing or failed)


def competition_ranks(scores: Sequence[Fraction | float | None]) -> list[int | None]:
    """1 + the number of strictly better scores; None for a missing score. Pass fractions
    (``exact_mean_over_k``) so that equal scores compare equal."""
    present = [s for s in scores if s is not None]
    return [None if s is None else 1 + sum(1 for o in present if o > s) for s in scores]


def mean_over_k(cells: Mapping[str, MetricValueJson], ks: Sequence[int]) -> float | None:
    """Mean of the per-k means over ``ks``; None if any of them is missing."""
    values = [cell.mean if (cell := cells.get(str(k))) else None for k in ks]
    present = [v for v in values if v is not None]
    if not values or len(present) < len(values):
        return None
    return sum(present) / len(present)


def cell_fraction(cell: MetricValueJson) -> Fraction | None:
    """The cell's mean as an exact fraction (from ``exact``, or recovered from the float of
    files written before it existed)."""
    if cell.exact:
        return Fraction(cell.exact)
    return None if cell.mean is None else exact_fraction(cell.mean)


def exact_mean_over_k(cells: Mapping[str, MetricValueJson], ks: Sequence[int]) -> Fraction | None:
    """``mean_over_k`` in exact fractions (what ranks compare)."""
    values = [cell_fraction(cell) if (cell := cells.get(str(k))) else None for k in ks]
    if not values or any(v is None for v in values):
        return None
    return sum((v for v in values if v is not None), Fraction(0)) / len(values)


def score_label(ks: Sequence[int]) -> str:
    """What a row's score averages, for column headers and captions."""
    return f"mean over k = {', '.join(map(str, ks))}" if ks else "mean over k (no k in common)"


def entries_from_rows(rows: Sequence[MetricRowJson]) -> list[Entry]:
    """Metric rows (``RunMetrics.section().rows``) grouped per (student, grader)."""

    entries: dict[tuple[str, str], Entry] = {}
    for row in rows:
        key = (row.student, row.grader)
        entry = entries.setdefault(key, Entry(student=row.student, grader=row.grader))
        entry.ks.append(row.k)
        for name in METRIC_NAMES:
            cell = LeaderboardCell(**row.metric(name).model_dump(), n=row.n, unparsed=row.unparsed)
            entry.metrics.setdefault(name, {})[str(row.k)] = cell
            if row.combinations is not None:
                entry.samples.setdefault(name, {})[row.k] = (
                    np.asarray(row.combinations.index, dtype=np.int64),
                    np.asarray(row.combinations.values(name), dtype=float),
                )
    return [entries[key] for key in sorted(entries)]


def common_ks(entries: Sequence[Entry]) -> list[int]:
    """The k values every entry has: the only fair ground to rank on."""
    sets = [set(e.ks) for e in entries]
    return sorted(set.intersection(*sets)) if sets else []


def entry_label(entry: Entry, graders: int) -> str:
    """The entry's name in a paired test, with its grader when there are several."""
    if entry.model:
        return entry.model
    return entry.student if graders <= 1 else f"{entry.student} / {entry.grader}"


class PairTest(NamedTuple):
    """The paired test of two rows, named as :class:`PairwiseResult` names its fields."""

    diff: float | None
    ci95: list[float] | None
    p_value: float | None
    significant: bool
    pairs: int
    wins: int
    losses: int
    method: str
    p_adjusted: float | None = None


def _untested(why: str) -> PairTest:
    return PairTest(None, None, None, False, 0, 0, 0, f"not tested: {why}")


def compare_pair(
    a: Entry, b: Entry, metric: str, ks: Sequence[int], *, samples: int, seed: int
) -> PairTest:
    """The paired test of a against b; an untested pair says why."""
    sa, sb = a.samples.get(metric, {}), b.samples.get(metric, {})
    if not ks:
        return _untested("no k in common")
    if any(k not in sa or k not in sb for k in ks):
        return _untested("per-combination values missing")
    if a.design != b.design:
        return _untested("the runs used other combinations")
    result = paired_test(sa, sb, ks, samples=samples, seed=seed)
    if not result.pairs:
        return _untested("no shared combinations")
    return PairTest(
        result.diff,
        list(result.ci95) if result.ci95 else None,
        result.p_value,
        result.significant and result.diff > 0,  # a win only in the ranking's direction
        result.pairs,
        result.wins,
        result.losses,
        PAIRED_METHOD,
    )


def leaderboard(
    entries: Sequence[Entry], metric: str, *, samples: int = 2000, seed: int = 0
) -> Leaderboard:
    """Entries ranked by ``metric`` averaged over the k values every entry has, adjacent rows
    compared by a paired test (``samples`` bootstrap resamples for the difference's interval),
    and statistically tied rows grouped."""
    rankable = [e for e in entries if not e.excluded]
    ks = common_ks(rankable)
    all_ks = sorted({k for e in entries for k in e.ks})
    partial = [e for e in rankable if sorted(e.ks) != ks]
    rows = board_rows(entries, metric, ks, all_ks, partial, samples=samples, seed=seed)
    order = sorted(range(len(rows)), key=lambda i: (rows[i].rank is None, rows[i].rank or 0, i))
    ranked = [i for i in order if rows[i].rank is not None]
    tests = all_pair_tests([entries[i] for i in ranked], metric, ks, samples=samples, seed=seed)
    pairwise = adjacent_tests(entries, rows, ranked, tests)
    mark_ties(rows, ranked, [p.significant for p in pairwise], lambda a, b: tests[a, b].significant)
    differing = [pair for pair, test in tests.items() if test.significant]
    for i, letters in zip(ranked, compact_letters(len(ranked), differing), strict=True):
        rows[i].letters = letters
    return Leaderboard(
        metric=metric,
        title=METRIC_TITLES[metric],
        ranked_over_ks=ks,
        ks=all_ks,
        score_label=score_label(ks),
        ranking_note=ranking_note(len(rankable), len(partial), ks, len(entries) - len(rankable)),
        rows=[rows[i] for i in order],
        pairwise=pairwise,
    )


def board_rows(
    entries: Sequence[Entry],
    metric: str,
    ks: Sequence[int],
    all_ks: Sequence[int],
    partial: Sequence[Entry],
    *,
    samples: int = 0,
    seed: int = 0,
) -> list[LeaderboardRow]:
    """One row per entry, in the entries' order: its rank and score over ``ks`` (exact
    fractions decide the rank) with the score's bootstrap interval (``samples`` resamples),
    its cells at every k, and its own score when it is one of the ``partial`` entries that
    have more k values than ``ks``."""
    exact = [
        None if e.excluded else exact_mean_over_k(e.metrics.get(metric, {}), ks) for e in entries
    ]
    ranks = competition_ranks(exact)
    partial_ids = {id(e) for e in partial}
    rows = []
    for entry, value, rank in zip(entries, exact, ranks, strict=True):
        cells = entry.metrics.get(metric, {})
        rows.append(
            LeaderboardRow(
                rank=rank,
                student=entry.student,
                grader=entry.grader,
                ks=entry.ks,
                run=entry.run,
                run_id=entry.run_id,
                run_label=entry.run_label,
                model=entry.model,
                score=None if entry.excluded else mean_over_k(cells, ks),
                exact_score=f"{value.numerator}/{value.denominator}" if value is not None else None,
                score_ci95=score_interval(entry, metric, ks, samples, seed)
                if value is not None
                else None,
                own_score=mean_over_k(cells, sorted(entry.ks))
                if id(entry) in partial_ids
                else None,
                model_id=entry.model_id,
                backend=entry.backend,
                sampling=entry.sampling,
                grader_model_id=entry.grader_model_id,
                excluded=entry.excluded,
                cells={str(k): cells.get(str(k)) for k in all_ks},
            )
        )
    return rows


def score_interval(
    entry: Entry, metric: str, ks: Sequence[int], samples: int, seed: int
) -> list[float] | None:
    """The bootstrap interval of the entry's mean over ``ks``; None without its
    per-combination values."""
    values = entry.samples.get(metric, {})
    if not ks or any(k not in values for k in ks):
        return None
    ci = bootstrap_mean_over_k([values[k][1] for k in ks], samples, seed)
    return list(ci) if ci else None


def all_pair_tests(
    ranked: Sequence[Entry], metric: str, ks: Sequence[int], *, samples: int, seed: int
) -> dict[tuple[int, int], PairTest]:
    """The paired test of every pair (i, j), i < j, of the ranked entries (in rank order),
    their p-values Holm-adjusted over the family of tested pairs; a pair is significant when
    the adjusted p < 0.05, the interval excludes 0 and the upper row scores higher."""
    raw = {
        (i, j): compare_pair(ranked[i], ranked[j], metric, ks, samples=samples, seed=seed)
        for i, j in itertools.combinations(range(len(ranked)), 2)
    }
    adjusted = holm_adjust([t.p_value for t in raw.values()])
    out = {}
    for (pair, test), p in zip(raw.items(), adjusted, strict=True):
        if p is None:
            out[pair] = test
            continue
        ci = test.ci95
        excludes_zero = ci is None or ci[0] > 0 or ci[1] < 0
        significant = p < ALPHA and excludes_zero and (test.diff or 0) > 0
        out[pair] = test._replace(p_adjusted=p, significant=significant)
    return out


def adjacent_tests(
    entries: Sequence[Entry],
    rows: Sequence[LeaderboardRow],
    ranked: Sequence[int],
    tests: Mapping[tuple[int, int], PairTest],
) -> list[PairwiseResult]:
    """The paired test of each ranked row against the next one (``ranked``: row positions in
    rank order; ``tests``: every pair's test by rank positions); these tests decide which
    neighbours are tied."""
    graders = len({e.grader for e in entries})
    pairwise = []
    for position, (upper, lower) in enumerate(itertools.pairwise(ranked)):
        test = tests[position, position + 1]
        pairwise.append(
            PairwiseResult(
                a=entry_label(entries[upper], graders),
                b=entry_label(entries[lower], graders),
                a_rank=rows[upper].rank,
                b_rank=rows[lower].rank,
                **test._asdict(),
            )
        )
    return pairwise


def mark_ties(
    rows: Sequence[LeaderboardRow],
    ranked: Sequence[int],
    gaps: Sequence[bool],
    top_beats: Callable[[int, int], bool],
) -> None:
    """Set each ranked row's tie group and whether it is tied with a neighbour (``gaps``:
    whether each adjacent test was significant)."""
    groups = tie_groups(gaps, top_beats)
    for i, group in zip(ranked, groups, strict=False):
        rows[i].tie_group = group
    for position, i in enumerate(ranked):  # tied with a neighbour: a gap above or below
        above = position > 0 and not gaps[position - 1]
        below = position < len(gaps) and not gaps[position]
        rows[i].tied = above or below


def ranking_note(models: int, partial: int, ks: Sequence[int], excluded: int = 0) -> str:
    """Why some models' own scores are shown apart, why some are not ranked (``excluded``:
    models with planned work missing or failed), or why nothing is ranked; "" when every
    model is complete and has the same k values."""
    note = _k_note(models, partial, ks)
    if excluded:
        left_out = (
            f"{excluded} model(s) with planned work missing or failed are not ranked "
            "(the reason is on each row)."
        )
        return f"{note} {left_out}" if note else left_out
    return note


def _k_note(models: int, partial: int, ks: Sequence[int]) -> str:
    if partial and ks:
        return (
            f"Ranked over k = {', '.join(map(str, ks))}, the k values all {models} "
            f"models have; {partial} model(s) also have other k values, and their mean "
            "over their own k values is shown separately (it does not change when runs are "
            "added)."
        )
    if partial:
        return "The models share no k value, so they are not ranked."
    return ""


def leaderboards(
    rows: Sequence[MetricRowJson],
    *,
    samples: int = 2000,
    seed: int = 0,
    students: Mapping[str, Mapping[str, Any]] | None = None,
    graders: Mapping[str, Mapping[str, Any]] | None = None,
    excluded: Mapping[str, str] | None = None,
) -> list[Leaderboard]:
    """The run report's three leaderboards; ``students`` and ``graders`` map names to their
    experiment specs (model id, backend, sampling), shown on each row; ``excluded``: students
    not ranked, and why (``pipeline.aggregate.incomplete_reasons``)."""
    entries = entries_from_rows(rows)
    for entry in entries:
        describe_entry(entry, students or {}, graders or {})
        entry.excluded = (excluded or {}).get(entry.student)
    return [leaderboard(entries, name, samples=samples, seed=seed) for name in METRIC_NAMES]


def describe_entry(
    entry: Entry,
    students: Mapping[str, Mapping[str, Any]],
    graders: Mapping[str, Mapping[str, Any]],
) -> None:
    """Copy the student's model id, backend and sampling (and the grader's model id) from the
    experiment's specs onto the entry."""
    student = students.get(entry.student)
    if student is not None:
        entry.model_id = student.get("model")
        entry.backend = student.get("backend")
        # no sampling in the spec: unknown (a reference import names its models only)
        entry.sampling = dict(student["sampling"] or {}) if "sampling" in student else None
    grader = graders.get(entry.grader)
    if grader is not None:
        entry.grader_model_id = grader.get("model")


# a reference import's models: the tree names them, not how they were served or sampled
IMPORTED_BACKEND = "unknown (reference import)"


def imported_board(board: Leaderboard) -> Leaderboard:
    """The board of a reference import: each row's backend unknown and sampling unknown (the
    run context's placeholders are not shown as facts)."""
    rows = [
        r.model_copy(update={"backend": IMPORTED_BACKEND, "sampling": None}) for r in board.rows
    ]
    return board.model_copy(update={"rows": rows})


# text shared by the HTML and Markdown tables -----------------------------------------------
TIE_MARK = "≈"


def rank_text(row: LeaderboardRow) -> str:
    """The rank, with the tie mark when the row is statistically tied with a neighbour."""
    if row.rank is None:
        return "—"
    return f"{row.rank}{TIE_MARK}" if row.tied else str(row.rank)


def sampling_text(sampling: Mapping[str, Any] | None) -> str:
    """Sampling settings in one short line ("temperature 0.7, top_p 1, max_tokens 512");
    unset values are the backend's defaults."""
    if not sampling:
        return "defaults"
    shown = [f"{k} {v}" for k, v in sampling.items() if v is not None]
    return ", ".join(shown) if shown else "defaults"


def model_text(row: LeaderboardRow) -> str:
    """Backend, model id and sampling of a row's student, in one line."""
    if row.model_id is None and row.backend is None:
        return "—"
    sampling = "sampling unknown" if row.sampling is None else sampling_text(row.sampling)
    return f"{row.backend}: {row.model_id} ({sampling})"


def verdict_text(pair: PairwiseResult | None) -> str:
    """The paired test of a row against the row below, for reading."""
    if pair is None:
        return ""
    if pair.p_value is None or pair.diff is None:
        return pair.method
    ci = f" [{pair.ci95[0]:+.3f}, {pair.ci95[1]:+.3f}]" if pair.ci95 else ""
    p = f"p {p_text(pair.p_value)}"
    if pair.p_adjusted is not None:
        p += f", Holm p {p_text(pair.p_adjusted)}"
    word = "better" if pair.significant else "tied"
    return f"{word}: {pair.diff:+.3f}{ci}, {p} ({pair.wins}:{pair.losses} of {pair.pairs})"


def p_text(p: float) -> str:
    """A p-value for reading, with its relation ("= 0.0123", "< 0.001")."""
    return f"= {p:.3g}" if p >= 0.001 else "< 0.001"


def pair_below(board: Leaderboard) -> dict[int, PairwiseResult]:
    """Row position -> the paired test of that row against the next ranked row."""
    ranked = [i for i, r in enumerate(board.rows) if r.rank is not None]
    return {i: p for i, p in zip(ranked, board.pairwise, strict=False)}


READING_NOTE = (
    "Equal scores (compared as exact fractions) share a rank. "
    f"{TIE_MARK}: statistically tied with a neighbour (the paired test of adjacent rows is not "
    "significant: p ≥ 0.05 or the interval includes 0). A tie group holds adjacent tied rows "
    "that are also tied with the group's top row, so small steps do not chain the best and the "
    "worst model into one group. 'vs next': the paired difference to "
    "the next row in rank order, its 95% paired bootstrap interval, the exact sign-test p-value and the "
    "pairs won:lost."
)
LETTERS_NOTE = (
    "Equal scores (compared as exact fractions) share a rank. Groups: how to read them: two "
    "models that share a letter are not significantly different; two models with no letter in "
    "common are. The groups overlap (a model can share a letter with two models that differ "
    "from each other), so they are not ranks. Every pair of ranked models is compared "
    f"{PAIRED_METHOD.removeprefix('paired ')} ({HOLM_METHOD}). "
    f"{TIE_MARK}: statistically tied with a neighbour (not significantly different). 'vs next': the paired "
    "difference to the next row in rank order, its 95% paired bootstrap interval, the raw "
    "sign-test p-value, the Holm-adjusted p-value and the pairs won:lost."
)


def board_note(board: Leaderboard) -> str:
    """What a leaderboard's score is (its k values), and why when some models have more."""
    text = f"Ranked by the {board.score_label}."
    if any(r.score_ci95 for r in board.rows):
        text += f" Beside the score: its {SCORE_INTERVAL_METHOD}."
    return f"{text} {board.ranking_note}" if board.ranking_note else text
