"""SKILL-MIX metrics (SPEC 6): Ratio of Full Marks, Ratio of All Skills, Skill Fraction.

Input is one :class:`GradedAnswer` per (generation round, grading round, combination); output
is one :class:`MetricRow` per (student, grader, k). ``reference`` mode treats unreadable point
lists exactly as the reference does (zeros, truncation, padding); ``strict`` mode leaves them
out and counts them instead.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, cast

from skillmix.method.stats import exact_sum, wilson_interval
from skillmix.method.text import length_point

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MetricMode = Literal["reference", "strict"]
GenerationAgg = Literal["max", "mean"]
Vote = Literal["majority", "mean"]
ExplicitNameFilter = Literal["off", "substring", "word"]
METRIC_NAMES = ("full_marks", "all_skills", "skill_fraction")
METRIC_TITLES = {
    "full_marks": "Ratio of Full Marks",
    "all_skills": "Ratio of All Skills",
    "skill_fraction": "Skill Fraction",
}

METRIC_DEFINITIONS = {
    "full_marks": "Ratio of Full Marks: the share of combinations whose answer earns all k + 3 "
    "rubric points (each of the k skills, on topic, makes sense, within the sentence limit).",
    "all_skills": "Ratio of All Skills: the share of combinations whose answer shows all k "
    "skills and earns at least 2 of the 3 other points.",
    "skill_fraction": "Skill Fraction: the share of the k skills shown, counted only when all 3 "
    "other points are earned (else 0), averaged over combinations. So an answer can show "
    "every skill (All Skills 1) and still score Skill Fraction 0 when it misses one of the "
    "other points, e.g. goes over the sentence limit: the two are not contradictory.",
    "voted": "Voted: a rubric point after combining the grading rounds (majority: the mean of "
    "the rounds' points rounded half to even; mean: the mean itself), with the length point "
    "computed from the sentence count and, with the explicit-name filter, a skill's point set "
    "to 0 when the answer names the skill.",
    "combination": "Per combination the generation rounds are combined (best of G by default, "
    "or their mean) before averaging over combinations; n counts combinations.",
}


def default_name_filter(mode: MetricMode) -> ExplicitNameFilter:
    """The reference leaves its explicit-name filter off (an opt-in flag); ours is ``word``."""
    return "off" if mode == "reference" else "word"


@dataclass(frozen=True)
class MetricOptions:
    """How to turn points into metrics. Defaults are ours; the reference aggregator's defaults
    are ``MetricOptions.reference()`` (its explicit-name filter is an opt-in flag, so: off)."""

    mode: MetricMode = "strict"
    generation_agg: GenerationAgg = "max"
    vote: Vote = "majority"
    filter_explicit_name: ExplicitNameFilter = "word"
    filter_skills: tuple[str, ...] = ()
    bootstrap_samples: int = 2000
    bootstrap_seed: int = 0

    @classmethod
    def reference(cls, **overrides: object) -> MetricOptions:
        base: dict[str, object] = {"mode": "reference", "filter_explicit_name": "off"}
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "filter_skills": list(self.filter_skills)}


@dataclass(frozen=True)
class GradedAnswer:
    """One grader verdict on one student answer. ``points`` is None when no usable reply exists."""

    student: str
    grader: str
    k: int
    generation_round: int
    grading_round: int
    index: int
    topic: str
    skills: tuple[str, ...]
    answer: str
    points: tuple[float, ...] | None


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


def names_skill(answer: str, skill: str, rule: ExplicitNameFilter) -> bool:
    """Does the answer name the skill? The name is cut at its first '(' and lower-cased.

    ``substring`` is the reference rule (so "accident" matches "accidentally"); ``word`` needs
    whole words and accepts spaces or hyphens between them.
    """
    return _names_lowered(answer.lower(), skill, rule)


def _names_lowered(text: str, skill: str, rule: ExplicitNameFilter) -> bool:
    """``names_skill`` on an already lower-cased answer (lower-case once per answer)."""
    if rule == "off":
        return False
    name, first, pattern = _name_pattern(skill)
    if not name:
        return False
    if rule == "substring":
        return name in text
    # a whole-word match contains the first word: the cheap test rules most skills out
    return first in text and pattern.search(text) is not None


@lru_cache(maxsize=4096)
def _name_pattern(skill: str) -> tuple[str, str, re.Pattern[str]]:
    """The cut, lower-cased name, its first word and its whole-word pattern (compiled once)."""
    name = skill.split("(")[0].strip().lower()
    raw = [w for w in re.split(r"[\s-]+", name) if w]
    words = [re.escape(w) for w in raw]
    pattern = re.compile(r"(?<!\w)" + r"[\s-]+".join(words) + r"(?!\w)")
    return name, raw[0] if raw else "", pattern


def prepare_points(answer: GradedAnswer, options: MetricOptions) -> list[float] | None:
    """Normalise one verdict's points: length, computed length point, explicit-name filter.
    Returns None when strict mode has to leave the verdict out."""
    size = answer.k + 3
    if answer.points is None or len(answer.points) != size:
        if options.mode == "strict":
            return None
        raw = list(answer.points or [])
        points = (raw + [0.0] * size)[:size]
    else:
        points = list(answer.points)
    points[-1] = float(length_point(answer.answer, answer.k))
    for j, skill in enumerate(answer.skills[: answer.k]):
        if names_skill(answer.answer, skill, options.filter_explicit_name):
            points[j] = 0.0
    return points


def vote(rounds: Sequence[Sequence[float]], how: Vote) -> list[float]:
    """Combine grading rounds per rubric item: round-half-to-even of the mean, or the mean."""
    means = [sum(col) / len(col) for col in zip(*rounds, strict=True)]
    if how == "majority":
        return [float(round(m)) for m in means]
    return means


def item_scores(points: Sequence[float], k: int) -> dict[str, float]:
    """The three metric items of one (generation round, combination)."""
    s = sum(points[:k])
    o = sum(points[k:])
    return {
        "full_marks": 1.0 if s + o == k + 3 else 0.0,
        "all_skills": 1.0 if (s == k and o >= 2) else 0.0,
        "skill_fraction": s / k if o == 3 else 0.0,
    }


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
    import numpy as np

    length = np.empty(len(unit_answers))
    keep = np.ones((len(unit_answers), k))
    for u, a in enumerate(unit_answers):
        length[u] = length_point(a.answer, k)
        if rule != "off":
            text = a.answer.lower()
            for j, skill in enumerate(a.skills[:k]):
                if _names_lowered(text, skill, rule):
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
    import numpy as np

    out = np.full((size, *values.shape[1:]), -np.inf if how == "max" else 0.0)
    if how == "max":
        np.maximum.at(out, groups, values)
        return out
    np.add.at(out, groups, values)
    counts = np.bincount(groups, minlength=size).astype(float)
    mean: npt.NDArray[np.float64] = out / counts.reshape((size,) + (1,) * (values.ndim - 1))
    return mean


def _aggregate_group(answers: list[GradedAnswer], options: MetricOptions) -> MetricRow:
    """One (student, grader, k): vote the grading rounds of each answer, score it, combine the
    generation rounds per combination and summarise. Vectorised with numpy; the arithmetic is
    done in the order the per-answer functions (``vote``, ``item_scores``) use, so the numbers
    are the same floats."""
    import numpy as np

    first = answers[0]
    k = first.k
    size = k + 3
    excluded = set(options.filter_skills)
    strict = options.mode == "strict"
    unit_of: dict[tuple[int, int], int] = {}
    unit_answers: list[GradedAnswer] = []
    meta: dict[int, GradedAnswer] = {}
    points: list[Sequence[float]] = []
    owner: list[int] = []
    unparsed = 0
    for a in answers:
        if excluded and excluded.intersection(a.skills):
            continue
        if a.index not in meta:
            meta[a.index] = a
        pts: Sequence[float] | None = a.points
        if pts is None or len(pts) != size:
            if strict:
                unparsed += 1
                continue
            pts = (list(pts or []) + [0.0] * size)[:size]
        key = (a.generation_round, a.index)
        u = unit_of.get(key)
        if u is None:
            u = unit_of[key] = len(unit_answers)
            unit_answers.append(a)
        points.append(pts)
        owner.append(u)
    units = len(unit_answers)
    table = np.asarray(points, dtype=float) if points else np.zeros((0, size))
    who = np.asarray(owner, dtype=np.intp)
    length, keep = _unit_marks(unit_answers, k, options.filter_explicit_name)
    table[:, -1] = length[who]
    table[:, :k] *= keep[who]
    # vote: per-column sums in record order (as Python's sum over the rounds), then the mean
    counts = np.bincount(who, minlength=units).astype(float)
    sums = np.stack(
        [np.bincount(who, weights=table[:, j], minlength=units) for j in range(size)], axis=1
    )
    voted = sums / counts[:, None] if units else np.zeros((0, size))
    if options.vote == "majority":
        voted = np.round(voted)  # round half to even, as Python's round
    s = np.zeros(units)
    for j in range(k):
        s = s + voted[:, j]
    o = np.zeros(units)
    for j in range(k, size):
        o = o + voted[:, j]
    unit_scores = np.stack(
        [
            (s + o == k + 3).astype(float),
            ((s == k) & (o >= 2)).astype(float),
            np.where(o == 3, s / k, 0.0),
        ],
        axis=1,
    )
    # combinations in index order; generation rounds in round order within each
    keys = np.asarray(list(unit_of), dtype=np.int64).reshape(-1, 2)
    order = np.lexsort((keys[:, 0], keys[:, 1])) if units else np.zeros(0, dtype=np.intp)
    index_of_unit = keys[order, 1]
    combos, groups = np.unique(index_of_unit, return_inverse=True)
    combined = _combine(unit_scores[order], groups, combos.size, options.generation_agg)
    skill_points = _combine(voted[order, :k], groups, combos.size, options.generation_agg)
    series = {name: combined[:, m] for m, name in enumerate(METRIC_NAMES)}
    values = {name: metric_value(series[name]) for name in METRIC_NAMES}
    indices = [int(i) for i in combos]
    topics = [meta[i].topic for i in indices]
    skills = [tuple(meta[i].skills) for i in indices]
    skill_hits: dict[str, list[float]] = defaultdict(list)
    topic_hits: dict[str, list[float]] = defaultdict(list)
    points_list = skill_points.tolist()
    full = series["full_marks"].tolist()
    for c, names in enumerate(skills):
        for j, skill in enumerate(names[:k]):
            skill_hits[skill].append(points_list[c][j])
        topic_hits[topics[c]].append(full[c])
    if options.mode == "reference":  # print what the reference prints: its dtypes, its steps
        from skillmix.method.reference_numbers import reference_mean_stderr

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
        unparsed=unparsed,
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
