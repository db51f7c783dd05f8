"""An experiment's reasoning tasks (``tasks:``) on the real control plane: `skillmix launch
--wait` creates one Job per (task, student), Indexed over the task's shards, beside the
SKILL-MIX Jobs; the pods read the problems frozen in the run folder (no dataset access), the
aggregation Job scores every response into report/tasks/ in SkyThought's layout, and the
numbers equal the local executor's run of the same file (sharded on the cluster, not locally:
the shards do not change the results)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skillmix.loading import load_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.store.uri import open_store
from tests.cluster.conftest import Cluster
from tests.integration.test_experiment_tasks import DATA
from tests.integration.test_experiment_tasks import experiment as local_experiment

pytestmark = pytest.mark.cluster


def experiment(tmp_path: Path) -> Path:
    """The integration test's experiment, math500 split over two pods."""
    tasks = [
        {"name": "math500", "n": 4, "shards": 2, "dataset_file": str(DATA / "math500.jsonl")},
        {"name": "gpqa_diamond", "n": 2, "dataset_file": str(DATA / "gpqa_diamond.jsonl")},
    ]
    return local_experiment(tmp_path, name="cluster-tasks", seed=5, combinations=2, tasks=tasks)


def numbers(summaries: dict[str, bytes]) -> dict[str, tuple[Any, Any, Any]]:
    """model_task -> (accuracy, pass@k, problems done) of each report/tasks/*/summary.json."""
    out = {}
    for data in summaries.values():
        doc = json.loads(data)
        config = doc["configuration"]
        done = doc["skillmix"]["problems_done"]
        out[f"{config['model']}_{config['task']}"] = (doc["accuracy"], doc["pass_at_k"], done)
    return out


def test_tasks_run_as_indexed_jobs_and_match_the_local_run(
    cluster: Cluster, tmp_path: Path
) -> None:
    from skillmix.executors.local import evaluate

    exp = experiment(tmp_path)
    run_id = resolve_context(load_experiment(exp)).run_id
    launched = cluster.skillmix(
        "launch", "-f", str(exp), "--cluster", "local", "--wait", "--timeout", "400", timeout=450
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr

    jobs = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/task")
    by_task = {}
    for job in jobs:
        labels = job.metadata.labels
        by_task[(labels["skillmix.io/task"], labels["skillmix.io/student"])] = job
        assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)
    assert sorted(by_task) == [
        (t, s) for t in ("gpqa_diamond", "math500") for s in ("strong", "weak")
    ]
    assert by_task[("math500", "strong")].spec.completions == 2  # shards: an Indexed Job
    assert (by_task[("gpqa_diamond", "weak")].spec.completions or 1) == 1

    status = json.loads(cluster.skillmix("status", run_id, "--format", "json", check=True).stdout)
    assert {j["state"] for j in status["jobs"]} == {"Complete"}

    store = open_store(f"{cluster.store}/{run_id}")
    for shard in ("s0of2", "s1of2"):
        assert store.exists(f"tasks/math500/strong/{shard}/_SUCCESS")
    assert store.exists("tasks/math500/problems.json")  # frozen by the launch
    assert store.exists("report/tasks.html") and store.exists("report/summary.json")
    remote = {
        key: store.read_bytes(key)
        for key in store.list_keys("report/tasks")
        if key.endswith("/summary.json")
    }

    local_store = tmp_path / "local"
    evaluate(load_experiment(exp), store_uri=str(local_store), progress=False)
    folder = local_store / run_id / "report" / "tasks"
    local = {str(p): p.read_bytes() for p in folder.glob("*/summary.json")}
    ours, theirs = numbers(remote), numbers(local)
    assert len(ours) == 4 and ours == theirs
    assert ours["mock-strong_math500"][0] > ours["mock-weak_math500"][0]
    assert ours["mock-strong_math500"][2] == 12  # every problem, over both shards
