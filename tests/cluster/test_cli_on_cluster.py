"""`skillmix launch`, `status` and `logs` against the real API server, as the launcher
identity (the RBAC of k8s/rbac-launcher.yaml decides, not a fake's idea of it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from skillmix.store.uri import open_store
from tests.cluster.conftest import Cluster, kubectl
from tests.cluster.test_failures_on_cluster import experiment
from tests.fixtures_s3 import S3_TEST_SECRET

pytestmark = pytest.mark.cluster


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_launch_validates_then_creates_the_run(cluster: Cluster, tmp_path: Path) -> None:
    path, run_id = experiment(
        tmp_path,
        students=[
            {"name": "weak", "backend": "mock", "model": "mock-weak", "replicas": 2},
        ],
    )
    result = cluster.skillmix("launch", "-f", str(path), "--format", "json", check=True)
    plan = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert plan["run_id"] == run_id and plan["attempt"] == 1
    jobs = cluster.jobs(f"skillmix.io/run={run_id}")
    assert sorted(j.metadata.labels["skillmix.io/phase"] for j in jobs) == [
        "aggregate",
        "coordinate",  # releases the grading and aggregation Jobs when their inputs exist
        "generate",
        "grade",
    ]
    [generation] = [j for j in jobs if j.metadata.labels["skillmix.io/phase"] == "generate"]
    assert generation.spec.completions == 2 and generation.spec.completion_mode == "Indexed"
    # retries per shard (the profile's backoff_limit 1), as the real API server keeps it
    assert generation.spec.backoff_limit_per_index == 1
    rules = generation.spec.pod_failure_policy.rules
    assert [r.action for r in rules if r.on_exit_codes] == ["FailJob", "FailIndex"]
    for job in jobs:
        assert job.spec.template.metadata.labels["skillmix.io/run"] == run_id
        assert S3_TEST_SECRET not in json.dumps(cluster.api().sanitize_for_serialization(job))
    # the profile's accounts (one per profile, shared by runs): made once, no run label
    for name in ("skillmix", "skillmix-coordinator"):
        account = cluster.core().read_namespaced_service_account(name, cluster.namespace)
        assert "skillmix.io/run" not in (account.metadata.labels or {})
        assert account.automount_service_account_token is False
    assert {j.spec.template.spec.service_account_name for j in jobs} == {
        "skillmix",
        "skillmix-coordinator",
    }
    # the store: run.json (sharded) and the audit record, with Secret names only
    run = open_store(f"{cluster.store}/{run_id}")
    assert json.loads(run.read_bytes("run.json"))["sharded"] is True
    record = run.read_bytes("launches/attempt-001.json").decode()
    assert json.loads(record)["values"]["store"]["credentialsSecret"] == "skillmix-s3"
    assert S3_TEST_SECRET not in record + result.stdout + result.stderr
    assert cluster.cp.launcher_token not in record + result.stdout + result.stderr
    # the Job's pods were admitted under Pod Security `restricted` and got going
    assert cluster.pods(f"skillmix.io/run={run_id}") or _eventually_pods(cluster, run_id)


def _eventually_pods(cluster: Cluster, run_id: str) -> bool:
    from tests.cluster.conftest import wait_for

    return bool(wait_for(lambda: cluster.pods(f"skillmix.io/run={run_id}"), "pods", 30))


def test_launch_dry_run_creates_and_writes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    path, run_id = experiment(tmp_path)
    result = cluster.skillmix(
        "launch", "-f", str(path), "--dry-run", "--format", "json", check=True
    )
    assert json.loads(result.stdout)["run_id"] == run_id
    assert "dry run" in result.stderr
    assert cluster.jobs() == []
    assert open_store(cluster.store).list_keys("") == []


def test_launch_without_the_launcher_role_names_the_rbac_file(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A namespace where the launcher has no RoleBinding: the server-side dry run is refused
    before anything is created or written."""
    other = f"{cluster.namespace}-norbac"
    kubectl(cluster.cp, "create", "namespace", other)
    try:
        doc = yaml.safe_load(cluster.profile_file.read_text())
        doc["clusters"]["local"]["namespace"] = other
        cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        path, _run_id = experiment(tmp_path)
        result = cluster.skillmix("launch", "-f", str(path))
        assert result.returncode == 2, result.stderr
        line = error_line(result.stderr)
        assert f"forbidden in namespace {other} (403" in line
        assert "k8s/rbac-launcher.yaml" in line
        assert open_store(cluster.store).list_keys("") == []
        jobs = kubectl(cluster.cp, "-n", other, "get", "jobs", "-o", "name")
        assert jobs.strip() == ""
    finally:
        kubectl(cluster.cp, "delete", "namespace", other, "--wait=false")


def test_launch_into_a_missing_namespace_is_forbidden_for_the_launcher(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A real API server authorizes before it looks: the launcher, who has rights in one
    namespace only, gets 403 (not 404) for a namespace that does not exist."""
    doc = yaml.safe_load(cluster.profile_file.read_text())
    doc["clusters"]["local"]["namespace"] = "no-such-namespace"
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    path, _run_id = experiment(tmp_path)
    result = cluster.skillmix("launch", "-f", str(path))
    assert result.returncode == 2
    assert "forbidden in namespace no-such-namespace" in error_line(result.stderr)


def test_status_and_logs_of_an_unknown_run(cluster: Cluster) -> None:
    status = cluster.skillmix("status", "never-launched-00000000", "--format", "json", check=True)
    doc = json.loads(status.stdout)
    assert doc["state"] == "no jobs" and doc["jobs"] == []
    logs = cluster.skillmix("logs", "never-launched-00000000")
    assert logs.returncode == 2
    assert "no pods of run never-launched-00000000 match" in error_line(logs.stderr)


def test_an_invalid_token_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    config = yaml.safe_load(cluster.cp.kubeconfig.read_text())
    for user in config["users"]:
        user["user"]["token"] = "not-a-valid-token"
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(yaml.safe_dump(config))
    doc = yaml.safe_load(cluster.profile_file.read_text())
    doc["clusters"]["local"]["kubeconfig"] = str(bad)
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = cluster.skillmix("status", "some-run-00000000")
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert "401" in line and "not-a-valid-token" not in result.stderr


def test_relaunch_resumes_only_unfinished_units_with_new_job_names(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A finished attempt 1, then two units' manifests gone (as if they had not finished):
    attempt 2 creates Jobs for those units only (plus aggregation and its coordinator), named
    `-a2`, reuses the ServiceAccount, and completes the run."""
    path, run_id = experiment(tmp_path, ks=[2, 3])
    cluster.skillmix(
        "launch", "-f", str(path), "--wait", "--timeout", "300", timeout=330, check=True
    )
    first = {j.metadata.name for j in cluster.jobs(f"skillmix.io/run={run_id}")}
    assert len(first) == 6 and all(name.endswith("-a1") for name in first)
    run = open_store(f"{cluster.store}/{run_id}")
    run.delete_prefix("generations/weak/k3/r1/_SUCCESS")  # k=3 must be generated and graded again
    run.delete_prefix("grades/mock-grader/weak/k3/r1/g1/_SUCCESS")

    second = cluster.skillmix(
        "launch", "-f", str(path), "--wait", "--timeout", "300", timeout=330, check=True
    )
    flat = " ".join(second.stdout.split())
    assert f"run {run_id}: attempt 2 on local/{cluster.namespace}" in flat
    assert "1/2 units already finished" in flat
    new = [j for j in cluster.jobs(f"skillmix.io/run={run_id}") if j.metadata.name not in first]
    assert sorted(
        (j.metadata.labels["skillmix.io/phase"], j.metadata.labels.get("skillmix.io/k", "-"))
        for j in new
    ) == [("aggregate", "-"), ("coordinate", "-"), ("generate", "3"), ("grade", "3")]
    for job in new:
        assert job.metadata.name.endswith("-a2")
        assert job.metadata.labels["skillmix.io/attempt"] == "2"
    record = json.loads(run.read_bytes("launches/attempt-002.json"))
    assert record["attempt"] == 2 and record["plan"]["finished_units"] == 1
    assert run.exists("generations/weak/k3/r1/_SUCCESS")
    assert run.exists("report/summary.json")


def test_launch_wait_ends_when_the_run_is_cancelled(cluster: Cluster, tmp_path: Path) -> None:
    """`skillmix cancel` from another terminal while `launch --wait` watches: the DELETED
    events end the wait with exit 1."""
    import time

    from tests.cluster.conftest import wait_for

    path, run_id = experiment(tmp_path, combinations=400)
    waiting = cluster.popen("launch", "-f", str(path), "--wait", "--timeout", "300")
    try:
        wait_for(lambda: cluster.jobs(f"skillmix.io/run={run_id}"), "the Jobs", 60)
        started = time.monotonic()
        cluster.skillmix("cancel", run_id, check=True)
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert time.monotonic() - started < 30
    assert waiting.returncode == 1, out + err
    assert "no Jobs of this run exist" in error_line(err)


def test_launch_wait_times_out_and_the_run_goes_on(cluster: Cluster, tmp_path: Path) -> None:
    import time

    path, run_id = experiment(tmp_path)
    started = time.monotonic()
    result = cluster.skillmix("launch", "-f", str(path), "--wait", "--timeout", "2")
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    line = error_line(result.stderr)
    assert "timed out after 2s" in line and run_id in line
    assert len(cluster.jobs(f"skillmix.io/run={run_id}")) == 4  # it keeps running


def test_logs_keep_json_lines_verbatim(cluster: Cluster) -> None:
    """A container that logs one JSON line (structured logging) comes out unchanged through
    the API server's log endpoint (the client would otherwise "deserialize" it)."""
    from tests.cluster.conftest import IMAGE, wait_for

    run_id = "jsonlog-00000000"
    line = '{"event": "aggregated", "rows": 4, "ok": true}'
    labels = {"skillmix.io/run": run_id, "skillmix.io/phase": "aggregate"}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{run_id}-agg-a1", "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "client",
                            "image": IMAGE,
                            "command": ["python3", "-c", f"print({line!r})"],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(job))
    wait_for(
        lambda: any(
            p.status.phase == "Succeeded" for p in cluster.pods(f"skillmix.io/run={run_id}")
        ),
        "the pod to finish",
        60,
    )
    [pod] = cluster.pods(f"skillmix.io/run={run_id}")
    result = cluster.skillmix("logs", run_id, "--phase", "aggregate", check=True)
    assert result.stdout.splitlines() == [f"[{pod.metadata.name}/client] {line}"]
