"""An experiment's reasoning tasks (``tasks:``) as units of its run folder.

A task unit is (task, student, shard): a folder of parts and a ``_SUCCESS`` manifest, written
and resumed exactly like a generation unit (:mod:`skillmix.pipeline.units`), so a crash loses
at most an unflushed part and a redo asks only what failed. The problems are frozen in the run
folder when first asked (``tasks/{task}/problems.json``), so every shard, every resume and
the aggregation see the same rows whatever the Hub serves later. Responses are stored
unscored; the aggregation scores them (a scorer fix needs no new request) and writes them in
SkyThought's layout (:mod:`skillmix.tasks.results`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from skillmix.backends.base import BackendError, ChatBackend
from skillmix.config import Experiment, ModelSpec
from skillmix.pipeline.scoring import Verdict, score_responses
from skillmix.pipeline.units import (
    NullProgress,
    ProgressSink,
    UnitResult,
    ask_unit,
    final_by_index,
)
from skillmix.records import TaskResponseRecord
from skillmix.store.base import KeyExists, KeyNotFound
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.task_spec import TaskSpec
from skillmix.tasks.config import TaskConfig, resolve_task
from skillmix.tasks.dataset import load_problems
from skillmix.tasks.handlers import Problem, conversation, prepare
from skillmix.tasks.results import json_safe, results_entry
from skillmix.vocab import Sharded

ANSWER_SECONDS = 5.0  # each answer's scoring time limit (as `skillmix evaluate --task`)


@dataclass(frozen=True)
class TaskUnit(Sharded):
    """One student's share (``shard`` of ``shards``) of one task's problems, in their frozen
    order."""

    task: str
    student: str

    @property
    def prefix(self) -> str:
        return RunLayout.task_prefix(self.task, self.student, self.shard, self.shards)


def task_units(experiment: Experiment, *, sharded: bool = False) -> list[TaskUnit]:
    """Every (task, student, shard) of the experiment; unsharded locally."""
    return [
        TaskUnit(task.name, student.name, shard=shard, shards=shards)
        for task in experiment.tasks
        for student in experiment.students
        for shards in [task.shards if sharded else 1]
        for shard in range(shards)
    ]


@dataclass(frozen=True)
class TaskProblems:
    """A task's problems as frozen in the run folder, with where they came from."""

    spec: TaskSpec
    config: TaskConfig
    source: str
    revision: str
    problems: list[Problem]


def frozen_problems(run: RunStore, spec: TaskSpec, seed: int) -> TaskProblems:
    """The task's problems: read from the run folder, or loaded (Hub or ``dataset_file``) and
    frozen there with a create-only write (a second writer reads the first one's rows)."""
    config = resolve_task(spec.name, spec.config)
    key = RunLayout.task_problems(spec.name)
    try:
        data = json.loads(run.store.read_bytes(key))
    except KeyNotFound:
        loaded = load_problems(config, dataset_file=spec.dataset_file, revision=spec.revision)
        data = {
            "task": spec.name,
            "source": loaded.source,
            "revision": loaded.revision,
            "rows": [json_safe(row) for row in loaded.rows],
        }
        try:
            run.store.write_bytes(key, json.dumps(data, ensure_ascii=False).encode())
        except KeyExists:
            data = json.loads(run.store.read_bytes(key))
    problems = [prepare(config, row, seed) for row in data["rows"]]
    return TaskProblems(spec, config, str(data["source"]), str(data["revision"]), problems)


def sample_name(task: str, index: str) -> str:
    """Which draw a task request is (the cache key's and the vLLM seed's name for it); the
    same as ``skillmix evaluate --task``'s, so the two share cached answers."""
    return f"{task}/{index}"


async def ask_problem(
    client: ChatBackend, unit: TaskUnit, spec: ModelSpec, n: int, problem: Problem
) -> TaskResponseRecord:
    """One request for ``n`` responses; a failure that is not fatal is a failed record."""
    messages = conversation(problem, system_prompt=spec.system_prompt, assistant_prefill=None)
    base = {"task": unit.task, "student": unit.student, "model": spec.model, "index": problem.index}
    try:
        result = await client.chat(messages, n=n, sample=sample_name(unit.task, problem.index))
    except BackendError as exc:
        if exc.fatal:
            raise
        return TaskResponseRecord(**base, status="failed", error=str(exc))
    return TaskResponseRecord(
        **base,
        responses=list(result.texts),
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )


async def run_task_unit(
    run: RunStore,
    client: ChatBackend,
    unit: TaskUnit,
    problems: TaskProblems,
    spec: ModelSpec,
    *,
    attempt: int = 0,
    progress: ProgressSink | None = None,
) -> UnitResult:
    """Ask this shard's problems: skip the unit when finished, else ask what it still lacks
    (a redo retries only its failed records) and write its manifest."""
    return await ask_unit(
        run,
        unit.prefix,
        TaskResponseRecord,
        [p for i, p in enumerate(problems.problems) if unit.owns(i)],
        index_of=lambda problem: problem.index,
        ask=lambda problem: ask_problem(client, unit, spec, problems.spec.n, problem),
        label=unit.task,
        attempt=attempt,
        progress=progress or NullProgress(),
    )


def _by_index(record: TaskResponseRecord) -> str:
    return record.index


def task_unit_complete(run: RunStore, unit: TaskUnit) -> bool:
    """Finished with nothing left to retry: what a resume skips."""
    manifest = run.manifest(unit.prefix)
    return manifest is not None and manifest.failed == 0


def scored_results(
    run: RunStore,
    units: list[TaskUnit],
    problems: TaskProblems,
    spec: ModelSpec,
    *,
    answer_seconds: float = ANSWER_SECONDS,
) -> dict[str, dict[str, Any]] | None:
    """One student's results.json entries of a task, every response scored (in worker
    processes, each answer under ``answer_seconds``); None while a shard is unfinished.
    Problems whose request failed for good are left out (the summary counts them)."""
    records: list[TaskResponseRecord] = []
    for unit in units:
        part = run.finished_records(unit.prefix, TaskResponseRecord)
        if part is None:
            return None
        records.extend(part)
    final = [r for r in final_by_index(records, key=_by_index).values() if r.status == "ok"]
    by_index = {p.index: p for p in problems.problems}
    answered = [(by_index[r.index], r) for r in final if r.index in by_index]
    items = [(p.kind, text, p.reference) for p, r in answered for text in r.responses]
    verdicts = iter(score_responses(items, answer_seconds))
    results: dict[str, dict[str, Any]] = {}
    for problem, record in answered:
        messages = conversation(problem, system_prompt=spec.system_prompt, assistant_prefill=None)
        mine: list[Verdict | None] = [next(verdicts) for _ in record.responses]
        results[problem.index] = results_entry(problem, messages, record.responses, mine, record)
    return results


def relaunched_task_units(run: RunStore, attempt: int) -> set[tuple[str, str]]:
    """(task, student) pairs that launch ``attempt`` (re)does: its ``taskGeneration`` values."""
    if attempt <= 0:
        return set()
    record = run.read_launch_record(attempt)
    entries = record.values.as_dict().get("taskGeneration", []) if record is not None else []
    return {(str(e["task"]), str(e["student"])) for e in entries}


def pending_task_units(
    run: RunStore, experiment: Experiment, *, sharded: bool, attempt: int = 0
) -> list[TaskUnit]:
    """Task units without a manifest; those launch ``attempt`` redoes need one from it (an
    older one, written before the relaunch, would be stale)."""
    again = relaunched_task_units(run, attempt)
    pending = []
    for unit in task_units(experiment, sharded=sharded):
        manifest = run.manifest(unit.prefix)
        redone = (unit.task, unit.student) in again
        if manifest is None or (redone and manifest.attempt < attempt):
            pending.append(unit)
    return pending
