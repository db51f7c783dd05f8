"""A small kubelet (plus the Job controller's bookkeeping) for tests: run a rendered Job's pods
as local processes.

What it does, per pod, in the order the kubelet does it:

1. native sidecars (init containers with ``restartPolicy: Always``) are started in order, each
   awaited through its ``startupProbe`` (httpGet against 127.0.0.1, polled every 0.1 s for at
   most ``failureThreshold * periodSeconds`` or ``probe_cap`` seconds, whichever is smaller);
2. regular init containers run to completion in order (a non-zero exit fails the pod);
3. the main container(s) run to completion;
4. the sidecars get SIGTERM (then SIGKILL after a bounded grace period).

Each container's environment is built like the kubelet's: the image's ``ENV`` (parsed from
``docker/Dockerfile``) plus what the manifest declares, resolved (``value`` with ``$(VAR)``
expansion, ``valueFrom.secretKeyRef`` from the given Secrets, ``valueFrom.fieldRef`` from the
pod's metadata). Nothing from the test process leaks in except ``PATH`` and a ``PYTHONPATH``
so that the image's ``skillmix`` entry point maps onto ``python -m skillmix``. A missing Secret
or key fails the container like the kubelet (CreateContainerConfigError: the pod never runs and
the Job runs into its ``activeDeadlineSeconds``). ``emptyDir`` volumes become per-pod
directories; container paths under a mount (``HOME=/tmp``, ``workingDir: /tmp``) are mapped
onto them.

Indexed Jobs run indexes ``0..completions-1`` one after another (every pod binds the same
sidecar port, as pods do in their own network namespaces) with the completion-index annotation
and ``JOB_COMPLETION_INDEX`` (a fieldRef to it, as the Job controller injects it). A failed pod
is run through the Job's ``podFailurePolicy`` (FailJob / Ignore / Count, with ``backoffLimit``)
to decide the Job's outcome. ``activeDeadlineSeconds`` bounds the whole Job (capped).

Before anything runs, ``check_job`` checks the pod spec the way the API server and kubelet
would reject it: volume mounts name declared volumes, probe ports are declared container
ports, podFailurePolicy rules name existing containers, container names are unique.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets as _secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
POLL_SECONDS = 0.1


class PodSpecError(AssertionError):
    """The Job's pod spec is inconsistent: the API server or the kubelet would reject it."""


class UnsupportedContainer(AssertionError):
    """The container cannot run as a local process here (e.g. a vLLM image)."""


class CreateContainerConfigError(Exception):
    """The kubelet cannot build the container's config (missing Secret or key)."""


# ---------------------------------------------------------------------------------------------
# the image
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """What the image contributes to a container: ENV, WORKDIR, ENTRYPOINT and CMD."""

    env: dict[str, str]
    workdir: str | None
    entrypoint: list[str]
    cmd: list[str]


def image_config(dockerfile: Path = DOCKERFILE) -> ImageConfig:
    """The final stage's ENV/WORKDIR/ENTRYPOINT/CMD of a Dockerfile (enough for ours)."""
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
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "FROM":  # a new stage: only the last one is the image
            env, workdir, entrypoint, cmd = {}, None, [], []
        elif instruction == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:  # legacy form: ENV KEY value with spaces
                env[words[0]] = " ".join(words[1:])
            else:
                for word in words:
                    key, _, value = word.partition("=")
                    env[key] = value
        elif instruction == "WORKDIR":
            workdir = rest
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
        elif instruction == "CMD":
            cmd = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
    return ImageConfig(env=env, workdir=workdir, entrypoint=entrypoint, cmd=cmd)


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


@dataclass
class ContainerResult:
    name: str
    kind: str  # "sidecar" | "init" | "main"
    argv: list[str] = field(default_factory=list)
    log: Path | None = None
    exit_code: int | None = None
    reason: str = ""  # Completed | Error | CreateContainerConfigError | StartupProbeFailed | ...
    message: str = ""
    stopped_by: str | None = None  # sidecars: "SIGTERM" or "SIGKILL"
    started: float = 0.0  # time.monotonic() at start
    spec: dict[str, Any] = field(default_factory=dict, repr=False)  # from the manifest
    env: dict[str, str] = field(default_factory=dict, repr=False)  # as resolved (has secrets)
    seconds: float = 0.0  # until exit (sidecars: until their startupProbe passed)

    def text(self) -> str:
        if self.log is None or not self.log.is_file():
            return ""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


@dataclass
class PodResult:
    name: str
    index: int | None
    job: str = ""
    phase: str = "Pending"  # Pending | Succeeded | Failed
    reason: str = ""
    message: str = ""
    containers: list[ContainerResult] = field(default_factory=list)

    @property
    def exit_codes(self) -> dict[str, int | None]:
        return {c.name: c.exit_code for c in self.containers}

    def container(self, name: str) -> ContainerResult:
        for c in self.containers:
            if c.name == name:
                return c
        raise KeyError(f"pod {self.name} has no container {name!r} (has {self.exit_codes})")

    def describe(self, lines: int = 25) -> str:
        out = [f"pod {self.name}: {self.phase} {self.reason} {self.message}".rstrip()]
        for c in self.containers:
            stop = f", stopped by {c.stopped_by}" if c.stopped_by else ""
            out.append(
                f"  [{c.kind}] {c.name}: exit {c.exit_code} {c.reason}{stop} {c.message}".rstrip()
            )
            tail = c.tail(lines)
            if tail:
                out.extend("    | " + line for line in tail.splitlines())
        return "\n".join(out)


@dataclass
class JobResult:
    name: str
    labels: dict[str, str]
    succeeded: bool = False
    reason: str = ""  # Complete | PodFailurePolicy | BackoffLimitExceeded | DeadlineExceeded
    message: str = ""
    pods: list[PodResult] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self, lines: int = 25) -> str:
        state = "succeeded" if self.succeeded else "FAILED"
        head = f"Job {self.name} {state} ({self.reason}) {self.message}".rstrip()
        return "\n".join([head, *(p.describe(lines) for p in self.pods)])

    def containers(self) -> list[ContainerResult]:
        return [c for p in self.pods for c in p.containers]


# ---------------------------------------------------------------------------------------------
# checks of the pod spec
# ---------------------------------------------------------------------------------------------


def _all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]


def _probe_port(container: dict[str, Any], probe: dict[str, Any], where: str) -> int:
    """The numeric port of an httpGet probe; a named port must be one of the container's."""
    http = probe.get("httpGet")
    if not http:
        raise PodSpecError(f"{where}: only httpGet probes are supported here")
    port = http.get("port")
    ports = container.get("ports") or []
    if isinstance(port, str) and not port.isdigit():
        for p in ports:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise PodSpecError(
            f"{where}: probe port {port!r} is not a named port of the container "
            f"(ports: {[p.get('name') for p in ports]})"
        )
    number = int(port)
    if number not in [int(p["containerPort"]) for p in ports]:
        raise PodSpecError(f"{where}: probe port {number} is not in the container's ports")
    return number


def check_job(job: dict[str, Any]) -> None:
    """Raise PodSpecError when the Job's pod spec could not run on a cluster."""
    name = job.get("metadata", {}).get("name", "?")
    if job.get("kind") != "Job":
        raise PodSpecError(f"{name}: not a Job (kind {job.get('kind')!r})")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        raise PodSpecError(f"{name}: a Job's pods need restartPolicy Never or OnFailure")
    containers = _all_containers(pod)
    names = [c["name"] for c in containers]
    if len(set(names)) != len(names):
        raise PodSpecError(f"{name}: container names repeat: {names}")
    if not pod.get("containers"):
        raise PodSpecError(f"{name}: the pod has no main container")
    volumes = {v["name"] for v in pod.get("volumes") or []}
    for c in containers:
        where = f"{name}/{c['name']}"
        for mount in c.get("volumeMounts") or []:
            if mount["name"] not in volumes:
                raise PodSpecError(
                    f"{where}: volumeMount {mount['name']!r} names no volume (volumes: {sorted(volumes)})"
                )
        for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe_kind in c:
                _probe_port(c, c[probe_kind], f"{where} {probe_kind}")
        for var in c.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref is not None and not (ref.get("name") and ref.get("key")):
                raise PodSpecError(f"{where}: env {var['name']}: secretKeyRef needs name and key")
    for c in pod.get("containers") or []:
        if "restartPolicy" in c:
            raise PodSpecError(
                f"{name}/{c['name']}: restartPolicy is only allowed on initContainers"
            )
    for i, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or []):
        on_exit = rule.get("onExitCodes")
        if on_exit and on_exit.get("containerName") not in (None, *names):
            raise PodSpecError(
                f"{name}: podFailurePolicy.rules[{i}] names container "
                f"{on_exit['containerName']!r}, not one of {names}"
            )
        if on_exit and on_exit.get("operator") == "In" and 0 in on_exit.get("values", []):
            raise PodSpecError(f"{name}: podFailurePolicy.rules[{i}]: In may not list exit code 0")
    if spec.get("completionMode") == "Indexed" and not spec.get("completions"):
        raise PodSpecError(f"{name}: an Indexed Job needs completions")


def pod_failure_action(
    job: dict[str, Any], pod: PodResult, *, sidecars: set[str] | None = None
) -> tuple[str, str]:
    """The Job controller's podFailurePolicy evaluation for a failed pod: (action, message);
    action is FailJob, Ignore or Count (no rule matched). Containers that exited 0 and
    sidecars stopped by the kubelet are left out, as on a cluster."""
    sidecars = sidecars or set()
    terminated = [
        c
        for c in pod.containers
        if c.exit_code not in (None, 0) and not (c.name in sidecars and c.stopped_by)
    ]
    conditions: list[tuple[str, str]] = []  # this runner never sets DisruptionTarget & co.
    rules = (job["spec"].get("podFailurePolicy") or {}).get("rules") or []
    for i, rule in enumerate(rules):
        on_exit = rule.get("onExitCodes")
        if on_exit:
            values = set(on_exit.get("values") or [])
            for c in terminated:
                if on_exit.get("containerName") not in (None, c.name):
                    continue
                hit = (c.exit_code in values) == (on_exit.get("operator") == "In")
                if hit:
                    return rule["action"], (
                        f"Container {c.name} for pod {pod.name} failed with exit code "
                        f"{c.exit_code} matching {rule['action']} rule at index {i}"
                    )
        for pattern in rule.get("onPodConditions") or []:
            if (pattern.get("type"), pattern.get("status", "True")) in conditions:
                return rule[
                    "action"
                ], f"Pod {pod.name} has condition {pattern['type']} matching rule {i}"
    return "Count", ""


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes; unknown references stay as written)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


@dataclass
class _Pod:
    job: str
    name: str
    index: int | None
    metadata: dict[str, Any]
    volumes: dict[str, Path]  # volume name -> host dir
    log_dir: Path


class PodRunner:
    """Runs Jobs' pods locally. ``secrets`` maps Secret name -> {key: value} (the namespace's
    Secrets); ``workdir`` receives per-pod volumes and container logs."""

    def __init__(
        self,
        secrets: dict[str, dict[str, str]],
        workdir: Path,
        *,
        namespace: str = "default",
        image: ImageConfig | None = None,
        probe_cap: float = 30.0,
        deadline_cap: float = 180.0,
        grace_cap: float = 5.0,
    ) -> None:
        self.secrets = secrets
        self.workdir = Path(workdir)
        self.namespace = namespace
        self.image = image or image_config()
        self.probe_cap = probe_cap
        self.deadline_cap = deadline_cap
        self.grace_cap = grace_cap

    # ---- Jobs ----------------------------------------------------------------------------
    def run_job(self, job: dict[str, Any]) -> JobResult:
        check_job(job)
        meta = job["metadata"]
        spec = job["spec"]
        result = JobResult(name=meta["name"], labels=dict(meta.get("labels") or {}))
        started = time.monotonic()
        deadline_s = min(float(spec.get("activeDeadlineSeconds") or 1e9), self.deadline_cap)
        deadline = started + deadline_s
        backoff_limit = int(spec.get("backoffLimit", 6))
        indexed = spec.get("completionMode") == "Indexed"
        completions = int(spec.get("completions") or 1)
        pod_spec = spec["template"]["spec"]
        sidecars = {
            c["name"]
            for c in pod_spec.get("initContainers") or []
            if c.get("restartPolicy") == "Always"
        }
        failures = 0
        try:
            for index in range(completions):
                while True:
                    pod = self._new_pod(job, index if indexed else None)
                    outcome = self._run_pod(pod, pod_spec, deadline)
                    result.pods.append(outcome)
                    if outcome.phase == "Succeeded":
                        break
                    if outcome.phase == "Pending" or time.monotonic() >= deadline:
                        # stuck (e.g. CreateContainerConfigError) or out of time: the Job
                        # controller fails the Job once activeDeadlineSeconds passes
                        result.reason = "DeadlineExceeded"
                        result.message = (
                            f"Job was active longer than specified deadline; pod {outcome.name}: "
                            f"{outcome.reason}: {outcome.message}"
                        )
                        return result
                    action, why = pod_failure_action(job, outcome, sidecars=sidecars)
                    if action == "FailJob":
                        result.reason, result.message = "PodFailurePolicy", why
                        return result
                    if action == "Ignore":
                        continue
                    failures += 1
                    if failures > backoff_limit:
                        result.reason = "BackoffLimitExceeded"
                        result.message = "Job has reached the specified backoff limit"
                        return result
            result.succeeded, result.reason = True, "Complete"
            return result
        finally:
            result.seconds = time.monotonic() - started

    def _new_pod(self, job: dict[str, Any], index: int | None) -> _Pod:
        template_meta = job["spec"]["template"].get("metadata") or {}
        suffix = _secrets.token_hex(3)[:5]
        job_name = job["metadata"]["name"]
        name = f"{job_name}-{index}-{suffix}" if index is not None else f"{job_name}-{suffix}"
        labels = {**(template_meta.get("labels") or {}), "job-name": job_name}
        annotations = dict(template_meta.get("annotations") or {})
        if index is not None:
            annotations[INDEX_ANNOTATION] = str(index)
            labels[INDEX_ANNOTATION] = str(index)
        root = self.workdir / name
        volumes: dict[str, Path] = {}
        for volume in job["spec"]["template"]["spec"].get("volumes") or []:
            if "emptyDir" not in volume:
                raise UnsupportedContainer(
                    f"{name}: volume {volume['name']!r} is not an emptyDir (unsupported here)"
                )
            path = root / "volumes" / volume["name"]
            path.mkdir(parents=True)
            volumes[volume["name"]] = path
        log_dir = root / "logs"
        log_dir.mkdir(parents=True)
        metadata = {
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "annotations": annotations,
        }
        return _Pod(job_name, name, index, metadata, volumes, log_dir)

    # ---- pods ----------------------------------------------------------------------------
    def _run_pod(self, pod: _Pod, spec: dict[str, Any], deadline: float) -> PodResult:
        result = PodResult(name=pod.name, index=pod.index, job=pod.job)
        running: list[tuple[dict[str, Any], ContainerResult, subprocess.Popen[bytes]]] = []
        init = spec.get("initContainers") or []
        try:
            for container in init:
                if container.get("restartPolicy") == "Always":
                    if not self._start_sidecar(pod, container, result, running, deadline):
                        return result
                elif not self._run_to_completion(pod, container, "init", result, deadline):
                    return result
            for container in spec.get("containers") or []:
                if not self._run_to_completion(pod, container, "main", result, deadline):
                    return result
            for _c, res, proc in running:
                if proc.poll() is not None:  # a sidecar that died under the main container
                    res.exit_code, res.reason = proc.returncode, "Error"
                    res.message = "sidecar exited before the main container finished"
            result.phase = "Succeeded"
            return result
        finally:
            grace = min(float(spec.get("terminationGracePeriodSeconds", 30)), self.grace_cap)
            for _c, res, proc in reversed(running):
                self._stop(proc, res, grace)

    def _start_sidecar(
        self,
        pod: _Pod,
        container: dict[str, Any],
        result: PodResult,
        running: list[tuple[dict[str, Any], ContainerResult, subprocess.Popen[bytes]]],
        deadline: float,
    ) -> bool:
        res = ContainerResult(container["name"], "sidecar", spec=container)
        result.containers.append(res)
        probe = container.get("startupProbe")
        port = _probe_port(container, probe, f"{pod.name}/{res.name}") if probe else None
        if port is not None and _port_open(port):
            raise AssertionError(
                f"{pod.name}/{res.name}: port {port} is already in use before the sidecar "
                "started (another process would answer its startupProbe)"
            )
        proc = self._spawn(pod, container, res, result)
        if proc is None:
            return False
        running.append((container, res, proc))
        if probe is None:
            return True
        ok, why = self._await_startup(proc, probe, port or 0, deadline)
        res.seconds = time.monotonic() - res.started
        if not ok:
            res.reason, res.message = "StartupProbeFailed", why
            result.phase, result.reason = "Failed", "StartupProbeFailed"
            result.message = f"sidecar {res.name}: {why}"
            if proc.poll() is not None:
                res.exit_code = proc.returncode
        return ok

    def _run_to_completion(
        self,
        pod: _Pod,
        container: dict[str, Any],
        kind: str,
        result: PodResult,
        deadline: float,
    ) -> bool:
        res = ContainerResult(container["name"], kind, spec=container)
        result.containers.append(res)
        proc = self._spawn(pod, container, res, result)
        if proc is None:
            return False
        try:
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._kill_group(proc, signal.SIGKILL)
            proc.wait()
            res.exit_code, res.reason = proc.returncode, "DeadlineExceeded"
            result.phase, result.reason = "Failed", "DeadlineExceeded"
            result.message = f"{res.name} was still running at the Job's activeDeadlineSeconds"
            return False
        res.exit_code = code
        res.seconds = time.monotonic() - res.started
        res.reason = "Completed" if code == 0 else "Error"
        if code != 0:
            result.phase, result.reason = "Failed", "Error"
            result.message = f"{kind} container {res.name} exited with code {code}"
            return False
        return True

    def _spawn(
        self, pod: _Pod, container: dict[str, Any], res: ContainerResult, result: PodResult
    ) -> subprocess.Popen[bytes] | None:
        """Start one container; None (pod stays Pending) on CreateContainerConfigError."""
        try:
            env = self._env(pod, container)
        except CreateContainerConfigError as exc:
            res.reason, res.message = "CreateContainerConfigError", str(exc)
            result.phase, result.reason = "Pending", "CreateContainerConfigError"
            result.message = f"container {res.name}: {exc}"
            return None
        res.env = env
        argv = self._argv(container, env)
        res.argv = argv
        res.log = pod.log_dir / f"{res.name}.log"
        cwd = self._host_path(pod, container, container.get("workingDir") or self.image.workdir)
        res.started = time.monotonic()
        with res.log.open("wb") as log:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole
            )

    # ---- container config ----------------------------------------------------------------
    def _argv(self, container: dict[str, Any], env: dict[str, str]) -> list[str]:
        if "command" in container:
            command = list(container["command"])
            args = list(container.get("args") or [])
        else:  # the image's ENTRYPOINT; its CMD only when args are not given either
            command = list(self.image.entrypoint)
            args = list(container["args"]) if "args" in container else list(self.image.cmd)
        command = [expand(str(a), env) for a in command]
        args = [expand(str(a), env) for a in args]
        if not command or command[0] != "skillmix":
            raise UnsupportedContainer(
                f"container {container['name']} (image {container.get('image')}) runs "
                f"{command[:3]}: only skillmix containers run as local processes (the e2e "
                "renders mock backends only)"
            )
        return [sys.executable, "-m", "skillmix", *command[1:], *args]

    def _mounts(self, pod: _Pod, container: dict[str, Any]) -> list[tuple[str, Path]]:
        mounts = [
            (m["mountPath"].rstrip("/") or "/", pod.volumes[m["name"]])
            for m in container.get("volumeMounts") or []
        ]
        return sorted(mounts, key=lambda m: -len(m[0]))  # deepest mount first

    def _host_path(self, pod: _Pod, container: dict[str, Any], path: str | None) -> str | None:
        """A container path under one of its mounts -> the host directory."""
        if path is None:
            return None
        for mount_path, host in self._mounts(pod, container):
            if path == mount_path or path.startswith(mount_path + "/"):
                return str(host / path[len(mount_path) :].lstrip("/"))
        raise UnsupportedContainer(
            f"{pod.name}/{container['name']}: path {path} is on the (read-only) root filesystem"
        )

    def _env(self, pod: _Pod, container: dict[str, Any]) -> dict[str, str]:
        declared: dict[str, str] = dict(self.image.env)
        env_list = list(container.get("env") or [])
        if pod.index is not None:  # the Job controller injects it into every container
            env_list.insert(
                0,
                {
                    "name": "JOB_COMPLETION_INDEX",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}
                    },
                },
            )
        for var in env_list:
            name = var["name"]
            if "valueFrom" not in var:
                declared[name] = expand(str(var.get("value", "")), declared)
                continue
            source = var["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.secrets.get(ref["name"])
                if secret is None:
                    if ref.get("optional"):
                        continue
                    raise CreateContainerConfigError(f'secret "{ref["name"]}" not found')
                if ref["key"] not in secret:
                    if ref.get("optional"):
                        continue
                    raise CreateContainerConfigError(
                        f"couldn't find key {ref['key']} in Secret {self.namespace}/{ref['name']}"
                    )
                declared[name] = secret[ref["key"]]
            elif "fieldRef" in source:
                declared[name] = _field(pod.metadata, source["fieldRef"]["fieldPath"])
            else:
                raise UnsupportedContainer(f"env {name}: unsupported valueFrom {sorted(source)}")
        for name, value in list(declared.items()):  # container paths on mounts -> host dirs
            if value.startswith("/"):
                with contextlib.suppress(UnsupportedContainer):
                    declared[name] = self._host_path(pod, container, value) or value
        tmp = dict(self._mounts(pod, container)).get("/tmp")
        if tmp is not None:  # the container's /tmp is this host directory, not the host's /tmp
            declared["TMPDIR"] = str(tmp)
        declared["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        declared["PYTHONPATH"] = str(REPO_ROOT)
        return declared

    # ---- probes and stopping -------------------------------------------------------------
    def _await_startup(
        self, proc: subprocess.Popen[bytes], probe: dict[str, Any], port: int, deadline: float
    ) -> tuple[bool, str]:
        http = probe["httpGet"]
        path = http.get("path", "/")
        scheme = http.get("scheme", "HTTP").lower()
        period = float(probe.get("periodSeconds", 10))
        threshold = int(probe.get("failureThreshold", 3))
        budget = float(probe.get("initialDelaySeconds", 0)) + period * threshold
        budget = min(budget, self.probe_cap, max(0.0, deadline - time.monotonic()))
        per_try = min(float(probe.get("timeoutSeconds", 1)), 2.0)
        url = f"{scheme}://127.0.0.1:{port}{path}"
        give_up = time.monotonic() + budget
        last = "no attempt"
        while True:
            if proc.poll() is not None:
                return False, f"exited with code {proc.returncode} before its startupProbe passed"
            try:
                with urllib.request.urlopen(url, timeout=per_try) as response:
                    if 200 <= response.status < 400:
                        return True, ""
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            if time.monotonic() >= give_up:
                return False, f"startupProbe {url} failed for {budget:.1f}s (last: {last})"
            time.sleep(POLL_SECONDS)

    def _stop(self, proc: subprocess.Popen[bytes], res: ContainerResult, grace: float) -> None:
        if proc.poll() is not None:
            if res.exit_code is None:
                res.exit_code = proc.returncode
            return
        self._kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            res.stopped_by = "SIGTERM"
        except subprocess.TimeoutExpired:
            self._kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
            res.stopped_by = "SIGKILL"
        res.exit_code = proc.returncode
        if not res.reason:
            res.reason = "Completed" if proc.returncode == 0 else "Error"

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def _field(metadata: dict[str, Any], path: str) -> str:
    if path == "metadata.name":
        return str(metadata["name"])
    if path == "metadata.namespace":
        return str(metadata["namespace"])
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str(metadata[m.group(1)].get(m.group(2), ""))
    raise UnsupportedContainer(f"fieldRef {path} is not supported here")


def _port_open(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
