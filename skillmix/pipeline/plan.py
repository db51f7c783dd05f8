"""An experiment as a list of tasks: the one plan both executors run.

Each task also knows its container's command on Kubernetes: the ``skillmix task ...`` argument
list (``container_args``, and ``wait_args`` for the init container that waits for the phase
before it). The chart only places these lists; ``skillmix.cli.task`` parses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from skillmix.config import Experiment
from skillmix.vocab import Phase, Sharded, Unit

GRADE_WAIT_INTERVAL = 10  # seconds between checks of a grading pod's wait for its generation
AGGREGATE_WAIT_INTERVAL = 15  # seconds between checks of the aggregation pod's wait


def unit_args(unit: Unit) -> list[str]:
    """``--student S --k K --round R``: how ``skillmix task`` names one unit."""
    return ["--student", unit.student, "--k", str(unit.k), "--round", str(unit.round)]


def wait_args(
    run_uri: str,
    phase: Phase,
    *,
    unit: Unit | None = None,
    timeout: int,
    interval: int,
    attempt: int,
) -> list[str]:
    """``skillmix task wait`` until ``phase``'s manifests exist (of ``unit``, else of all units)."""
    return [
        *("task", "wait", "--run", run_uri, "--phase", phase),
        *(unit_args(unit) if unit is not None else []),
        *("--timeout", str(timeout), "--interval", str(interval), "--attempt", str(attempt)),
    ]


class _GenerationJob:
    """What the generation tasks share (a unit, a student's units, a reasoning task): the
    phase, and a container command that ends with the attempt, endpoint and sharding flags."""

    shards: int
    phase: ClassVar[Phase] = "generate"

    def _command(self, run_uri: str) -> list[str]:
        raise NotImplementedError

    def container_args(
        self, run_uri: str, *, attempt: int, base_url: str = "", own_server: bool = False
    ) -> list[str]:
        """The container's ``skillmix task ...`` arguments. With shards, one Indexed Job runs
        every shard: each pod takes its index from ``JOB_COMPLETION_INDEX`` (so there is no
        ``--shard``). The shards share the student's budget (the task divides it by
        ``--shards``) unless each pod has its ``own_server`` (a model sidecar)."""
        args = [*self._command(run_uri), "--attempt", str(attempt)]
        if base_url:
            args += ["--base-url", base_url]
        if self.shards > 1:
            args += ["--shards", str(self.shards)]
            if own_server:
                args += ["--budget-share", "1"]
        return args


@dataclass(frozen=True)
class GenerateTask(_GenerationJob, Sharded):
    """One unit (student, k, round), or one shard of it."""

    student: str
    k: int
    round: int

    @property
    def unit(self) -> Unit:
        return Unit(self.student, self.k, self.round)

    def _command(self, run_uri: str) -> list[str]:
        return ["task", "generate", "--run", run_uri, *unit_args(self.unit)]


def units_arg(units: Sequence[Unit]) -> str:
    """``2:1,3:1``: the (k, round) pairs of one student's units, as ``--units`` takes them."""
    return ",".join(f"{u.k}:{u.round}" for u in units)


@dataclass(frozen=True)
class ModelGenerateTask(_GenerationJob):
    """Serving ``per-model``: every unit of one student in one Job, its server loaded once.
    Each shard (pod of the Indexed Job) runs its share of every unit, one unit after another,
    and writes each unit's manifest as soon as it is done (its grading can start then). The
    store sees exactly what the per-unit tasks write."""

    student: str
    units: tuple[Unit, ...]
    shards: int = 1

    def _command(self, run_uri: str) -> list[str]:
        """``skillmix task generate --student S --units K:R,...``."""
        return [
            *("task", "generate", "--run", run_uri),
            *("--student", self.student, "--units", units_arg(self.units)),
        ]


@dataclass(frozen=True)
class TaskGenerateTask(_GenerationJob):
    """A reasoning task of the experiment for one student: one Job whose ``shards`` pods
    (an Indexed Job) each ask their share of the problems (``skillmix task reason``)."""

    task: str
    student: str
    shards: int = 1

    def _command(self, run_uri: str) -> list[str]:
        """``skillmix task reason --task T --student S``."""
        return ["task", "reason", "--run", run_uri, "--task", self.task, "--student", self.student]


def reasoning_jobs(experiment: Experiment) -> list[TaskGenerateTask]:
    """One Job per (task, student) of the experiment's ``tasks:``, sharded as each says."""
    return [
        TaskGenerateTask(task.name, student.name, task.shards)
        for task in experiment.tasks
        for student in experiment.students
    ]


@dataclass(frozen=True)
class GradeTask:
    student: str
    k: int
    round: int

    @property
    def phase(self) -> Phase:
        return "grade"

    @property
    def unit(self) -> Unit:
        return Unit(self.student, self.k, self.round)

    def container_args(
        self, run_uri: str, *, attempt: int, budget_share: int, base_url: str = ""
    ) -> list[str]:
        """The grading container's ``skillmix task grade`` arguments."""
        args = ["task", "grade", "--run", run_uri, *unit_args(self.unit)]
        args += ["--budget-share", str(budget_share), "--attempt", str(attempt)]
        if base_url:
            args += ["--base-url", base_url]
        return args

    def wait_args(self, run_uri: str, *, attempt: int, timeout: int) -> list[str]:
        """The grading pod's init container: wait for this unit's generation manifest."""
        return wait_args(
            run_uri,
            "generate",
            unit=self.unit,
            timeout=timeout,
            interval=GRADE_WAIT_INTERVAL,
            attempt=attempt,
        )


@dataclass(frozen=True)
class AggregateTask:
    @property
    def phase(self) -> Phase:
        return "aggregate"

    def container_args(self, run_uri: str) -> list[str]:
        """The aggregation container's ``skillmix task aggregate`` arguments."""
        return ["task", "aggregate", "--run", run_uri]

    def wait_args(self, run_uri: str, *, attempt: int, timeout: int) -> list[str]:
        """The aggregation pod's init container: wait for every grading manifest."""
        return wait_args(
            run_uri, "grade", timeout=timeout, interval=AGGREGATE_WAIT_INTERVAL, attempt=attempt
        )


@dataclass(frozen=True)
class Plan:
    generate: tuple[GenerateTask, ...]
    grade: tuple[GradeTask, ...]
    aggregate: AggregateTask

    @property
    def units(self) -> list[Unit]:
        return [t.unit for t in self.grade]


def plan_tasks(experiment: Experiment, *, sharded: bool = False) -> Plan:
    """One generation task per (student, k, round) and one grading task per generation unit.
    With ``sharded`` (Kubernetes), a student's ``replicas`` split its generation tasks."""
    generate, grade = [], []
    for student in experiment.students:
        shards = student.replicas if sharded else 1
        for k in experiment.ks:
            for g in range(1, experiment.generation_rounds + 1):
                generate.append(GenerateTask(student.name, k, g, shards=shards))
                grade.append(GradeTask(student.name, k, g))
    return Plan(tuple(generate), tuple(grade), AggregateTask())


def generation_jobs(
    experiment: Experiment, units: Sequence[Unit]
) -> list[GenerateTask | ModelGenerateTask]:
    """The generation Jobs of ``units`` (Kubernetes, sharded): one per unit for students served
    ``per-unit``, one per student (its units in plan order) for those served ``per-model``."""
    out: list[GenerateTask | ModelGenerateTask] = []
    by_student: dict[str, list[Unit]] = {}
    for unit in units:
        by_student.setdefault(unit.student, []).append(unit)
    for student in experiment.students:
        todo = by_student.get(student.name, [])
        if not todo:
            continue
        if experiment.serving_of(student.name) == "per-model":
            out.append(ModelGenerateTask(student.name, tuple(todo), shards=student.replicas))
        else:
            out.extend(GenerateTask(*u, shards=student.replicas) for u in todo)
    return out
