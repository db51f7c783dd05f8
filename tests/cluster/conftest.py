"""Fixtures for tests on the real control plane (``make cluster-test``).

- ``control_plane`` (session): etcd, kube-apiserver, kube-controller-manager, kube-scheduler
  and our process kubelet, on 127.0.0.1. Without the binaries (``make tools`` builds them) the
  tests skip, except under CI, where that is a failure.
- ``cluster`` (function): a fresh namespace labelled ``pod-security.kubernetes.io/enforce:
  restricted`` with ``k8s/rbac-launcher.yaml`` and ``k8s/rbac-coordinator.yaml`` applied (by kubectl, as admin), the S3
  credentials Secret, a moto S3 bucket, and a cluster profile whose kube context is the
  *launcher* identity, so every CLI call runs with the launcher Role's rights only.
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
        yield cp
    finally:
        cp.stop()
        for line in _tail(cp.log("kubelet"), 0):
            if "Traceback" in line:
                print(f"kubelet log has a traceback: see {cp.log('kubelet')}", file=sys.stderr)
                break


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
