"""The process kubelet: the one component of the test cluster that is ours.

It registers two Nodes with the real API server (``cpu-node``, and ``gpu-node`` with
``nvidia.com/gpu`` capacity, GPU product labels and the ``nvidia.com/gpu:NoSchedule`` taint),
keeps their Leases and Ready conditions fresh, and runs the pods the real scheduler binds to
them as local processes, with kubelet semantics:

- init containers in order; native sidecars (``restartPolicy: Always``) gated by their
  startupProbe; a sidecar that exits or fails its probe is killed and restarted with back-off
  (CrashLoopBackOff) and the pod does not fail; then the main containers; when they end the
  sidecars get SIGTERM;
- env from Secrets, ConfigMaps and the downward API (the Job controller's completion index
  comes through it), ``$(VAR)`` expansion, emptyDir volumes;
- in-cluster API access: ``KUBERNETES_SERVICE_HOST``/``PORT`` name the API server, and the
  service-account volume (projected token from the TokenRequest API, ``ca.crt``, namespace) is
  reachable at ``/var/run/secrets/kubernetes.io/serviceaccount`` through ``netns_shim/``, so the
  Kubernetes client's standard ``load_incluster_config()`` works in a pod;
- faithful status: phase, conditions, init and container statuses with waiting reasons
  (``ErrImagePull``/``ImagePullBackOff`` for images it has no mapping for,
  ``CreateContainerConfigError`` for a missing Secret or key, ``CrashLoopBackOff``), restart
  counts and terminated exit codes (with ``FallbackToLogsOnError``, a failed container's log
  tail as its termination message); Warning events like the kubelet's;
- deletion with a grace period: SIGTERM, then SIGKILL, then the final status and the deletion
  (grace 0, UID precondition);
- container logs over HTTPS on the node's kubelet port (``/containerLogs/...``), so the API
  server's pod log endpoint (``kubectl logs``, ``skillmix logs``) works, ``follow`` included.

Images: ours (repository ``skillmix`` or ``ghcr.io/skillmix/skillmix``) runs the installed
``skillmix`` (``python -m skillmix``); the vLLM stand-in (repository ``skillmix-test/vllm``, any
tag) runs its command as given with ``python3`` being this interpreter and the stand-in ``vllm``
package of ``vllm_stand_in/`` first on PYTHONPATH, so the chart's vLLM command serves the mock
backend (or fails as the model id asks: see ``vllm_stand_in/vllm/entrypoints/openai/
api_server.py``); the image that ``make image`` built (repository ``localhost/skillmix``,
any tag podman's storage holds) runs in a podman container (below); every other image is a
pull error.

Podman containers: ``scripts/podman.sh run`` with the host's network (the pod's containers
meet on loopback through the same port map as processes: the shim is mounted read-only and
first on PYTHONPATH, and nothing of the source tree is), the pod's volumes bind-mounted at
their mount paths (the service-account token included, at its real path), the env of the pod
spec (the image's own ENV comes from the image), and the securityContext as a runtime applies
it: runAsUser/runAsGroup, fsGroup as a supplementary group, a read-only root filesystem
without podman's extra tmpfs mounts, no privilege escalation, dropped and added capabilities.
SIGTERM reaches the container through podman's signal proxy; past the grace period the
container is removed with force.

Network: pods share the host's network, so each pod's declared container ports are given their
own free host port, and the pod's Python processes see them through ``netns_shim/`` (a
``sitecustomize`` that maps the pod's ``localhost:PORT`` onto it), as if each pod had its own
network namespace. Probes go to the mapped port.

Run: ``python -m tests.cluster.kubelet --kubeconfig K --workdir D --cert C --key K``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.server
import json
import logging
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIM_DIR = Path(__file__).resolve().parent / "netns_shim"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
OUR_IMAGES = ("skillmix", "ghcr.io/skillmix/skillmix")
# `make image`'s image (localhost/skillmix:TAG): its containers run in podman, from the image
PODMAN_IMAGES = ("localhost/skillmix",)
PODMAN = REPO_ROOT / "scripts" / "podman.sh"
SHIM_IN_CONTAINER = "/opt/skillmix-netns-shim"
STAND_IN_VLLM_IMAGES = ("skillmix-test/vllm",)
STAND_IN_DIR = Path(__file__).resolve().parent / "vllm_stand_in"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
MAX_BACKOFF = 300.0
# mount paths the netns shim maps for file opens: the service-account token, the model log
MAPPED_MOUNTS = ("/var/run/secrets/", "/var/run/skillmix-model")
log = logging.getLogger("kubelet")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------
# nodes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    name: str
    capacity: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


NODES = (
    NodeSpec("cpu-node", {"cpu": "16", "memory": "64Gi", "pods": "110"}),
    NodeSpec(
        "gpu-node",
        {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "2"},
        labels={
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": GPU_PRODUCT,
            "nvidia.com/gpu.count": "2",
        },
        taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
    ),
)


def node_body(spec: NodeSpec, port: int) -> dict[str, Any]:
    capacity = {**spec.capacity, "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": {
                "kubernetes.io/hostname": spec.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **spec.labels,
            },
        },
        "spec": {"taints": spec.taints} if spec.taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "conditions": ready_conditions(),
            "nodeInfo": {
                "machineID": spec.name,
                "systemUUID": spec.name,
                "bootID": spec.name,
                "kernelVersion": os.uname().release,
                "osImage": "skillmix process kubelet",
                "containerRuntimeVersion": "process://1",
                "kubeletVersion": "v1.34.4",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def ready_conditions() -> list[dict[str, str]]:
    stamp = now()
    healthy = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ("Ready", "True", "KubeletReady"),
    ]
    return [
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": "process kubelet",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
        for kind, status, reason in healthy
    ]


# ---------------------------------------------------------------------------------------------
# the image
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    env: dict[str, str]
    workdir: str | None
    entrypoint: list[str]
    cmd: list[str]


def image_config(dockerfile: Path = DOCKERFILE) -> ImageConfig:
    """The final stage's ENV/WORKDIR/ENTRYPOINT/CMD of our Dockerfile."""
    lines: list[str] = []
    pending = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    env: dict[str, str] = {}
    workdir: str | None = None
    entrypoint: list[str] = []
    cmd: list[str] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            env, workdir, entrypoint, cmd = {}, None, [], []
        elif instruction == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                env[key] = value
        elif instruction == "WORKDIR":
            workdir = rest
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif instruction == "CMD":
            cmd = json.loads(rest)
    return ImageConfig(env, workdir, entrypoint, cmd)


def image_repository(image: str) -> str:
    repository = image.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return repository


def is_our_image(image: str) -> bool:
    return image_repository(image) in OUR_IMAGES


def in_podman(image: str) -> bool:
    return image_repository(image) in PODMAN_IMAGES


def is_stand_in_vllm(image: str) -> bool:
    return image_repository(image) in STAND_IN_VLLM_IMAGES


# the stand-in vLLM image: vllm/vllm-openai's entrypoint of old, nothing else of it
STAND_IN_VLLM = ImageConfig(
    env={"PYTHONUNBUFFERED": "1"},
    workdir=None,
    entrypoint=["python3", "-m", "vllm.entrypoints.openai.api_server"],
    cmd=[],
)


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes; unknown references stay)."""

    def sub(m: re.Match[str]) -> str:
        return "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


class ConfigError(Exception):
    """CreateContainerConfigError: the container's config cannot be built (yet)."""


# ---------------------------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------------------------


@dataclass
class Container:
    spec: dict[str, Any]
    kind: str  # sidecar | init | main
    restarts: int = 0
    proc: subprocess.Popen[bytes] | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "PodInitializing"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    started: bool = False
    ready: bool = False
    started_at: str = ""
    logs: list[Path] = field(default_factory=list)  # one file per run (restart)
    done: threading.Event = field(default_factory=threading.Event)  # no process will follow

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restarts,
            "started": self.started,
            "state": self.state,
        }
        if self.proc is not None:
            out["containerID"] = f"process://{self.proc.pid}"
            if in_podman(str(self.spec.get("image", ""))):
                out["imageID"] = str(self.spec.get("image", ""))
        if self.last_state:
            out["lastState"] = self.last_state
        return out


class PodWorker(threading.Thread):
    """Runs one pod to its end (or until it is deleted), reporting status as it goes."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.spec: dict[str, Any] = pod["spec"]
        self.root = kubelet.workdir / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.containers: dict[str, Container] = {}
        for c in self.spec.get("initContainers") or []:
            kind = "sidecar" if c.get("restartPolicy") == "Always" else "init"
            self.containers[c["name"]] = Container(c, kind)
        for c in self.spec.get("containers") or []:
            self.containers[c["name"]] = Container(c, "main")
        self.stopping = threading.Event()
        self.grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.initialized = False
        self.lock = threading.RLock()
        self.ports: dict[int, int] = {}
        self.volumes: dict[str, Path] = {}
        self.start_time = now()
        self.finished = threading.Event()

    # ---- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self.lock:
            mains = [c for c in self.containers.values() if c.kind == "main"]
            sidecars = [c for c in self.containers.values() if c.kind == "sidecar"]
            terminal = self.phase in ("Succeeded", "Failed")
            ready = not terminal and all(c.ready for c in mains + sidecars) and bool(mains)
            stamp = now()

            def cond(kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
                out = {"type": kind, "status": "True" if ok else "False"}
                out["lastTransitionTime"] = stamp
                if reason and not ok:
                    out["reason"] = reason
                return out

            not_ready = "PodCompleted" if terminal else "ContainersNotReady"
            status: dict[str, Any] = {
                "phase": self.phase,
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.start_time,
                "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
                "conditions": [
                    cond("PodReadyToStartContainers", not terminal),
                    cond("Initialized", self.initialized, "ContainersNotInitialized"),
                    cond("ContainersReady", ready, not_ready),
                    cond("Ready", ready, not_ready),
                ],
                "initContainerStatuses": [
                    c.status() for c in self.containers.values() if c.kind != "main"
                ],
                "containerStatuses": [c.status() for c in mains],
            }
            if self.reason:
                status["reason"] = self.reason
            if self.message:
                status["message"] = self.message
            return status

    def report(self) -> None:
        self.kubelet.patch_status(self.namespace, self.pod_name, self.status())

    def event(self, reason: str, message: str, kind: str = "Warning", container: str = "") -> None:
        self.kubelet.event(self.pod, reason, message, kind, container)

    # ---- the pod's life ---------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a kubelet bug: say so in the pod's status, don't hang
            log.exception("pod %s/%s", self.namespace, self.pod_name)
            with self.lock:
                self.phase, self.reason, self.message = "Failed", "KubeletError", str(exc)[:300]
            self._stop_all(1.0)
            with contextlib.suppress(Exception):
                self.report()
        finally:
            self.finished.set()
            if self.stopping.is_set():
                self.kubelet.delete_pod(self.namespace, self.pod_name, self.uid)
            self.kubelet.forget(self.uid)

    def _run(self) -> None:
        self.report()
        if not self._pull_images():
            return self._on_stop()
        if not self._make_volumes():
            return self._on_stop()
        for c in self.containers.values():
            for port in c.spec.get("ports") or []:
                self.ports.setdefault(int(port["containerPort"]), self.kubelet.host_port())
        # init containers in order (sidecars are started and stay)
        for c in [c for c in self.containers.values() if c.kind != "main"]:
            if c.kind == "sidecar":
                threading.Thread(
                    target=self._supervise_sidecar, args=(c,), daemon=True, name=c.name
                ).start()
                while not c.started and not self.stopping.is_set():
                    time.sleep(0.05)
            elif not self._run_init(c):
                break
            if self.stopping.is_set():
                return self._on_stop()
        if self.phase == "Failed":
            return self._finish()
        with self.lock:
            self.initialized = True
        mains = [c for c in self.containers.values() if c.kind == "main"]
        for c in mains:
            if not self._start(c):
                return self._on_stop()
        with self.lock:
            self.phase = "Running"
        self.report()
        while not self.stopping.is_set():
            if all(c.proc is not None and c.proc.poll() is not None for c in mains):
                break
            for c in mains:
                self._reap(c)
            time.sleep(0.05)
        if self.stopping.is_set():
            return self._on_stop()
        for c in mains:
            self._reap(c)
        with self.lock:
            failed = [c for c in mains if c.state.get("terminated", {}).get("exitCode", 1) != 0]
            self.phase = "Failed" if failed else "Succeeded"
        self._finish()

    def _finish(self) -> None:
        """The pod reached its terminal phase: stop the sidecars, report the final status."""
        self._stop_all(self.grace)
        self.report()

    def _on_stop(self) -> None:
        """Deleted before it ended: kill within the grace period, report, then delete."""
        self._stop_all(self.grace)
        with self.lock:
            if self.phase not in ("Succeeded", "Failed"):
                mains = [c for c in self.containers.values() if c.kind == "main"]
                ok = mains and all(
                    c.state.get("terminated", {}).get("exitCode") == 0 for c in mains
                )
                self.phase = "Succeeded" if ok else "Failed"
        with contextlib.suppress(Exception):
            self.report()

    # ---- images and volumes -----------------------------------------------------------------
    def _pull_images(self) -> bool:
        bad = [
            c
            for c in self.containers.values()
            if not (
                is_our_image(image := c.spec.get("image", ""))
                or is_stand_in_vllm(image)
                or (in_podman(image) and self.kubelet.podman_has(image))
            )
        ]
        if not bad:
            return True
        attempt = 0
        while not self.stopping.is_set():
            reason = "ErrImagePull" if attempt % 2 == 0 else "ImagePullBackOff"
            with self.lock:
                for c in bad:
                    image = c.spec.get("image", "")
                    message = (
                        f'Failed to pull image "{image}": the process kubelet has no mapping '
                        "for this image (only skillmix images and skillmix-test/vllm run here)"
                    )
                    if in_podman(image):
                        message = (
                            f'Failed to pull image "{image}": not in podman\'s storage '
                            "(make image builds it)"
                        )
                    if reason == "ImagePullBackOff":
                        message = f'Back-off pulling image "{image}"'
                    c.state = {"waiting": {"reason": reason, "message": message}}
            self.report()
            if attempt == 0:
                for c in bad:
                    self.event("Failed", c.state["waiting"]["message"], container=c.name)
            attempt += 1
            self.stopping.wait(min(5.0 * attempt, 30.0))
        return False

    def _make_volumes(self) -> bool:
        """emptyDir: a folder of the pod; secret and configMap: their keys as files;
        persistentVolumeClaim: a folder per claim, shared by the pods that mount it. A volume
        that cannot be set up keeps the pod waiting (FailedMount), as on a node."""
        for volume in self.spec.get("volumes") or []:
            name = volume["name"]
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                path = self.kubelet.workdir / "claims" / self.namespace / claim
            else:
                path = self.root / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            while not self.stopping.is_set():
                problem = self._fill_volume(volume, path)
                if problem is None:
                    break
                self.event(
                    "FailedMount", f"MountVolume.SetUp failed for volume {name!r}: {problem}"
                )
                if self.stopping.wait(5.0):
                    return False
            self._open_to_the_pod(volume, path)
            self.volumes[name] = path
        return not self.stopping.is_set()

    @staticmethod
    def _open_to_the_pod(volume: dict[str, Any], path: Path) -> None:
        """Modes as on a node, which matter when a container runs as a non-root uid:
        emptyDir and claims are world-writable (0777), Secret, ConfigMap and projected files
        are readable (their defaultMode 0644)."""
        if "emptyDir" in volume or "persistentVolumeClaim" in volume:
            path.chmod(0o777)
            return
        path.chmod(0o755)
        for file in path.iterdir():
            if file.is_file():
                file.chmod(0o644)

    def _fill_volume(self, volume: dict[str, Any], path: Path) -> str | None:
        """None when the volume is ready, else why not."""
        if "emptyDir" in volume or "persistentVolumeClaim" in volume:
            return None
        for kind, read in (("secret", self.kubelet.secret), ("configMap", self.kubelet.config_map)):
            if kind in volume:
                source = volume[kind]
                ref = source.get("secretName") or source.get("name") or ""
                try:
                    data = read(self.namespace, ref)
                except ConfigError as exc:
                    return str(exc)
                if data is None:
                    return f'{kind.lower()} "{ref}" not found'
                for key, value in data.items():
                    (path / key).write_text(value, encoding="utf-8")
                return None
        if "projected" in volume:  # e.g. the API access volume ServiceAccount admission adds
            for source in volume["projected"].get("sources") or []:
                problem = self._project(source, path)
                if problem is not None:
                    return problem
            return None
        return f"volume type {sorted(k for k in volume if k != 'name')} is not supported here"

    def _project(self, source: dict[str, Any], path: Path) -> str | None:
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            try:
                token = self.kubelet.token(
                    self.namespace,
                    self.spec.get("serviceAccountName") or "default",
                    int(spec.get("expirationSeconds", 3607)),
                    spec.get("audience"),
                    pod=(self.pod_name, self.uid),
                )
            except ConfigError as exc:
                return str(exc)
            (path / spec["path"]).write_text(token, encoding="utf-8")
            return None
        if "configMap" in source:
            ref = source["configMap"]
            try:
                data = self.kubelet.config_map(self.namespace, ref["name"])
            except ConfigError as exc:
                return str(exc)
            if data is None:
                return None if ref.get("optional") else f'configmap "{ref["name"]}" not found'
            for item in ref.get("items") or [{"key": k, "path": k} for k in data]:
                if item["key"] in data:
                    (path / item["path"]).write_text(data[item["key"]], encoding="utf-8")
            return None
        if "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    value = self._field(item["fieldRef"]["fieldPath"])
                    (path / item["path"]).write_text(value, encoding="utf-8")
            return None
        return f"projected source {sorted(source)} is not supported here"

    # ---- init containers and sidecars --------------------------------------------------------
    def _run_init(self, c: Container) -> bool:
        if not self._start(c):
            return False
        while c.proc is not None and c.proc.poll() is None:
            if self.stopping.wait(0.05):
                return False
        self._reap(c)
        code = c.state.get("terminated", {}).get("exitCode")
        if code == 0:
            return True
        with self.lock:  # restartPolicy Never: a failed init container fails the pod
            self.phase = "Failed"
        self.report()
        return False

    def _supervise_sidecar(self, c: Container) -> None:
        """Start, probe, restart with back-off: a sidecar never fails the pod."""
        backoff = self.kubelet.backoff
        while not self.stopping.is_set() and self.phase not in ("Succeeded", "Failed"):
            if not self._start(c):
                return
            ok, why = self._startup_probe(c)
            if ok:
                with self.lock:
                    c.started = c.ready = True
                self.report()
                while c.proc is not None and c.proc.poll() is None:
                    if self.stopping.wait(0.1) or self.phase in ("Succeeded", "Failed"):
                        return
                if self.stopping.is_set() or self.phase in ("Succeeded", "Failed"):
                    return
                why = f"exited with code {c.proc.returncode if c.proc else '?'}"
            else:
                if self.stopping.is_set():
                    return
                if "probe" in why:
                    self.event("Unhealthy", f"Startup probe failed: {why}", container=c.name)
                self._kill(c, 2.0)
            self._reap(c)
            with self.lock:
                c.started = c.ready = False
                c.last_state = {"terminated": c.state.get("terminated", {})}
                message = f"back-off {backoff:g}s restarting failed container={c.name} pod={self.pod_name}"
                c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
                c.restarts += 1
            self.event(
                "BackOff", f"Back-off restarting failed container {c.name}", container=c.name
            )
            self.report()
            if self.stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _startup_probe(self, c: Container) -> tuple[bool, str]:
        probe = c.spec.get("startupProbe")
        if not probe:
            return True, ""
        http = probe.get("httpGet") or {}
        port = http.get("port")
        assert port is not None, f"{c.name}: startupProbe.httpGet needs a port"
        if isinstance(port, str) and not port.isdigit():
            port = next(
                int(p["containerPort"]) for p in c.spec.get("ports") or [] if p.get("name") == port
            )
        host_port = self.ports.get(int(port), int(port))
        url = f"{http.get('scheme', 'HTTP').lower()}://127.0.0.1:{host_port}{http.get('path', '/')}"
        period = float(probe.get("periodSeconds", 10))
        threshold = int(probe.get("failureThreshold", 3))
        timeout = float(probe.get("timeoutSeconds", 1))
        if self.stopping.wait(float(probe.get("initialDelaySeconds", 0))):
            return False, "stopping"
        failures, last = 0, ""
        while not self.stopping.is_set():
            if c.proc is None or c.proc.poll() is not None:
                return False, f"exited with code {c.proc.returncode if c.proc else '?'}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    if 200 <= response.status < 400:
                        return True, ""
                    last = f"HTTP probe failed with statuscode: {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP probe failed with statuscode: {exc.code}"
            except (OSError, urllib.error.URLError) as exc:
                last = f'Get "{url}": {getattr(exc, "reason", exc)}'
            failures += 1
            if failures >= threshold:
                return False, f"probe failed {failures} times: {last}"
            if self.stopping.wait(period):
                break
        return False, "stopping"

    # ---- processes ----------------------------------------------------------------------------
    def _start(self, c: Container) -> bool:
        """Start one container's process; on CreateContainerConfigError the container waits
        and the kubelet retries (the pod stays Pending) until the pod is deleted."""
        while True:
            try:
                env = self._env(c)
                break
            except ConfigError as exc:
                with self.lock:
                    c.state = {
                        "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                    }
                self.report()
                self.event("Failed", f"Error: {exc}", container=c.name)
                if self.stopping.wait(5.0):
                    return False
        podman = in_podman(c.spec.get("image", ""))
        argv = self._podman_argv(c, env) if podman else self._argv(c, env)
        logdir = self.root / "logs" / c.name
        logdir.mkdir(parents=True, exist_ok=True)
        path = logdir / f"{c.restarts}.log"
        cwd = self._host_path(c, c.spec.get("workingDir") or self._image(c).workdir) or str(
            self.root
        )
        with self.lock:
            with path.open("wb") as out:
                c.proc = subprocess.Popen(
                    argv,
                    env=self.kubelet.podman_env() if podman else env,
                    cwd=str(self.root) if podman else cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            c.logs.append(path)
            c.started_at = now()
            c.state = {"running": {"startedAt": c.started_at}}
            if c.kind == "main":
                c.started = c.ready = True
        self.kubelet.track(c.proc)
        self.report()
        return True

    def _reap(self, c: Container, signalled: str = "") -> None:
        if c.proc is None or c.proc.poll() is None or "terminated" in c.state:
            return
        code = c.proc.returncode
        if code < 0:  # killed by a signal: the runtime reports 128 + signal
            code = 128 - code
        with self.lock:
            c.ready = False
            if c.kind == "main":
                c.started = False
            c.state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": c.started_at,
                    "finishedAt": now(),
                    "containerID": f"process://{c.proc.pid}",
                }
            }
            message = self._termination_message(c, code)
            if message:
                c.state["terminated"]["message"] = message
        self.kubelet.untrack(c.proc)

    def _termination_message(self, c: Container, code: int) -> str:
        """``terminationMessagePolicy: FallbackToLogsOnError``: a failed container's message
        is the tail of its log (the kubelet's limits: 80 lines, 2048 bytes). The file
        policy's /dev/termination-log is not mapped here, so the message is empty for it."""
        if code == 0 or c.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return ""
        if not c.logs or not c.logs[-1].is_file():
            return ""
        lines = c.logs[-1].read_bytes().splitlines()[-80:]
        return b"\n".join(lines)[-2048:].decode("utf-8", "replace")

    def _kill(self, c: Container, grace: float) -> None:
        if c.proc is None or c.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(c.proc.pid, signal.SIGTERM)
        try:
            c.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            if in_podman(c.spec.get("image", "")):  # the container outlives its podman client
                self.kubelet.podman_remove(self._container_name(c))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait(timeout=10)

    def _stop_all(self, grace: float) -> None:
        """SIGTERM main containers, then sidecars in reverse order; SIGKILL after the grace."""
        grace = min(grace, self.kubelet.grace_cap)
        deadline = time.monotonic() + grace
        order = [c for c in self.containers.values() if c.kind != "sidecar"]
        order += list(reversed([c for c in self.containers.values() if c.kind == "sidecar"]))
        for c in order:
            self._kill(c, max(0.1, deadline - time.monotonic()))
            self._reap(c)
            with self.lock:
                c.ready = False
            c.done.set()

    # ---- container config ---------------------------------------------------------------------
    def _image(self, c: Container) -> ImageConfig:
        return STAND_IN_VLLM if is_stand_in_vllm(c.spec.get("image", "")) else self.kubelet.image

    def _argv(self, c: Container, env: dict[str, str]) -> list[str]:
        image = self._image(c)
        if "command" in c.spec:
            command, args = list(c.spec["command"]), list(c.spec.get("args") or [])
        else:
            command = list(image.entrypoint)
            args = list(c.spec["args"]) if "args" in c.spec else list(image.cmd)
        argv = [expand(str(a), env) for a in command + args]
        if argv and argv[0] == "skillmix":
            return [sys.executable, "-m", "skillmix", *argv[1:]]
        return argv

    def _container_name(self, c: Container) -> str:
        return f"k8s-{self.uid[:13]}-{c.name}-{c.restarts}"

    def _security(self, c: Container) -> dict[str, Any]:
        """The container's securityContext over the pod's, as the runtime sees it."""
        merged = {
            k: v
            for k, v in (self.spec.get("securityContext") or {}).items()
            if k in ("runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups")
        }
        merged.update(c.spec.get("securityContext") or {})
        return merged

    def _podman_argv(self, c: Container, env: dict[str, str]) -> list[str]:
        """``podman run`` for one container of the pod (see the module's docstring)."""
        security = self._security(c)
        argv = [str(PODMAN), "run", "--rm", "--name", self._container_name(c)]
        argv += ["--label", f"skillmix-test-kubelet={self.kubelet.label}", "--pull", "never"]
        argv += ["--network", "host", "--stop-timeout", str(int(self.grace) or 1)]
        if "runAsUser" in security:
            user = str(security["runAsUser"])
            if "runAsGroup" in security:
                user += f":{security['runAsGroup']}"
            argv += ["--user", user]
        for group in [security.get("fsGroup"), *(security.get("supplementalGroups") or [])]:
            if group is not None:
                argv += ["--group-add", str(group)]
        if security.get("readOnlyRootFilesystem"):
            argv += ["--read-only", "--read-only-tmpfs=false"]
        if security.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        capabilities = security.get("capabilities") or {}
        for cap in capabilities.get("drop") or []:
            argv += ["--cap-drop", str(cap)]
        for cap in capabilities.get("add") or []:
            argv += ["--cap-add", str(cap)]
        for mount in c.spec.get("volumeMounts") or []:
            if mount["name"] in self.volumes:
                ro = ":ro" if mount.get("readOnly") else ""
                argv += ["-v", f"{self.volumes[mount['name']]}:{mount['mountPath']}{ro}"]
        argv += ["-v", f"{SHIM_DIR}:{SHIM_IN_CONTAINER}:ro"]
        for name, value in env.items():
            argv += ["-e", f"{name}={value}"]
        if c.spec.get("workingDir"):
            argv += ["--workdir", str(c.spec["workingDir"])]
        args = [expand(str(a), env) for a in c.spec.get("args") or []]
        if "command" in c.spec:
            command = [expand(str(a), env) for a in c.spec["command"]]
            argv += ["--entrypoint", json.dumps(command)]
        argv.append(c.spec["image"])
        if "args" in c.spec or "command" in c.spec:
            argv += args  # with only a command, the image's CMD is dropped, as on a node
        return argv

    def _mounts(self, c: Container) -> list[tuple[str, Path]]:
        mounts = [
            (m["mountPath"].rstrip("/") or "/", self.volumes[m["name"]])
            for m in c.spec.get("volumeMounts") or []
            if m["name"] in self.volumes
        ]
        return sorted(mounts, key=lambda m: -len(m[0]))

    def _host_path(self, c: Container, path: str | None) -> str | None:
        if path is None:
            return None
        for mount_path, host in self._mounts(c):
            if path == mount_path or path.startswith(mount_path + "/"):
                return str(host / path[len(mount_path) :].lstrip("/"))
        return None

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.spec.get("nodeName", ""),
            "spec.serviceAccountName": self.spec.get("serviceAccountName", ""),
            "status.hostIP": "127.0.0.1",
            "status.podIP": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path])
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        raise ConfigError(f"unsupported fieldRef {path}")

    def _env(self, c: Container) -> dict[str, str]:
        podman = in_podman(c.spec.get("image", ""))
        env: dict[str, str] = {} if podman else dict(self._image(c).env)
        for source in c.spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                data = self.kubelet.secret(self.namespace, source["secretRef"]["name"])
            else:
                data = self.kubelet.config_map(self.namespace, source["configMapRef"]["name"])
            for key, value in (data or {}).items():
                env[prefix + key] = value
        for var in c.spec.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(str(var.get("value", "")), env)
                continue
            source = var["valueFrom"]
            if "secretKeyRef" in source or "configMapKeyRef" in source:
                secret = "secretKeyRef" in source
                ref = source["secretKeyRef" if secret else "configMapKeyRef"]
                kind = "secret" if secret else "configmap"
                data = (self.kubelet.secret if secret else self.kubelet.config_map)(
                    self.namespace, ref["name"]
                )
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'{kind} "{ref["name"]}" not found')
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(
                        f"couldn't find key {ref['key']} in {'Secret' if secret else 'ConfigMap'} "
                        f"{self.namespace}/{ref['name']}"
                    )
                env[name] = data[ref["key"]]
            elif "fieldRef" in source:
                env[name] = self._field(source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                env[name] = "0"
        host = urllib.parse.urlsplit(self.kubelet.api_client.configuration.host)
        if podman:  # the mounts are real: only the port map and the API server's address
            env["PYTHONPATH"] = SHIM_IN_CONTAINER
            env["SKILLMIX_POD_PORTS"] = ",".join(f"{p}:{h}" for p, h in self.ports.items())
            env["KUBERNETES_SERVICE_HOST"] = host.hostname or "127.0.0.1"
            env["KUBERNETES_SERVICE_PORT"] = str(host.port or 443)
            return env
        for name, value in list(env.items()):  # container paths on mounts -> host dirs
            if value.startswith("/"):
                env[name] = self._host_path(c, value) or value
        tmp = dict(self._mounts(c)).get("/tmp")
        env["TMPDIR"] = str(tmp) if tmp is not None else str(self.root)
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        env["PYTHONPATH"] = os.pathsep.join([str(SHIM_DIR), str(REPO_ROOT)])
        if is_stand_in_vllm(c.spec.get("image", "")):  # python3: this interpreter, vllm: ours
            env["PATH"] = os.pathsep.join([str(self.kubelet.stand_in_bin()), env["PATH"]])
            env["PYTHONPATH"] = os.pathsep.join([str(SHIM_DIR), str(STAND_IN_DIR), str(REPO_ROOT)])
        env["SKILLMIX_POD_PORTS"] = ",".join(f"{p}:{h}" for p, h in self.ports.items())
        # the API server, as the kubelet's `kubernetes` Service variables give it to every
        # container (here its real address: there are no Service IPs), and the mounts whose
        # paths a process cannot otherwise reach (the service-account token volume at
        # /var/run/secrets/kubernetes.io/serviceaccount): the shim maps their file opens
        env["KUBERNETES_SERVICE_HOST"] = host.hostname or "127.0.0.1"
        env["KUBERNETES_SERVICE_PORT"] = str(host.port or 443)
        env["SKILLMIX_POD_MOUNTS"] = os.pathsep.join(
            f"{path}={where}" for path, where in self._mounts(c) if path.startswith(MAPPED_MOUNTS)
        )
        return env


# ---------------------------------------------------------------------------------------------
# the kubelet
# ---------------------------------------------------------------------------------------------


class Kubelet:
    def __init__(
        self,
        api_client: Any,
        workdir: Path,
        port: int,
        *,
        backoff: float = 10.0,
        grace_cap: float = 30.0,
    ) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.workdir = workdir
        self.port = port
        self.backoff = backoff
        self.grace_cap = grace_cap
        self.image = image_config()
        self.workers: dict[str, PodWorker] = {}
        self.by_name: dict[tuple[str, str], PodWorker] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.nodes = {n.name for n in NODES}
        self.label = f"{os.getpid()}-{port}"  # this kubelet's podman containers
        self.podman_images: set[str] = set()

    # ---- API helpers --------------------------------------------------------------------------
    def _quiet(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("%s: %s %s", getattr(fn, "__name__", fn), exc.status, exc.reason)
        except Exception as exc:
            log.warning("%s: %s", getattr(fn, "__name__", fn), exc)
        return None

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._quiet(self.core.patch_namespaced_pod_status, name, namespace, {"status": status})

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        from kubernetes import client

        self._quiet(
            self.core.delete_namespaced_pod,
            name,
            namespace,
            body=client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
            ),
        )

    def event(
        self, pod: dict[str, Any], reason: str, message: str, kind: str, container: str
    ) -> None:
        meta = pod["metadata"]
        field_path = f"spec.containers{{{container}}}" if container else None
        body = {
            "metadata": {"generateName": f"{meta['name']}."},
            "involvedObject": {
                "kind": "Pod",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": "v1",
                **({"fieldPath": field_path} if field_path else {}),
            },
            "reason": reason,
            "message": message[:1000],
            "type": kind,
            "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
        }
        self._quiet(self.core.create_namespaced_event, meta["namespace"], body)

    def _data(self, fn: Any, namespace: str, name: str, binary: bool) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = fn(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ConfigError(f"cannot read {name}: {exc.status} {exc.reason}") from None
        data = obj.data or {}
        if binary:
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        return dict(data)

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self._data(self.core.read_namespaced_secret, namespace, name, True)

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        return self._data(self.core.read_namespaced_config_map, namespace, name, False)

    def token(
        self,
        namespace: str,
        account: str,
        seconds: int,
        audience: str | None,
        *,
        pod: tuple[str, str] | None = None,
    ) -> str:
        """A service-account token for a pod (the TokenRequest API, as the kubelet), bound to
        ``pod`` (name, uid) as the real kubelet binds it: the API server then puts the pod's
        name and uid in the token's user extra (``authentication.kubernetes.io/pod-name``),
        which k8s/policy-coordinator.yaml reads, and the token dies with the pod."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        bound = (
            client.V1BoundObjectReference(api_version="v1", kind="Pod", name=pod[0], uid=pod[1])
            if pod
            else None
        )
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[audience] if audience else [],
                expiration_seconds=seconds,
                bound_object_ref=bound,
            )
        )
        try:
            answer = self.core.create_namespaced_service_account_token(account, namespace, request)
        except ApiException as exc:
            raise ConfigError(
                f"cannot get a token for {namespace}/{account}: {exc.reason}"
            ) from None
        return str(answer.status.token)

    def stand_in_bin(self) -> Path:
        """A folder whose ``python3`` is this interpreter (a script: a symlink to a virtual
        environment's python would not find the environment)."""
        folder = self.workdir / "stand-in-bin"
        python = folder / "python3"
        if not python.exists():
            folder.mkdir(parents=True, exist_ok=True)
            temp = folder / f".python3.{os.getpid()}.{threading.get_ident()}"
            temp.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
            temp.chmod(0o755)
            temp.replace(python)
        return folder

    # ---- podman -------------------------------------------------------------------------------
    @staticmethod
    def podman_env() -> dict[str, str]:
        keep = ("PATH", "HOME", "SKILLMIX_TOOLS_CACHE", "SKILLMIX_PODMAN_ROOT")
        return {k: v for k, v in os.environ.items() if k in keep}

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PODMAN), *args],
            env=self.podman_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def podman_has(self, image: str) -> bool:
        """The image is in podman's storage (the node's image cache: nothing is pulled)."""
        if image not in self.podman_images:
            try:
                if self.podman("image", "exists", image).returncode == 0:
                    self.podman_images.add(image)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("podman image exists %s: %s", image, exc)
        return image in self.podman_images

    def podman_remove(self, *names: str) -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.podman("rm", "--force", "--time", "0", "--ignore", *names)

    def podman_cleanup(self) -> None:
        """Remove every container this kubelet started (at shutdown)."""
        if not self.podman_images:
            return
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            listed = self.podman(
                "ps", "-aq", "--filter", f"label=skillmix-test-kubelet={self.label}"
            )
            names = listed.stdout.split()
            if names:
                self.podman_remove(*names)

    def host_port(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.procs.add(proc)

    def untrack(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.procs.discard(proc)

    def forget(self, uid: str) -> None:
        """The worker is done; ``by_name`` keeps it so that a finished pod's logs stay
        readable, as on a node, until the pod object is deleted."""
        with self.lock:
            self.workers.pop(uid, None)

    # ---- nodes --------------------------------------------------------------------------------
    def register(self) -> None:
        from kubernetes.client.exceptions import ApiException

        for spec in NODES:
            body = node_body(spec, self.port)
            try:
                self.core.create_node(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            # TaintNodesByCondition adds node.kubernetes.io/not-ready on creation and no node
            # lifecycle controller runs here: the node says it is Ready and sets its taints.
            self.core.patch_node(spec.name, {"spec": {"taints": spec.taints or None}})
            self.core.patch_node_status(spec.name, {"status": body["status"]})
        self.heartbeat()

    def heartbeat(self) -> None:
        from kubernetes.client.exceptions import ApiException

        for spec in NODES:
            lease = {
                "metadata": {"name": spec.name, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": spec.name,
                    "leaseDurationSeconds": 40,
                    "renewTime": now_micro(),
                },
            }
            try:
                self.coordination.replace_namespaced_lease(spec.name, "kube-node-lease", lease)
            except ApiException as exc:
                if exc.status == 404:
                    self._quiet(self.coordination.create_namespaced_lease, "kube-node-lease", lease)
            self._quiet(
                self.core.patch_node_status,
                spec.name,
                {"status": {"conditions": ready_conditions()}},
            )

    def heartbeats(self) -> None:
        while not self.stop.wait(10.0):
            with contextlib.suppress(Exception):
                self.heartbeat()

    # ---- pods ---------------------------------------------------------------------------------
    def sync(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if spec.get("nodeName") not in self.nodes:
            return
        uid = meta["uid"]
        deleting = meta.get("deletionTimestamp") is not None
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None and not deleting and not terminal:
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                self.by_name[(meta["namespace"], meta["name"])] = worker
                worker.start()
                return
        if deleting:
            if worker is not None and not worker.finished.is_set():
                grace = meta.get("deletionGracePeriodSeconds")
                if grace is not None:
                    worker.grace = float(grace)
                worker.stopping.set()
            else:
                self.delete_pod(meta["namespace"], meta["name"], uid)

    def watch_pods(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        while not self.stop.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces()
                for pod in listing.items:
                    self.sync(self.api_client.sanitize_for_serialization(pod))
                w = watch.Watch()
                for event in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                ):
                    if self.stop.is_set():
                        w.stop()
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.sync(self.api_client.sanitize_for_serialization(event["object"]))
                    elif event["type"] == "DELETED":
                        meta = event["object"].metadata
                        with self.lock:
                            worker = self.workers.get(meta.uid)
                        if worker is not None:
                            worker.grace = 0
                            worker.stopping.set()
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("pod watch: %s %s", exc.status, exc.reason)
                    self.stop.wait(1.0)
            except Exception as exc:
                log.warning("pod watch: %s", exc)
                self.stop.wait(1.0)

    def shutdown(self) -> None:
        self.stop.set()
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.podman_cleanup()

    # ---- logs ---------------------------------------------------------------------------------
    def container(self, namespace: str, pod: str, name: str) -> tuple[PodWorker, Container] | None:
        with self.lock:
            worker = self.by_name.get((namespace, pod))
        if worker is None or name not in worker.containers:
            return None
        return worker, worker.containers[name]


class LogHandler(http.server.BaseHTTPRequestHandler):
    kubelet: Kubelet
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404, "not found")
            return
        _, namespace, pod, name = parts
        found = self.kubelet.container(namespace, pod, name)
        if found is None:
            self.send_error(404, f"container {name} of pod {namespace}/{pod} not found")
            return
        worker, c = found
        previous = query.get("previous", ["false"])[0] == "true"
        follow = query.get("follow", ["false"])[0] == "true" and not previous
        tail = query.get("tailLines", [None])[0]
        with worker.lock:
            logs = list(c.logs)
        if previous:
            if len(logs) < 2:
                self.send_error(400, f'previous terminated container "{name}" not found')
                return
            path = logs[-2]
        elif not logs:
            reason = (c.state.get("waiting") or {}).get("reason", "ContainerCreating")
            self.send_error(400, f'container "{name}" in pod "{pod}" is waiting to start: {reason}')
            return
        else:
            path = logs[-1]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        try:
            with path.open("rb") as f:
                data = f.read()
                if tail is not None:
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-int(tail) :]) if int(tail) > 0 else b""
                self.wfile.write(data)
                self.wfile.flush()
                while follow:
                    chunk = f.read()
                    if chunk:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        continue
                    running = c.proc is not None and c.proc.poll() is None
                    if not running and (c.logs[-1] == path):
                        break
                    if self.kubelet.stop.wait(0.1):
                        break
        except (BrokenPipeError, ConnectionResetError):
            pass


def serve_logs(kubelet: Kubelet, cert: Path, key: Path) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (LogHandler,), {"kubelet": kubelet})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", kubelet.port), handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True, name="logs").start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--cert", required=True, type=Path)
    parser.add_argument("--key", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0, help="kubelet HTTPS port (0: free)")
    parser.add_argument("--backoff", type=float, default=10.0, help="first restart back-off (s)")
    parser.add_argument("--grace-cap", type=float, default=30.0, help="longest grace period (s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=args.kubeconfig)
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
    args.workdir.mkdir(parents=True, exist_ok=True)
    kubelet = Kubelet(
        api_client, args.workdir, port, backoff=args.backoff, grace_cap=args.grace_cap
    )
    server = serve_logs(kubelet, args.cert, args.key)

    def on_signal(signum: int, _frame: Any) -> None:
        kubelet.shutdown()
        server.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    kubelet.register()
    log.info("nodes %s registered; kubelet port %d", sorted(kubelet.nodes), port)
    threading.Thread(target=kubelet.heartbeats, daemon=True, name="heartbeat").start()
    kubelet.watch_pods()
    return 0


if __name__ == "__main__":
    sys.exit(main())
