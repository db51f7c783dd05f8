"""A model with planned work missing or failed is not ranked (issue 23): the pure pieces."""

from __future__ import annotations

from pathlib import Path

from skillmix.artifacts import LeaderboardCell, Summary, parse_artifact
from skillmix.pipeline.aggregate import Plan, incomplete_reasons, work_progress
from skillmix.records import GenerationRecord, Turn
from skillmix.report.leaderboard import Entry, leaderboard
from skillmix.report.view import board_view, report_view
from tests.unit.test_report import GRADER, grade

DATA = Path(__file__).parent / "data" / "artifacts"


def _cell(mean: float) -> LeaderboardCell:
    return LeaderboardCell(mean=mean, stderr=0.1, ci95=[0.0, 1.0], n=4, unparsed=0)


def test_an_excluded_model_is_not_ranked_and_does_not_narrow_the_ks() -> None:
    entries = [
        Entry("low", "g", {"full_marks": {"2": _cell(0.2), "3": _cell(0.2)}}, ks=[2, 3]),
        Entry("mid", "g", {"full_marks": {"2": _cell(0.4), "3": _cell(0.4)}}, ks=[2, 3]),
        # higher on what it has, but a k missing and answers failed
        Entry("flaky", "g", {"full_marks": {"2": _cell(0.9)}}, ks=[2], excluded="partial: x"),
    ]
    board = leaderboard(entries, "full_marks", samples=0)
    assert board.ranked_over_ks == [2, 3]  # the excluded model's gap does not narrow the ranking
    ranks = {r.student: (r.rank, r.score, r.excluded) for r in board.rows}
    assert ranks == {
        "mid": (1, 0.4, None),
        "low": (2, 0.2, None),
        "flaky": (None, None, "partial: x"),
    }
    assert [r.student for r in board.rows][-1] == "flaky"  # unranked rows last
    assert [(p.a, p.b) for p in board.pairwise] == [("mid", "low")]
    assert "1 model(s) with planned work missing or failed are not ranked" in board.ranking_note
    view = board_view(board)
    row = next(r for r in view.rows if r.student == "flaky")
    assert row.rank_text == "—" and row.excluded == "partial: x"
    assert row.verdict is not None and row.verdict.text == "not ranked (partial: x)"


def _generation(index: int, *, k: int = 2, g: int = 1, failed: bool = False) -> GenerationRecord:
    return GenerationRecord(
        student="s",
        model="m",
        k=k,
        generation_round=g,
        index=index,
        topic="t",
        skills=["a", "b"],
        prompt_version="v",
        turns=[] if failed else [Turn(user="u", assistant="Answer: x")],
        answer=None if failed else "x",
        status="failed" if failed else "ok",
        error="HTTP 500" if failed else None,
    )


def test_work_progress_counts_planned_done_failed_and_missing() -> None:
    plan = Plan(["s", "t"], [2], 1, 4, GRADER, 2)
    generations = [_generation(0), _generation(1), _generation(2, failed=True)]
    generations.append(_generation(0, k=3))  # outside the plan: not counted
    grades = [grade([1, 1, 1, 1, 1], index=i, r=r) for i in (0, 1) for r in (1, 2)]
    grades[-1] = grades[-1].model_copy(update={"status": "failed", "points": None})
    grades.append(grade([1, 1, 1, 1, 1], index=2))  # of a failed answer: not counted
    progress = {(p.student, p.phase): p for p in work_progress(plan, generations, grades)}
    gen, verdicts = progress["s", "generate"], progress["s", "grade"]
    assert (gen.planned, gen.done, gen.failed, gen.missing) == (4, 2, 1, 1)
    assert (verdicts.planned, verdicts.done, verdicts.failed, verdicts.missing) == (8, 3, 1, 4)
    nothing = progress["t", "generate"]
    assert (nothing.done, nothing.missing) == (0, 4)
    reasons = incomplete_reasons(progress.values())
    assert reasons["s"] == (
        "partial: 1 of 4 planned answers failed; 1 of 4 planned answers missing; "
        "1 of 8 planned verdicts failed; 4 of 8 planned verdicts missing"
    )
    assert set(reasons) == {"s", "t"}
    complete = work_progress(Plan(["s"], [2], 1, 2, GRADER, 1), generations[:2], grades[::2])
    assert incomplete_reasons(complete) == {}


def test_an_old_summary_has_no_progress_and_states_no_rule() -> None:
    summary = parse_artifact(Summary, (DATA / "summary-v1.json").read_bytes(), "summary-v1.json")
    assert summary.progress is None
    assert report_view(summary).rule == ""
    assert "progress" not in summary.model_dump(mode="json")
