"""What metrics.csv adds to each (student, grader, k) row of the metrics table: the model id,
the planned, done and failed records, and per metric the row's rank with its score and the
score's interval. Part of the view model (``view.metrics_view``): the CSV only formats it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from skillmix.artifacts import Summary

FACT_COLUMNS = (
    "model_id",
    "planned_answers",
    "answers_done",
    "answers_failed",
    "planned_verdicts",
    "verdicts_done",
    "verdicts_failed",
)
"""The count columns of metrics.csv, after the metric columns."""
RANK_PARTS = ("rank", "score", "score_ci95_low", "score_ci95_high")
"""Per metric: ``{metric}_rank`` etc., the leaderboard row of the model."""


@dataclass(frozen=True)
class RankFact:
    """The leaderboard row of a model for one metric: its rank (None: not ranked), its score
    over the ranked k values and that score's bootstrap interval."""

    rank: int | None
    score: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class RowFacts:
    """One (student, grader, k) row's provenance: counts of this k only."""

    model_id: str
    planned_answers: int
    answers_done: int
    answers_failed: int
    planned_verdicts: int
    verdicts_done: int
    verdicts_failed: int
    ranks: Mapping[str, RankFact] = field(default_factory=dict)

    def counts(self) -> tuple[str | int, ...]:
        """The FACT_COLUMNS values, in order."""
        return tuple(getattr(self, name) for name in FACT_COLUMNS)


def row_facts(summary: Summary) -> dict[tuple[str, str, int], RowFacts]:
    """Per (student, grader, k) of the metrics table: planned answers are the combinations
    times the generation rounds, planned verdicts those times the grading rounds; done and
    failed come from the quality rows (records found), ranks from the leaderboards."""
    e = summary.experiment
    planned = e.combinations * e.generation_rounds
    models = {s.name: s.model for s in e.students}
    quality = {(q.student, q.k): q for q in summary.quality}
    ranks: dict[tuple[str, str], dict[str, RankFact]] = {}
    for board in summary.leaderboards:
        for r in board.rows:
            low, high = r.score_ci95 if r.score_ci95 else (None, None)
            fact = RankFact(r.rank, r.score, low, high)
            ranks.setdefault((r.student, r.grader), {})[board.metric] = fact
    out = {}
    for row in summary.metrics.rows:
        q = quality.get((row.student, row.k))
        out[(row.student, row.grader, row.k)] = RowFacts(
            model_id=models.get(row.student, ""),
            planned_answers=planned,
            answers_done=q.generations - q.generation_failed if q else 0,
            answers_failed=q.generation_failed if q else 0,
            planned_verdicts=planned * e.grader.rounds,
            verdicts_done=q.grades - q.grades_failed if q else 0,
            verdicts_failed=q.grades_failed if q else 0,
            ranks=ranks.get((row.student, row.grader), {}),
        )
    return out
