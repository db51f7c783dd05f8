"""Agreement between independent grading rounds: percent agreement and Fleiss' kappa.

A *subject* is one rated thing (one rubric item of one answer); its *ratings* are the values
the grading rounds gave it. Fleiss (1971) needs, per subject, how many ratings fell in each
category: :func:`count_table` builds that table from raw ratings.

Subjects may have different numbers of ratings (a round whose reply was unreadable leaves a
gap): each subject's agreement uses its own count, and the chance agreement uses the pooled
category proportions. With the same number of ratings everywhere this is exactly Fleiss'
kappa. Subjects with fewer than two ratings carry no agreement information and are ignored.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass


@dataclass(frozen=True)
class Agreement:
    """Agreement of the ratings of a set of subjects.

    ``percent``: mean over subjects of the share of agreeing rating pairs (Fleiss' P-bar).
    ``unanimous``: share of subjects whose ratings are all equal. ``expected``: the agreement
    expected by chance from the pooled category proportions (P_e). ``kappa``: Fleiss' kappa,
    None when undefined (no subjects, or every rating in one category so that P_e = 1).
    """

    subjects: int
    ratings: int
    percent: float | None
    unanimous: float | None
    expected: float | None
    kappa: float | None


def count_table(ratings: Iterable[Sequence[Hashable]]) -> list[list[int]]:
    """Per subject, the number of ratings in each category (categories in sorted order when
    they are sortable, else in order of first appearance). Subjects with < 2 ratings are kept
    here; the statistics below ignore them."""
    rows = [list(r) for r in ratings]
    seen: dict[Hashable, None] = {}
    for row in rows:
        for value in row:
            seen.setdefault(value, None)
    categories = list(seen)
    with suppress(TypeError):  # unorderable categories keep their order of appearance
        categories.sort()  # type: ignore[call-arg]
    position = {c: j for j, c in enumerate(categories)}
    table = []
    for row in rows:
        counts = [0] * len(categories)
        for value in row:
            counts[position[value]] += 1
        table.append(counts)
    return table


def _usable(table: Sequence[Sequence[int]]) -> list[Sequence[int]]:
    return [row for row in table if sum(row) >= 2]


def subject_agreement(counts: Sequence[int]) -> float:
    """P_i: the share of agreeing pairs among one subject's n >= 2 ratings."""
    n = sum(counts)
    if n < 2:
        raise ValueError("a subject needs at least two ratings")
    return (sum(c * c for c in counts) - n) / (n * (n - 1))


def percent_agreement(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' P-bar: mean of :func:`subject_agreement` over subjects (None without any)."""
    rows = _usable(table)
    if not rows:
        return None
    return sum(subject_agreement(r) for r in rows) / len(rows)


def expected_agreement(table: Sequence[Sequence[int]]) -> float | None:
    """P_e: the sum of squared pooled category proportions."""
    rows = _usable(table)
    total = sum(sum(r) for r in rows)
    if not rows or total == 0:
        return None
    width = max(len(r) for r in rows)
    shares = [sum(r[j] for r in rows if j < len(r)) / total for j in range(width)]
    return sum(p * p for p in shares)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa, (P-bar - P_e) / (1 - P_e). None when undefined: no subject with two
    ratings, or a single category used throughout (P_e = 1: agreement is perfect but
    chance explains all of it)."""
    observed = percent_agreement(table)
    expected = expected_agreement(table)
    if observed is None or expected is None or expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def agreement(ratings: Iterable[Sequence[Hashable]]) -> Agreement:
    """Every statistic for raw ratings (one sequence of values per subject)."""
    table = _usable(count_table(ratings))
    return Agreement(
        subjects=len(table),
        ratings=sum(sum(r) for r in table),
        percent=percent_agreement(table),
        unanimous=(sum(1 for r in table if max(r) == sum(r)) / len(table)) if table else None,
        expected=expected_agreement(table),
        kappa=fleiss_kappa(table),
    )
