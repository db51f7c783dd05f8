"""Kueue v0.17 on the real control plane, with plain Jobs from the admin client: GPU quota,
LocalQueueDefaulting, manageJobsWithoutQueueName, the AdmissionGatedBy gate, what the launcher
identity may read, and that namespaces without ``skillmix.io/kueue=enabled`` never notice Kueue.

All on one xdist worker (``--dist loadgroup``), sharing that worker's Kueue: the tests are
ordered by the Kueue config they ask for, so Kueue starts once and restarts once.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.conftest import Cluster, KueueCluster, wait_for
from tests.cluster.controlplane import REPO_ROOT, ClusterSetupError, ControlPlane
from tests.cluster.kueue import (
    GATED_BY_ANNOTATION,
    GROUP,
    KUEUE_DIR,
    MUTATING,
    PROBE_NAMESPACE,
    QUEUE_LABEL,
    VALIDATING,
    KueueConfig,
    KueueManager,
    local_queue,
    start_kueue,
    status_condition,
    tiny_job,
)

pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("kueue")]

MakeKueueCluster = Callable[..., KueueCluster]
GATE = "skillmix.io/coordinator"
# the config of the second half: one restart for all of it
MANAGED_AND_GATED = {"manage_jobs_without_queue_name": True, "admission_gated_by": True}


def _unsuspended(kc: KueueCluster) -> list[str]:
    return sorted(j.metadata.name for j in kc.cluster.jobs() if not j.spec.suspend)


def _hold(seconds: float, check: Callable[[], None]) -> None:
    """``check`` keeps passing for ``seconds`` (what Kueue must not do, it would do in well
    under a second)."""
    deadline = time.monotonic() + seconds
    while True:
        check()
        if time.monotonic() >= deadline:
            return
        time.sleep(0.25)


def _started(kc: KueueCluster, job: str) -> bool:
    return not kc.suspended(job) and kc.admitted(job)


# ---- default config: manageJobsWithoutQueueName false, AdmissionGatedBy off ------------------


def test_kueue_admits_gpu_jobs_up_to_the_quota(kueue_cluster: MakeKueueCluster) -> None:
    kc = kueue_cluster(gpu_quota=2)
    names = ["gpu-a", "gpu-b", "gpu-c"]
    for name in names:
        kc.create_job(tiny_job(name, queue=kc.local_queue, gpus=1))

    wait_for(lambda: len(_unsuspended(kc)) >= 2, "two Jobs to be admitted", timeout=30)
    _hold(3, lambda: _check_at_most(kc, 2))  # and never a third
    running = _unsuspended(kc)
    assert len(running) == 2
    assert all(kc.admitted(name) for name in running)
    [held] = sorted(set(names) - set(running))

    def reason() -> str:
        workload = kc.workload_for(held)
        condition = status_condition(workload, "QuotaReserved") if workload else None
        return condition["message"] if condition and condition["status"] == "False" else ""

    message = wait_for(reason, f"the Workload of {held} to say why it waits", timeout=15)
    assert "nvidia.com/gpu" in message and "quota" in message, message
    assert kc.suspended(held) and not kc.admitted(held)


def _check_at_most(kc: KueueCluster, limit: int) -> None:
    running = _unsuspended(kc)
    assert len(running) <= limit, f"more Jobs unsuspended than the GPU quota allows: {running}"


def test_kueue_defaults_the_local_queue_named_default(kueue_cluster: MakeKueueCluster) -> None:
    kc = kueue_cluster(local_queue="default")
    created = kc.create_job(tiny_job("unlabelled", suspend=False, gpus=1))
    # the webhooks gave it the queue and held it back for admission
    assert created.metadata.labels.get(QUEUE_LABEL) == "default"
    assert created.spec.suspend is True
    wait_for(lambda: _started(kc, "unlabelled"), "Kueue to admit the defaulted Job", timeout=30)


def test_kueue_ignores_the_gate_annotation_with_the_gate_off(
    kueue_cluster: MakeKueueCluster,
) -> None:
    kc = kueue_cluster()
    annotations = {GATED_BY_ANNOTATION: GATE}
    kc.create_job(tiny_job("gated", queue=kc.local_queue, annotations=annotations))
    wait_for(lambda: _started(kc, "gated"), "Kueue to admit the Job at once", timeout=30)
    assert kc.job("gated").metadata.annotations.get(GATED_BY_ANNOTATION) == GATE


def test_kueue_objects_readable_by_the_launcher(kueue_cluster: MakeKueueCluster) -> None:
    """k8s/rbac-launcher.yaml lets `skillmix status` find Kueue's API version (discovery) and
    read Workloads and LocalQueues in either version (v1beta2, stored; v1beta1, for Kueue
    before v0.15, here through Kueue's conversion webhook), and nothing cluster-scoped."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    kc = kueue_cluster()
    kc.create_job(tiny_job("seen", queue=kc.local_queue))
    wait_for(lambda: kc.workload_for("seen"), "Kueue to create the Workload", timeout=30)
    groups = client.ApisApi(kc.cluster.api("launcher")).get_api_versions().groups
    [kueue_group] = [g for g in groups if g.name == GROUP]
    assert kueue_group.preferred_version.version == kc.version == "v1beta2"
    launcher = kc.custom("launcher")
    for version in ("v1beta2", "v1beta1"):
        found = launcher.list_namespaced_custom_object(GROUP, version, kc.namespace, "workloads")
        owners = [o["name"] for w in found["items"] for o in w["metadata"]["ownerReferences"]]
        assert owners == ["seen"], version
        queue = launcher.get_namespaced_custom_object(
            GROUP, version, kc.namespace, "localqueues", kc.local_queue
        )
        assert queue["spec"]["clusterQueue"] == kc.cluster_queue
    with pytest.raises(ApiException) as denied:
        launcher.get_cluster_custom_object(GROUP, kc.version, "clusterqueues", kc.cluster_queue)
    assert denied.value.status == 403


# ---- manageJobsWithoutQueueName true, AdmissionGatedBy on ------------------------------------


def test_kueue_holds_gated_jobs_until_the_gate_is_removed(
    kueue_cluster: MakeKueueCluster,
) -> None:
    kc = kueue_cluster(**MANAGED_AND_GATED)
    annotations = {GATED_BY_ANNOTATION: GATE}
    kc.create_job(tiny_job("gated", queue=kc.local_queue, annotations=annotations))
    wait_for(lambda: kc.workload_for("gated"), "Kueue to create the Workload", timeout=30)

    def held() -> None:
        assert kc.suspended("gated") and not kc.admitted("gated")

    _hold(2, held)
    kc.cluster.batch().patch_namespaced_job(
        "gated",
        kc.namespace,
        {"metadata": {"annotations": {GATED_BY_ANNOTATION: None}}},
        _content_type="application/merge-patch+json",
    )
    wait_for(lambda: _started(kc, "gated"), "Kueue to admit the Job once ungated", timeout=30)


def test_kueue_manages_jobs_without_queue_name(kueue_cluster: MakeKueueCluster) -> None:
    kc = kueue_cluster(**MANAGED_AND_GATED)  # a LocalQueue, but none named `default`
    kc.create_job(tiny_job("no-queue"))
    created = kc.create_job(tiny_job("no-queue-running", suspend=False))
    assert created.spec.suspend is True  # suspended by the webhook
    assert QUEUE_LABEL not in (created.metadata.labels or {})
    wait_for(lambda: kc.workload_for("no-queue"), "Kueue to create a Workload", timeout=30)

    def held() -> None:
        assert _unsuspended(kc) == []
        assert not kc.admitted("no-queue") and not kc.admitted("no-queue-running")

    _hold(2, held)


def test_kueue_leaves_unlabelled_namespaces_alone(cluster: Cluster, kueue: KueueManager) -> None:
    """Even with manageJobsWithoutQueueName and a LocalQueue named `default`, Jobs in a
    namespace without the label pass no Kueue webhook and get no Workload."""
    try:
        running = kueue.ensure(
            manage_jobs_without_queue_name=True, feature_gates={"AdmissionGatedBy": True}
        )
    except ClusterSetupError as exc:
        pytest.fail(str(exc))
    from kubernetes import client

    custom = client.CustomObjectsApi(cluster.api())
    version = running.api_version
    custom.create_namespaced_custom_object(
        GROUP, version, cluster.namespace, "localqueues", local_queue("default", "none", version)
    )
    batch = cluster.batch()
    created = batch.create_namespaced_job(cluster.namespace, tiny_job("plain", suspend=False))
    assert not created.spec.suspend
    assert QUEUE_LABEL not in (created.metadata.labels or {})
    batch.create_namespaced_job(cluster.namespace, tiny_job("plain-suspended"))
    wait_for(lambda: cluster.pods("job-name=plain"), "the Job controller to create the pod")

    def untouched() -> None:
        jobs = {j.metadata.name: j for j in cluster.jobs()}
        assert not jobs["plain"].spec.suspend and jobs["plain-suspended"].spec.suspend
        assert all(QUEUE_LABEL not in (j.metadata.labels or {}) for j in jobs.values())
        found = custom.list_namespaced_custom_object(GROUP, version, cluster.namespace, "workloads")
        assert found["items"] == []

    _hold(2, untouched)
    assert running.alive()


# ---- setup failures (last: they stop this worker's Kueue) ------------------------------------


def test_kueue_failed_start_leaves_nothing_behind(
    control_plane: ControlPlane, kueue: KueueManager, tmp_path: Path
) -> None:
    from kubernetes import client

    ports = kueue.running.ports if kueue.running else None  # same URLs and CA: no CRD update
    kueue.stop()
    fake = tmp_path / "kueue"
    (fake / "bin").mkdir(parents=True)
    binary = fake / "bin" / "kueue"
    binary.write_text("#!/bin/sh\necho 'stand-in kueue: cannot start' >&2\nexit 3\n")
    binary.chmod(0o755)
    (fake / "crds").symlink_to(KUEUE_DIR / "crds")
    (fake / "webhook").symlink_to(KUEUE_DIR / "webhook")

    with pytest.raises(ClusterSetupError) as failed:
        start_kueue(
            control_plane,
            tmp_path / "work",
            KueueConfig(),
            pki=kueue.pki,
            ports=ports,
            kueue_dir=fake,
            timeout=30,
        )
    message = str(failed.value)
    assert "\n" not in message
    assert "exited with code 3" in message and str(control_plane.log("kueue")) in message
    assert "kueue" not in control_plane.pids
    admission = client.AdmissionregistrationV1Api(control_plane.api())
    names = [c.metadata.name for c in admission.list_mutating_webhook_configuration().items]
    names += [c.metadata.name for c in admission.list_validating_webhook_configuration().items]
    assert MUTATING not in names and VALIDATING not in names
    # nothing fails admission in a namespace Kueue would manage
    batch = client.BatchV1Api(control_plane.api())
    batch.create_namespaced_job(PROBE_NAMESPACE, tiny_job("after-failure"), dry_run="All")


def test_kueue_install_without_go_names_the_fix(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "SKILLMIX_TOOLS_CACHE": str(tmp_path / "cache"),
        "SKILLMIX_KUEUE_DIR": str(tmp_path / "kueue"),
    }
    if any(os.access(Path(d) / "go", os.X_OK) for d in env["PATH"].split(":")):
        pytest.skip("a Go toolchain is on /usr/bin:/bin")
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "install-kueue.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no Go toolchain" in result.stderr and "make tools" in result.stderr
    assert not (tmp_path / "kueue").exists()
