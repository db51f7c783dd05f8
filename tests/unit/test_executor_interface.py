"""The executors are peers behind one interface: each is an ``Executor`` (``run(experiment)``)
whose fields are exactly the options of the function it runs, and the CLI goes through them."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from skillmix.executors.base import Executor
from skillmix.executors.kubernetes import KubernetesExecutor, launch
from skillmix.executors.local import LocalExecutor, evaluate

ROOT = Path(__file__).resolve().parents[2] / "skillmix"


def options(fn: object, skip: int) -> set[str]:
    params = list(inspect.signature(fn).parameters)  # type: ignore[arg-type]
    return set(params[skip:])


def fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {"name"}


def test_local_and_kubernetes_are_executors_with_every_option() -> None:
    local = LocalExecutor()
    kube = KubernetesExecutor(
        None, source="e.yaml", dry_run=True, replace=False,
        show_plan=lambda *_: None, say=print, warn=print,
    )  # fmt: skip
    assert isinstance(local, Executor) and isinstance(kube, Executor)
    assert {local.name, kube.name} == {"local", "kubernetes"}
    assert fields(LocalExecutor) == options(evaluate, 1)
    assert fields(KubernetesExecutor) == options(launch, 1)


def test_the_cli_runs_experiments_through_the_executors() -> None:
    run_cli = (ROOT / "cli" / "run.py").read_text()
    cluster_cli = (ROOT / "cli" / "cluster.py").read_text()
    assert "LocalExecutor(" in run_cli and "evaluate(\n" not in run_cli
    assert "KubernetesExecutor(" in cluster_cli and " launch(" not in cluster_cli
