"""Which rubric items an answer fails (SPEC 6): a rubric has k + 3 points, one per skill, then
on topic, makes sense and the length point. The item groups pool the k skills and keep each of
the three others on its own, so a reader sees whether a model loses its points on a skill, the
topic, sense or the sentence limit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ITEM_GROUPS = ("skills", "topic", "sense", "length")


def item_group(j: int, k: int) -> str:
    """The rubric item group of position ``j`` (0-based) in a k-skill rubric."""
    if j < k:
        return "skills"
    return ITEM_GROUPS[1 + min(j - k, 2)]


@dataclass(frozen=True)
class ItemFailure:
    """The points one item group missed: ``failed`` sums 1 - point (a missed 0/1 point counts
    1; a mean vote's 0.5 counts 0.5) over ``points`` rubric points."""

    failed: float
    points: int

    @property
    def rate(self) -> float | None:
        return self.failed / self.points if self.points else None


def item_failures(answers: Iterable[tuple[int, Sequence[float]]]) -> dict[str, ItemFailure]:
    """Per item group (ITEM_GROUPS order): the share of rubric points missed over the given
    (k, voted points) answers. An answer whose point list is not k + 3 long is left out."""
    failed = dict.fromkeys(ITEM_GROUPS, 0.0)
    points = dict.fromkeys(ITEM_GROUPS, 0)
    for k, voted in answers:
        if len(voted) != k + 3:
            continue
        for j, value in enumerate(voted):
            group = item_group(j, k)
            failed[group] += 1.0 - float(value)
            points[group] += 1
    return {g: ItemFailure(failed[g], points[g]) for g in ITEM_GROUPS}


def worst_item(failures: dict[str, ItemFailure]) -> str | None:
    """The group with the highest failure rate (the first in ITEM_GROUPS order on a tie);
    None when nothing was counted or nothing failed."""
    rated = [(f.rate, g) for g, f in failures.items() if f.rate is not None and f.rate > 0]
    if not rated:
        return None
    best = max(rate for rate, _ in rated)
    return next(g for rate, g in rated if rate == best)
