"""An experiment's reasoning tasks (``tasks:``), run by the local executor beside SKILL-MIX:
each student asked every problem of every task into the run folder
(:mod:`skillmix.pipeline.task_units`), then, at aggregation, every response scored and
written as SkyThought's layout under ``report/tasks/`` with the tasks side by side in
``report/tasks.html`` (and ``tasks.md``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from skillmix.backends.client import ChatClient
from skillmix.backends.factory import make_client
from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_reasoning import problem_key
from skillmix.backends.mock_server import MockServer
from skillmix.config import StudentSpec
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.task_units import (
    TaskProblems,
    TaskUnit,
    frozen_problems,
    run_task_unit,
    scored_results,
    task_units,
)
from skillmix.pipeline.units import ProgressSink, UnitResult, gather_or_cancel
from skillmix.report.html_tasks import tasks_html
from skillmix.report.task_board import TaskRunData, boards_markdown, task_boards
from skillmix.store.base import ArtifactStore
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.tasks.results import summarize, task_configuration
from skillmix.tasks.rundir import RESULTS_JSON, SUMMARY_JSON, run_dir_name


def _answer_keyed(spec: StudentSpec) -> bool:
    """A student the built-in mock serves: for a task, a mock given the answer key."""
    return spec.backend == "mock" and not spec.base_url


@contextmanager
def answer_mock(problems: TaskProblems, students: list[StudentSpec], seed: int) -> Iterator[str]:
    """The built-in mock with the task's answer key, so a mock student answers right at its
    quality (and the numbers can be checked); "" when no student needs it."""
    mocks = [s for s in students if _answer_keyed(s)]
    if not mocks:
        yield ""
        return
    answers = {problem_key(p.user): p.reference for p in problems.problems}
    models = {s.model: float(s.quality or 0.0) for s in mocks}
    server = MockServer(MockServerConfig(models=models, seed=seed, answers=answers))
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


async def run_tasks(
    ctx: RunContext,
    root: ArtifactStore,
    run: RunStore,
    students: list[StudentSpec],
    clients: dict[str, ChatClient],
    *,
    use_cache: bool,
    progress: ProgressSink,
) -> list[UnitResult]:
    """Every task unit of ``students``, a task at a time (its problems frozen first); API and
    vLLM students use their run client (its budget), mock students a mock with the key."""
    results: list[UnitResult] = []
    seed = ctx.experiment.seed
    for task in ctx.experiment.tasks:
        problems = await asyncio.to_thread(frozen_problems, run, task, seed)
        with answer_mock(problems, students, seed) as mock_url:
            own = {
                s.name: make_client(s, root, mock_url=mock_url, seed=seed, use_cache=use_cache)
                for s in students
                if _answer_keyed(s)
            }
            units = [TaskUnit(task.name, s.name) for s in students]
            by_name = {s.name: s for s in students}
            try:
                done = await asyncio.gather(
                    *(
                        run_task_unit(
                            run,
                            own.get(u.student) or clients[u.student],
                            u,
                            problems,
                            by_name[u.student],
                            progress=progress,
                        )
                        for u in units
                    )
                )
            finally:
                await gather_or_cancel([c.close() for c in own.values()])
            results.extend(done)
    return results


@dataclass
class TaskReport:
    """What the aggregation of an experiment's tasks wrote."""

    runs: list[TaskRunData]
    files: list[str]  # keys under the run folder
    unfinished: list[str]  # "task/student" still without every shard's manifest


def aggregate_tasks(ctx: RunContext, run: RunStore, *, sharded: bool = False) -> TaskReport:
    """Score every finished (task, student) and write its results.json and summary.json in
    SkyThought's layout under ``report/tasks/``, then the boards (tasks.html, tasks.md)."""
    report = TaskReport([], [], [])
    experiment = ctx.experiment
    units = task_units(experiment, sharded=sharded)
    for task in experiment.tasks:
        problems = frozen_problems(run, task, experiment.seed)
        for student in experiment.students:
            mine = [u for u in units if u.task == task.name and u.student == student.name]
            data = _task_run(run, ctx, problems, student, mine, report)
            if data is None:
                report.unfinished.append(f"{task.name}/{student.name}")
            else:
                report.runs.append(data)
    if report.runs:
        boards = task_boards(report.runs)
        for name, text in (
            (RunLayout.TASKS_HTML, tasks_html(boards, report.runs)),
            ("tasks.md", boards_markdown(boards)),
        ):
            report.files.append(run.write_report_file(name, text.encode()))
    return report


def _task_run(
    run: RunStore,
    ctx: RunContext,
    problems: TaskProblems,
    student: StudentSpec,
    units: list[TaskUnit],
    report: TaskReport,
) -> TaskRunData | None:
    results = scored_results(run, units, problems, student)
    if results is None:
        return None
    task = problems.spec
    config = task_configuration(
        task.name,
        student,
        n=task.n,
        seed=ctx.experiment.seed,
        dataset=problems.source,
        revision=problems.revision,
        system_prompt=student.system_prompt,
    )
    metrics, summary = summarize(
        results,
        {**config, "run_id": ctx.run_id},
        model=student.model,
        task=task.name,
        seed=ctx.experiment.seed,
        planned=len(problems.problems),
    )
    folder = f"{RunLayout.TASKS}/{run_dir_name(student.model, task.name, config)}"
    for name, data in ((RESULTS_JSON, results), (SUMMARY_JSON, summary)):
        report.files.append(run.write_report_file(f"{folder}/{name}", _json(data)))
    tokens = float(summary["avg_completion_tokens"])
    where = f"{run.uri.rstrip('/')}/{RunLayout.REPORT}/{folder}"
    return TaskRunData(where, metrics, tokens, results)


def _json(data: Any) -> bytes:
    """As ``tasks.rundir.write_json`` writes it (SkyThought's indent)."""
    return (json.dumps(data, indent=4, ensure_ascii=False) + "\n").encode()
