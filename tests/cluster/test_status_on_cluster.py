"""`status` and `launch --wait` say why a run's pods make no progress, from the pods and events
the real scheduler, Job controller and (process) kubelet produce; the pre-flight rejects what
admission would reject before anything exists; relaunch, `--replace`, resumable creation and
the fallback to the store once the Jobs are gone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.store.runs import RunStore, generation_prefix
from skillmix.store.uri import open_store
from tests.cluster.conftest import Cluster, wait_for
from tests.cluster.test_failures_on_cluster import VLLM_STUDENT, _gpu_profile, experiment

pytestmark = pytest.mark.cluster


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


ROOT = {"runAsNonRoot": False, "runAsUser": 0}  # an image that needs root (README: baseline)


def status(cluster: Cluster, run_id: str) -> dict[str, Any]:
    result = cluster.skillmix("status", run_id, "--format", "json", check=True)
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def reasons(doc: dict[str, Any]) -> str:
    return " | ".join(
        f"{j['name']}: {r}" for j in doc["attention"] for r in [j["reason"], *j["reasons"]] if r
    )


def wait_for_reason(cluster: Cluster, run_id: str, *needles: str, timeout: float = 90) -> str:
    """Polls `status` until one Job's reasons name every needle; returns all reasons."""

    seen = [""]

    def found() -> str | None:
        seen[0] = reasons(status(cluster, run_id))
        return seen[0] if all(n in seen[0] for n in needles) else None

    try:
        text: str = wait_for(found, f"status to name {needles}", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last reasons: {seen[0]!r}") from None
    return text


def edit_profile(cluster: Cluster, **changes: Any) -> None:
    doc = yaml.safe_load(cluster.profile_file.read_text())
    profile = doc["clusters"]["local"]
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(profile.get(key), dict):
            profile[key].update(value)
        else:
            profile[key] = value
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))


# ---------------------------------------------------------------------------------------------
# why pods are stuck
# ---------------------------------------------------------------------------------------------


def test_status_names_the_schedulers_verdict_and_launch_prints_pod_security_warnings(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A GPU pod without the toleration: `status` shows the scheduler's message (the
    untolerated nvidia.com/gpu taint). The namespace warns at `restricted` (it enforces
    `baseline`), and the vLLM container is set to run as root (the default passes
    `restricted`): the API server's Warning headers on the Job creations are printed, once."""
    _gpu_profile(cluster, tolerate=False)
    edit_profile(cluster, vllm_security_context=ROOT)
    cluster.kubectl(
        *("label", "namespace", cluster.namespace, "--overwrite"),
        "pod-security.kubernetes.io/enforce=baseline",
        "pod-security.kubernetes.io/warn=restricted",
    )
    path, run_id = experiment(tmp_path, students=[VLLM_STUDENT])
    launched = cluster.skillmix("launch", "-f", str(path), check=True)
    warnings = [line for line in launched.stderr.splitlines() if "Kubernetes API warning:" in line]
    assert any('would violate PodSecurity "restricted:latest"' in w for w in warnings), (
        launched.stderr
    )
    assert len(warnings) == len(set(warnings))
    text = wait_for_reason(cluster, run_id, "Unschedulable", "untolerated taint")
    assert "nvidia.com/gpu" in text and "-gen-" in text
    table = cluster.skillmix("status", run_id, check=True)
    flat = " ".join(table.stdout.split())
    assert "Jobs that need attention" in flat and "Unschedulable" in flat
    assert "generate" in flat and "grade" in flat  # the counts per phase


def test_status_names_an_image_pull_error(cluster: Cluster, tmp_path: Path) -> None:
    edit_profile(cluster, image="registry.invalid/someone/else:1.0")
    path, run_id = experiment(tmp_path)
    cluster.skillmix("launch", "-f", str(path), check=True)
    text = wait_for_reason(cluster, run_id, "registry.invalid/someone/else:1.0")
    assert "ErrImagePull" in text or "ImagePullBackOff" in text


def test_status_names_a_missing_secret(cluster: Cluster, tmp_path: Path) -> None:
    edit_profile(cluster, s3={"credentials_secret": "no-such-secret"})
    path, run_id = experiment(tmp_path)
    cluster.skillmix("launch", "-f", str(path), check=True)
    text = wait_for_reason(cluster, run_id, "CreateContainerConfigError")
    assert 'secret "no-such-secret" not found' in text


def test_status_shows_a_crash_loop_with_the_model_servers_last_log_lines(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The vLLM sidecar (our image: `python3 -m vllm...` fails at once) restarts with
    back-off: `status` names CrashLoopBackOff, its exit code and its last log lines."""
    _gpu_profile(cluster, tolerate=True)
    # time to fail on its own (exit 1, with a message) before the startup probe kills it
    edit_profile(cluster, deadlines={"model_load_seconds": 60})
    path, run_id = experiment(tmp_path, students=[VLLM_STUDENT])
    cluster.skillmix("launch", "-f", str(path), check=True)
    text = wait_for_reason(cluster, run_id, "model: CrashLoopBackOff", "last log lines:")
    assert "No module named 'vllm'" in text.split("last log lines:", 1)[1]


def test_launch_wait_says_why_pods_are_stuck(cluster: Cluster, tmp_path: Path) -> None:
    """`--wait` looks at pods and events each time a watch ends without news."""
    edit_profile(cluster, image="registry.invalid/someone/else:1.0")
    path, _run_id = experiment(tmp_path)
    result = cluster.skillmix(
        "launch", "-f", str(path), "--wait", "--timeout", "25", "--watch-seconds", "3"
    )
    assert result.returncode == 1, result.stderr
    assert "timed out after 25s" in error_line(result.stderr)
    stuck = [line for line in result.stderr.splitlines() if "registry.invalid" in line]
    assert stuck and any("ErrImagePull" in s or "ImagePullBackOff" in s for s in stuck)
    assert len(stuck) == len(set(stuck))  # each reason said once


# ---------------------------------------------------------------------------------------------
# pre-flight
# ---------------------------------------------------------------------------------------------


def test_preflight_names_a_root_vllm_container_restricted_forbids_with_nothing_created(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The namespace enforces `restricted`; the vLLM sidecar is set to run as root. A Job would be
    admitted (with a warning) and its pods never: the pre-flight's dry-run Pod is rejected, so
    the launch stops with the API server's reason before any Job, ServiceAccount or stored
    byte exists."""
    edit_profile(cluster, vllm_image="vllm/vllm-openai:v0.11.0", vllm_security_context=ROOT)
    path, _run_id = experiment(tmp_path, students=[VLLM_STUDENT])
    result = cluster.skillmix("launch", "-f", str(path))
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "dry run of a Pod of Job" in line and "violates PodSecurity" in line
    # it names the vLLM container and how to run it (restricted pods)
    assert "the vLLM container (`model`) runs as root" in result.stderr
    assert "pod-security.kubernetes.io/enforce=baseline" in result.stderr
    assert cluster.jobs() == [] and cluster.pods() == []
    assert open_store(cluster.store).list_keys("") == []
    accounts = cluster.kubectl("get", "serviceaccounts", "-o", "name").split()
    # the namespace's own only: the profile's accounts were not created
    assert sorted(accounts) == ["serviceaccount/default"]


# ---------------------------------------------------------------------------------------------
# relaunch, --replace, resumable creation
# ---------------------------------------------------------------------------------------------


def test_relaunch_is_refused_while_jobs_run_and_replace_cancels_first(
    cluster: Cluster, tmp_path: Path
) -> None:
    path, run_id = experiment(tmp_path, combinations=400)
    cluster.skillmix("launch", "-f", str(path), check=True)
    wait_for(lambda: cluster.pods(f"skillmix.io/run={run_id}"), "the first pods", 60)
    again = cluster.skillmix("launch", "-f", str(path))
    assert again.returncode == 2
    line = error_line(again.stderr)
    assert f"run {run_id} has 4 unfinished Job(s) of attempt 1" in line  # + coordinator
    assert f"skillmix launch -f {path} --cluster local --replace" in line
    assert all(j.metadata.name.endswith("-a1") for j in cluster.jobs(f"skillmix.io/run={run_id}"))

    replaced = cluster.skillmix("launch", "-f", str(path), "--replace", timeout=240, check=True)
    assert "--replace: deleted 4 Jobs" in replaced.stderr
    names = [j.metadata.name for j in cluster.jobs(f"skillmix.io/run={run_id}")]
    # the generation may finish (400 mock answers) before --replace cancels it: then attempt 2
    # has nothing to generate and its Jobs are the coordinator, the grading and the aggregation
    run = RunStore(open_store(f"{cluster.store}/{run_id}"))
    manifest = run.manifest(generation_prefix("weak", 2, 1))
    generated_first = manifest is not None and manifest.attempt == 1
    assert len(names) == (3 if generated_first else 4), names
    assert all(n.endswith("-a2") for n in names), names
    # the old attempt's pods were gone before the new Jobs were created
    assert not [
        p
        for p in cluster.pods(f"skillmix.io/run={run_id}")
        if p.metadata.labels.get("skillmix.io/attempt") == "1"
    ]
    doc = status(cluster, run_id)
    assert doc["attempt"] == 2 and {j["attempt"] for j in doc["jobs"]} == {2}
    cluster.skillmix("cancel", run_id, check=True)


def test_creation_stopped_by_a_quota_is_completed_by_the_next_launch(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A ResourceQuota allowing 2 Jobs: the dry runs pass (each alone fits), the third real
    creation is refused, and the launch stops halfway with the quota's message. With the
    quota gone, the next launch completes attempt 1 (the two existing Jobs count as done):
    no new attempt number, no duplicate."""
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "two-jobs"},
        "spec": {"hard": {"count/jobs.batch": "2"}},
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(quota))
    wait_for(
        lambda: (
            cluster.core().read_namespaced_resource_quota("two-jobs", cluster.namespace).status.hard
        ),
        "the quota controller to compute the quota",
        60,
    )
    path, run_id = experiment(tmp_path)
    first = cluster.skillmix("launch", "-f", str(path))
    assert first.returncode == 2, first.stderr
    line = error_line(first.stderr)
    assert "exceeded quota: two-jobs" in line and "completes attempt 1" in line
    assert len(cluster.jobs(f"skillmix.io/run={run_id}")) == 2
    run = open_store(f"{cluster.store}/{run_id}")
    assert run.exists("launches/attempt-001.json")
    assert not run.exists("launches/attempt-001.created")

    cluster.kubectl("delete", "resourcequota", "two-jobs")
    second = cluster.skillmix("launch", "-f", str(path), check=True)
    assert "completing attempt 1" in second.stderr
    names = [j.metadata.name for j in cluster.jobs(f"skillmix.io/run={run_id}")]
    assert len(names) == 4 and all(n.endswith("-a1") for n in names), names  # + coordinator
    assert run.exists("launches/attempt-001.created")
    assert not run.exists("launches/attempt-002.json")


# ---------------------------------------------------------------------------------------------
# after ttlSecondsAfterFinished
# ---------------------------------------------------------------------------------------------


def test_status_and_logs_fall_back_to_the_store_after_the_ttl(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The TTL-after-finished controller deletes the finished Jobs (ttl 3 s): `status` then
    reads the store (units done, report present) and `logs` the pod logs uploaded there."""
    edit_profile(cluster, deadlines={"ttl_seconds": 3})
    path, run_id = experiment(tmp_path)
    cluster.skillmix(
        "launch", "-f", str(path), "--wait", "--timeout", "300", timeout=330, check=True
    )
    pods = [p.metadata.name for p in cluster.pods(f"skillmix.io/run={run_id}")]
    wait_for(
        lambda: not cluster.jobs(f"skillmix.io/run={run_id}"), "the TTL to remove the Jobs", 90
    )
    run = open_store(f"{cluster.store}/{run_id}")
    uploaded = [k for k in run.list_keys("logs/pods") if k.endswith(".log")]
    if not uploaded:  # the clients' own upload (runtime) is not in this branch: stand in for it
        for pod in pods:
            run.write_bytes(f"logs/pods/{pod}.log", f"hello from {pod}\n".encode())
        uploaded = [f"logs/pods/{pod}.log" for pod in pods]
    doc = status(cluster, run_id)
    assert doc["state"] == "complete" and doc["source"] == "store" and doc["jobs"] == []
    assert doc["progress"]["generation_units_done"] == doc["progress"]["units"] == 1
    assert doc["progress"]["report"] is True and doc["attempt"] == 1
    table = cluster.skillmix("status", run_id, check=True)
    assert "progress from the store" in " ".join(table.stderr.split())
    logs = cluster.skillmix("logs", run_id, check=True)
    assert "uploaded to the store" in logs.stderr
    for key in uploaded:
        pod = key.rsplit("/", 1)[1].removesuffix(".log")
        assert f"[{pod}] " in logs.stdout
