"""SKILL-MIX metrics (SPEC 6): Ratio of Full Marks, Ratio of All Skills, Skill Fraction.

Input is one :class:`GradedAnswer` per (generation round, grading round, combination); output
is one :class:`MetricRow` per (student, grader, k). ``reference`` mode treats unreadable point
lists exactly as the reference does (zeros, truncation, padding); ``strict`` mode leaves them
out and counts them instead.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, cast

import numpy as np

from skillmix.method.points import (
    METRIC_NAMES,
    ExplicitNameFilter,
    GenerationAgg,
    GradedAnswer,
    MetricOptions,
    names_skill_lowered,
    prepare_points,
    vote,
)
from skillmix.method.reference_numbers import reference_mean_stderr
from skillmix.method.stats import exact_sum, wilson_interval
from skillmix.method.text import length_point

if TYPE_CHECKING:
    import numpy.typing as npt


@dataclass(frozen=True)
class MetricValue:
    """One metric of one row. ``ci95``: the Wilson score interval (method/stats.py says why);
    ``exact``: the mean as an exact fraction, which ranks compare (42/90 ties 42/90)."""

    mean: float
    stderr: float
    ci95: tuple[float, float] | None
    exact: Fraction | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "mean": _json_float(self.mean),
            "stderr": _json_float(self.stderr),
            "ci95": [_json_float(x) for x in self.ci95] if self.ci95 else None,
            "exact": f"{self.exact.numerator}/{self.exact.denominator}"
            if self.exact is not None
            else None,
        }

    def reference_str(self) -> str:
        """The reference's printed form, ``mean ± stderr``."""
        return f"{self.mean:.2f} ± {self.stderr:.3f}"


@dataclass
class Combinations:
    """Per-combination values of one row (generation rounds combined, the headline unit):
    ``scores[metric][c]`` and ``skill_points[c]`` (one combined point per skill) for the
    combination ``index[c]``; paired tests and per-skill, per-topic and per-category rates
    are built from these."""

    index: list[int] = field(default_factory=list)
    topic: list[str] = field(default_factory=list)
    skills: list[tuple[str, ...]] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)
    skill_points: list[list[float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, **{name: self.scores[name] for name in METRIC_NAMES}}


@dataclass
class MetricRow:
    student: str
    grader: str
    k: int
    n: int
    full_marks: MetricValue
    all_skills: MetricValue
    skill_fraction: MetricValue
    unparsed: int = 0
    per_skill: dict[str, float] = field(default_factory=dict)
    per_topic: dict[str, float] = field(default_factory=dict)
    combinations: Combinations = field(default_factory=Combinations)

    def metric(self, name: str) -> MetricValue:
        return cast(MetricValue, getattr(self, name))

    @property
    def per_combination(self) -> list[dict[str, object]]:
        """The combinations as one dict each (index, topic, skills, the three scores)."""
        c = self.combinations
        return [
            {
                "index": i,
                "topic": c.topic[j],
                "skills": list(c.skills[j]),
                **{name: c.scores[name][j] for name in METRIC_NAMES},
            }
            for j, i in enumerate(c.index)
        ]

    def as_dict(self, *, details: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            "student": self.student,
            "grader": self.grader,
            "k": self.k,
            "n": self.n,
            "unparsed": self.unparsed,
        }
        for name in METRIC_NAMES:
            out[name] = self.metric(name).as_dict()
        if details:
            out["per_skill"] = {k: _json_float(v) for k, v in self.per_skill.items()}
            out["per_topic"] = {k: _json_float(v) for k, v in self.per_topic.items()}
            out["combinations"] = self.combinations.as_dict()
        return out


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else x


def item_scores(points: Sequence[float], k: int) -> dict[str, float]:
    """The three metric items of one (generation round, combination)."""
    s = sum(points[:k])
    o = sum(points[k:])
    return {
        "full_marks": 1.0 if s + o == k + 3 else 0.0,
        "all_skills": 1.0 if (s == k and o >= 2) else 0.0,
        "skill_fraction": s / k if o == 3 else 0.0,
    }


AnswerKey = tuple[str, str, int, int, int]  # student, grader, k, generation round, combination


@dataclass(frozen=True)
class VotedAnswer:
    """One answer's verdicts combined over the grading rounds (SPEC 6), as the metrics count
    it: ``rounds`` are the positions of its verdicts in the input; ``voted`` and ``scores`` are
    None when no verdict is usable (strict mode leaves unreadable ones out)."""

    key: AnswerKey
    rounds: dict[int, int]  # grading round -> position in the input
    voted: list[float] | None
    scores: dict[str, float] | None


def vote_answers(answers: Sequence[GradedAnswer], options: MetricOptions) -> list[VotedAnswer]:
    """Group verdicts per answer, prepare each round's points and vote them: the per-answer
    form of what ``aggregate`` computes vectorised (a test keeps the two equal). Combinations
    with a skill in ``options.filter_skills`` are left out, as in the metrics."""
    excluded = set(options.filter_skills)
    rounds: dict[AnswerKey, dict[int, int]] = {}
    for position, a in enumerate(answers):
        if excluded and excluded.intersection(a.skills):
            continue
        key = (a.student, a.grader, a.k, a.generation_round, a.index)
        rounds.setdefault(key, {})[a.grading_round] = position
    out = []
    for key in sorted(rounds):
        prepared = [
            p
            for _, position in sorted(rounds[key].items())
            if (p := prepare_points(answers[position], options)) is not None
        ]
        voted = vote(prepared, options.vote) if prepared else None
        scores = item_scores(voted, key[2]) if voted is not None else None
        out.append(VotedAnswer(key, rounds[key], voted, scores))
    return out


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var) / math.sqrt(n)


def metric_value(values: npt.NDArray[np.float64]) -> MetricValue:
    """Mean ± stderr (the reference's numbers), the Wilson interval and the exact mean of
    per-combination values."""
    mean, stderr = mean_stderr(values.tolist())
    n = int(values.size)
    exact = exact_sum(values) / n if n else None
    return MetricValue(mean, stderr, wilson_interval(float(values.sum()), n), exact)


def _unit_marks(
    unit_answers: Sequence[GradedAnswer], k: int, rule: ExplicitNameFilter
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per answer (unit): the computed length point, and 0/1 keep-masks of its k skill points
    (0 where the explicit-name filter zeroes the point). Computed once per answer, not once per
    grading round."""

    length = np.empty(len(unit_answers))
    keep = np.ones((len(unit_answers), k))
    for u, a in enumerate(unit_answers):
        length[u] = length_point(a.answer, k)
        if rule != "off":
            text = a.answer.lower()
            for j, skill in enumerate(a.skills[:k]):
                if names_skill_lowered(text, skill, rule):
                    keep[u, j] = 0.0
    return length, keep


def _combine(
    values: npt.NDArray[np.float64],
    groups: npt.NDArray[np.intp],
    size: int,
    how: GenerationAgg,
) -> npt.NDArray[np.float64]:
    """Combine generation rounds per combination (rows of ``values`` grouped by ``groups``):
    best of G (max) or the mean, with the rounds in generation-round order."""

    out = np.full((size, *values.shape[1:]), -np.inf if how == "max" else 0.0)
    if how == "max":
        np.maximum.at(out, groups, values)
        return out
    np.add.at(out, groups, values)
    counts = np.bincount(groups, minlength=size).astype(float)
    mean: npt.NDArray[np.float64] = out / counts.reshape((size,) + (1,) * (values.ndim - 1))
    return mean


@dataclass
class _Gathered:
    """The scored answers of one (student, grader, k) as a table: one row of points per
    grading round, ``owner`` naming the row's unit (generation round, combination)."""

    points: list[Sequence[float]] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    unit_of: dict[tuple[int, int], int] = field(default_factory=dict)
    unit_answers: list[GradedAnswer] = field(default_factory=list)
    meta: dict[int, GradedAnswer] = field(default_factory=dict)
    unparsed: int = 0


def _gather(answers: list[GradedAnswer], options: MetricOptions, size: int) -> _Gathered:
    """Rows of points per grading round; filtered skills left out, unparsed grades counted
    (strict mode) or padded with zeros."""
    excluded = set(options.filter_skills)
    strict = options.mode == "strict"
    g = _Gathered()
    for a in answers:
        if excluded and excluded.intersection(a.skills):
            continue
        if a.index not in g.meta:
            g.meta[a.index] = a
        pts: Sequence[float] | None = a.points
        if pts is None or len(pts) != size:
            if strict:
                g.unparsed += 1
                continue
            pts = (list(pts or []) + [0.0] * size)[:size]
        key = (a.generation_round, a.index)
        u = g.unit_of.get(key)
        if u is None:
            u = g.unit_of[key] = len(g.unit_answers)
            g.unit_answers.append(a)
        g.points.append(pts)
        g.owner.append(u)
    return g


def _voted_points(g: _Gathered, k: int, size: int, options: MetricOptions) -> np.ndarray:
    """Each unit's points voted over its grading rounds: per-column sums in record order (as
    Python's sum over the rounds), then the mean (rounded half to even for majority)."""
    units = len(g.unit_answers)
    table = np.asarray(g.points, dtype=float) if g.points else np.zeros((0, size))
    who = np.asarray(g.owner, dtype=np.intp)
    length, keep = _unit_marks(g.unit_answers, k, options.filter_explicit_name)
    table[:, -1] = length[who]
    table[:, :k] *= keep[who]
    counts = np.bincount(who, minlength=units).astype(float)
    sums = np.stack(
        [np.bincount(who, weights=table[:, j], minlength=units) for j in range(size)], axis=1
    )
    voted = sums / counts[:, None] if units else np.zeros((0, size))
    if options.vote == "majority":
        voted = np.round(voted)  # round half to even, as Python's round
    return voted


def _unit_metrics(voted: np.ndarray, k: int, size: int) -> np.ndarray:
    """Full Marks, All Skills and Skill Fraction of each unit (columns in METRIC_NAMES order),
    summing the points left to right as ``item_scores`` does."""
    units = voted.shape[0]
    s = np.zeros(units)
    for j in range(k):
        s = s + voted[:, j]
    o = np.zeros(units)
    for j in range(k, size):
        o = o + voted[:, j]
    return np.stack(
        [
            (s + o == k + 3).astype(float),
            ((s == k) & (o >= 2)).astype(float),
            np.where(o == 3, s / k, 0.0),
        ],
        axis=1,
    )


def _aggregate_group(answers: list[GradedAnswer], options: MetricOptions) -> MetricRow:
    """One (student, grader, k): vote the grading rounds of each answer, score it, combine the
    generation rounds per combination and summarise. Vectorised with numpy; the arithmetic is
    done in the order the per-answer functions (``vote``, ``item_scores``) use, so the numbers
    are the same floats."""
    first = answers[0]
    k = first.k
    size = k + 3
    g = _gather(answers, options, size)
    units = len(g.unit_answers)
    voted = _voted_points(g, k, size, options)
    unit_scores = _unit_metrics(voted, k, size)
    # combinations in index order; generation rounds in round order within each
    keys = np.asarray(list(g.unit_of), dtype=np.int64).reshape(-1, 2)
    order = np.lexsort((keys[:, 0], keys[:, 1])) if units else np.zeros(0, dtype=np.intp)
    combos, groups = np.unique(keys[order, 1], return_inverse=True)
    combined = _combine(unit_scores[order], groups, combos.size, options.generation_agg)
    skill_points = _combine(voted[order, :k], groups, combos.size, options.generation_agg)
    series = {name: combined[:, m] for m, name in enumerate(METRIC_NAMES)}
    values = {name: metric_value(series[name]) for name in METRIC_NAMES}
    indices = [int(i) for i in combos]
    topics = [g.meta[i].topic for i in indices]
    skills = [tuple(g.meta[i].skills) for i in indices]
    skill_hits: dict[str, list[float]] = defaultdict(list)
    topic_hits: dict[str, list[float]] = defaultdict(list)
    points_list = skill_points.tolist()
    full = series["full_marks"].tolist()
    for c, names in enumerate(skills):
        for j, skill in enumerate(names[:k]):
            skill_hits[skill].append(points_list[c][j])
        topic_hits[topics[c]].append(full[c])
    if options.mode == "reference":  # print what the reference prints: its dtypes, its steps
        for name, (mean, stderr) in reference_mean_stderr(answers, options).items():
            values[name] = replace(values[name], mean=mean, stderr=stderr)
    return MetricRow(
        student=first.student,
        grader=first.grader,
        k=k,
        n=len(indices),
        full_marks=values["full_marks"],
        all_skills=values["all_skills"],
        skill_fraction=values["skill_fraction"],
        unparsed=g.unparsed,
        per_skill={s: sum(v) / len(v) for s, v in sorted(skill_hits.items())},
        per_topic={t: sum(v) / len(v) for t, v in sorted(topic_hits.items())},
        combinations=Combinations(
            index=indices,
            topic=topics,
            skills=skills,
            scores={name: series[name].tolist() for name in METRIC_NAMES},
            skill_points=points_list,
        ),
    )


def aggregate(
    answers: Iterable[GradedAnswer], options: MetricOptions | None = None
) -> list[MetricRow]:
    """Metrics per (student, grader, k), rows sorted by student, grader, k."""
    options = options or MetricOptions()
    groups: dict[tuple[str, str, int], list[GradedAnswer]] = defaultdict(list)
    for a in answers:
        groups[(a.student, a.grader, a.k)].append(a)
    return [_aggregate_group(groups[key], options) for key in sorted(groups)]
