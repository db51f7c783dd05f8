"""Metrics of reasoning tasks (math, GPQA) with N generations per problem: accuracy, pass@k and
majority vote maj@k, each with an interval, and the numbers SkyThought writes in
``summary.json``. Pure functions, no I/O.

Definitions and why:

- **Input**: per problem id, the N responses in generation order, each ``(answer_key,
  correct)``. ``answer_key`` is the extracted, normalised answer ("" when none was extracted);
  ``correct`` is the scorer's verdict. Every problem has the same N, as in SkyThought.
- **accuracy**: correct responses over all responses, with a Wilson interval over the responses
  (it never collapses at 0 or 1; method/stats.py says why).
- **pass@k**: the unbiased estimator 1 - C(N-c, k) / C(N, k) per problem (Chen et al., 2021),
  computed as SkyThought does (a product of ratios, no huge binomials), averaged over problems,
  for SkyThought's k list (:func:`pass_at_k_ks`), so the numbers match its ``"k=N"`` keys.
- **maj@k**: per problem, the most common non-empty answer key among the *first k* responses;
  a tie goes to the key seen first among them (deterministic, and independent of how keys
  sort). The vote is right when that key is correct, and a key is correct when any of the N
  responses carrying it was judged correct: the key is the answer, so its correctness does not
  depend on which response carries it, and a scorer that timed out on one copy (a wrong
  verdict) does not undo the others. No non-empty key among the first k counts as wrong.
- **Intervals of pass@k and maj@k**: a percentile bootstrap over problems (the unit that was
  sampled), seeded and so deterministic; the problems' order does not change it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from skillmix.method.stats import Paired, paired_test, wilson_interval

if TYPE_CHECKING:
    import numpy.typing as npt

Response = tuple[str, bool]  # (extracted answer key, "" when none; correct)

BOOTSTRAP_SAMPLES = 2000
TEMPERATURE_ZERO_WARNING = "Warning: Temperature 0 does not support multiple samples. Setting n=1."  # SkyThought's text (skythought/evals/cli.py), kept so that logs read the same


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` samples:
    1 - C(n-c, k) / C(n, k), as the product of (1 - k/i) for i in n-c+1..n, which stays in
    floating range for any n (SkyThought's and Codex's form, so the floats match theirs)."""
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_ks(n: int) -> tuple[int, ...]:
    """SkyThought's k list for n samples, largest first: n, then (when n is not a power of two)
    the largest power of two below n, then halving down to 1. N=10 gives (10, 8, 4, 2, 1)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    ks = [n]
    k = 1 << (n.bit_length() - 1)  # the largest power of two <= n, exact for any int
    if k == n:
        k //= 2
    while k >= 1:
        ks.append(k)
        k //= 2
    return tuple(ks)


def skythought_pass_at_k(n: int, scores: Mapping[str, Sequence[int | bool]]) -> dict[str, float]:
    """``summary.json``'s ``pass_at_k`` exactly as SkyThought writes it: keys ``"k=N"``
    largest first, values the mean over problems in percent, rounded to 3 decimals; ``{}``
    without problems. ``scores``: per problem id, the n correctness flags."""
    per_k: dict[int, list[float]] = {k: [] for k in pass_at_k_ks(n)}
    for flags in scores.values():
        if len(flags) != n:
            raise ValueError(f"each problem needs {n} scores, got {len(flags)}")
        c = int(sum(bool(f) for f in flags))
        for k, values in per_k.items():
            values.append(pass_at_k(n, c, k))
    if not scores:
        return {}
    return {f"k={k}": round(float(np.mean(v)) * 100, 3) for k, v in per_k.items()}


def majority_vote(responses: Sequence[Response], k: int) -> bool:
    """Whether the majority answer among the first ``k`` responses is correct (the module
    docstring defines the vote, its tie-break and a key's correctness)."""
    if not 1 <= k <= len(responses):
        raise ValueError(f"maj@k needs 1 <= k <= {len(responses)}, got {k}")
    correct_keys = {key for key, ok in responses if ok}
    counts: dict[str, int] = {}  # insertion order = first appearance, the tie-break
    for key, _ in responses[:k]:
        if key:
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return False
    best = max(counts.values())
    winner = next(key for key, count in counts.items() if count == best)
    return winner in correct_keys


def bootstrap_mean_interval(
    values: npt.NDArray[np.float64], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the mean of per-problem ``values``; None without
    data or samples. Resampling m problems only changes how often each distinct value is
    drawn, so it draws a multinomial over the distinct values (at most N+1 for pass@k, 2 for
    maj@k): the same distribution as drawing m indices, and independent of the problems'
    order. Clamped to contain the mean, which float rounding could otherwise leave outside
    when every problem has the same value."""
    if values.size == 0 or samples <= 0:
        return None
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(values, return_counts=True)
    draws = rng.multinomial(values.size, counts / values.size, size=samples)
    means = draws @ distinct / values.size
    lo, hi = np.percentile(means, [2.5, 97.5])
    point = float(values.mean())
    return min(float(lo), point), max(float(hi), point)


@dataclass(frozen=True)
class Estimate:
    """A proportion in [0, 1] and its 95% interval (None without data)."""

    value: float
    ci95: tuple[float, float] | None


@dataclass(frozen=True)
class ReasoningMetrics:
    """The metrics of one (model, task). ``pass_at_k`` and ``maj_at_k`` are keyed by k in
    SkyThought's order (largest first); ``per_problem`` is each problem's accuracy (correct
    responses / n), for paired comparisons and the report's drill-down."""

    model: str
    task: str
    n: int  # generations per problem (0 without problems)
    problems: int
    responses: int
    correct: int
    accuracy: Estimate
    pass_at_k: Mapping[int, Estimate] = field(default_factory=dict)
    maj_at_k: Mapping[int, Estimate] = field(default_factory=dict)
    per_problem: Mapping[str, float] = field(default_factory=dict)

    def skythought_accuracy(self) -> float:
        """``summary.json``'s ``accuracy`` as SkyThought writes it: a fraction rounded to 4
        decimals, 0.0 without responses."""
        return round(self.correct / self.responses, 4) if self.responses else 0.0

    def skythought_pass_at_k(self) -> dict[str, float] | None:
        """``summary.json``'s ``pass_at_k``: ``"k=N"`` -> percent rounded to 3 decimals, from
        the same floats SkyThought averages; None for n <= 1, as SkyThought writes null."""
        if self.n <= 1:
            return None
        return {f"k={k}": round(e.value * 100, 3) for k, e in self.pass_at_k.items()}


def reasoning_metrics(
    model: str,
    task: str,
    problems: Mapping[str, Sequence[Response]],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> ReasoningMetrics:
    """All metrics of one (model, task) from each problem's n responses in generation order.
    Raises ValueError when problems differ in n or a problem has none."""
    ids = sorted(problems)
    n = len(problems[ids[0]]) if ids else 0
    for pid in ids:
        if len(problems[pid]) != n or n == 0:
            raise ValueError(
                f"every problem needs the same number (>= 1) of responses: {pid!r} has "
                f"{len(problems[pid])}, expected {n}"
            )
    c = np.array([sum(ok for _, ok in problems[pid]) for pid in ids], dtype=np.int64)
    correct, total = int(c.sum()), n * len(ids)
    accuracy = _accuracy(correct, total)
    pass_k: dict[int, Estimate] = {}
    maj_k: dict[int, Estimate] = {}
    for k in pass_at_k_ks(n) if n else ():
        by_c = {int(ci): pass_at_k(n, int(ci), k) for ci in np.unique(c)}
        values = np.array([by_c[int(ci)] for ci in c], dtype=np.float64)
        pass_k[k] = _estimate(values, samples, seed)
        votes = np.array([majority_vote(problems[pid], k) for pid in ids], dtype=np.float64)
        maj_k[k] = _estimate(votes, samples, seed)
    return ReasoningMetrics(
        model=model,
        task=task,
        n=n,
        problems=len(ids),
        responses=total,
        correct=correct,
        accuracy=accuracy,
        pass_at_k=pass_k,
        maj_at_k=maj_k,
        per_problem={pid: int(ci) / n for pid, ci in zip(ids, c, strict=True)},
    )


def _accuracy(correct: int, total: int) -> Estimate:
    """Accuracy with its Wilson interval, widened to contain the point: at 0/n Wilson's lower
    end comes out as float noise (5.6e-17) above 0."""
    if not total:
        return Estimate(math.nan, None)
    p = correct / total
    ci = wilson_interval(correct, total)
    return Estimate(p, None if ci is None else (min(ci[0], p), max(ci[1], p)))


def _estimate(values: npt.NDArray[np.float64], samples: int, seed: int) -> Estimate:
    """The mean over problems (np.mean, as SkyThought, so the rounded percents match) and its
    bootstrap interval."""
    return Estimate(
        float(np.mean(values)), bootstrap_mean_interval(values, samples=samples, seed=seed)
    )


def paired_accuracy(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> Paired:
    """Model a against model b on the problems both have (``ReasoningMetrics.per_problem``):
    ``diff`` is the mean per-problem accuracy difference a - b, ``ci95`` its paired bootstrap
    interval over problems, ``pairs`` the number of shared problems, with the exact sign test
    of method/stats.py (wins: problems where a is more accurate)."""
    index = {pid: i for i, pid in enumerate(sorted(set(a) | set(b)))}

    def side(values: Mapping[str, float]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        ids = sorted(values)
        return (
            np.array([index[p] for p in ids], dtype=np.int64),
            np.array([values[p] for p in ids], dtype=np.float64),
        )

    return paired_test({0: side(a)}, {0: side(b)}, [0], samples=samples, seed=seed)


@dataclass(frozen=True)
class SampleCount:
    """How many generations to ask for, and the warning to log when that is fewer than asked."""

    n: int
    warning: str | None


def effective_samples(temperature: float, n: int, *, refuse: bool = False) -> SampleCount:
    """What to do with ``n`` generations at ``temperature``. Greedy decoding (temperature 0)
    gives n identical responses, so pass@k and maj@k would only repeat accuracy: SkyThought
    (evals/cli.py) then sets n=1 and warns, which this mirrors; with ``refuse`` it raises
    ValueError instead, for callers that would rather stop than run something else."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0 and n > 1:
        if refuse:
            raise ValueError(
                f"temperature=0 with n={n}: greedy decoding gives {n} identical responses; "
                "set a temperature above 0 or n=1"
            )
        return SampleCount(1, TEMPERATURE_ZERO_WARNING)
    return SampleCount(n, None)
