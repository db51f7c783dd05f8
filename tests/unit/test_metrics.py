from __future__ import annotations

import math
from fractions import Fraction

import pytest

from skillmix.method.metrics import aggregate, item_scores, mean_stderr, vote_answers
from skillmix.method.points import GradedAnswer, MetricOptions, names_skill, vote

SHORT = "One sentence only."  # within every limit
LONG = "One. Two. Three. Four. Five. Six."


def answer(points, *, g=1, r=1, i=0, k=2, text=SHORT, skills=None, topic="T", student="s"):
    skills = skills or tuple(f"skill{j}" for j in range(k))
    return GradedAnswer(
        student,
        "grader",
        k,
        g,
        r,
        i,
        topic,
        tuple(skills),
        text,
        None if points is None else tuple(points),
    )


def only_row(answers, **options):
    (row,) = aggregate(answers, MetricOptions(bootstrap_samples=0, **options))
    return row


def test_item_scores() -> None:
    assert item_scores([1, 1, 1, 1, 1], 2) == {
        "full_marks": 1.0,
        "all_skills": 1.0,
        "skill_fraction": 1.0,
    }
    assert item_scores([1, 1, 1, 0, 1], 2) == {
        "full_marks": 0.0,
        "all_skills": 1.0,
        "skill_fraction": 0.0,
    }
    assert item_scores([1, 0, 1, 1, 1], 2) == {
        "full_marks": 0.0,
        "all_skills": 0.0,
        "skill_fraction": 0.5,
    }
    assert item_scores([1, 1, 0, 0, 1], 2)["all_skills"] == 0.0


def test_majority_vote_rounds_half_to_even() -> None:
    assert vote([[1, 0, 1], [0, 0, 1]], "majority") == [0.0, 0.0, 1.0]  # 0.5 -> 0
    assert vote([[1, 1], [1, 0], [0, 0]], "majority") == [1.0, 0.0]
    assert vote([[1, 1], [1, 0]], "mean") == [1.0, 0.5]
    assert vote([[2.0], [1.0]], "majority") == [2.0]  # 1.5 -> 2


def test_length_point_is_computed_not_graded() -> None:
    # the grader says the length is fine, but the answer is too long for k=2 (limit one sentence)
    row = only_row([answer([1, 1, 1, 1, 1], text="Two sentences here. Yes two.")])
    assert row.full_marks.mean == 0.0
    assert row.all_skills.mean == 1.0  # o = 2 >= 2
    # and the other way round: the grader gave 0, the answer is short
    assert only_row([answer([1, 1, 1, 1, 0])]).full_marks.mean == 1.0


def test_generation_rounds_max_or_mean() -> None:
    answers = [answer([1, 1, 1, 1, 1], g=1), answer([0, 0, 1, 1, 1], g=2)]
    assert only_row(answers, generation_agg="max").full_marks.mean == 1.0
    assert only_row(answers, generation_agg="mean").full_marks.mean == 0.5
    assert only_row(answers, generation_agg="mean").skill_fraction.mean == 0.5


def test_mean_and_stderr_over_combinations() -> None:
    answers = [
        answer([1, 1, 1, 1, 1], i=0),
        answer([0, 1, 1, 1, 1], i=1),
        answer([1, 1, 1, 1, 1], i=2),
        answer([0, 0, 1, 1, 1], i=3),
    ]
    row = only_row(answers)
    assert row.n == 4
    assert row.full_marks.mean == 0.5
    assert row.full_marks.stderr == pytest.approx(math.sqrt(1 / 3) / 2)
    assert row.skill_fraction.mean == pytest.approx((1 + 0.5 + 1 + 0) / 4)


def test_reference_mode_pads_truncates_and_zeroes() -> None:
    answers = [
        answer(None, i=0),  # no points -> zeros (length point still computed)
        answer([1, 1, 1, 1, 1, 1, 1], i=1),  # too long -> truncated -> full marks
        answer([1, 1, 1], i=2),  # too short -> padded -> other points 0 except length
    ]
    ref = only_row(answers, mode="reference")
    assert ref.n == 3 and ref.unparsed == 0
    assert ref.full_marks.mean == pytest.approx(1 / 3)
    assert ref.all_skills.mean == pytest.approx(2 / 3)  # padded: [1, 1, 1, 0, length=1]
    strict = only_row(answers, mode="strict")
    assert strict.n == 0 and strict.unparsed == 3
    assert math.isnan(strict.full_marks.mean)


def test_strict_mode_uses_the_rounds_it_has() -> None:
    answers = [answer([1, 1, 1, 1, 1], r=1), answer([1, 1], r=2), answer([1, 1, 1, 1, 1], r=3)]
    row = only_row(answers)
    assert row.unparsed == 1 and row.n == 1 and row.full_marks.mean == 1.0


@pytest.mark.parametrize(
    ("text", "skill", "rule", "named"),
    [
        ("It was accidentally done", "accident (fallacy)", "substring", True),
        ("It was accidentally done", "accident (fallacy)", "word", False),
        ("An accident happened", "accident (fallacy)", "word", True),
        ("a self-serving bias shows", "self serving bias", "word", True),
        ("a self serving  bias", "self serving bias", "word", True),
        ("Red Herring!", "red herring", "word", True),
        ("metaphorical", "metaphor", "word", False),
        ("metaphorical", "metaphor", "substring", True),
        ("anything", "metaphor", "off", False),
    ],
)
def test_names_skill(text, skill, rule, named) -> None:
    assert names_skill(text, skill, rule) is named


def test_explicit_name_filter_zeroes_the_named_skill() -> None:
    answers = [answer([1, 1, 1, 1, 1], skills=("metaphor", "irony"), text="A metaphorical hive.")]
    assert only_row(answers, filter_explicit_name="off").full_marks.mean == 1.0
    assert only_row(answers, filter_explicit_name="word").full_marks.mean == 1.0
    sub = only_row(answers, filter_explicit_name="substring")
    assert sub.full_marks.mean == 0.0 and sub.skill_fraction.mean == 0.5
    assert sub.per_skill == {"irony": 1.0, "metaphor": 0.0}


def test_skill_filter_drops_combinations() -> None:
    answers = [
        answer([0, 0, 1, 1, 1], i=0, skills=("bad", "x")),
        answer([1, 1, 1, 1, 1], i=1, skills=("y", "z")),
    ]
    assert only_row(answers).n == 2
    row = only_row(answers, filter_skills=("bad",))
    assert row.n == 1 and row.full_marks.mean == 1.0


def test_rows_are_grouped_and_sorted() -> None:
    answers = [
        answer([1, 1, 1, 1, 1], student="b"),
        answer([1, 1, 1, 1, 1, 1], k=3, student="a"),
        answer([1, 1, 1, 1, 1], student="a"),
    ]
    rows = aggregate(answers, MetricOptions(bootstrap_samples=0))
    assert [(r.student, r.k) for r in rows] == [("a", 2), ("a", 3), ("b", 2)]


def test_per_topic_rates() -> None:
    answers = [
        answer([1, 1, 1, 1, 1], i=0, topic="A"),
        answer([0, 1, 1, 1, 1], i=1, topic="A"),
        answer([1, 1, 1, 1, 1], i=2, topic="B"),
    ]
    assert only_row(answers).per_topic == {"A": 0.5, "B": 1.0}


def test_mean_stderr_edge_cases() -> None:
    assert math.isnan(mean_stderr([])[0])
    mean, se = mean_stderr([1.0])
    assert mean == 1.0 and math.isnan(se)


@pytest.mark.parametrize(("hits", "n"), [(0, 30), (5, 5), (1, 1)])
def test_intervals_never_collapse_at_0_or_1(hits: int, n: int) -> None:
    """0/30 and 5/5 get an interval of honest width that contains the mean (the percentile
    bootstrap gave [0, 0] and [1, 1])."""
    answers = [
        answer([1, 1, 1, 1, 1] if i < hits else [0, 0, 0, 0, 1], i=i, text=SHORT) for i in range(n)
    ]
    row = only_row(answers)
    for name in ("full_marks", "all_skills", "skill_fraction"):
        value = row.metric(name)
        assert value.ci95 is not None
        low, high = value.ci95
        assert low <= value.mean <= high
        assert high - low > 0.1, (name, value)
        assert low >= 0.0 and high <= 1.0
    if (hits, n) == (0, 30):
        assert row.full_marks.ci95 == pytest.approx((0.0, 0.1135), abs=1e-4)
    if (hits, n) == (5, 5):
        assert row.full_marks.ci95 == pytest.approx((0.5655, 1.0), abs=1e-4)


def test_exact_mean_is_a_fraction_of_combinations() -> None:
    answers = [answer([1, 1, 1, 1, 1] if i < 42 else [0, 1, 1, 1, 1], i=i) for i in range(90)]
    row = only_row(answers)
    assert row.full_marks.exact == Fraction(42, 90)
    assert row.skill_fraction.exact == Fraction(42 + 48 * Fraction(1, 2), 90)
    assert row.full_marks.as_dict()["exact"] == "7/15"


def test_per_skill_uses_the_headline_unit_best_of_g() -> None:
    """A skill shown in one of two generation rounds counts 1 for that combination (best of
    G), as Full Marks does, not 1/2; n is per combination."""
    answers = [
        answer([1, 0, 1, 1, 1], g=1, skills=("a", "b")),
        answer([0, 0, 1, 1, 1], g=2, skills=("a", "b")),
    ]
    row = only_row(answers)
    assert row.per_skill == {"a": 1.0, "b": 0.0}
    assert only_row(answers, generation_agg="mean").per_skill == {"a": 0.5, "b": 0.0}
    assert row.combinations.skill_points == [[1.0, 0.0]]


def test_reference_options() -> None:
    ref = MetricOptions.reference()
    assert (ref.mode, ref.vote, ref.generation_agg, ref.filter_explicit_name) == (
        "reference",
        "majority",
        "max",
        "off",
    )
    assert MetricOptions().filter_explicit_name == "word"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "options",
    [
        MetricOptions(),
        MetricOptions(vote="mean", generation_agg="mean"),
        MetricOptions.reference(),
        MetricOptions(filter_skills=("s1",)),
    ],
)
def test_vote_answers_is_the_voting_the_vectorised_metrics_count(
    seed: int, options: MetricOptions
) -> None:
    """The report's per-answer votes (vote_answers) and the metrics' vectorised path agree:
    combining vote_answers' scores over generation rounds gives the rows' means."""
    import random

    rng = random.Random(seed)
    k = rng.choice([2, 3])
    answers = []
    for i in range(5):
        skills = tuple(rng.sample(["s1", "s2", "s3", "s4", "s5"], k))
        text = rng.choice(
            [SHORT, "One. Two. Three. Four. Five. Six. Seven. Eight.", "uses s2 here."]
        )
        for g in (1, 2):
            for r in (1, 2, 3):
                points = (
                    None if rng.random() < 0.1 else [rng.choice([0.0, 1.0]) for _ in range(k + 3)]
                )
                if points is not None and rng.random() < 0.1:
                    points = points[:-1]  # unreadable length
                answers.append(answer(points, g=g, r=r, i=i, k=k, text=text, skills=skills))
    (row,) = aggregate(answers, options)
    per_combination: dict[int, list[float]] = {}
    for v in vote_answers(answers, options):
        if v.scores is not None:
            per_combination.setdefault(v.key[4], []).append(v.scores["full_marks"])
    combine = max if options.generation_agg == "max" else (lambda xs: sum(xs) / len(xs))
    expected = [combine(xs) for _, xs in sorted(per_combination.items())]
    assert row.n == len(expected)
    assert expected, "the fixture must leave combinations to count"
    assert row.full_marks.mean == pytest.approx(sum(expected) / len(expected), abs=1e-6)
