"""A run on a GPU cluster shared with other teams, on the real control plane: the per-run GPU
cap (without Kueue) holds and the run completes; time spent held back never counts against a
Job's deadline; GPU time is measured from the pods; a pod stuck where no retry helps gives its
GPU back with the reason; a partial launch, or a failed coordinator, recovers without
`--replace`."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store
from tests.cluster.conftest import Cluster, wait_for
from tests.cluster.test_failures_on_cluster import (
    STAND_IN_VLLM,
    _gpu_profile,
    experiment,
    stand_in_student,
)
from tests.cluster.test_status_on_cluster import edit_profile, status

pytestmark = pytest.mark.cluster


def gpus_of(pod: Any) -> int:
    total = 0
    for c in [*(pod.spec.init_containers or []), *(pod.spec.containers or [])]:
        total += int((c.resources.requests or {}).get("nvidia.com/gpu", 0) if c.resources else 0)
    return total


class GpuWatch(threading.Thread):
    """Samples the GPUs requested by the run's live pods (not Succeeded or Failed, deleting
    or not: a pod holds its GPU until it ends) until stopped; keeps the most seen."""

    def __init__(self, cluster: Cluster, run_id: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.run_id = cluster, run_id
        self.most = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            pods = self.cluster.pods(f"skillmix.io/run={self.run_id}")
            live = [p for p in pods if p.status.phase not in ("Succeeded", "Failed")]
            self.most = max(self.most, sum(gpus_of(p) for p in live))
            self.samples += 1


def test_gpu_cap_holds_and_queued_time_never_counts(cluster: Cluster, tmp_path: Path) -> None:
    """Four one-GPU generation Jobs (the vLLM stand-in, 4 s to load) under `max_gpus: 2`: at
    most 2 GPUs are ever requested by live pods (the Jobs beyond wait suspended, with no pod),
    status shows them queued, and the run completes. A Job held back starts its deadline's
    clock only when released (the Job controller's startTime comes well after its creation).
    The coordinator records each pod's GPU time in the store."""
    _gpu_profile(cluster, tolerate=True, image=STAND_IN_VLLM, load_seconds=30)
    edit_profile(
        cluster,
        max_gpus=2,
        coordinator_interval_seconds=1,
        deadlines={"generation_seconds": 60, "model_load_seconds": 30},
    )
    path, run_id = experiment(
        tmp_path,
        students=[stand_in_student("stand-in/slow-load-4")],
        generation_rounds=4,
        combinations=2,
    )
    watch = GpuWatch(cluster, run_id)
    watch.start()
    try:
        cluster.skillmix("launch", "-f", str(path), check=True)
        gen = f"skillmix.io/run={run_id},skillmix.io/phase=generate"

        def queued_in_status() -> dict[str, Any] | None:
            cap = status(cluster, run_id)["gpu_cap"]
            return cap if cap and cap["queued"] and cap["running"] else None

        cap = wait_for(queued_in_status, "status to show Jobs queued under the cap", 60)
        assert cap["cap"] == 2 and cap["gpus_in_use"] <= 2
        text = cluster.skillmix("status", run_id, check=True).stderr
        assert "GPU cap 2:" in text and "queued" in text
        run = RunStore(open_store(f"{cluster.store}/{run_id}"))
        deadline = time.monotonic() + 300
        while not run.store.exists(RunLayout.summary_key()):
            assert time.monotonic() < deadline, "the run did not finish in 300 s"
            time.sleep(1)
    finally:
        watch.done.set()
        watch.join(10)
    assert watch.samples > 20
    assert 1 <= watch.most <= 2, watch.most
    jobs = cluster.jobs(gen)
    assert len(jobs) == 4
    held = []
    for job in jobs:
        assert job.spec.active_deadline_seconds == 30 + 60
        assert job.metadata.annotations["skillmix.io/pool"] == "gpu"
        assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)
        held.append((job.status.start_time - job.metadata.creation_timestamp).total_seconds())
    # the second pair waited for the first: their deadline's clock started on release
    assert sorted(held)[-1] > 5, held
    usage = run.store.list_keys(RunLayout.POD_USAGE)
    assert len(usage) == 4, usage
    for key in usage:
        record = json.loads(run.store.read_bytes(key))
        assert record["gpus"] == 1 and record["student"] == "qwen"
        assert 5 <= record["seconds"] <= 120, record
    summary = json.loads(run.store.read_bytes(RunLayout.summary_key()))
    assert summary["gpu_usage"]["students"]["qwen"]["pods"] == 4


def test_a_stuck_pod_gives_back_its_gpu_with_the_reason(cluster: Cluster, tmp_path: Path) -> None:
    """An image no node can pull, and a pod asking for more GPUs than any node has: each
    holds its place with no end by itself. The coordinator fails their Jobs once they have
    been stuck past the profile's bounds (5 s here), the pods go, and `status` names why."""
    _gpu_profile(cluster, tolerate=True, image="registry.invalid/vllm:none", load_seconds=30)
    edit_profile(
        cluster,
        coordinator_interval_seconds=1,
        deadlines={"stuck_pod_seconds": 5, "unschedulable_seconds": 5},
    )
    big = {**stand_in_student("big"), "name": "big", "vllm": {"model": "big", "gpus": 3}}
    path, run_id = experiment(tmp_path, students=[stand_in_student("qwen"), big])
    cluster.skillmix("launch", "-f", str(path), check=True)
    selector = f"skillmix.io/run={run_id},skillmix.io/phase=generate"

    def both_failed() -> list[Any] | None:
        jobs = cluster.jobs(selector)
        failed = [
            j
            for j in jobs
            if any(c.type == "Failed" and c.status == "True" for c in j.status.conditions or [])
        ]
        return failed if len(failed) == 2 else None

    failed = wait_for(both_failed, "the coordinator to fail both stuck Jobs", 90)
    reasons = {
        j.metadata.labels["skillmix.io/student"]: j.metadata.annotations["skillmix.io/failure"]
        for j in failed
    }
    assert "ErrImagePull" in reasons["qwen"] or "ImagePullBackOff" in reasons["qwen"], reasons
    assert "unschedulable" in reasons["big"] and "nvidia.com/gpu" in reasons["big"], reasons
    # the GPU is given back: the pods go with the failed Jobs
    wait_for(
        lambda: (
            not [p for p in cluster.pods(selector) if p.status.phase not in ("Failed", "Succeeded")]
        ),
        "the stuck pods to go",
        60,
    )
    doc = status(cluster, run_id)
    rows = {j["student"]: j for j in doc["jobs"] if j["phase"] == "generate"}
    assert rows["qwen"]["state"] == "Failed"
    assert "ErrImagePull" in rows["qwen"]["reason"] or "ImagePullBackOff" in rows["qwen"]["reason"]
    assert "unschedulable" in rows["big"]["reason"]


def test_partial_launch_recovers_without_replace(cluster: Cluster, tmp_path: Path) -> None:
    """A launch stopped halfway (a quota refuses the fourth Job): its coordinator, created
    first, waits for the launch to finish instead of failing, and status says the launch is
    incomplete and how to complete it. With the quota gone, the next `launch` completes the
    same attempt, and the run finishes."""
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "three-jobs"},
        "spec": {"hard": {"count/jobs.batch": "3"}},
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(quota))
    wait_for(
        lambda: (
            cluster.core()
            .read_namespaced_resource_quota("three-jobs", cluster.namespace)
            .status.hard
        ),
        "the quota controller to compute the quota",
        60,
    )
    edit_profile(cluster, coordinator_interval_seconds=1)
    path, run_id = experiment(tmp_path, generation_rounds=2)
    first = cluster.skillmix("launch", "-f", str(path))
    assert first.returncode == 2 and "exceeded quota" in first.stderr, first.stderr
    phases = sorted(
        j.metadata.labels["skillmix.io/phase"] for j in cluster.jobs(f"skillmix.io/run={run_id}")
    )
    assert "coordinate" in phases and len(phases) == 3
    doc = status(cluster, run_id)
    assert doc["state"] == "stalled"
    text = cluster.skillmix("status", run_id, check=True).stderr
    assert "stopped before creating every Job; `skillmix launch` again completes it" in text
    time.sleep(4)  # the coordinator waits for the launch rather than giving up
    [coordinator] = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=coordinate")
    assert not coordinator.status.failed and not coordinator.status.succeeded

    cluster.kubectl("delete", "resourcequota", "three-jobs")
    second = cluster.skillmix("launch", "-f", str(path), "--wait", "--timeout", "240", timeout=300)
    assert second.returncode == 0, second.stderr
    assert "completing attempt 1" in second.stderr
    names = [j.metadata.name for j in cluster.jobs(f"skillmix.io/run={run_id}")]
    assert all(n.endswith("-a1") for n in names), names


def test_partial_launch_a_failed_coordinator_is_replaced_by_the_next_launch(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The coordinator fails (its RoleBinding is missing: every API call is Forbidden, exit 2,
    FailJob): status says so and that another launch replaces it. With the binding back, the
    next `launch` of the same run (no --replace) replaces only the coordinator, and the run
    completes in the same attempt."""
    binding = cluster.kubectl("get", "rolebinding", "skillmix-coordinator", "-o", "yaml")
    cluster.kubectl("delete", "rolebinding", "skillmix-coordinator")
    edit_profile(cluster, coordinator_interval_seconds=1)
    path, run_id = experiment(tmp_path)
    cluster.skillmix("launch", "-f", str(path), check=True)

    def coordinator_failed() -> dict[str, Any] | None:
        doc = status(cluster, run_id)
        return doc if (doc["coordinator"] or {}).get("state") == "Failed" else None

    doc = wait_for(coordinator_failed, "the coordinator to fail", 90)
    assert doc["state"] == "stalled"
    assert "`skillmix launch` again replaces it" in doc["coordinator"]["reason"]
    assert "forbidden" in doc["coordinator"]["reason"].lower()

    restored = yaml.safe_load(binding)
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        restored["metadata"].pop(key, None)
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(restored))
    again = cluster.skillmix("launch", "-f", str(path), "--wait", "--timeout", "240", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "has no working coordinator" in again.stderr
    coordinators = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=coordinate")
    assert len(coordinators) == 1
    assert any(
        c.type == "Complete" and c.status == "True" for c in coordinators[0].status.conditions
    )
    assert not open_store(f"{cluster.store}/{run_id}").exists("launches/attempt-002.json")
