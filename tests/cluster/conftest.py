"""Fixtures for tests on the real control plane (``make cluster-test``).

- ``control_plane`` (session): etcd, kube-apiserver, kube-controller-manager, kube-scheduler
  and our process kubelet, on 127.0.0.1. Without the binaries (``make tools`` builds them) the
  tests skip, except under CI, where that is a failure.
- ``cluster`` (function): a fresh namespace labelled ``pod-security.kubernetes.io/enforce:
  restricted`` with ``k8s/rbac-launcher.yaml`` and ``k8s/rbac-coordinator.yaml`` applied (by kubectl, as admin), the S3
  credentials Secret, a moto S3 bucket, and a cluster profile whose kube context is the
  *launcher* identity, so every CLI call runs with the launcher Role's rights only.
- ``kueue`` (session): a ``KueueManager`` (tests/cluster/kueue.py) for this control plane;
  ``kueue.ensure(...)`` starts Kueue v0.17 with a config, restarting it only when the config
  differs. Skips without ``make tools``'s Kueue (fails under CI).
- ``kueue_cluster`` (function): a factory that turns the ``cluster`` namespace into one Kueue
  manages (label ``skillmix.io/kueue=enabled``, a ResourceFlavor, a ClusterQueue and a
  LocalQueue of its own) under the Kueue config the test asks for; see ``KueueCluster``. Only
  labelled namespaces ever reach Kueue: the other tests on this control plane do not notice it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import (
    BIN_DIR,
    REPO_ROOT,
    ClusterSetupError,
    ControlPlane,
    missing_binaries,
    start_control_plane,
    start_kubelet,
)
from tests.cluster.kueue import (
    ENABLED_LABEL,
    ENABLED_VALUE,
    GROUP,
    Kueue,
    KueueConfig,
    KueueManager,
    cluster_queue,
    local_queue,
    missing_kueue,
    resource_flavor,
    status_condition,
)
from tests.fixtures_s3 import S3_TEST_ACCESS_KEY, S3_TEST_SECRET, create_bucket, s3_test_env

IMAGE = "skillmix:cluster-test"
S3_SECRET = "skillmix-s3"
KUBECTL = REPO_ROOT / ".tools" / "bin" / "kubectl"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    missing = missing_binaries()
    if missing:
        message = f"control plane binaries missing in {BIN_DIR} ({', '.join(missing)}): make tools"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("control-plane")
    try:
        cp = start_control_plane(workdir)
    except ClusterSetupError as exc:
        pytest.fail(str(exc))
    try:
        # a short first back-off keeps the CrashLoopBackOff test quick; the doubling and cap
        # are the kubelet's
        start_kubelet(cp, extra=["--backoff", "2", "--grace-cap", "10"])
        # every cluster test runs under k8s/policy-*.yaml: they must allow what a run needs
        apply_admission_policies(cp)
        yield cp
    finally:
        cp.stop()
        for line in _tail(cp.log("kubelet"), 0):
            if "Traceback" in line:
                print(f"kubelet log has a traceback: see {cp.log('kubelet')}", file=sys.stderr)
                break


POLICY_FILES = (
    "policy-coordinator.yaml",
    "policy-launcher.yaml",
    "policy-launcher-secrets.yaml",
)
POLICY_PROBE_NAMESPACE = "skillmix-policy-probe"


def apply_admission_policies(cp: ControlPlane, timeout: float = 30.0) -> None:
    """Apply k8s/policy-*.yaml (cluster-scoped: once per control plane, each xdist worker has
    its own) as an admin does, and wait until the API server enforces them: it loads policies
    asynchronously. Probes in a namespace of their own whose ResourceQuota admits nothing (it
    judges after the policies, so a probe never creates anything): a dry-run Job created as the
    coordinator without a pod-bound token, and a real pod created as the launcher, must both
    be refused by their policy."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ns = POLICY_PROBE_NAMESPACE
    account = f"system:serviceaccount:{ns}:skillmix-coordinator"
    probe = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "nothing", "namespace": ns},
            "spec": {"hard": {"pods": "0", "count/jobs.batch": "0", "secrets": "0"}},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "probe", "namespace": ns},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["create"]},
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "probe", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": account},
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": "skillmix-launchers",
                },
            ],
        },
    ]
    policies = [
        d for f in POLICY_FILES for d in yaml.safe_load_all((REPO_ROOT / "k8s" / f).read_text())
    ]
    kubectl(cp, "apply", "-f", "-", stdin=yaml.safe_dump_all([*policies, *probe]))
    container = {"name": "c", "image": IMAGE}
    pod = {"metadata": {"name": "probe"}, "spec": {"containers": [container]}}
    job = {
        "metadata": {"name": "probe"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    }
    coordinator = cp.api()
    coordinator.set_default_header("Impersonate-User", account)
    probes = {
        "skillmix-coordinator": lambda: client.BatchV1Api(coordinator).create_namespaced_job(
            ns, job, dry_run="All"
        ),
        "skillmix-launcher": lambda: client.CoreV1Api(cp.api("launcher")).create_namespaced_pod(
            ns, pod
        ),
        "skillmix-launcher-secrets": lambda: client.CoreV1Api(
            cp.api("launcher")
        ).create_namespaced_secret(ns, {"metadata": {"name": "probe"}}),
    }

    for name, probe_call in probes.items():

        def enforced(name: str = name, probe_call: Callable[[], Any] = probe_call) -> bool:
            try:
                probe_call()
            except ApiException as exc:
                return f"ValidatingAdmissionPolicy '{name}'" in str(exc.body)
            return False

        wait_for(enforced, f"policy {name} to be enforced", timeout)


def _tail(path: Path, lines: int) -> list[str]:
    if not path.is_file():
        return []
    text = path.read_text(errors="replace").splitlines()
    return text[-lines:] if lines else text


def kubectl(cp: ControlPlane, *args: str, context: str = "admin", stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(cp.kubeconfig), "--context", context, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Cluster:
    cp: ControlPlane
    namespace: str
    store: str  # s3://bucket/prefix
    s3_endpoint: str
    profile_file: Path
    tmp: Path

    def api(self, context: str = "admin") -> Any:
        return self.cp.api(context)

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api())

    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api())

    def kubectl(self, *args: str, context: str = "admin", stdin: str | None = None) -> str:
        return kubectl(self.cp, "-n", self.namespace, *args, context=context, stdin=stdin)

    def env(self) -> dict[str, str]:
        """The environment of a person running the CLI against this cluster."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SKILLMIX_"))}
        return {
            **keep,
            "PATH": f"{REPO_ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "SKILLMIX_CONFIG": str(self.profile_file),
            "COLUMNS": "200",  # tables unwrapped, as on a wide terminal
            "KUBECONFIG": str(self.cp.kubeconfig),
            "SKILLMIX_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": S3_TEST_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_TEST_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.tmp / "no-aws-credentials"),
        }

    def skillmix(
        self, *args: str, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """The real CLI in its own process, as the launcher identity."""
        result = subprocess.run(
            [sys.executable, "-m", "skillmix", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"skillmix {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "skillmix", *args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.tmp,
        )

    def pods(self, selector: str = "") -> list[Any]:
        return list(self.core().list_namespaced_pod(self.namespace, label_selector=selector).items)

    def jobs(self, selector: str = "") -> list[Any]:
        return list(self.batch().list_namespaced_job(self.namespace, label_selector=selector).items)


def write_profile(path: Path, cp: ControlPlane, namespace: str, store: str, s3: str) -> Path:
    profile = {
        "default": "local",
        "clusters": {
            "local": {
                "context": "launcher",
                "kubeconfig": str(cp.kubeconfig),
                "namespace": namespace,
                "image": IMAGE,
                "image_pull_policy": "IfNotPresent",
                "store": store,
                "s3": {"endpoint_url": s3, "credentials_secret": S3_SECRET},
                "deadlines": {
                    "generation_seconds": 600,
                    "grading_seconds": 900,
                    "aggregation_seconds": 1200,
                    "ttl_seconds": 3600,
                    "model_load_seconds": 120,
                },
                "backoff_limit": 1,
                "client_resources": {
                    "requests": {"cpu": "50m", "memory": "128Mi"},
                    "limits": {"memory": "1Gi"},
                },
            }
        },
    }
    path.write_text(yaml.safe_dump(profile, sort_keys=False), encoding="utf-8")
    return path


def prepare_namespace(cp: ControlPlane, namespace: str) -> None:
    """A restricted namespace with the launcher Role bound and the S3 Secret, as an admin
    prepares one (the launcher itself may not touch Secrets)."""
    kubectl(cp, "create", "namespace", namespace)
    kubectl(
        cp,
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    rbac = [
        doc
        for name in ("rbac-launcher.yaml", "rbac-coordinator.yaml")
        for doc in yaml.safe_load_all((REPO_ROOT / "k8s" / name).read_text())
    ]
    for doc in rbac:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":  # the coordinator's
                subject["namespace"] = namespace
    kubectl(cp, "apply", "-f", "-", stdin=yaml.safe_dump_all(rbac))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_SECRET, "namespace": namespace},
        "data": {
            "AWS_ACCESS_KEY_ID": base64.b64encode(S3_TEST_ACCESS_KEY.encode()).decode(),
            "AWS_SECRET_ACCESS_KEY": base64.b64encode(S3_TEST_SECRET.encode()).decode(),
        },
    }
    kubectl(cp, "apply", "-f", "-", stdin=yaml.safe_dump(secret))


@pytest.fixture
def cluster(
    control_plane: ControlPlane,
    moto_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cluster]:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    prepare_namespace(control_plane, namespace)
    s3_test_env(monkeypatch, moto_server, tmp_path)  # this process's own reads of the store
    store = f"s3://{create_bucket(moto_server)}/runs"
    profile = write_profile(
        tmp_path / "skillmix.yaml", control_plane, namespace, store, moto_server
    )
    monkeypatch.setenv("SKILLMIX_CONFIG", str(profile))
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    yield Cluster(control_plane, namespace, store, moto_server, profile, tmp_path)
    # leave nothing running: the namespace controller deletes its pods, the kubelet stops them
    kubectl(control_plane, "delete", "namespace", namespace, "--wait=false")


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# Kueue
# ---------------------------------------------------------------------------------------------


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make ``--dist loadgroup`` group again. pytest-xdist 3.8 tells its scheduler about an
    ``xdist_group`` by appending ``@group`` to the node id through ``item._nodeid``, which
    pytest 9.2 no longer reads (pytest-dev/pytest-xdist#1386, open): the Kueue tests would
    scatter over the workers, each starting its own Kueue. This sets the same suffix where
    pytest 9.2 keeps the id; a no-op where xdist did it already or pytest is older."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers only
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest < 9.2 reads item._nodeid, which xdist sets
        return
    for item in items:
        groups = sorted(
            {
                str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                for mark in item.iter_markers("xdist_group")
            }
        )
        suffix = "@" + "_".join(groups)
        if groups and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = NodeId.parse(item.nodeid + suffix)


@pytest.fixture(scope="session")
def kueue(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KueueManager]:
    """Kueue for this worker's control plane, started on the first ``ensure()`` and stopped
    (webhook configurations first) at the end of the session."""
    missing = missing_kueue()
    if missing:
        message = f"Kueue not installed ({', '.join(missing)}): make tools"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    manager = KueueManager(control_plane, tmp_path_factory.mktemp("kueue"))
    try:
        yield manager
    finally:
        manager.stop()


@dataclass
class KueueCluster:
    """The ``cluster`` namespace under Kueue: labelled, with its own ResourceFlavor
    (``flavor``), ClusterQueue (``cluster_queue``, named after the namespace, admitting only
    from it) and LocalQueue (``local_queue``; None: none was made)."""

    cluster: Cluster
    kueue: Kueue
    flavor: str
    cluster_queue: str
    local_queue: str | None
    gpu_quota: int

    @property
    def namespace(self) -> str:
        return self.cluster.namespace

    @property
    def version(self) -> str:
        """The Kueue API version to talk (v1beta2 when the CRDs serve it)."""
        return self.kueue.api_version

    def custom(self, context: str = "admin") -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.cluster.api(context))

    def create_job(self, body: dict[str, Any]) -> Any:
        """Create a Job (e.g. ``tests.cluster.kueue.tiny_job(...)``) as admin; the returned
        V1Job is what the webhooks made of it."""
        return self.cluster.batch().create_namespaced_job(self.namespace, body)

    def job(self, name: str) -> Any:
        return self.cluster.batch().read_namespaced_job(name, self.namespace)

    def suspended(self, name: str) -> bool:
        return bool(self.job(name).spec.suspend)

    def workloads(self) -> list[dict[str, Any]]:
        found = self.custom().list_namespaced_custom_object(
            GROUP, self.version, self.namespace, "workloads"
        )
        return list(found["items"])

    def workload_for(self, job: str) -> dict[str, Any] | None:
        """The Workload Kueue made for the Job named ``job`` (by owner), or None."""
        for workload in self.workloads():
            owners = workload["metadata"].get("ownerReferences") or []
            if any(o["kind"] == "Job" and o["name"] == job for o in owners):
                return workload
        return None

    def admitted(self, job: str) -> bool:
        """Kueue admitted the Job's Workload (its Job may still be suspended a moment)."""
        workload = self.workload_for(job)
        condition = status_condition(workload, "Admitted") if workload else None
        return bool(condition and condition["status"] == "True")


@pytest.fixture
def kueue_cluster(cluster: Cluster, kueue: KueueManager) -> Iterator[Callable[..., KueueCluster]]:
    """``kueue_cluster(gpu_quota=2, local_queue="skillmix", manage_jobs_without_queue_name=False,
    admission_gated_by=False, wait_for_pods_ready_seconds=None, feature_gates=None)``: once per
    test. Tests asking for the same config share the running Kueue; the others restart it (~3 s),
    so keep tests of one config together. ``local_queue="default"`` exercises Kueue's
    LocalQueueDefaulting; None makes no LocalQueue. The cluster-scoped objects and the Jobs are
    deleted after the test (the namespace goes with ``cluster``)."""
    made: list[KueueCluster] = []

    def make(
        *,
        gpu_quota: int = 2,
        local_queue: str | None = "skillmix",
        manage_jobs_without_queue_name: bool = False,
        admission_gated_by: bool = False,
        wait_for_pods_ready_seconds: int | None = None,
        feature_gates: dict[str, bool] | None = None,
    ) -> KueueCluster:
        if made:
            raise AssertionError("kueue_cluster() may be called once per test")
        gates = dict(feature_gates or {})
        if admission_gated_by:
            gates["AdmissionGatedBy"] = True
        config = KueueConfig(
            manage_jobs_without_queue_name=manage_jobs_without_queue_name,
            feature_gates=gates,
            wait_for_pods_ready_seconds=wait_for_pods_ready_seconds,
        )
        try:
            running = kueue.ensure(config)
        except ClusterSetupError as exc:
            pytest.fail(str(exc))
        kc = KueueCluster(
            cluster,
            running,
            flavor=f"{cluster.namespace}-flavor",
            cluster_queue=cluster.namespace,
            local_queue=local_queue,
            gpu_quota=gpu_quota,
        )
        made.append(kc)
        _prepare_kueue_namespace(kc)
        return kc

    yield make
    for kc in made:
        _cleanup_kueue_namespace(kc)


def _prepare_kueue_namespace(kc: KueueCluster) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kc.cluster.api())
    core.patch_namespace(kc.namespace, {"metadata": {"labels": {ENABLED_LABEL: ENABLED_VALUE}}})
    kc.kueue.wait_webhook_covers(kc.namespace)
    api, version = kc.custom(), kc.version
    api.create_cluster_custom_object(
        GROUP, version, "resourceflavors", resource_flavor(kc.flavor, version)
    )
    api.create_cluster_custom_object(
        GROUP,
        version,
        "clusterqueues",
        cluster_queue(kc.cluster_queue, kc.flavor, kc.namespace, kc.gpu_quota, version),
    )
    if kc.local_queue is not None:
        api.create_namespaced_custom_object(
            GROUP,
            version,
            kc.namespace,
            "localqueues",
            local_queue(kc.local_queue, kc.cluster_queue, version),
        )

    def active() -> bool:
        # the webhook defaults queue names from Kueue's own cache: wait until it has the queues
        queues: list[tuple[str, str | None, str]] = [("clusterqueues", None, kc.cluster_queue)]
        if kc.local_queue is not None:
            queues.append(("localqueues", kc.namespace, kc.local_queue))
        for plural, namespace, name in queues:
            if namespace is None:
                obj = api.get_cluster_custom_object(GROUP, version, plural, name)
            else:
                obj = api.get_namespaced_custom_object(GROUP, version, namespace, plural, name)
            condition = status_condition(obj, "Active")
            if not condition or condition["status"] != "True":
                return False
        return True

    wait_for(active, f"Kueue to activate the queues of {kc.namespace}", timeout=30)


def _cleanup_kueue_namespace(kc: KueueCluster) -> None:
    """Jobs first (their Workloads hold the ClusterQueue's finalizer), then the queues and the
    flavor; Kueue removes its finalizers as they drain, nothing waits for it."""
    from kubernetes.client.rest import ApiException

    def quietly(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except ApiException as exc:
            if exc.status != 404:
                raise

    api, version = kc.custom(), kc.version
    quietly(
        kc.cluster.batch().delete_collection_namespaced_job,
        kc.namespace,
        propagation_policy="Background",
    )
    if kc.local_queue is not None:
        quietly(
            api.delete_namespaced_custom_object,
            GROUP,
            version,
            kc.namespace,
            "localqueues",
            kc.local_queue,
        )
    quietly(api.delete_cluster_custom_object, GROUP, version, "clusterqueues", kc.cluster_queue)
    quietly(api.delete_cluster_custom_object, GROUP, version, "resourceflavors", kc.flavor)
