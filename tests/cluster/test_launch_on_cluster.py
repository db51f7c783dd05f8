"""The kind-test scenario without Docker, on the real control plane: `skillmix launch -f
k8s/experiment.kind.yaml --cluster local --wait` as the launcher identity, in a namespace that
enforces Pod Security ``restricted``; the report equals the local executor's. Then `status`,
`logs` (one pod and ``--follow``) and `cancel` on the finished run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from skillmix.loading import load_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.store.uri import open_store
from tests.cluster.conftest import Cluster, wait_for
from tests.fixtures_s3 import S3_TEST_SECRET

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO_ROOT / "k8s" / "experiment.kind.yaml"


def test_launch_wait_runs_the_kind_experiment_and_matches_the_local_executor(
    cluster: Cluster, tmp_path: Path
) -> None:
    from skillmix.executors.local import evaluate

    run_id = resolve_context(load_experiment(EXPERIMENT)).run_id
    launched = cluster.skillmix(
        "launch",
        "-f",
        str(EXPERIMENT),
        "--cluster",
        "local",
        "--wait",
        "--timeout",
        "400",
        timeout=450,
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert re.search(rf"run id:\s*{run_id}", launched.stdout + launched.stderr, re.I)

    # every Job completed on the real Job controller, as the launcher saw it
    jobs = cluster.jobs(f"skillmix.io/run={run_id}")
    assert jobs and all(
        any(c.type == "Complete" and c.status == "True" for c in j.status.conditions or [])
        for j in jobs
    ), [(j.metadata.name, j.status.conditions) for j in jobs]
    indexed = [j for j in jobs if (j.spec.completions or 1) > 1]
    assert indexed, "the strong student's generation Jobs are Indexed (replicas: 2)"
    # the pods were scheduled by the real scheduler onto the CPU node (mock backend: no GPU)
    pods = cluster.pods(f"skillmix.io/run={run_id}")
    assert pods and {p.spec.node_name for p in pods} == {"cpu-node"}

    remote = json.loads(
        cluster.skillmix(
            "aggregate", f"{cluster.store}/{run_id}", "--format", "json", check=True
        ).stdout
    )
    local_store = tmp_path / "local"
    evaluate(load_experiment(EXPERIMENT), store_uri=str(local_store), progress=False)
    local = json.loads((local_store / run_id / "report" / "summary.json").read_text("utf-8"))
    k8s = json.loads(open_store(f"{cluster.store}/{run_id}").read_bytes("report/summary.json"))
    assert k8s["metrics"]["rows"] == local["metrics"]["rows"]
    assert [(r["student"], r["k"], r["n"]) for r in remote["rows"]] == [
        (s, k, 8) for s in ("strong", "weak") for k in (2, 3)
    ]

    # status: every Job complete, progress from the store
    status = cluster.skillmix("status", run_id, "--format", "json", check=True)
    doc = json.loads(status.stdout)
    assert doc["run_id"] == run_id
    assert {j["state"] for j in doc["jobs"]} == {"Complete"}

    table = " ".join(cluster.skillmix("status", run_id, check=True).stdout.split())
    assert f"run {run_id}: complete" in table, table
    assert "need attention" not in table  # by default: counts per phase and state only
    every = " ".join(cluster.skillmix("status", run_id, "--all", check=True).stdout.split())
    assert every.count("│ Complete │") == len(jobs), every  # one row per Job

    # logs of one phase through the API server's pod log endpoint (our kubelet serves them)
    sidecars = cluster.skillmix(
        "logs",
        run_id,
        "--phase",
        "generate",
        "--student",
        "weak",
        "--container",
        "model",
        "--tail",
        "1",
        check=True,
    )
    lines = sidecars.stdout.splitlines()
    assert len(lines) == 4 and all("gen-weak" in line and "/model" in line for line in lines)
    missing = cluster.skillmix("logs", run_id, "--phase", "aggregate", "--container", "nope")
    assert "nope" in missing.stderr
    logs = cluster.skillmix("logs", run_id, "--phase", "aggregate", check=True)
    assert "aggregate" in logs.stdout
    follow = cluster.skillmix("logs", run_id, "--phase", "grade", "--follow", timeout=60)
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.count("\n") >= 8
    bounded = cluster.skillmix(
        "logs", run_id, "--phase", "grade", "--follow", "--max-streams", "1", timeout=60
    )
    assert bounded.returncode == 0, bounded.stderr
    said = " ".join(bounded.stderr.split())
    assert "following 1 of 8 pods" in said and "left out:" in said  # 2 students x 2 k x 2 rounds
    assert len({line.split("]", 1)[0] for line in bounded.stdout.splitlines()}) == 1

    # launching a finished run creates nothing and prints its metrics
    again = cluster.skillmix("launch", "-f", str(EXPERIMENT), "--format", "json", check=True)
    assert "nothing to launch" in again.stderr
    assert json.loads(again.stdout)["finished_units"] == 8
    assert len(cluster.jobs(f"skillmix.io/run={run_id}")) == len(jobs)

    # cancel: Jobs and pods gone, the store keeps the run
    keys_before = sorted(open_store(f"{cluster.store}/{run_id}").list_keys(""))
    cancel = cluster.skillmix("cancel", run_id, check=True)
    assert str(len(jobs)) in cancel.stdout + cancel.stderr
    wait_for(lambda: not cluster.jobs(f"skillmix.io/run={run_id}"), "the Jobs to go")
    wait_for(lambda: not cluster.pods(f"skillmix.io/run={run_id}"), "the pods to go", 90)
    assert sorted(open_store(f"{cluster.store}/{run_id}").list_keys("")) == keys_before

    # the pods got the S3 key from the Secret; no log of any container shows it
    logs_dir = cluster.cp.workdir / "kubelet" / "pods"
    container_logs = [p for p in logs_dir.rglob("*.log") if f"_{run_id}-" in str(p)]
    assert len(container_logs) >= 2 * len(jobs)  # model + client, or wait + client, or more
    for path in container_logs:
        assert S3_TEST_SECRET not in path.read_text(errors="replace"), path
