"""What a verdict's points are (SPEC 6): the metric options, one graded answer, and its points
after padding, the computed length point, the explicit-name filter and the vote over grading
rounds. Shared by the metrics (metrics.py) and the reference's own arithmetic
(reference_numbers.py), which both build on it, so neither imports the other's internals."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal

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


def names_skill(answer: str, skill: str, rule: ExplicitNameFilter) -> bool:
    """Does the answer name the skill? The name is cut at its first '(' and lower-cased.

    ``substring`` is the reference rule (so "accident" matches "accidentally"); ``word`` needs
    whole words and accepts spaces or hyphens between them.
    """
    return names_skill_lowered(answer.lower(), skill, rule)


def names_skill_lowered(text: str, skill: str, rule: ExplicitNameFilter) -> bool:
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
