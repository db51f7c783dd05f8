"""The reference aggregator's own arithmetic, for ``reference`` mode (SPEC 6).

The reference stacks every point into one array of shape (G, R, N, k + 3) and converts it
with ``score.astype(np.float32)``; it votes and sums in float32. Full Marks and All Skills
then become int64 0/1 arrays (``np.where(..., 1, 0)``), so their mean and standard deviation
are float64, while Skill Fraction (``np.where(o == 3, s / k, 0)``) stays float32 and so do
its mean and ``std(ddof=1)``; the printed standard error is ``std / np.sqrt(n)`` (float64).
A float32 mean of 0.225 is 0.22499999, which prints "0.22" where float64 prints "0.23": so
reference mode repeats these steps with numpy, on arrays of the reference's shapes, to print
and return what the reference prints. Strict mode keeps float64 (metrics.py).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol, TypeVar

import numpy as np

from skillmix.errors import SkillmixError
from skillmix.method.points import (
    METRIC_NAMES,
    GradedAnswer,
    MetricMode,
    MetricOptions,
    prepare_points,
)

SummaryDtype = Literal["float32", "float64"]
RoundKind = Literal["generation", "grading"]
REFERENCE_FORMAT = "{:.2f} ± {:.3f}"  # the reference's print of one metric


def summary_dtype(mode: MetricMode, metric: str) -> SummaryDtype:
    """The precision of a metric's mean and standard deviation: float32 for Skill Fraction in
    reference mode (the reference's ``s / k`` of a float32 array stays float32), float64 for
    everything else (Full Marks and All Skills are int64 in the reference; strict mode is ours)."""
    return "float32" if mode == "reference" and metric == "skill_fraction" else "float64"


def reference_print(mean: float | None, stderr: float | None) -> str:
    """One metric as the reference prints it (NaN, stored as None in JSON, prints "nan")."""
    nan = float("nan")
    return REFERENCE_FORMAT.format(nan if mean is None else mean, nan if stderr is None else stderr)


def _item_arrays(score: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The reference's three item arrays from voted points (last axis: the k + 3 items)."""

    size = k + 3
    others = size - k
    skills = score[..., 0:k].sum(axis=-1)
    rest = score[..., k:size].sum(axis=-1)
    items = {
        "full_marks": np.where(score.sum(axis=-1) == size, 1, 0),
        "all_skills": np.where(skills == k, 1, 0) * np.where(rest >= others - 1, 1, 0),
        "skill_fraction": np.where(rest == others, skills / k, 0),
    }
    for name, values in items.items():  # the dtypes are the point of this module
        wanted = "float32" if summary_dtype("reference", name) == "float32" else "int64"
        items[name] = values.astype(wanted, copy=False)
    return items


def _vote(score: np.ndarray, how: str, axis: int) -> np.ndarray:

    mean: np.ndarray = score.mean(axis=axis)
    return np.rint(mean) if how == "majority" else mean


def _mean_stderr(values: np.ndarray) -> tuple[float, float]:
    """``values.mean()`` and ``values.std(ddof=1) / np.sqrt(n)`` in the array's dtype."""

    n = len(values)
    if n == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # n = 1: the reference prints nan
        return float(values.mean()), float(values.std(ddof=1) / np.sqrt(n))


def reference_mean_stderr(
    answers: Sequence[GradedAnswer], options: MetricOptions
) -> dict[str, tuple[float, float]]:
    """Mean and standard error of each metric for one (student, grader, k), computed as the
    reference computes them. ``answers`` are one group's verdicts; points are prepared as in
    metrics.py (padding, length point, name filter), combinations with a filtered skill left
    out. A group whose verdicts do not fill the reference's (G, R, N) grid (a missing round or
    row, which the reference cannot aggregate) is computed per combination in the same dtypes."""

    excluded = set(options.filter_skills)
    cells: dict[tuple[int, int, int], list[float]] = {}
    k = answers[0].k if answers else 0
    for a in answers:
        if excluded and excluded.intersection(a.skills):
            continue
        points = prepare_points(a, options)
        if points is not None:
            cells[(a.generation_round, a.grading_round, a.index)] = points
    if not cells:
        return {name: (math.nan, math.nan) for name in METRIC_NAMES}
    gs = sorted({g for g, _, _ in cells})
    rs = sorted({r for _, r, _ in cells})
    idx = sorted({i for _, _, i in cells})
    if len(cells) == len(gs) * len(rs) * len(idx):
        # the reference's path: one (G, R, N, k + 3) float32 array, rounds voted on axis 1
        grid = np.array(
            [[[cells[(g, r, i)] for i in idx] for r in rs] for g in gs], dtype=np.float32
        )
        items = _item_arrays(_vote(grid, options.vote, axis=1), k)
        combined = {
            name: values.max(axis=0) if options.generation_agg == "max" else values.mean(axis=0)
            for name, values in items.items()
        }
    else:
        combined = _per_combination(cells, k, options)
    return {name: _mean_stderr(combined[name]) for name in METRIC_NAMES}


def _per_combination(
    cells: dict[tuple[int, int, int], list[float]], k: int, options: MetricOptions
) -> dict[str, np.ndarray]:
    """An incomplete grid: vote each (g, i) over the rounds it has, combine each combination
    over the generation rounds it has, keeping the reference's dtypes throughout."""

    rounds: dict[int, dict[int, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for (g, _r, i), points in sorted(cells.items()):
        rounds[i][g].append(points)
    out: dict[str, list[np.generic]] = defaultdict(list)
    for i in sorted(rounds):
        voted = np.stack(
            [
                _vote(np.array(rs, dtype=np.float32), options.vote, axis=0)
                for _, rs in sorted(rounds[i].items())
            ]
        )
        for name, values in _item_arrays(voted, k).items():
            out[name].append(values.max() if options.generation_agg == "max" else values.mean())
    return {name: np.array(values) for name, values in out.items()}


class _Rounded(Protocol):
    @property
    def generation_round(self) -> int: ...
    @property
    def grading_round(self) -> int: ...


R = TypeVar("R", bound=_Rounded)


def check_round_limit(
    kind: RoundKind, limit: int | None, present: Iterable[int], where: str
) -> None:
    """``--generation-rounds N`` / ``--grading-rounds N`` keep rounds 1..N, as the reference's
    ``--num_generation_rounds`` / ``--num_grading_rounds`` do. N must be at least 1 and at most
    the highest round present (more would silently use fewer rounds than asked)."""
    if limit is None:
        return
    rounds = sorted(set(present))
    option = f"--{kind}-rounds"
    if limit < 1:
        raise SkillmixError(f"{option}: {limit} is not a round count", hint="pass N >= 1")
    if not rounds or limit > rounds[-1]:
        found = ", ".join(map(str, rounds)) or "none"
        raise SkillmixError(
            f"{option}: {limit} {kind} rounds asked, {where} has {kind} rounds {found}",
            hint=f"pass N <= {rounds[-1]}" if rounds else "there is nothing to select",
        )


def limit_rounds(
    records: Sequence[R], generation_rounds: int | None, grading_rounds: int | None, where: str
) -> list[R]:
    """The records of generation rounds 1..G and grading rounds 1..R (None: all), checked
    against the rounds the records hold (:func:`check_round_limit`)."""
    check_round_limit("generation", generation_rounds, (r.generation_round for r in records), where)
    check_round_limit("grading", grading_rounds, (r.grading_round for r in records), where)
    return [
        r
        for r in records
        if (generation_rounds is None or r.generation_round <= generation_rounds)
        and (grading_rounds is None or r.grading_round <= grading_rounds)
    ]
