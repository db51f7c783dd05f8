"""The task logic against an in-memory model: ``run_generate`` and ``run_grade`` talk to a fake
``ChatBackend`` (scripted replies, like inspect_ai's mock model) and write into a local-dir
store; the tests read back the records the tasks wrote."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from skillmix.backends.base import BackendError, ChatBackend
from skillmix.loading import parse_experiment
from skillmix.pipeline.context import RunContext, resolve_context
from skillmix.pipeline.generate import run_generate
from skillmix.pipeline.grade import run_grade
from skillmix.pipeline.units import unit_complete
from skillmix.records import GenerationRecord, GradeRecord
from skillmix.store.local import LocalStore
from skillmix.store.runs import RunStore, generation_prefix, grade_prefix
from skillmix.vocab import Unit
from tests.fake_backend import FakeBackend, Reply, student_reply


def readable_grade(ctx: RunContext, k: int, points: int = 1) -> str:
    """A grader reply the project's parser reads: k skills + 3 rubric points."""
    items = [f"criterion {i}" for i in range(k + 3)]
    if ctx.grading_style == "points":
        return "\n".join(f"{it}: fine. Point earned: {points}" for it in items) + (
            f"\n\nGrade: {points * len(items)}"
        )
    rows = "\n".join(f"| {it} | {points} |" for it in items)
    return (
        "Here's the grading table:\n\n| Criteria | Points Earned |\n|---|---|\n"
        f"{rows}\n| Total Points Earned | {points * len(items)} |\n\nExplanation: fine."
    )


UNREADABLE = "I would rather not grade this."


def make_ctx(**grader: Any) -> RunContext:
    exp = parse_experiment(
        {
            "name": "inmem",
            "ks": [2],
            "combinations": 4,
            "students": [{"name": "stu", "model": "stu"}],
            "grader": {"name": "judge", "model": "judge", "rounds": 2, **grader},
        }
    )
    return resolve_context(exp)


@pytest.fixture
def run(tmp_path: Path) -> RunStore:
    return RunStore(LocalStore(tmp_path / "run"))


def generate(ctx: RunContext, run: RunStore, backend: ChatBackend) -> Any:
    return asyncio.run(run_generate(ctx, run, backend, Unit("stu", 2, 1)))


def grade(ctx: RunContext, run: RunStore, backend: ChatBackend) -> Any:
    return asyncio.run(run_grade(ctx, run, backend, Unit("stu", 2, 1)))


def grades(run: RunStore, ctx: RunContext, r: int) -> list[GradeRecord]:
    prefix = grade_prefix(ctx.experiment.grader.name, "stu", 2, 1, r)
    return sorted(run.finished_records(prefix, GradeRecord) or [], key=lambda g: g.index)


def generations(run: RunStore) -> list[GenerationRecord]:
    records = run.finished_records(generation_prefix("stu", 2, 1), GenerationRecord) or []
    return sorted(records, key=lambda g: g.index)


# ---- generation ---------------------------------------------------------------------------


def test_generate_writes_one_answer_per_combination(run: RunStore) -> None:
    ctx = make_ctx()
    student = FakeBackend(student_reply)
    result = generate(ctx, run, student)
    assert not result.skipped and result.records == 4 and result.failed == 0
    records = generations(run)
    assert [r.index for r in records] == [0, 1, 2, 3]
    for r in records:
        assert r.status == "ok" and r.error is None
        last = len(r.turns) - 1
        assert r.answer == f"Story {r.index} turn {last}."
        assert r.turns[0].assistant.startswith("Draft 0.")
        assert len(r.turns) == len(ctx.generation_prompt.turns)
        assert r.usage.prompt_tokens == 10 * len(r.turns)
        assert r.usage.completion_tokens == 5 * len(r.turns) and not r.usage.cached
        assert r.student == "stu" and r.model == "stu" and r.k == 2 and r.generation_round == 1
    # each turn sees the conversation so far: the last request holds every earlier reply
    last_call = max((c for c in student.calls if ":i0:" in c.sample), key=lambda c: len(c.messages))
    assistants = [m["content"] for m in last_call.messages if m["role"] == "assistant"]
    assert assistants == [t.assistant for t in records[0].turns[:-1]]
    manifest = run.manifest(generation_prefix("stu", 2, 1))
    assert manifest is not None and manifest.records == 4 and manifest.failed == 0
    # finished: a second run asks nothing
    again = FakeBackend(student_reply)
    assert generate(ctx, run, again).skipped and again.calls == []


def test_generate_records_failed_requests_and_redoes_only_those(run: RunStore) -> None:
    ctx = make_ctx()

    def flaky(messages: list[dict[str, str]], sample: str) -> Reply:
        if ":i2:" in sample:
            return BackendError("HTTP 500 after 3 attempts: boom", status=500)
        return student_reply(messages, sample)

    result = generate(ctx, run, FakeBackend(flaky))
    assert result.failed == 1 and "#2" in result.errors[0] and "boom" in result.errors[0]
    records = generations(run)
    failed = [r for r in records if r.status == "failed"]
    assert [r.index for r in failed] == [2]
    assert failed[0].answer is None and "boom" in (failed[0].error or "")
    manifest = run.manifest(generation_prefix("stu", 2, 1))
    assert manifest is not None and manifest.failed == 1
    assert not unit_complete(run, ctx, "generate", "stu", 2, 1)

    healthy = FakeBackend(student_reply)
    redo = generate(ctx, run, healthy)
    assert not redo.skipped and redo.failed == 0
    assert {int(re.search(r":i(\d+):", c.sample).group(1)) for c in healthy.calls} == {2}  # type: ignore[union-attr]
    assert [r.status for r in generations(run)] == ["ok"] * 4  # one record per index
    assert unit_complete(run, ctx, "generate", "stu", 2, 1)


def test_a_fatal_backend_error_stops_the_task_without_a_manifest(run: RunStore) -> None:
    ctx = make_ctx()

    def rejected(messages: list[dict[str, str]], sample: str) -> Reply:
        return BackendError("the API key was rejected (401)", status=401, fatal=True)

    with pytest.raises(BackendError, match="rejected"):
        generate(ctx, run, FakeBackend(rejected))
    assert run.manifest(generation_prefix("stu", 2, 1)) is None


# ---- grading ------------------------------------------------------------------------------


def test_grade_parses_every_round_from_one_n_request(run: RunStore) -> None:
    ctx = make_ctx()
    generate(ctx, run, FakeBackend(student_reply))
    judge = FakeBackend(lambda messages, sample: readable_grade(ctx, 2))
    result = grade(ctx, run, judge)
    assert result.records == 8 and result.failed == 0
    assert len(judge.calls) == 4 and all(c.n == 2 for c in judge.calls)  # use_n auto, 2 rounds
    answers = {g.index: g.answer for g in generations(run)}
    for r in (1, 2):
        records = grades(run, ctx, r)
        assert [g.index for g in records] == [0, 1, 2, 3]
        for g in records:
            assert g.status == "ok" and g.parse_status == "ok" and g.grading_round == r
            assert g.points == [1.0] * 5 and g.total == 5.0 and g.attempts == 1
            assert g.answer == answers[g.index] and g.answer in g.prompt
            assert g.usage.prompt_tokens == 5 and g.usage.completion_tokens == 5  # split
            assert g.grader == "judge" and g.raw == readable_grade(ctx, 2)
    assert grade(ctx, run, judge).skipped


def test_an_unreadable_grade_is_asked_again(run: RunStore) -> None:
    ctx = make_ctx(use_n="never")
    generate(ctx, run, FakeBackend(student_reply))

    def moody(messages: list[dict[str, str]], sample: str) -> Reply:
        # round 1's first ask is unreadable; its re-ask (attempt 1) and everything else parse
        return UNREADABLE if sample.endswith(":g1:a0") else readable_grade(ctx, 2)

    judge = FakeBackend(moody)
    result = grade(ctx, run, judge)
    assert result.failed == 0
    for g in grades(run, ctx, 1):
        assert g.status == "ok" and g.attempts == 2 and g.points == [1.0] * 5
        assert g.usage.prompt_tokens == 20 and g.usage.completion_tokens == 10
    for g in grades(run, ctx, 2):
        assert g.status == "ok" and g.attempts == 1
    samples = sorted(c.sample for c in judge.calls if ":i0" in c.sample)
    assert samples == [f"grade:stu:r1:i0:g1:a{a}" for a in (0, 1)] + ["grade:stu:r1:i0:g2:a0"]


def test_re_asks_are_bounded_by_max_parse_retries(run: RunStore) -> None:
    ctx = make_ctx(use_n="always", max_parse_retries=1)
    generate(ctx, run, FakeBackend(student_reply))
    judge = FakeBackend(lambda messages, sample: UNREADABLE)
    result = grade(ctx, run, judge)
    assert result.failed == 0  # unreadable is a verdict ("unparsed"), not a failure
    for r in (1, 2):
        for g in grades(run, ctx, r):
            # the n-request answered, then one re-ask: two replies, the last one kept
            assert g.status == "unparsed" and g.attempts == 2 and g.raw == UNREADABLE
            assert g.parse_status == "empty" and g.points == []
    assert len(judge.calls) == 4 * (1 + 2)  # per answer: one n=2 request, one re-ask per round
    assert unit_complete(run, ctx, "grade", "stu", 2, 1)


def test_failed_grading_requests_are_failed_records(run: RunStore) -> None:
    ctx = make_ctx(use_n="never")
    generate(ctx, run, FakeBackend(student_reply))

    def down_for_one(messages: list[dict[str, str]], sample: str) -> Reply:
        if sample.startswith("grade:stu:r1:i3:g2"):
            return BackendError("connection failed after 9 attempts")
        return readable_grade(ctx, 2, points=0)

    result = grade(ctx, run, FakeBackend(down_for_one))
    assert result.failed == 1 and "g2 #3" in result.errors[0]
    (failed,) = [g for g in grades(run, ctx, 2) if g.status == "failed"]
    assert failed.index == 3 and failed.attempts == 0 and failed.raw is None
    assert failed.error == "connection failed after 9 attempts"
    assert all(g.status == "ok" and g.total == 0.0 for g in grades(run, ctx, 1))
    assert not unit_complete(run, ctx, "grade", "stu", 2, 1)
    # the next attempt asks only for the failed verdict
    judge = FakeBackend(lambda messages, sample: readable_grade(ctx, 2))
    assert grade(ctx, run, judge).failed == 0
    assert [c.sample for c in judge.calls] == ["grade:stu:r1:i3:g2:a0"]
    assert [g.status for g in grades(run, ctx, 2)] == ["ok"] * 4
    assert unit_complete(run, ctx, "grade", "stu", 2, 1)


def test_failed_generations_are_not_graded(run: RunStore) -> None:
    ctx = make_ctx()

    def no_answer_for_1(messages: list[dict[str, str]], sample: str) -> Reply:
        if ":i1:" in sample:
            return BackendError("HTTP 503 after 9 attempts")
        return student_reply(messages, sample)

    generate(ctx, run, FakeBackend(no_answer_for_1))
    judge = FakeBackend(lambda messages, sample: readable_grade(ctx, 2))
    assert grade(ctx, run, judge).records == 6
    assert [g.index for g in grades(run, ctx, 1)] == [0, 2, 3]
