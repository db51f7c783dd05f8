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
from functools import lru_cache
from typing import Literal, cast

from skillmix.method.text import length_point

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
    mean: float
    stderr: float
    ci95: tuple[float, float] | None

    def as_dict(self) -> dict[str, object]:
        return {
            "mean": _json_float(self.mean),
            "stderr": _json_float(self.stderr),
            "ci95": [_json_float(x) for x in self.ci95] if self.ci95 else None,
        }

    def reference_str(self) -> str:
        """The reference's printed form, ``mean ± stderr``."""
        return f"{self.mean:.2f} ± {self.stderr:.3f}"


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
    per_combination: list[dict[str, object]] = field(default_factory=list)

    def metric(self, name: str) -> MetricValue:
        return cast(MetricValue, getattr(self, name))

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
        return out


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else x


def names_skill(answer: str, skill: str, rule: ExplicitNameFilter) -> bool:
    """Does the answer name the skill? The name is cut at its first '(' and lower-cased.

    ``substring`` is the reference rule (so "accident" matches "accidentally"); ``word`` needs
    whole words and accepts spaces or hyphens between them.
    """
    if rule == "off":
        return False
    name, pattern = _name_pattern(skill)
    if not name:
        return False
    text = answer.lower()
    if rule == "substring":
        return name in text
    return pattern.search(text) is not None


@lru_cache(maxsize=4096)
def _name_pattern(skill: str) -> tuple[str, re.Pattern[str]]:
    """The cut, lower-cased name and its whole-word pattern (compiled once per skill)."""
    name = skill.split("(")[0].strip().lower()
    words = [re.escape(w) for w in re.split(r"[\s-]+", name) if w]
    return name, re.compile(r"(?<!\w)" + r"[\s-]+".join(words) + r"(?!\w)")


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


def bootstrap_ci95(values: Sequence[float], samples: int, seed: int) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; deterministic for a given seed."""
    if len(values) < 2 or samples <= 0:
        return None
    import numpy as np

    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    # resample in chunks so memory stays small for large n (the stream, hence the result, is
    # the same as drawing all indices at once)
    chunk = max(1, min(samples, 2_000_000 // len(data)))
    means = np.empty(samples)
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        idx = rng.integers(0, len(data), size=(size, len(data)))
        means[start : start + size] = data[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _metric_value(values: Sequence[float], options: MetricOptions) -> MetricValue:
    mean, stderr = mean_stderr(values)
    return MetricValue(
        mean, stderr, bootstrap_ci95(values, options.bootstrap_samples, options.bootstrap_seed)
    )


def _aggregate_group(answers: list[GradedAnswer], options: MetricOptions) -> MetricRow:
    first = answers[0]
    k = first.k
    excluded = set(options.filter_skills)
    by_gi: dict[tuple[int, int], list[list[float]]] = defaultdict(list)
    meta: dict[int, GradedAnswer] = {}
    unparsed = 0
    for a in answers:
        if excluded and excluded.intersection(a.skills):
            continue
        meta.setdefault(a.index, a)
        points = prepare_points(a, options)
        if points is None:
            unparsed += 1
            continue
        by_gi[(a.generation_round, a.index)].append(points)
    per_index: dict[int, list[dict[str, float]]] = defaultdict(list)
    skill_hits: dict[str, list[float]] = defaultdict(list)
    for (_g, i), rounds in sorted(by_gi.items()):
        voted = vote(rounds, options.vote)
        per_index[i].append(item_scores(voted, k))
        for j, skill in enumerate(meta[i].skills[:k]):
            skill_hits[skill].append(voted[j])
    combine = max if options.generation_agg == "max" else (lambda xs: sum(xs) / len(xs))
    per_combination: list[dict[str, object]] = []
    series: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    topic_hits: dict[str, list[float]] = defaultdict(list)
    for i in sorted(per_index):
        scores = {name: float(combine([s[name] for s in per_index[i]])) for name in METRIC_NAMES}
        for name in METRIC_NAMES:
            series[name].append(scores[name])
        topic_hits[meta[i].topic].append(scores["full_marks"])
        per_combination.append(
            {"index": i, "topic": meta[i].topic, "skills": list(meta[i].skills), **scores}
        )
    values = {name: _metric_value(series[name], options) for name in METRIC_NAMES}
    if options.mode == "reference":  # print what the reference prints: its dtypes, its steps
        from skillmix.method.reference_numbers import reference_mean_stderr

        for name, (mean, stderr) in reference_mean_stderr(answers, options).items():
            values[name] = replace(values[name], mean=mean, stderr=stderr)
    return MetricRow(
        student=first.student,
        grader=first.grader,
        k=k,
        n=len(per_index),
        full_marks=values["full_marks"],
        all_skills=values["all_skills"],
        skill_fraction=values["skill_fraction"],
        unparsed=unparsed,
        per_skill={s: sum(v) / len(v) for s, v in sorted(skill_hits.items())},
        per_topic={t: sum(v) / len(v) for t, v in sorted(topic_hits.items())},
        per_combination=per_combination,
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
