"""skillmix runs under Kueue v0.17, for real (Kueue built and started by the project's scripts,
webhooks on loopback): a run with `kueue_queue` completes whatever Kueue's configuration
(LocalQueueDefaulting with a `default` queue, manageJobsWithoutQueueName, the AdmissionGatedBy
gate on or off), held-back phases never start before their inputs exist, the pre-flight sees
what Kueue's webhook does to a Job, the plan warns about waitForPodsReady, and Jobs carry the
profile's WorkloadPriorityClass."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.loading import load_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore, generation_prefix
from skillmix.store.uri import open_store
from tests.cluster.conftest import Cluster, KueueCluster, wait_for
from tests.cluster.kueue import GROUP

pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("kueue")]


def small_run(
    tmp: Path, name: str, students: list[dict[str, Any]] | None = None, rounds: int = 1
) -> tuple[Path, str]:
    mock = {"name": "weak", "backend": "mock", "model": "mock-weak", "quality": 0.4}
    doc: dict[str, Any] = {
        "name": name,
        "seed": 4,
        "ks": [2],
        "combinations": 2,
        "generation_rounds": rounds,
        "students": students or [mock],
        "grader": {"name": "judge", "backend": "mock", "model": "judge", "rounds": 1},
        "metrics": {"bootstrap_samples": 10},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path, resolve_context(load_experiment(path)).run_id


def set_profile(cluster: Cluster, **changes: Any) -> None:
    doc = yaml.safe_load(cluster.profile_file.read_text())
    profile = doc["clusters"]["local"]
    for key, value in changes.items():
        if value is None:
            profile.pop(key, None)
        else:
            profile[key] = value
    profile["coordinator_interval_seconds"] = 1
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))


def conditions(job: Any) -> set[str]:
    return {c.type for c in job.status.conditions or [] if c.status == "True"}


def launch_and_check(cluster: Cluster, kc: KueueCluster, tmp: Path, name: str) -> str:
    """Launch and wait; then: every Job (the coordinator's too) went through Kueue (a Workload
    each, admitted), and no grading Job started before its unit's generation manifest existed
    (its Workload was admitted after its generation Job had completed)."""
    path, run_id = small_run(tmp, name)
    out = cluster.skillmix("launch", "-f", str(path), "--wait", "--timeout", "240", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = {j.metadata.name: j for j in cluster.jobs(f"skillmix.io/run={run_id}")}
    assert {j.metadata.labels["skillmix.io/phase"] for j in jobs.values()} == {
        "generate",
        "grade",
        "aggregate",
        "coordinate",
    }
    for job in jobs.values():
        assert "Complete" in conditions(job), (job.metadata.name, job.status.conditions)
        assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == kc.local_queue
        workload = kc.workload_for(job.metadata.name)
        assert workload is not None, f"{job.metadata.name} never went through Kueue"
    run = RunStore(open_store(f"{cluster.store}/{run_id}"))
    for grading in [j for j in jobs.values() if j.metadata.labels["skillmix.io/phase"] == "grade"]:
        labels = grading.metadata.labels
        unit = (labels["skillmix.io/student"], labels["skillmix.io/k"], labels["skillmix.io/round"])
        [generation] = [
            j
            for j in jobs.values()
            if j.metadata.labels["skillmix.io/phase"] == "generate"
            and (
                j.metadata.labels["skillmix.io/student"],
                j.metadata.labels["skillmix.io/k"],
                j.metadata.labels["skillmix.io/round"],
            )
            == unit
        ]
        admitted = _admitted_at(kc.workload_for(grading.metadata.name))
        assert admitted >= generation.status.completion_time, (grading.metadata.name, admitted)
        prefix = generation_prefix(unit[0], int(unit[1]), int(unit[2]))
        assert run.manifest(prefix) is not None
    assert run.store.exists(RunLayout.summary_key())
    return run_id


def _admitted_at(workload: dict[str, Any] | None) -> dt.datetime:
    assert workload is not None
    for c in (workload.get("status") or {}).get("conditions") or []:
        if c["type"] == "Admitted" and c["status"] == "True":
            return dt.datetime.fromisoformat(c["lastTransitionTime"].replace("Z", "+00:00"))
    raise AssertionError(f"workload {workload['metadata']['name']} was never admitted")


def test_kueue_run_completes_with_deferred_phases(
    cluster: Cluster, kueue_cluster: Any, tmp_path: Path
) -> None:
    """Kueue as installed by default (no admission gate): the launch creates the generation
    Jobs and the coordinator, and stores the grading and aggregation Jobs; the coordinator
    (itself queued and admitted like any Job) creates each one once its inputs exist."""
    kc = kueue_cluster(local_queue="skillmix")
    set_profile(cluster, kueue_queue="skillmix")
    path, run_id = small_run(tmp_path, "kueue-defer")
    out = cluster.skillmix("launch", "-f", str(path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "the coordinator creates 2 more when their inputs exist" in out.stderr
    deferred = open_store(f"{cluster.store}/{run_id}").read_bytes(RunLayout.launch_deferred(1))
    assert deferred.count(b"kind: Job") == 2  # the grading Job, the aggregation
    doc = json.loads(cluster.skillmix("status", run_id, "--format", "json", check=True).stdout)
    grading = [j for j in doc["jobs"] if j["phase"] == "grade"]
    assert len(grading) == 1  # shown before it exists (read from the stored manifests)
    launch_and_check_existing(cluster, kc, run_id)

    def all_complete() -> list[Any] | None:
        jobs = cluster.jobs(f"skillmix.io/run={run_id}")
        return jobs if len(jobs) == 4 and all("Complete" in conditions(j) for j in jobs) else None

    jobs = wait_for(all_complete, "every Job (the coordinator's last) to complete", 60)
    for job in jobs:
        assert kc.workload_for(job.metadata.name) is not None


def test_kueue_local_queue_defaulting_does_not_start_held_back_phases(
    cluster: Cluster, kueue_cluster: Any, tmp_path: Path
) -> None:
    """A LocalQueue named `default`: Kueue gives every Job without a queue label that queue and
    admits it. A profile without kueue_queue is refused by the pre-flight (its held-back Jobs
    would start at once), with nothing created; with `kueue_queue: default` the run completes
    and grading starts only after generation."""
    kc = kueue_cluster(local_queue="default")
    set_profile(cluster, kueue_queue=None)
    path, run_id = small_run(tmp_path, "kueue-lqd")
    out = cluster.skillmix("launch", "-f", str(path), timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "LocalQueueDefaulting" in out.stderr and "kueue_queue" in out.stderr
    assert cluster.jobs(f"skillmix.io/run={run_id}") == []
    set_profile(cluster, kueue_queue="default")
    launch_and_check(cluster, kc, tmp_path, "kueue-lqd")


def test_kueue_manage_jobs_without_queue_name(
    cluster: Cluster, kueue_cluster: Any, tmp_path: Path
) -> None:
    """manageJobsWithoutQueueName: true: Kueue suspends Jobs without a queue label. The
    pre-flight sees it in the dry run's answer and refuses a profile without kueue_queue; with
    it the run completes."""
    kc = kueue_cluster(local_queue="skillmix", manage_jobs_without_queue_name=True)
    set_profile(cluster, kueue_queue=None)
    path, run_id = small_run(tmp_path, "kueue-manage-all")
    out = cluster.skillmix("launch", "-f", str(path), timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "manageJobsWithoutQueueName" in out.stderr
    assert cluster.jobs(f"skillmix.io/run={run_id}") == []
    set_profile(cluster, kueue_queue="skillmix")
    launch_and_check(cluster, kc, tmp_path, "kueue-manage-all")


def test_kueue_admission_gate_holds_phases_created_at_launch(
    cluster: Cluster, kueue_cluster: Any, tmp_path: Path
) -> None:
    """Kueue with its AdmissionGatedBy gate and a profile that says so: every Job exists from
    the launch; the held-back ones carry the gate, and Kueue admits each only once the
    coordinator removes it (after its inputs exist)."""
    kc = kueue_cluster(local_queue="skillmix", admission_gated_by=True)
    set_profile(cluster, kueue_queue="skillmix", kueue_admission_gate=True)
    path, run_id = small_run(tmp_path, "kueue-gate")
    out = cluster.skillmix("launch", "-f", str(path), timeout=120)
    assert out.returncode == 0, out.stderr
    gated = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/gated=true")
    assert len(gated) == 2  # created at once, held by the gate
    assert all(j.metadata.annotations["skillmix.io/hold"] == "gate" for j in gated)
    assert not RunStore(open_store(f"{cluster.store}/{run_id}")).store.exists(
        RunLayout.launch_deferred(1)
    )
    launch_and_check_existing(cluster, kc, run_id)


def launch_and_check_existing(cluster: Cluster, kc: KueueCluster, run_id: str) -> None:
    out = cluster.skillmix("status", run_id, "--format", "json", check=True)
    assert run_id in out.stdout

    deadline = time.monotonic() + 240
    run = RunStore(open_store(f"{cluster.store}/{run_id}"))
    while not run.store.exists(RunLayout.summary_key()):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(1)
    for job in cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=grade"):
        assert "kueue.x-k8s.io/admission-gated-by" not in (job.metadata.annotations or {})
        labels = job.metadata.labels
        [generation] = cluster.jobs(
            f"skillmix.io/run={run_id},skillmix.io/phase=generate,"
            f"skillmix.io/round={labels['skillmix.io/round']}"
        )
        admitted = _admitted_at(kc.workload_for(job.metadata.name))
        assert generation.status.completion_time is not None
        assert admitted >= generation.status.completion_time


def test_kueue_plan_warnings_priority_class_and_v1beta2(
    cluster: Cluster, kueue_cluster: Any, tmp_path: Path
) -> None:
    """The plan warns when the model-load budget exceeds Kueue's waitForPodsReady timeout;
    every Job carries the profile's WorkloadPriorityClass, which Kueue gives its Workload;
    status reads Kueue through v1beta2."""
    kc = kueue_cluster(local_queue="skillmix")
    kc.custom().create_cluster_custom_object(
        GROUP,
        kc.version,
        "workloadpriorityclasses",
        {
            "apiVersion": f"{GROUP}/{kc.version}",
            "kind": "WorkloadPriorityClass",
            "metadata": {"name": f"{kc.namespace}-low"},
            "value": 10,
        },
    )
    try:
        set_profile(
            cluster,
            kueue_queue="skillmix",
            kueue_wait_for_pods_ready_seconds=60,
            kueue_priority_class=f"{kc.namespace}-low",
        )
        path, run_id = small_run(tmp_path, "kueue-priority")
        out = cluster.skillmix("launch", "-f", str(path), timeout=120)
        assert out.returncode == 0, out.stderr
        assert "exceeds Kueue's waitForPodsReady timeout (60s)" in out.stderr
        [generation, *_] = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=generate")
        priority = generation.metadata.labels["kueue.x-k8s.io/priority-class"]
        assert priority == f"{kc.namespace}-low"
        workload = kc.workload_for(generation.metadata.name)
        assert workload is not None
        # v1beta2 names it priorityClassRef ({group, kind, name}); v1beta1 priorityClassName
        ref = workload["spec"].get("priorityClassRef") or {}
        assert ref.get("name", workload["spec"].get("priorityClassName")) == priority
        assert workload["spec"]["priority"] == 10
        assert kc.version == "v1beta2"
        from skillmix.k8s.cluster import KubeClient
        from skillmix.k8s.profiles import get_profile

        _name, profile = get_profile(None, cluster.profile_file)
        assert KubeClient(profile).kueue_version() == "v1beta2"
    finally:
        kc.custom().delete_cluster_custom_object(
            GROUP, kc.version, "workloadpriorityclasses", f"{kc.namespace}-low"
        )


def test_kueue_quota_never_admits_more_gpus_than_the_cluster_queue_holds(
    cluster: Cluster, kueue_cluster: Any, tmp_path: Path
) -> None:
    """A ClusterQueue with 1 GPU and a run of two one-GPU generation Jobs (the vLLM stand-in on
    the GPU node): Kueue admits one at a time (never 2 GPUs unsuspended at once), the other
    waits suspended, and the run completes."""
    import threading

    from tests.cluster.test_failures_on_cluster import STAND_IN_VLLM, _gpu_profile

    kc = kueue_cluster(local_queue="skillmix", gpu_quota=1)
    _gpu_profile(cluster, tolerate=True, image=STAND_IN_VLLM, load_seconds=60)
    set_profile(cluster, kueue_queue="skillmix")
    qwen = {"name": "qwen", "backend": "vllm", "model": "qwen", "vllm": {"model": "stand-in/x"}}
    path, run_id = small_run(tmp_path, "kueue-quota", [qwen], rounds=2)
    most = [0]
    errors: list[BaseException] = []
    stop = threading.Event()
    batch = cluster.batch()

    def sample() -> None:
        while not stop.wait(0.2):
            try:
                jobs = batch.list_namespaced_job(
                    cluster.namespace,
                    label_selector=f"skillmix.io/run={run_id},skillmix.io/phase=generate",
                ).items
            except Exception as exc:  # reported below
                errors.append(exc)
                return
            running = [j for j in jobs if not j.spec.suspend and "Complete" not in conditions(j)]
            most[0] = max(most[0], len(running))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = cluster.skillmix("launch", "-f", str(path), "--wait", "--timeout", "300", timeout=330)
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        stop.set()
        sampler.join(10)
    assert not errors, errors
    assert most[0] == 1, most
    jobs = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=generate")
    assert len(jobs) == 2
    admitted = sorted(_admitted_at(kc.workload_for(j.metadata.name)) for j in jobs)
    finished = min(j.status.completion_time for j in jobs)
    assert admitted[1] >= finished  # the second waited for the first one's GPU


def test_kueue_example_objects_are_accepted_by_kueue(
    cluster: Cluster, kueue_cluster: Any, tmp_path: Path
) -> None:
    """k8s/kueue-example.yaml, as an admin applies it (its namespace swapped for the test's), is
    valid for the real CRDs and Kueue's webhooks (a server-side dry run: nothing persists)."""
    from tests.cluster.controlplane import REPO_ROOT

    kueue_cluster(local_queue=None)
    docs = list(yaml.safe_load_all((REPO_ROOT / "k8s" / "kueue-example.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "LocalQueue":
            doc["metadata"]["namespace"] = cluster.namespace
        if doc["kind"] == "ClusterQueue":
            doc["spec"]["namespaceSelector"]["matchLabels"] = {
                "kubernetes.io/metadata.name": cluster.namespace
            }
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs))
    for kind in ("resourceflavor", "clusterqueue", "localqueue", "workloadpriorityclass"):
        assert kind in out, out
