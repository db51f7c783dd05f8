"""Drawing (topic, skills) combinations (SPEC section 3).

``reference`` mode replays the reference release's use of CPython's Mersenne Twister exactly,
so the same seed gives the same prompts as published runs. ``distinct`` is ours: the same
draw, but a skill set already drawn in this call is drawn again, so no two combinations
share the same k skills.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from skillmix.errors import SkillmixError

SamplingMode = Literal["reference", "distinct"]
SAMPLING_MODES: tuple[SamplingMode, ...] = ("reference", "distinct")
DEFAULT_ORDER_SEED = "test"


@dataclass(frozen=True)
class Combination:
    """One prompt's content: a topic and k skills in presentation order."""

    index: int
    topic: str
    skills: tuple[str, ...]

    @property
    def k(self) -> int:
        return len(self.skills)


def check_k(k: int, num_skills: int) -> None:
    if k < 1:
        raise SkillmixError(f"k must be at least 1 (got {k})")
    if k > num_skills:
        raise SkillmixError(
            f"k={k} is larger than the number of active skills ({num_skills})",
            hint="lower k or add skills to the catalog",
        )


def sample_combinations(
    skills: Sequence[str],
    topics: Sequence[str],
    k: int,
    n: int,
    *,
    seed: int,
    order_seed: str | int = DEFAULT_ORDER_SEED,
    mode: SamplingMode = "reference",
) -> list[Combination]:
    """``n`` combinations of ``k`` skills; the inputs are not modified."""
    check_k(k, len(skills))
    if n < 1:
        raise SkillmixError(f"the number of combinations must be at least 1 (got {n})")
    if not topics:
        raise SkillmixError("the catalog has no topics")
    if mode not in SAMPLING_MODES:
        raise SkillmixError(f"unknown sampling mode {mode!r}", hint=f"use one of {SAMPLING_MODES}")
    if mode == "distinct" and n > math.comb(len(skills), k):
        raise SkillmixError(
            f"cannot draw {n} distinct combinations of {k} from {len(skills)} skills",
            hint="lower the number of combinations or use sampling mode 'reference'",
        )
    rng = random.Random(seed)
    pool = list(skills)
    drawn: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    while len(drawn) < n:
        rng.shuffle(pool)
        draw = pool[:k]
        if mode == "distinct":
            key = frozenset(draw)
            if key in seen:
                continue
            seen.add(key)
        drawn.append(draw)
    topic_pool = list(topics)
    chosen_topics = []
    for _ in drawn:
        rng.shuffle(topic_pool)
        chosen_topics.append(topic_pool[0])
    rng.seed(order_seed)
    for draw in drawn:
        rng.shuffle(draw)
    return [
        Combination(index=i, topic=t, skills=tuple(d))
        for i, (t, d) in enumerate(zip(chosen_topics, drawn, strict=True))
    ]
