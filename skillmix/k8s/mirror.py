"""What the coordinator sees of its attempt: :class:`Mirror` keeps the attempt's Jobs (as
:class:`~skillmix.k8s.jobs.JobState`) and pods (as :class:`PodView`) current through watches
resumed from their resourceVersion, so a pass's work follows the changes, not the run's size.
:class:`ClusterApi` is what it needs of the API (KubeClient in a pod, a fake in tests)."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from skillmix.k8s.estimate import gpu_fraction
from skillmix.k8s.jobs import JobState, WatchExpired
from skillmix.vocab import JOB_NAME_LABELS

# container waiting reasons no retry helps: the Job fails with the reason after stuck_seconds
STUCK_REASONS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
)
MAX_BACKOFF = 60.0  # longest pause between failed watches (and the coordinator's retries)
RESOURCES = ("jobs", "pods")
_GPU_RESOURCE = re.compile(r"^[a-z0-9.-]+/(gpu|mig-.+)$")


@dataclass
class PodView:
    """What the coordinator needs of one pod of the attempt."""

    name: str
    job: str
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    labels: dict[str, str]
    created: float  # epoch seconds
    started: float | None  # status.startTime
    finished: float | None  # the last container's end
    deleting: bool
    gpus: float
    gpu_resource: str
    waiting: tuple[str, str] | None  # (reason, message) of a container stuck where no retry helps
    unschedulable: str | None  # the scheduler's message

    @property
    def live(self) -> bool:
        """Holds (or will hold) its resources: not ended."""
        return self.phase not in ("Succeeded", "Failed")

    @classmethod
    def from_dict(cls, pod: dict[str, Any]) -> PodView:
        meta, spec, status = (
            pod.get("metadata") or {},
            pod.get("spec") or {},
            pod.get("status") or {},
        )
        labels = dict(meta.get("labels") or {})
        gpus, resource = 0.0, ""
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            for name, amount in ((c.get("resources") or {}).get("requests") or {}).items():
                if _GPU_RESOURCE.match(name):
                    gpus += _number(amount) * gpu_fraction(name)
                    resource = name
        statuses = [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
        waiting = None
        ends: list[float] = []
        for cs in statuses:
            state = cs.get("state") or {}
            w = state.get("waiting") or {}
            if w.get("reason") in STUCK_REASONS and waiting is None:
                waiting = (str(w["reason"]), str(w.get("message") or "")[:300])
            done = (state.get("terminated") or {}).get("finishedAt")
            if done:
                ends.append(_epoch(done))
        unschedulable = None
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                unschedulable = str(cond.get("message") or "Unschedulable")[:300]
        job = next((labels[k] for k in JOB_NAME_LABELS if labels.get(k)), "")
        phase = str(status.get("phase") or "Pending")
        return cls(
            name=str(meta.get("name", "")),
            job=job,
            phase=phase,
            labels=labels,
            created=_epoch(meta.get("creationTimestamp")),
            started=_epoch(status["startTime"]) if status.get("startTime") else None,
            finished=max(ends) if ends and phase in ("Succeeded", "Failed") else None,
            deleting=bool(meta.get("deletionTimestamp")),
            gpus=gpus,
            gpu_resource=resource,
            waiting=waiting,
            unschedulable=unschedulable if phase == "Pending" else None,
        )


class ClusterApi(Protocol):
    """The calls the coordinator makes (KubeClient in a pod; a fake in unit tests)."""

    def list_raw(self, resource: str, selector: str) -> tuple[list[dict[str, Any]], str]: ...

    def watch_raw(
        self, resource: str, selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[tuple[str, dict[str, Any] | None, str]]: ...

    def create_job_yaml(self, name: str, text: str) -> bool: ...

    def patch_job(self, name: str, body: dict[str, Any]) -> None: ...

    def warning_events(self) -> list[dict[str, Any]]: ...


class Mirror:
    """The attempt's Jobs and pods, kept current by watches resumed from their
    resourceVersion (a 410 Gone lists again). In a pod, :meth:`start` lists both once and two
    threads follow their watches (:meth:`wait` returns as soon as something changed); tests and
    benchmarks call :meth:`sync` instead, which catches up in the calling thread. Readers hold
    :attr:`lock`."""

    WATCH_SECONDS = 60  # one watch request lasts this long at most, then resumes

    def __init__(self, api: ClusterApi, selector: str) -> None:
        self.api, self.selector = api, selector
        self.jobs: dict[str, JobState] = {}
        self.pods: dict[str, PodView] = {}
        self.gone: list[PodView] = []  # pods deleted since the last take_gone()
        self.lock = threading.RLock()
        self.changed = threading.Event()
        self._versions: dict[str, str] = {}
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    def sync(self, watch_seconds: int) -> None:
        """Catch up on Jobs then pods in this thread: a list the first time (or after 410),
        else one watch of each lasting at most ``watch_seconds``."""
        for resource in RESOURCES:
            self._catch_up(resource, watch_seconds)

    def start(self) -> None:
        """List Jobs and pods (errors raise here), then follow both from watcher threads."""
        for resource in RESOURCES:
            self._relist(resource)
        for resource in RESOURCES:
            thread = threading.Thread(
                target=self._follow, args=(resource,), name=f"watch-{resource}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def wait(self, seconds: float) -> None:
        """Until something changed or ``seconds`` passed; raises what a watcher ran into (the
        caller retries; the watcher goes on with backoff)."""
        self.changed.wait(seconds)
        self.changed.clear()
        with self.lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def stop(self) -> None:
        self._stop.set()

    def _follow(self, resource: str) -> None:
        pause = 0.5
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self._catch_up(resource, self.WATCH_SECONDS)
            except Exception as exc:  # surfaced by the next wait()
                with self.lock:
                    self._error = exc
                self.changed.set()
            else:
                if time.monotonic() - began >= 1.0:
                    pause = 0.5
                    continue
            # a watch that failed or ended at once (the API is down): back off
            self._stop.wait(pause)
            pause = min(MAX_BACKOFF, pause * 2)

    def _catch_up(self, resource: str, watch_seconds: int) -> None:
        if resource not in self._versions:
            self._relist(resource)
            return
        try:
            for kind, obj, rv in self.api.watch_raw(
                resource, self.selector, self._versions[resource], watch_seconds
            ):
                with self.lock:
                    self._versions[resource] = rv
                    if obj is not None:
                        self._apply(resource, kind, obj)
                self.changed.set()
        except WatchExpired:
            self._relist(resource)

    def _relist(self, resource: str) -> None:
        items, version = self.api.list_raw(resource, self.selector)
        with self.lock:
            if resource == "jobs":
                self.jobs = {}
            else:
                before, self.pods = self.pods, {}
            for obj in items:
                self._apply(resource, "ADDED", obj)
            if resource == "pods":
                self.gone += [p for name, p in before.items() if name not in self.pods]
            self._versions[resource] = version
        self.changed.set()

    def _apply(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if resource == "jobs":
            if kind == "DELETED":
                self.jobs.pop(name, None)
            else:
                self.jobs[name] = JobState.from_dict(obj)
        elif kind == "DELETED":
            pod = PodView.from_dict(obj)
            self.pods.pop(name, None)
            self.gone.append(pod)
        else:
            self.pods[name] = PodView.from_dict(obj)

    def take_gone(self) -> list[PodView]:
        gone, self.gone = self.gone, []
        return gone


def _epoch(value: Any) -> float:
    if not value:
        return 0.0
    text = str(value).replace("Z", "+00:00")
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _number(amount: Any) -> float:
    try:
        return float(amount)
    except (TypeError, ValueError):
        return 0.0
