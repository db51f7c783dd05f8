"""Kueue v0.17 as a process against the test control plane (tests/cluster/controlplane.py).

The ``kueue`` binary, CRDs and webhook manifests come from ``scripts/install-kueue.sh``
(``.tools/kueue-vX/{bin,crds,webhook}``). There is no Service network here, so:

- the webhooks are registered by URL (``https://127.0.0.1:<port><path>``) with our own CA; Kueue's
  internal cert rotator stays on (with it off, v0.17 wants a metrics cert under /etc/kueue) and
  keeps our certificate because it is valid for the name the rotator checks
  (``kueue-webhook-service.kueue-system.svc``) as well as for 127.0.0.1;
- Kueue only ever sees namespaces labelled ``skillmix.io/kueue=enabled``: both its
  ``managedJobsNamespaceSelector`` and the webhook configurations' ``namespaceSelector`` say so.
  The webhooks' failurePolicy is Fail, and the other cluster tests share this control plane:
  their Jobs must never wait on Kueue. Only the webhooks of the ``batch/job`` integration and
  of Kueue's own objects are registered (the pod, deployment, ... ones are not needed);
- ``stop()`` deletes the webhook configurations before it ends the process, so nothing is left
  that fails admission.

Every wait is bounded; a failed start leaves no process behind and raises ClusterSetupError with
one line naming the log (``<control plane workdir>/logs/kueue.log``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import functools
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.controlplane import (
    REPO_ROOT,
    ClusterSetupError,
    ControlPlane,
    _last_line,
    _pid_alive,
    _signal_group,
    _spawn,
    _wait_healthy,
    free_port,
)

KUEUE_VERSION = os.environ.get("KUEUE_VERSION", "v0.17.0")
KUEUE_DIR = REPO_ROOT / ".tools" / f"kueue-{KUEUE_VERSION}"
KUBECTL = REPO_ROOT / ".tools" / "bin" / "kubectl"
GROUP = "kueue.x-k8s.io"
KUEUE_NAMESPACE = "kueue-system"
ENABLED_LABEL = "skillmix.io/kueue"
ENABLED_VALUE = "enabled"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GATED_BY_ANNOTATION = "kueue.x-k8s.io/admission-gated-by"
PROBE_NAMESPACE = "skillmix-kueue-probe"
WEBHOOK_SECRET = "kueue-webhook-server-cert"
SERVICE_DNS = f"kueue-webhook-service.{KUEUE_NAMESPACE}.svc"
MUTATING = "kueue-mutating-webhook-configuration"
VALIDATING = "kueue-validating-webhook-configuration"
# the CRDs whose v1beta1 reads go through Kueue's conversion webhook (pkg/util/cert/cert.go)
CONVERSION_CRDS = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
# webhooks of these API groups serve the batch/job integration and Kueue's own objects
WEBHOOK_GROUPS = frozenset({"batch", GROUP})
COMPONENT = "kueue"


def missing_kueue(kueue_dir: Path = KUEUE_DIR) -> list[str]:
    """What ``make tools`` has not installed yet (empty when Kueue can start)."""
    missing = []
    if not os.access(kueue_dir / "bin" / "kueue", os.X_OK):
        missing.append(str(kueue_dir / "bin" / "kueue"))
    if not list((kueue_dir / "crds").glob("*.yaml")):
        missing.append(str(kueue_dir / "crds"))
    if not (kueue_dir / "webhook" / "manifests.yaml").is_file():
        missing.append(str(kueue_dir / "webhook" / "manifests.yaml"))
    if not os.access(KUBECTL, os.X_OK):
        missing.append(str(KUBECTL))
    return missing


@dataclass(frozen=True)
class KueueConfig:
    """The knobs tests may turn; a manager restarts Kueue only for a config not equal to the
    running one.

    ``VisibilityOnDemand`` is off unless a test turns it on: its aggregated API server writes a
    self-signed certificate to ``/visibility`` (a fixed path) and nothing here uses it."""

    manage_jobs_without_queue_name: bool = False
    feature_gates: Mapping[str, bool] = field(default_factory=dict)
    wait_for_pods_ready_seconds: int | None = None

    def __post_init__(self) -> None:
        gates = {"VisibilityOnDemand": False, **dict(self.feature_gates)}
        object.__setattr__(self, "feature_gates", dict(sorted(gates.items())))
        seconds = self.wait_for_pods_ready_seconds
        if seconds is not None and seconds <= 0:
            raise ValueError("wait_for_pods_ready_seconds must be positive (or None: off)")

    def document(self, ports: Mapping[str, int], cert_dir: Path) -> dict[str, Any]:
        """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2)."""
        doc: dict[str, Any] = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": KUEUE_NAMESPACE,
            "manageJobsWithoutQueueName": self.manage_jobs_without_queue_name,
            "managedJobsNamespaceSelector": {"matchLabels": {ENABLED_LABEL: ENABLED_VALUE}},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": True},
            "webhook": {"host": "127.0.0.1", "port": ports["webhook"], "certDir": str(cert_dir)},
            "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['health']}"},
            "metrics": {"bindAddress": f"127.0.0.1:{ports['metrics']}"},
            # bound to loopback on a free port: the default *:8082 clashes between workers
            "visibilityServer": {"bindAddress": "127.0.0.1", "bindPort": ports["visibility"]},
            "integrations": {"frameworks": ["batch/job"]},
            "featureGates": dict(self.feature_gates),
        }
        if self.wait_for_pods_ready_seconds is not None:
            doc["waitForPodsReady"] = {"timeout": f"{self.wait_for_pods_ready_seconds}s"}
        return doc


# ---------------------------------------------------------------------------------------------
# certificates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookPki:
    ca_crt: bytes
    ca_key: bytes
    tls_crt: bytes
    tls_key: bytes


def make_webhook_pki() -> WebhookPki:
    """A CA and a serving certificate that Kueue's cert rotator (cert-controller v0.16) keeps:
    the CA valid for the DNS name ``kueue-ca``, its key RSA in PKCS#1 (the only form the rotator
    parses), the server certificate for ``SERVICE_DNS`` with server auth, both valid well beyond
    its 90-day look-ahead; plus IP 127.0.0.1, the address the API server calls."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def key_pem(key: rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1: "RSA PRIVATE KEY"
            serialization.NoEncryption(),
        )

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "kueue-ca"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kueue"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("kueue-ca")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVICE_DNS)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(SERVICE_DNS),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return WebhookPki(ca.public_bytes(pem), key_pem(ca_key), cert.public_bytes(pem), key_pem(key))


# ---------------------------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------------------------


def _webhook_url(port: int, path: str) -> str:
    return f"https://127.0.0.1:{port}{path}"


@functools.cache
def _load_yaml(path: Path) -> tuple[Any, ...]:
    """Parsed once per process (the workloads CRD is 1.4 MB); callers copy before editing."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(d for d in yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader) if d)


def crd_documents(kueue_dir: Path, port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """The CRDs, the five that need it with a conversion webhook at our URL."""
    docs = []
    for path in sorted((kueue_dir / "crds").glob("*.yaml")):
        for doc in copy.deepcopy(_load_yaml(path)):
            if doc["metadata"]["name"] in {f"{crd}.{GROUP}" for crd in CONVERSION_CRDS}:
                doc["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {
                        "clientConfig": {
                            "url": _webhook_url(port, "/convert"),
                            "caBundle": base64.b64encode(ca_bundle).decode(),
                        },
                        "conversionReviewVersions": ["v1"],
                    },
                }
            docs.append(doc)
    return docs


def webhook_documents(kueue_dir: Path, port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """The module's webhook configurations under the names Kueue's cert rotator patches, each
    webhook called by URL and limited to namespaces labelled ``skillmix.io/kueue=enabled``
    (cluster-scoped objects, ClusterQueues and ResourceFlavors, are not filtered by the API
    server's namespaceSelector)."""
    names = {"MutatingWebhookConfiguration": MUTATING, "ValidatingWebhookConfiguration": VALIDATING}
    manifests = kueue_dir / "webhook" / "manifests.yaml"
    docs = []
    for doc in copy.deepcopy(_load_yaml(manifests)):
        if doc.get("kind") not in names:
            continue
        doc["metadata"] = {"name": names[doc["kind"]]}
        webhooks = []
        for hook in doc.get("webhooks") or []:
            groups = {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups") or []}
            if not groups or not groups <= WEBHOOK_GROUPS:
                continue
            hook["clientConfig"] = {
                "url": _webhook_url(port, hook["clientConfig"]["service"]["path"]),
                "caBundle": base64.b64encode(ca_bundle).decode(),
            }
            hook["namespaceSelector"] = {"matchLabels": {ENABLED_LABEL: ENABLED_VALUE}}
            hook["timeoutSeconds"] = 10
            webhooks.append(hook)
        doc["webhooks"] = webhooks
        docs.append(doc)
    if sorted(d["kind"] for d in docs) != sorted(names) or not all(d["webhooks"] for d in docs):
        raise ClusterSetupError(f"no batch/job webhooks found in {manifests}; rerun `make tools`")
    return docs


def resource_flavor(name: str, version: str) -> dict[str, Any]:
    """A ResourceFlavor without node labels: every node fits it."""
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": "ResourceFlavor",
        "metadata": {"name": name},
        "spec": {},
    }


def cluster_queue(
    name: str, flavor: str, namespace: str, gpu_quota: int, version: str
) -> dict[str, Any]:
    """A ClusterQueue admitting from ``namespace`` only: GPU quota ``gpu_quota``, cpu, memory
    and ephemeral storage plenty (tests count GPUs). Kueue leaves a Workload that requests a
    resource no flavor covers inadmissible, and vLLM pods request ephemeral-storage."""
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "queueingStrategy": "BestEffortFIFO",
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"],
                    "flavors": [
                        {
                            "name": flavor,
                            "resources": [
                                {"name": "cpu", "nominalQuota": "64"},
                                {"name": "memory", "nominalQuota": "256Gi"},
                                {"name": "ephemeral-storage", "nominalQuota": "1Ti"},
                                {"name": "nvidia.com/gpu", "nominalQuota": gpu_quota},
                            ],
                        }
                    ],
                }
            ],
        },
    }


def local_queue(name: str, cluster_queue: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": "LocalQueue",
        "metadata": {"name": name},
        "spec": {"clusterQueue": cluster_queue},
    }


def status_condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The ``status.conditions`` entry of type ``kind`` of a Kueue object (dict form)."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def tiny_job(
    name: str,
    *,
    queue: str | None = None,
    gpus: int = 0,
    suspend: bool = True,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A plain one-pod Job for admission tests, restricted-Pod-Security clean. Its pod never runs
    anything: the image is one the process kubelet has no mapping for, and a GPU pod has no
    toleration for the GPU node's taint, so it stays Pending (Kueue still counts its quota)."""
    resources: dict[str, Any] = {"requests": {"cpu": "10m", "memory": "16Mi"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    all_labels = dict(labels or {})
    if queue is not None:
        all_labels[QUEUE_LABEL] = queue
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "suspend": suspend,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.invalid/skillmix-kueue-test:none",
                            "command": ["sleep", "600"],
                            "resources": resources,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                }
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# the process
# ---------------------------------------------------------------------------------------------


@dataclass
class Kueue:
    """A running Kueue; ``stop()`` removes its webhook configurations, then ends it."""

    cp: ControlPlane
    config: KueueConfig
    ports: dict[str, int]
    api_version: str  # the Kueue API version the CRDs serve and prefer: v1beta2, else v1beta1

    @property
    def log(self) -> Path:
        return self.cp.log(COMPONENT)

    def alive(self) -> bool:
        proc = self.cp._procs.get(COMPONENT)
        return proc is not None and proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """Webhook configurations first (so no admission waits on a dead server), then the
        process (see ``_end_process``); bounded."""
        try:
            delete_webhook_configurations(self.cp)
        finally:
            _end_process(self.cp, grace)

    def wait_webhook_covers(self, namespace: str, timeout: float = 30.0) -> None:
        """Wait until Kueue's Job webhooks judge Jobs in ``namespace`` (a namespace label is seen
        by the API server's admission a moment after it is set)."""
        deadline = time.monotonic() + timeout
        _wait_webhook(self.cp, namespace, deadline)


def _end_process(cp: ControlPlane, grace: float) -> None:
    """SIGTERM; a second SIGTERM after 1 s; SIGKILL after ``grace``. Kueue v0.17 stopped soon
    after it became ready sometimes never leaves ``mgr.Start`` on the first signal (seen: 10 s
    and counting), and its graceful stop takes over 2 s anyway; controller-runtime's handler
    exits at once on a second signal, and Kueue keeps no state outside the API server."""
    pid = cp.pids.pop(COMPONENT, None)
    proc = cp._procs.pop(COMPONENT, None)
    if pid is None:
        return
    start = time.monotonic()
    signals = [(0.0, signal.SIGTERM), (min(1.0, grace), signal.SIGTERM)]
    while time.monotonic() - start < grace and _pid_alive(pid, proc):
        if signals and time.monotonic() - start >= signals[0][0]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signals.pop(0)[1])  # once per step: two at once may merge
        time.sleep(0.05)
    if _pid_alive(pid, proc):
        _signal_group(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def delete_webhook_configurations(cp: ControlPlane) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = client.AdmissionregistrationV1Api(cp.api())
    for delete, name in (
        (api.delete_mutating_webhook_configuration, MUTATING),
        (api.delete_validating_webhook_configuration, VALIDATING),
    ):
        try:
            delete(name, _request_timeout=15)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _kubectl_apply(cp: ControlPlane, docs: list[dict[str, Any]], timeout: float) -> None:
    """Server-side apply (the workloads CRD is too large for the client-side annotation)."""
    result = subprocess.run(
        [
            str(KUBECTL),
            "--kubeconfig",
            str(cp.kubeconfig),
            "--context",
            "admin",
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=skillmix-tests",
            "-f",
            "-",
        ],
        input=yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)),
        capture_output=True,
        text=True,
        timeout=max(timeout, 1.0),
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        raise ClusterSetupError(f"kubectl apply of Kueue's manifests failed: {lines[-1][:300]}")


def _create_webhook_configurations(cp: ControlPlane, docs: list[dict[str, Any]]) -> None:
    from kubernetes import client

    api = client.AdmissionregistrationV1Api(cp.api())
    delete_webhook_configurations(cp)
    for doc in docs:
        if doc["kind"] == "MutatingWebhookConfiguration":
            api.create_mutating_webhook_configuration(doc, _request_timeout=15)
        else:
            api.create_validating_webhook_configuration(doc, _request_timeout=15)


def _ensure_namespace(core: Any, name: str, labels: dict[str, str]) -> None:
    from kubernetes.client.rest import ApiException

    body = {"metadata": {"name": name, "labels": labels}}
    try:
        core.create_namespace(body, _request_timeout=15)
    except ApiException as exc:
        if exc.status != 409:
            raise
        if labels:
            core.patch_namespace(name, {"metadata": {"labels": labels}}, _request_timeout=15)


def _store_certificates(cp: ControlPlane, pki: WebhookPki, cert_dir: Path) -> None:
    """The Secret the rotator reads and the files the webhook server serves (in a pod, the
    mounted Secret)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    data = {
        "ca.crt": pki.ca_crt,
        "ca.key": pki.ca_key,
        "tls.crt": pki.tls_crt,
        "tls.key": pki.tls_key,
    }
    core = client.CoreV1Api(cp.api())
    secret = {
        "metadata": {"name": WEBHOOK_SECRET, "namespace": KUEUE_NAMESPACE},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    try:
        core.create_namespaced_secret(KUEUE_NAMESPACE, secret, _request_timeout=15)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(WEBHOOK_SECRET, KUEUE_NAMESPACE, secret, _request_timeout=15)
    cert_dir.mkdir(parents=True, exist_ok=True)
    for name, value in data.items():
        path = cert_dir / name
        path.write_bytes(value)
        path.chmod(0o600)


def _crds_current(cp: ControlPlane, docs: list[dict[str, Any]]) -> bool:
    """Whether every CRD exists and converts through the webhook URL and CA of ``docs`` (a
    restart on the same port then skips the 1-2 s apply)."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(cp.api())
    live = {
        crd.metadata.name: crd
        for crd in ext.list_custom_resource_definition(_request_timeout=15).items
        if crd.spec.group == GROUP
    }
    for doc in docs:
        crd = live.get(doc["metadata"]["name"])
        if crd is None:
            return False
        wanted = doc["spec"].get("conversion", {}).get("webhook", {}).get("clientConfig")
        if wanted:
            webhook = crd.spec.conversion.webhook if crd.spec.conversion else None
            config = webhook.client_config if webhook else None
            ca = (config.ca_bundle or "") if config else ""  # the client keeps it base64
            if config is None or config.url != wanted["url"] or ca != wanted["caBundle"]:
                return False
    return True


def _wait_established(cp: ControlPlane, deadline: float) -> str:
    """Wait until every Kueue CRD is Established; returns the API version to use (v1beta2 when
    served, else v1beta1)."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(cp.api())
    pending: list[str] = []
    while time.monotonic() < deadline:
        crds = [
            crd
            for crd in ext.list_custom_resource_definition(_request_timeout=15).items
            if crd.spec.group == GROUP
        ]
        pending = [
            crd.metadata.name
            for crd in crds
            if not any(
                c.type == "Established" and c.status == "True"
                for c in (crd.status.conditions or [])
            )
        ]
        if crds and not pending:
            served = {
                v.name
                for crd in crds
                if crd.metadata.name == f"workloads.{GROUP}"
                for v in crd.spec.versions
                if v.served
            }
            return "v1beta2" if "v1beta2" in served else "v1beta1"
        time.sleep(0.2)
    raise ClusterSetupError(
        f"Kueue's CRDs were not Established in time (pending: {', '.join(pending) or 'all'})"
    )


def _wait_webhook(cp: ControlPlane, namespace: str, deadline: float) -> None:
    """Kueue's readyz says the webhook server started; admission works once the API server's
    call to it is answered. A dry-run create of a Job whose queue name Kueue's validating
    webhook rejects tells both apart: denied by ``vjob.kb.io`` means the webhook answers for
    this namespace; accepted means the API server does not send this namespace to it (yet);
    an internal error means it cannot reach it (yet)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    batch = client.BatchV1Api(cp.api())
    body = tiny_job("skillmix-kueue-probe", queue="not_a_queue_name")
    last = "no answer"
    while time.monotonic() < deadline:
        proc = cp._procs.get(COMPONENT)
        if proc is not None and proc.poll() is not None:
            raise ClusterSetupError(
                f"kueue exited with code {proc.returncode} while starting; see {cp.log(COMPONENT)}"
                f" (last line: {_last_line(cp.log(COMPONENT))})"
            )
        try:
            batch.create_namespaced_job(namespace, body, dry_run="All", _request_timeout=15)
            last = f"a Job in {namespace} was admitted without Kueue's webhook"
        except ApiException as exc:
            message = str(getattr(exc, "body", "") or exc)
            if "vjob.kb.io" in message and "denied" in message:
                return
            last = f"HTTP {exc.status}: {_api_message(str(exc.body or ''))}"
        time.sleep(0.2)
    raise ClusterSetupError(
        f"kueue's webhook did not answer for namespace {namespace} in time ({last}); "
        f"see {cp.log(COMPONENT)}"
    )


def _api_message(body: str) -> str:
    """One line from an API error body (its ``message`` when it is a Status)."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = str(json.loads(body).get("message", body))
    return " ".join(body.split())[:200]


def _listenable(port: int) -> bool:
    """Whether a server may listen on the port: with SO_REUSEADDR, as Go's listeners do, so the
    TIME_WAIT connections a stopped Kueue leaves on its own ports do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(previous: Mapping[str, int] | None = None) -> dict[str, int]:
    """Loopback ports for the four servers; the previous ones again when all are free (a
    restart then needs no new URLs, so no CRD update)."""
    names = ("webhook", "health", "metrics", "visibility")
    if previous and all(_listenable(previous[n]) for n in names):
        return {n: previous[n] for n in names}
    ports: dict[str, int] = {}
    while len(ports) < len(names):  # distinct: free_port() may hand out a port twice
        port = free_port()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


def start_kueue(
    cp: ControlPlane,
    workdir: Path,
    config: KueueConfig,
    *,
    pki: WebhookPki | None = None,
    ports: Mapping[str, int] | None = None,
    kueue_dir: Path = KUEUE_DIR,
    timeout: float = 90.0,
) -> Kueue:
    """Install Kueue's CRDs (unless those in place already convert through this webhook port
    and CA) and webhooks into ``cp`` and start it; returns once it admits (bounded by
    ``timeout``). On failure nothing is left running or registered, and ClusterSetupError
    names the log."""
    missing = missing_kueue(kueue_dir)
    if missing:
        raise ClusterSetupError(f"Kueue missing: {', '.join(missing)}; run `make tools`")
    if COMPONENT in cp.pids:
        raise ClusterSetupError("kueue is already running on this control plane; stop it first")
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    deadline = time.monotonic() + timeout
    workdir.mkdir(parents=True, exist_ok=True)
    pki = pki or make_webhook_pki()
    chosen = dict(ports) if ports else free_ports()
    cert_dir = workdir / "certs"
    log = cp.log(COMPONENT)
    try:
        core = client.CoreV1Api(cp.api())
        _ensure_namespace(core, KUEUE_NAMESPACE, {})
        _ensure_namespace(core, PROBE_NAMESPACE, {ENABLED_LABEL: ENABLED_VALUE})
        _store_certificates(cp, pki, cert_dir)
        port = chosen["webhook"]
        crds = crd_documents(kueue_dir, port, pki.ca_crt)
        if not _crds_current(cp, crds):
            _kubectl_apply(cp, crds, deadline - time.monotonic())
        api_version = _wait_established(cp, deadline)
        # just before the start: while they exist and Kueue does not serve, admission fails
        _create_webhook_configurations(cp, webhook_documents(kueue_dir, port, pki.ca_crt))
        config_file = workdir / "config.yaml"
        config_file.write_text(
            yaml.safe_dump(config.document(chosen, cert_dir), sort_keys=False), encoding="utf-8"
        )
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as out:
            out.write(f"=== skillmix tests: starting kueue with {config} on {chosen}\n")
        _spawn(
            cp,
            COMPONENT,
            [
                str(kueue_dir / "bin" / "kueue"),
                f"--config={config_file}",
                f"--kubeconfig={cp.workdir / 'admin.kubeconfig'}",
                "--zap-log-level=2",
            ],
        )
        _wait_healthy(cp, COMPONENT, f"http://127.0.0.1:{chosen['health']}/readyz", deadline)
        _wait_webhook(cp, PROBE_NAMESPACE, deadline)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            delete_webhook_configurations(cp)
        _end_process(cp, grace=3)
        if isinstance(exc, ClusterSetupError):
            if str(log) in str(exc):
                raise
            raise ClusterSetupError(f"{exc}; see {log}") from exc
        if isinstance(exc, ApiException):
            reason = f"HTTP {exc.status} {exc.reason}: {_api_message(str(exc.body or ''))}"
            raise ClusterSetupError(f"kueue did not start ({reason}); see {log}") from exc
        if isinstance(exc, OSError | subprocess.SubprocessError):
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            raise ClusterSetupError(f"kueue did not start ({reason}); see {log}") from exc
        raise
    return Kueue(cp, config, chosen, api_version)


class KueueManager:
    """One Kueue per control plane for a test session: ``ensure()`` returns a Kueue running
    with the requested config, restarting it only when the config differs."""

    def __init__(self, cp: ControlPlane, workdir: Path, kueue_dir: Path = KUEUE_DIR) -> None:
        self.cp = cp
        self.workdir = workdir
        self.kueue_dir = kueue_dir
        self.running: Kueue | None = None
        self.starts = 0
        self.pki = make_webhook_pki()  # one CA per session: restarts keep the CRDs' caBundle
        self._ports: dict[str, int] | None = None

    def ensure(
        self,
        config: KueueConfig | None = None,
        *,
        manage_jobs_without_queue_name: bool = False,
        feature_gates: Mapping[str, bool] | None = None,
        wait_for_pods_ready_seconds: int | None = None,
    ) -> Kueue:
        """Kueue with ``config`` (or one built from the keyword knobs)."""
        wanted = config or KueueConfig(
            manage_jobs_without_queue_name=manage_jobs_without_queue_name,
            feature_gates=dict(feature_gates or {}),
            wait_for_pods_ready_seconds=wait_for_pods_ready_seconds,
        )
        current = self.running
        if current is not None and current.config == wanted and current.alive():
            return current
        self.stop()
        ports = free_ports(self._ports)
        self.running = start_kueue(
            self.cp,
            self.workdir,
            wanted,
            pki=self.pki,
            ports=ports,
            kueue_dir=self.kueue_dir,
        )
        self._ports = ports
        self.starts += 1
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            running, self.running = self.running, None
            running.stop()
