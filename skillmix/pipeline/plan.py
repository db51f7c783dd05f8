"""An experiment as a list of tasks: the one plan both executors run."""

from __future__ import annotations

from dataclasses import dataclass

from skillmix.config import Experiment


@dataclass(frozen=True)
class GenerateTask:
    student: str
    k: int
    round: int
    shard: int = 0
    shards: int = 1

    @property
    def phase(self) -> str:
        return "generate"

    def cli_args(self) -> list[str]:
        args = [
            "generate",
            "--student",
            self.student,
            "--k",
            str(self.k),
            "--round",
            str(self.round),
        ]
        return args + (["--shards", str(self.shards)] if self.shards > 1 else [])


@dataclass(frozen=True)
class GradeTask:
    student: str
    k: int
    round: int

    @property
    def phase(self) -> str:
        return "grade"

    def cli_args(self) -> list[str]:
        return ["grade", "--student", self.student, "--k", str(self.k), "--round", str(self.round)]


@dataclass(frozen=True)
class AggregateTask:
    @property
    def phase(self) -> str:
        return "aggregate"

    def cli_args(self) -> list[str]:
        return ["aggregate"]


@dataclass(frozen=True)
class Plan:
    generate: tuple[GenerateTask, ...]
    grade: tuple[GradeTask, ...]
    aggregate: AggregateTask

    @property
    def units(self) -> list[tuple[str, int, int]]:
        return [(t.student, t.k, t.round) for t in self.grade]


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
