"""Reasoning-task metrics: pass@k against hand-computed binomials and SkyThought's own numbers,
SkyThought's k list and keys, maj@k ties, deterministic bootstrap intervals, paired comparisons
and the temperature-0 rule."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skillmix.method.reasoning_metrics import (
    TEMPERATURE_ZERO_WARNING,
    Response,
    bootstrap_mean_interval,
    effective_samples,
    majority_vote,
    paired_accuracy,
    pass_at_k,
    pass_at_k_ks,
    reasoning_metrics,
    skythought_pass_at_k,
)


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


# --- pass@k ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "expected"),
    # n=5, c=2: 1 - C(3, k) / C(5, k) = 1 - 3/5, 1 - 3/10, 1 - 1/10, 1 - 0/5, 1 - 0/1
    [(1, 0.4), (2, 0.7), (3, 0.9), (4, 1.0), (5, 1.0)],
)
def test_pass_at_k_by_hand(k: int, expected: float) -> None:
    assert pass_at_k(5, 2, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_edges() -> None:
    assert all(pass_at_k(7, 7, k) == 1.0 for k in range(1, 8))  # n = c
    assert all(pass_at_k(7, 0, k) == 0.0 for k in range(1, 8))  # c = 0
    assert pass_at_k(10, 8, 3) == 1.0  # k > n - c: every 3-subset holds a correct sample
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    # large n stays finite and exact enough (C(1000, 500) overflows a float)
    assert pass_at_k(1000, 3, 500) == pytest.approx(float(exact_pass_at_k(1000, 3, 500)))


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# Obtained by running SkyThought's skythought/evals/util/metrics.py (``_pass_at_k``) at
# NovaSky-AI/SkyThought HEAD on these arguments and printing repr() of the result.
@pytest.mark.parametrize(
    ("n", "c", "k", "sky"),
    [
        (7, 3, 2, 0.7142857142857142),
        (10, 4, 3, 0.8333333333333334),
        (20, 5, 4, 0.7182662538699691),
        (64, 10, 8, 0.7649283965930666),
        (100, 37, 64, 1.0),
        (200, 1, 100, 0.5),
        (1000, 3, 500, 0.8753753753753754),
        (50, 49, 1, 0.98),
        (13, 6, 5, 0.9836829836829837),
    ],
)
def test_pass_at_k_matches_skythought_bit_for_bit(n: int, c: int, k: int, sky: float) -> None:
    assert pass_at_k(n, c, k) == sky


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_pass_at_k_is_the_unbiased_estimator(nc: tuple[int, int]) -> None:
    n, c = nc
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    for k, v in enumerate(values, start=1):
        assert v == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-9)
        assert 0.0 <= v <= 1.0
    assert values[0] == pytest.approx(c / n)  # pass@1 is the accuracy
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values))  # grows in k


# --- k list and SkyThought's summary -------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "ks"),
    [
        (1, (1,)),
        (2, (2, 1)),
        (3, (3, 2, 1)),
        (8, (8, 4, 2, 1)),
        (10, (10, 8, 4, 2, 1)),
        (64, (64, 32, 16, 8, 4, 2, 1)),
        (100, (100, 64, 32, 16, 8, 4, 2, 1)),
    ],
)
def test_k_list_is_skythoughts(n: int, ks: tuple[int, ...]) -> None:
    assert pass_at_k_ks(n) == ks


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10_000))
def test_k_list_properties(n: int) -> None:
    ks = pass_at_k_ks(n)
    assert ks[0] == n and ks[-1] == 1
    assert list(ks) == sorted(set(ks), reverse=True)
    assert all(k & (k - 1) == 0 for k in ks[1:])  # powers of two below n
    assert ks[1:] == tuple(2**i for i in range(n.bit_length() - 1 - (n & (n - 1) == 0), -1, -1))


# Obtained by running SkyThought's ``pass_at_k(N, id_to_scores)`` (skythought/evals/util/
# metrics.py at NovaSky-AI/SkyThought HEAD) on these inputs, drawn with random.Random(20240611)
# and random.Random(7); its values are numpy floats, shown here as floats.
SKYTHOUGHT_CASES: list[tuple[int, dict[str, list[int]], dict[str, float]]] = [
    (
        3,
        {"0": [1, 1, 0], "1": [1, 0, 1], "2": [1, 0, 1], "3": [1, 1, 1]},
        {"k=3": 100.0, "k=2": 100.0, "k=1": 75.0},
    ),
    (
        5,
        {
            "0": [1, 0, 0, 1, 1],
            "1": [1, 1, 0, 1, 0],
            "2": [0, 0, 0, 0, 0],
            "3": [1, 0, 1, 0, 0],
            "4": [0, 0, 0, 1, 0],
        },
        {"k=5": 80.0, "k=4": 76.0, "k=2": 58.0, "k=1": 36.0},
    ),
    (
        6,
        {
            "0": [1, 0, 1, 1, 0, 0],
            "1": [0, 1, 0, 1, 0, 1],
            "2": [1, 1, 1, 0, 1, 0],
            "3": [0, 1, 0, 1, 1, 1],
        },
        {"k=6": 100.0, "k=4": 100.0, "k=2": 86.667, "k=1": 58.333},
    ),
    (
        10,
        {
            "0": [1, 1, 0, 0, 1, 1, 0, 0, 1, 1],
            "1": [1, 1, 0, 1, 1, 1, 1, 1, 0, 1],
            "2": [0, 0, 0, 1, 0, 0, 1, 0, 0, 0],
            "3": [1, 1, 0, 0, 0, 0, 0, 0, 1, 1],
            "4": [0, 0, 0, 1, 0, 0, 1, 0, 1, 0],
        },
        {"k=10": 100.0, "k=8": 99.556, "k=4": 88.476, "k=2": 68.444, "k=1": 46.0},
    ),
    (
        12,
        {
            "0": [0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0],
            "1": [0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0],
            "2": [0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0],
            "3": [0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0],
        },
        {"k=12": 100.0, "k=8": 99.949, "k=4": 93.687, "k=2": 71.97, "k=1": 45.833},
    ),
    (1, {"a": [1], "b": [0], "c": [0]}, {"k=1": 33.333}),
]


@pytest.mark.parametrize(("n", "scores", "sky"), SKYTHOUGHT_CASES)
def test_summary_pass_at_k_matches_skythought(
    n: int, scores: dict[str, list[int]], sky: dict[str, float]
) -> None:
    got = skythought_pass_at_k(n, scores)
    assert got == sky and list(got) == list(sky)  # same keys, same order, same rounding
    problems = {pid: [("", bool(s)) for s in flags] for pid, flags in scores.items()}
    m = reasoning_metrics("m", "t", problems)
    assert m.skythought_pass_at_k() == (sky if n > 1 else None)  # SkyThought writes null at n=1
    total = sum(map(sum, scores.values()))
    assert m.skythought_accuracy() == round(total / (n * len(scores)), 4)


def test_summary_without_problems() -> None:
    assert skythought_pass_at_k(4, {}) == {}
    m = reasoning_metrics("m", "t", {})
    assert m.problems == 0 and m.pass_at_k == {} and m.accuracy.ci95 is None
    assert math.isnan(m.accuracy.value) and m.skythought_accuracy() == 0.0


def test_summary_rejects_ragged_scores() -> None:
    with pytest.raises(ValueError):
        skythought_pass_at_k(3, {"a": [1, 0]})
    with pytest.raises(ValueError):
        reasoning_metrics("m", "t", {"a": [("1", True)], "b": [("1", True), ("2", False)]})


# --- majority vote ---------------------------------------------------------------------------


def test_majority_vote_plain_and_first_k() -> None:
    r: list[Response] = [("7", False), ("5", True), ("5", True), ("7", False), ("7", False)]
    assert majority_vote(r, 3) is True  # 5 twice, 7 once
    assert majority_vote(r, 5) is False  # 7 three times
    assert majority_vote(r, 1) is False


def test_majority_vote_ties_go_to_the_first_seen() -> None:
    assert majority_vote([("5", True), ("7", False), ("7", False), ("5", True)], 4) is True
    assert majority_vote([("7", False), ("5", True), ("5", True), ("7", False)], 4) is False
    assert majority_vote([("b", True), ("a", False)], 2) is True  # not alphabetical


def test_majority_vote_empty_keys_and_key_correctness() -> None:
    # no extracted answer never wins; all empty is wrong even if a verdict says otherwise
    assert majority_vote([("", False), ("", False), ("3", True)], 3) is True
    assert majority_vote([("", True), ("", True)], 2) is False
    # a key is correct when any of the n responses carrying it was judged correct
    assert majority_vote([("3", False), ("4", False), ("3", True)], 2) is True
    with pytest.raises(ValueError):
        majority_vote([("3", True)], 2)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", ""]), min_size=1, max_size=12), st.data())
def test_majority_vote_properties(keys: list[str], data: st.DataObject) -> None:
    right = data.draw(st.sampled_from(["a", "b", "c"]))
    responses = [(key, key == right) for key in keys]
    k = data.draw(st.integers(1, len(keys)))
    head = [key for key in keys[:k] if key]
    if all(key == right for key in head) and head:
        assert majority_vote(responses, k)
    if right not in head:
        assert not majority_vote(responses, k)
    if head and head.count(right) * 2 > len(head):
        assert majority_vote(responses, k)


# --- the metrics of one (model, task) --------------------------------------------------------


def _problems(seed: int, m: int = 40, n: int = 8) -> dict[str, list[Response]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[Response]] = {}
    for i in range(m):
        keys = rng.integers(0, 3, size=n)
        out[f"p{i}"] = [(str(k), bool(k == 0)) for k in keys]
    return out


def test_metrics_of_one_model() -> None:
    problems = {
        "a": [("1", True), ("2", False), ("1", True), ("3", False)],
        "b": [("9", False), ("9", False), ("8", False), ("7", True)],
        "c": [("4", True), ("4", True), ("4", True), ("4", True)],
    }
    m = reasoning_metrics("mod", "math500", problems)
    assert (m.n, m.problems, m.responses, m.correct) == (4, 3, 12, 7)
    assert m.accuracy.value == pytest.approx(7 / 12)
    assert list(m.pass_at_k) == [4, 2, 1] and list(m.maj_at_k) == [4, 2, 1]
    expected2 = (exact_pass_at_k(4, 2, 2) + exact_pass_at_k(4, 1, 2) + 1) / 3
    assert m.pass_at_k[2].value == pytest.approx(float(expected2))
    assert m.pass_at_k[1].value == pytest.approx(7 / 12)
    # maj@4: a -> "1" (2 votes), b -> "9", c -> "4"; maj@2: a -> "1" (tie, first seen)
    assert m.maj_at_k[4].value == pytest.approx(2 / 3)
    assert m.maj_at_k[2].value == pytest.approx(2 / 3)
    assert m.maj_at_k[1].value == pytest.approx(2 / 3)
    assert m.per_problem == {"a": 0.5, "b": 0.25, "c": 1.0}


def test_metrics_are_deterministic_and_order_free() -> None:
    problems = _problems(1)
    shuffled = dict(reversed(list(problems.items())))
    a = reasoning_metrics("m", "t", problems, seed=3)
    assert a == reasoning_metrics("m", "t", problems, seed=3)
    assert a == reasoning_metrics("m", "t", shuffled, seed=3)
    other = reasoning_metrics("m", "t", problems, seed=4)
    assert other.pass_at_k[1].value == a.pass_at_k[1].value
    assert other.pass_at_k[1].ci95 != a.pass_at_k[1].ci95  # the seed drives the bootstrap


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(1, 9))
def test_intervals_contain_the_estimate(seed: int, m: int, n: int) -> None:
    metrics = reasoning_metrics("m", "t", _problems(seed, m, n), samples=300, seed=seed)
    assert metrics.accuracy.ci95 is not None
    lo, hi = metrics.accuracy.ci95
    assert 0.0 <= lo <= metrics.accuracy.value <= hi <= 1.0
    for est in [*metrics.pass_at_k.values(), *metrics.maj_at_k.values()]:
        assert est.ci95 is not None
        assert 0.0 <= est.ci95[0] <= est.value <= est.ci95[1] <= 1.0


def test_bootstrap_interval() -> None:
    values = np.array([0.1] * 7 + [0.3] * 3)
    assert bootstrap_mean_interval(values, seed=5) == bootstrap_mean_interval(values, seed=5)
    lo, hi = bootstrap_mean_interval(values, seed=5) or (math.nan, math.nan)
    assert lo < float(values.mean()) < hi
    constant = np.full(9, 0.1)
    assert bootstrap_mean_interval(constant) == (pytest.approx(0.1), pytest.approx(0.1))
    ci = bootstrap_mean_interval(constant)
    assert ci is not None and ci[0] <= float(constant.mean()) <= ci[1]
    assert bootstrap_mean_interval(np.array([])) is None
    assert bootstrap_mean_interval(values, samples=0) is None


# --- paired comparison -----------------------------------------------------------------------


def test_paired_accuracy_on_shared_problems() -> None:
    a = {"p1": 1.0, "p2": 0.5, "p3": 0.75, "only_a": 1.0}
    b = {"p1": 0.5, "p2": 0.5, "p3": 0.25, "only_b": 0.0}
    res = paired_accuracy(a, b, seed=2)
    assert res.pairs == 3 and (res.wins, res.losses) == (2, 0)
    assert res.diff == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    assert res.ci95 is not None and res.ci95[0] <= res.diff <= res.ci95[1]
    assert res == paired_accuracy(a, b, seed=2)
    swapped = paired_accuracy(b, a, seed=2)
    assert swapped.diff == pytest.approx(-res.diff) and swapped.losses == 2
    none = paired_accuracy({"x": 1.0}, {"y": 0.0})
    assert none.pairs == 0 and math.isnan(none.diff) and none.ci95 is None


def test_paired_accuracy_from_metrics() -> None:
    strong = reasoning_metrics("strong", "t", _problems(1, m=60))
    weak_problems = {
        pid: [("1", False)] * (len(rs) // 2) + rs[len(rs) // 2 :]
        for pid, rs in _problems(1, m=60).items()
    }
    weak = reasoning_metrics("weak", "t", weak_problems)
    res = paired_accuracy(strong.per_problem, weak.per_problem)
    assert res.pairs == 60 and res.diff > 0 and res.losses == 0
    assert res.diff == pytest.approx(strong.accuracy.value - weak.accuracy.value)


# --- temperature 0 ---------------------------------------------------------------------------


def test_temperature_zero_reduces_n_like_skythought() -> None:
    got = effective_samples(0.0, 8)
    assert (got.n, got.warning) == (1, TEMPERATURE_ZERO_WARNING)
    assert "Setting n=1" in TEMPERATURE_ZERO_WARNING
    assert effective_samples(0.0, 1).warning is None
    assert effective_samples(0.6, 8).n == 8 and effective_samples(0.6, 8).warning is None
    with pytest.raises(ValueError, match="temperature=0 with n=8"):
        effective_samples(0, 8, refuse=True)
    assert effective_samples(0, 1, refuse=True).n == 1
    with pytest.raises(ValueError):
        effective_samples(0.5, 0)
    with pytest.raises(ValueError):
        effective_samples(-0.1, 2)
