"""Statistics of the report: intervals that stay honest at 0 and 1, exact ranks, and paired
comparisons of two models over the same combinations. Pure functions, no I/O.

Why these choices:

- **Wilson score interval** for every metric. Full Marks and All Skills are proportions of
  combinations; the percentile bootstrap of a 0/30 or 5/5 proportion collapses to a point
  ([0, 0], [1, 1]), which claims a certainty 30 or 5 combinations cannot give. Wilson's
  interval never collapses (0/30 gives [0, 0.114]). Skill Fraction and the means over
  generation rounds (``generation_agg=mean``) are means of values in [0, 1]; a variable in
  [0, 1] with mean p has variance at most p(1 - p), the Bernoulli variance Wilson assumes, so
  the same interval on the n combinations is valid and conservative for them, and does not
  collapse either.
- **Exact fractions for ranks**: two models with 42/90 must share a rank, whatever float
  noise the summation order leaves; scores are compared as :class:`fractions.Fraction`.
- **Paired tests**: runs with the same seed share their combinations, so two models are
  compared on the pairs (k, combination): an exact two-sided sign test on the pairs that
  differ (for 0/1 metrics this is McNemar's exact test) and a paired bootstrap interval of
  the mean difference, resampling combinations within each k. A difference is significant
  only when both agree (p < 0.05 and the interval excludes 0): the exact test guards small
  samples, where a bootstrap interval is too narrow (5 wins of 5 pairs give p = 0.0625); the
  interval guards the means the ranking uses, which a sign test alone does not see.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

Z95 = 1.959963984540054
ALPHA = 0.05
# the largest denominator of a per-combination value: k skills x grading rounds x generation
# rounds stay far below it, so ``limit_denominator`` recovers the exact value of a float
MAX_DENOMINATOR = 1_000_000

INTERVAL_METHOD = (
    "95% Wilson score interval over the n combinations (for Skill Fraction, a mean of values "
    "in [0, 1], the same interval is conservative); it never collapses at 0 or 1."
)
PAIRED_METHOD = (
    "paired over shared (k, combination): exact two-sided sign test (McNemar's exact test for "
    "0/1 metrics) on the pairs that differ, and a 95% paired bootstrap interval of the score "
    "difference, resampling combinations within each k; p-values Holm-adjusted over every "
    "pair of ranked rows; significant when the adjusted p < 0.05 and the interval excludes 0"
)


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of ``successes / n`` (successes may be fractional: a sum of
    values in [0, 1]); None without data. Never of zero width for n > 0."""
    if n <= 0:
        return None
    p = min(1.0, max(0.0, successes / n))
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # at p = 0 (p = 1) the bound is exactly 0 (1); the subtraction leaves a rounding residue
    low = 0.0 if p == 0.0 else max(0.0, centre - half)
    high = 1.0 if p == 1.0 else min(1.0, centre + half)
    return low, high


def exact_fraction(value: float) -> Fraction:
    """The rational a per-combination value stands for (e.g. 2/3, not 0.6666666666666666)."""
    return Fraction(value).limit_denominator(MAX_DENOMINATOR)


def exact_sum(values: npt.NDArray[np.float64]) -> Fraction:
    """The exact sum of per-combination values: distinct values times their counts, so the
    result does not depend on summation order."""

    if values.size == 0:
        return Fraction(0)
    distinct, counts = np.unique(values, return_counts=True)
    return sum(
        (exact_fraction(float(v)) * int(c) for v, c in zip(distinct, counts, strict=True)),
        Fraction(0),
    )


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact binomial (sign) test of wins against losses under p = 1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    low = min(wins, losses)
    if 2 * low >= n:
        return 1.0
    if n <= 1000:  # P(X <= low) for X ~ Binomial(n, 1/2), doubled; exact in integers
        tail = sum(math.comb(n, i) for i in range(low + 1))
        return float(min(1.0, 2 * tail / 2**n))
    # large n: the same sum in logs (terms grow with i, so the last one leads)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(low + 1)
    ]
    top = logs[-1]
    return float(min(1.0, 2 * math.exp(top) * sum(math.exp(x - top) for x in logs)))


@dataclass(frozen=True)
class Paired:
    """One paired comparison of model a against model b."""

    diff: float  # score(a) - score(b) over the shared pairs (mean over k of per-k means)
    ci95: tuple[float, float] | None
    p_value: float | None
    significant: bool
    pairs: int
    wins: int  # pairs where a scores higher
    losses: int


Samples = Mapping[int, tuple["npt.NDArray[np.int64]", "npt.NDArray[np.float64]"]]


def paired_test(
    a: Samples, b: Samples, ks: Sequence[int], *, samples: int = 2000, seed: int = 0
) -> Paired:
    """Compare a and b on the combinations both have, per k in ``ks``. ``a[k]`` is (combination
    indices, values). The difference is the mean over k of the per-k mean differences (the
    leaderboard's score); its interval resamples each k's shared combinations (stratified
    paired bootstrap, ``samples`` resamples, deterministic for a seed)."""

    diffs: list[npt.NDArray[np.float64]] = []
    for k in ks:
        if k not in a or k not in b:
            continue
        ia, va = a[k]
        ib, vb = b[k]
        common, pa, pb = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
        if common.size:
            diffs.append(va[pa] - vb[pb])
    pairs = sum(d.size for d in diffs)
    if not pairs:
        return Paired(math.nan, None, None, False, 0, 0, 0)
    wins = sum(int((d > 0).sum()) for d in diffs)
    losses = sum(int((d < 0).sum()) for d in diffs)
    diff = float(np.mean([d.mean() for d in diffs]))
    p = sign_test_p(wins, losses)
    ci = _bootstrap_diff(diffs, samples, seed) if samples > 0 else None
    # both must agree: the sign test (exact for few pairs, where a bootstrap is too narrow) and
    # the interval of the mean difference (the ranking is on means, the sign test on signs)
    excludes_zero = ci is None or ci[0] > 0 or ci[1] < 0
    return Paired(diff, ci, p, p < ALPHA and excludes_zero and diff != 0, pairs, wins, losses)


def _bootstrap_diff(
    diffs: Sequence[npt.NDArray[np.float64]], samples: int, seed: int
) -> tuple[float, float]:
    """Percentile interval of the mean over k of resampled per-k mean differences.

    Resampling n pairs with replacement only changes how often each distinct difference is
    drawn, so the draw is a multinomial over the distinct values (few: differences of k-skill
    scores): the same distribution as drawing n indices, in ``samples x distinct`` work."""

    rng = np.random.default_rng(seed)
    total = np.zeros(samples)
    for d in diffs:
        distinct, counts = np.unique(d, return_counts=True)
        draws = rng.multinomial(d.size, counts / d.size, size=samples)
        total += draws @ distinct / d.size
    total /= len(diffs)
    lo, hi = np.percentile(total, [2.5, 97.5])
    return float(lo), float(hi)


SCORE_INTERVAL_METHOD = (
    "95% percentile bootstrap interval of the mean over k: combinations resampled within each k"
)


def bootstrap_mean_over_k(
    values: Sequence[npt.NDArray[np.float64]], samples: int, seed: int
) -> tuple[float, float] | None:
    """Percentile interval of the mean over k of per-k means (``values``: each k's
    per-combination values), resampling combinations within each k (the leaderboard score's
    unit); None without resamples or data. Drawn as a multinomial over each k's distinct
    values, as :func:`_bootstrap_diff` does."""
    if samples <= 0 or not values or any(v.size == 0 for v in values):
        return None
    return _bootstrap_diff(values, samples, seed)


def tie_groups(
    significant_below: Sequence[bool | None],
    top_beats: Callable[[int, int], bool | None] | None = None,
) -> list[int]:
    """Groups of statistically tied rows in rank order: ``significant_below[i]`` says whether
    row i is significantly better than row i + 1. A new group starts below each significant
    gap; an untested gap (None) keeps the rows together (no win is claimed). With
    ``top_beats(top, j)`` (is the group's top row significantly better than row j?), a row
    also starts a new group when its group's top row beats it, so a ladder of small steps is
    not one group from the best row to the worst."""
    groups = [1]
    top = 0
    for i, gap in enumerate(significant_below):
        below = i + 1
        if not gap and top_beats is not None and top != i:
            gap = top_beats(top, below)
        if gap:
            groups.append(groups[-1] + 1)
            top = below
        else:
            groups.append(groups[-1])
    return groups


HOLM_METHOD = (
    "Holm's step-down adjustment of the sign-test p-values over every pair of ranked models "
    "(family-wise error 5%)"
)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the order given; None (untested) stays None and
    does not count in the family. The i-th smallest of m is multiplied by m - i + 1, then made
    monotone (never below a smaller p's adjusted value) and capped at 1."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def compact_letters(n: int, differs: Sequence[tuple[int, int]]) -> list[str]:
    """A compact letter display of ``n`` rows in rank order (``differs``: the pairs (i, j),
    i < j, that differ significantly): two rows share a letter exactly when they do not
    differ. Piepho's insert-absorb: start with one group of all rows, split every group that
    holds a differing pair, drop groups contained in another; letters follow the groups' top
    rows, so the best row has "a"."""
    if n <= 0:
        return []
    groups: list[frozenset[int]] = [frozenset(range(n))]
    for i, j in differs:
        split: list[frozenset[int]] = []
        for group in groups:
            if i in group and j in group:
                split += [group - {i}, group - {j}]
            else:
                split.append(group)
        unique = set(split)
        groups = [g for g in unique if g and not any(g < other for other in unique)]
    groups.sort(key=lambda g: sorted(g))
    letters = ["" for _ in range(n)]
    for index, group in enumerate(groups):
        letter = _letter(index)
        for row in sorted(group):
            letters[row] += letter
    return letters


def _letter(index: int) -> str:
    """a..z, then aa, ab, ... (more groups than letters are rare)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    return alphabet[index] if index < 26 else _letter(index // 26 - 1) + alphabet[index % 26]
