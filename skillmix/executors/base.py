"""The interface every executor of an experiment offers: ``run(experiment)``.

The executors are peers over one plan (``pipeline.plan``), one store layout and one set of
tasks: :class:`~skillmix.executors.local.LocalExecutor` runs the tasks in this process,
:class:`~skillmix.executors.kubernetes.KubernetesExecutor` submits them as Jobs, whose pods
run them through :mod:`skillmix.executors.pod`. Where they run, and what they return (a
finished run's outcome, a launch), is theirs; the CLI only builds one and calls ``run``."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Protocol, TypeVar, runtime_checkable

from skillmix.config import Experiment

OutcomeT_co = TypeVar("OutcomeT_co", covariant=True)


@runtime_checkable
class Executor(Protocol[OutcomeT_co]):
    """Runs an experiment's plan somewhere (``name``: local, kubernetes)."""

    name: str

    def run(self, experiment: Experiment) -> OutcomeT_co: ...


def options_of(executor: Any) -> dict[str, Any]:
    """An executor dataclass's fields but its name: the options of the function it runs."""
    return {f.name: getattr(executor, f.name) for f in fields(executor) if f.name != "name"}
