"""Reference mode's arithmetic (method/reference_numbers.py) on hand-made verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skillmix.errors import SkillmixError
from skillmix.method.metrics import aggregate
from skillmix.method.points import GradedAnswer, MetricOptions
from skillmix.method.reference_numbers import (
    check_round_limit,
    limit_rounds,
    reference_mean_stderr,
    reference_print,
    summary_dtype,
)

SKILLS = ("metaphor", "red herring", "irony", "modus ponens")


def verdict(g: int, r: int, i: int, points: list[float]) -> GradedAnswer:
    return GradedAnswer("s", "judge", 4, g, r, i, "Chess", SKILLS, "One sentence.", tuple(points))


def quarter_grid(rounds: int = 2) -> list[GradedAnswer]:
    """Ten combinations, Skill Fraction 0.25 for nine of them and 0 for the last: mean 0.225."""
    return [
        verdict(1, r, i, [1.0 if i < 9 else 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
        for r in range(1, rounds + 1)
        for i in range(10)
    ]


def test_skill_fraction_is_float32_only_in_reference_mode() -> None:
    assert summary_dtype("reference", "skill_fraction") == "float32"
    assert summary_dtype("reference", "full_marks") == "float64"
    assert summary_dtype("reference", "all_skills") == "float64"
    assert summary_dtype("strict", "skill_fraction") == "float64"


def test_a_half_cent_mean_prints_as_the_reference_prints() -> None:
    numbers = reference_mean_stderr(quarter_grid(), MetricOptions.reference(bootstrap_samples=0))
    mean, stderr = numbers["skill_fraction"]
    assert mean == float(np.float32(0.225)) and reference_print(mean, stderr).startswith("0.22 ")
    values = np.array([0.25] * 9 + [0.0], dtype=np.float32)
    assert stderr == float(values.std(ddof=1) / np.sqrt(10))
    assert numbers["full_marks"] == (0.0, 0.0)
    # metrics.aggregate returns these numbers in reference mode, float64 ones in strict mode
    (row,) = aggregate(quarter_grid(), MetricOptions.reference(bootstrap_samples=0))
    assert (row.skill_fraction.mean, row.skill_fraction.stderr) == (mean, stderr)
    (strict,) = aggregate(
        quarter_grid(), MetricOptions(bootstrap_samples=0, filter_explicit_name="off")
    )
    assert f"{strict.skill_fraction.mean:.2f}" == "0.23"


def test_an_incomplete_grid_keeps_the_reference_dtypes() -> None:
    answers = quarter_grid(rounds=3)[:-1]  # combination 9 lacks its third grading round
    mean, _ = reference_mean_stderr(answers, MetricOptions.reference(bootstrap_samples=0))[
        "skill_fraction"
    ]
    assert mean == float(np.float32(0.225))
    full = reference_mean_stderr(answers[:10], MetricOptions.reference(bootstrap_samples=0))
    assert full["full_marks"] == (0.0, 0.0)


def test_one_combination_prints_nan_as_the_reference() -> None:
    numbers = reference_mean_stderr(quarter_grid()[:1], MetricOptions.reference())
    mean, stderr = numbers["skill_fraction"]
    assert mean == 0.25 and math.isnan(stderr)
    assert reference_print(mean, None) == "0.25 ± nan"


def test_limit_rounds_keeps_the_first_rounds() -> None:
    answers = [verdict(g, r, 0, [1.0] * 7) for g in (1, 2, 3) for r in (1, 2)]
    kept = limit_rounds(answers, 2, 1, "run")
    assert {(a.generation_round, a.grading_round) for a in kept} == {(1, 1), (2, 1)}
    assert limit_rounds(answers, None, None, "run") == answers
    with pytest.raises(SkillmixError, match="--grading-rounds: 3 grading rounds asked, run has"):
        limit_rounds(answers, None, 3, "run")
    with pytest.raises(SkillmixError, match="--generation-rounds: 0 is not a round count"):
        check_round_limit("generation", 0, [1], "run")
