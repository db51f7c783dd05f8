"""The in-cluster coordinator: releases a run's held-back Jobs, fails stuck pods' Jobs and
records the GPU time of generation pods, for one launch attempt.

``skillmix launch`` plans every Job of an attempt at once, but grading and aggregation Jobs
(and generation Jobs of API students sharing one budget, and vLLM Jobs under a GPU cap) are
*gated* (``skillmix.io/gated=true``): held back until their inputs exist and their pool has
room. How they are held depends on the cluster (``skillmix.io/hold``, chosen by
``k8s/values.py hold_mode``):

- ``suspend`` (no Kueue): created with ``spec.suspend: true``; a suspended Job has no pods and
  its ``activeDeadlineSeconds`` timer does not run. Released by unsuspending it.
- ``gate`` (Kueue with its AdmissionGatedBy feature gate): created with the
  ``kueue.x-k8s.io/admission-gated-by`` annotation, which keeps Kueue from admitting it.
  Released by removing the annotation; Kueue then admits it within its quota.
- ``defer`` (Kueue otherwise): Kueue owns ``spec.suspend`` of the Jobs it manages, and its
  LocalQueueDefaulting (or ``manageJobsWithoutQueueName``) would admit (or strand) a Job held
  any other way. The launch stores these Jobs' manifests instead of creating them
  (``launches/attempt-NNN.deferred.yaml``); released by creating the Job, which Kueue admits.

A gated Job is released when

- its inputs exist in the store (phases meet only there): a grading Job when its unit's
  generation manifests exist (read once its generation Job has ended), the aggregation Job when
  every unit's grading manifests exist, a gated generation Job at once;
- and its pool has room: at most ``skillmix.io/pool-size`` of weight (``pool-weight``: 1, or
  the Job's GPUs in the ``gpu`` pool) released and alive per ``skillmix.io/pool``.

It also fails, with the reason, a Job whose pod is stuck where no retry helps (image pulls,
a missing Secret key, a Multi-Attach volume, or unschedulable past a bound), so the pod gives
back its GPU: the reason goes into the Job's ``skillmix.io/failure`` annotation, and
``activeDeadlineSeconds`` is set to 1 so the Job controller fails the Job and deletes its pods.

It watches the Jobs and pods of the attempt (one paged list, then watches resumed from their
resourceVersion: its work per pass follows the changes, not the run's size) and makes every
decision afresh from them and the store, so a restarted pod, or a relaunch's coordinator,
takes over where the last one stopped. API errors are retried with backoff for minutes; a pod
ended by SIGTERM (deleted, evicted) is replaced by the Job without counting as a failure. It
ends once every Job of its attempt has finished, or when nothing can progress any more.
Rights: k8s/rbac-coordinator.yaml.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from skillmix import vocab
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.k8s.cluster import JobState, WatchExpired
from skillmix.k8s.estimate import gpu_fraction
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.plan import Unit, plan_tasks
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.vocab import ADMISSION_GATE_ANNOTATION, FAILURE_ANNOTATION, PHASE_LABEL, STUDENT_LABEL

# container waiting reasons no retry helps: the Job fails with the reason after stuck_seconds
STUCK_REASONS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
)
API_OUTAGE_SECONDS = 900.0  # API errors retried this long (with backoff) before giving up
MAX_BACKOFF = 60.0
MIN_PASS_SECONDS = 0.5  # a pass's changes are batched this long (pods change often)
RESOURCES = ("jobs", "pods")
_GPU_RESOURCE = re.compile(r"^[a-z0-9.-]+/(gpu|mig-.+)$")


# ---------------------------------------------------------------------------------------------
# what the coordinator sees
# ---------------------------------------------------------------------------------------------


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
        job = next((labels[k] for k in vocab.JOB_NAME_LABELS if labels.get(k)), "")
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


@dataclass
class DeferredJob:
    """A Job the launch stored instead of creating (hold ``defer``)."""

    name: str
    text: str
    state: JobState


def read_deferred(run: RunStore, attempt: int) -> dict[str, DeferredJob]:
    """The deferred Jobs of ``attempt`` from the store (none without the file)."""
    from skillmix.store.base import KeyNotFound

    try:
        raw = run.store.read_bytes(RunLayout.launch_deferred(attempt)).decode("utf-8")
    except KeyNotFound:
        return {}
    return deferred_jobs(raw)


_META_KEYS = (
    vocab.RUN_LABEL,
    vocab.PHASE_LABEL,
    vocab.STUDENT_LABEL,
    vocab.K_LABEL,
    vocab.ROUND_LABEL,
    vocab.ATTEMPT_LABEL,
    vocab.GATED_LABEL,
    vocab.QUEUE_LABEL,
)
_NOTE_KEYS = (
    vocab.HOLD_ANNOTATION,
    vocab.POOL_ANNOTATION,
    vocab.POOL_SIZE_ANNOTATION,
    vocab.POOL_WEIGHT_ANNOTATION,
)


def deferred_jobs(text: str) -> dict[str, DeferredJob]:
    """The Jobs of a stored deferred manifest stream, their labels and annotations read from
    the text as the chart writes them (no YAML parse: a 1,500-Job run stays cheap to read)."""
    from skillmix.k8s.helm import split_manifests

    out: dict[str, DeferredJob] = {}
    for doc in split_manifests(text):
        labels = {k: v for k in _META_KEYS if (v := _meta_value(doc.text, k)) is not None}
        notes = {k: v for k in _NOTE_KEYS if (v := _meta_value(doc.text, k)) is not None}
        state = JobState(
            name=doc.name, labels=labels, annotations=notes, suspended=True, exists=False
        )
        out[doc.name] = DeferredJob(doc.name, doc.text, state)
    return out


def _meta_value(text: str, key: str) -> str | None:
    """The first ``key: "value"`` line of a rendered object (labels and annotations)."""
    m = re.search(rf"^\s+{re.escape(key)}: [\"']?([^\"'\n]*?)[\"']?\s*$", text, re.MULTILINE)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------
# decisions
# ---------------------------------------------------------------------------------------------


@dataclass
class Pass:
    """One pass's outcome."""

    released: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # Jobs failed for a stuck pod
    gated_left: int = 0
    unfinished: int = 0  # Jobs of the attempt (the coordinator's aside) not finished
    stuck: str = ""  # why nothing can progress any more (empty: it can)

    @property
    def done(self) -> bool:
        return self.gated_left == 0 and self.unfinished == 0


@dataclass
class Timing:
    """Bounds of the stuck-pod checks (seconds)."""

    stuck_seconds: float = 600.0
    unschedulable_seconds: float = 1800.0


class Coordinator:
    """Coordinates one attempt of one run through ``api``."""

    def __init__(
        self,
        run: RunStore,
        ctx: RunContext,
        attempt: int,
        *,
        api: ClusterApi,
        run_id: str | None = None,
        timing: Timing | None = None,
        say: Callable[[str], None] = lambda _line: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from skillmix.pipeline.tasks import pending_units

        self.run, self.ctx, self.attempt = run, ctx, attempt
        self.api, self.say, self.clock = api, say, clock
        self.timing = timing or Timing()
        run_id = run_id or ctx.run_id
        self.mirror = Mirror(api, f"{vocab.RUN_LABEL}={run_id},{vocab.ATTEMPT_LABEL}={attempt}")
        self.units = plan_tasks(ctx.experiment).units
        self._pending = pending_units
        self._again: dict[str, list[Unit]] = {}
        self._ready: set[str] = set()  # Jobs whose inputs were seen (inputs never vanish)
        self._failed: set[str] = set()  # Jobs this process failed for a stuck pod
        self._recorded: set[str] = set()  # pods whose GPU time is in the store
        self._released: set[str] = set()  # Jobs this process released
        self.deferred = read_deferred(run, attempt)

    # -- inputs ---------------------------------------------------------------------------
    def _relaunched(self, phase: str) -> list[Unit]:
        """The units this attempt redoes in ``phase`` (their manifests must be this attempt's)."""
        if phase not in self._again:
            record = self.run.read_launch_record(self.attempt) if self.attempt > 0 else None
            if self.attempt > 0 and record is None:
                raise SkillmixError(f"{self.run.uri}: no record of launch attempt {self.attempt}")
            self._again[phase] = [Unit(*u) for u in record.units(phase)] if record else []
        return self._again[phase]

    def _inputs_exist(
        self, job: JobState, unfinished: set[tuple[str, tuple[str, int, int] | None]]
    ) -> bool:
        """``unfinished``: (phase, unit) of every Job of the attempt not finished, made once a
        pass (scanning every Job for each waiting one cost ~3 s of CPU a pass at 1,501 Jobs)."""
        if job.name in self._ready:
            return True
        unit = Unit(*job.unit) if job.unit else None
        if job.phase == "generate":
            ok = True
        elif job.phase == "grade" and unit is not None:
            # read the store only once the unit's generation Job (if any) has ended
            if ("generate", job.unit) in unfinished:
                return False
            ok = not self._pending(
                self.run,
                self.ctx,
                "generate",
                [unit],
                relaunched=self._relaunched("generate"),
                attempt=self.attempt,
            )
        elif job.phase == "aggregate":
            if any(phase == "grade" for phase, _ in unfinished):
                return False
            ok = not self._pending(
                self.run,
                self.ctx,
                "grade",
                self.units,
                relaunched=self._relaunched("grade"),
                attempt=self.attempt,
            )
        else:
            ok = False
        if ok:
            self._ready.add(job.name)
        return ok

    # -- one pass -------------------------------------------------------------------------
    def views(self) -> list[JobState]:
        """Every Job of the attempt but the coordinator's: those that exist, and the deferred
        ones not created yet. A Job this process released counts as released even before the
        watch shows it (else it would be released again, and its pool undercounted)."""
        jobs = {n: j for n, j in self.mirror.jobs.items() if j.phase != "coordinate"}
        for name, d in self.deferred.items():
            jobs.setdefault(name, d.state)
        for name in self._released & jobs.keys():
            job = jobs[name]
            if not job.released:
                jobs[name] = replace(
                    job,
                    exists=True,
                    suspended=False,
                    annotations={
                        k: v for k, v in job.annotations.items() if k != ADMISSION_GATE_ANNOTATION
                    },
                )
        return list(jobs.values())

    def step(self, watch_seconds: int = 0, *, sync: bool = True) -> Pass:
        """Catch up with the cluster (``sync``: in this thread, each watch lasting at most
        ``watch_seconds``; else the watcher threads did), then: record finished pods' GPU
        time, fail Jobs whose pods are stuck, release what may start (in unit order, within
        each pool)."""
        if sync:
            self.mirror.sync(watch_seconds)
        with self.mirror.lock:
            return self._decide()

    def _decide(self) -> Pass:
        self._record_usage()
        result = Pass()
        result.failed = self._fail_stuck()
        views = self.views()
        alive = self._alive_jobs()
        waiting = sorted((v for v in views if v.gated and not v.released), key=_order)
        used: dict[str, int] = {}
        for v in views:
            if v.gated and v.released and v.pool and (not v.finished or v.name in alive):
                used[v.pool] = used.get(v.pool, 0) + v.pool_weight
        unfinished = {(v.phase, v.unit) for v in views if not v.finished}
        for job in waiting:
            size = job.pool_size
            room = size <= 0 or used.get(job.pool, 0) + job.pool_weight <= size
            if not room or not self._inputs_exist(job, unfinished):
                continue
            self._release(job)
            self._released.add(job.name)
            used[job.pool] = used.get(job.pool, 0) + job.pool_weight
            result.released.append(job.name)
            self.say(f"released {job.name} ({job.phase})")
        released = set(result.released)
        left = [v for v in waiting if v.name not in released]
        result.gated_left = len(left)
        result.unfinished = sum(
            1 for v in views if v.exists and not v.finished and v.name not in released
        )
        running = [v for v in views if v.exists and v.released and not v.finished]
        if left and not running and not result.released:
            failed = [v.name for v in views if v.state == "Failed"]
            result.stuck = (
                f"{len(left)} gated Job(s) can never start (e.g. {left[0].name}): their inputs "
                f"are missing and no Job of attempt {self.attempt} is running"
                + (f"; failed: {', '.join(failed[:5])}" if failed else "")
            )
        return result

    def _alive_jobs(self) -> set[str]:
        """Jobs with a pod that has not ended (it still holds its resources)."""
        return {p.job for p in self.mirror.pods.values() if p.live}

    def _release(self, job: JobState) -> None:
        if job.hold == "defer":
            self.api.create_job_yaml(job.name, self.deferred[job.name].text)
        elif job.hold == "gate":
            self.api.patch_job(
                job.name, {"metadata": {"annotations": {ADMISSION_GATE_ANNOTATION: None}}}
            )
        else:
            self.api.patch_job(job.name, {"spec": {"suspend": False}})

    # -- stuck pods -----------------------------------------------------------------------
    def _fail_stuck(self) -> list[str]:
        now = self.clock()
        failed: list[str] = []
        attach: dict[str, str] | None = None
        for pod in sorted(self.mirror.pods.values(), key=lambda p: p.name):
            job = self.mirror.jobs.get(pod.job)
            if job is None or job.finished or pod.deleting or not pod.live:
                continue
            if job.name in self._failed or FAILURE_ANNOTATION in job.annotations:
                continue
            reason = ""
            since = pod.started or pod.created
            if pod.waiting and now - since >= self.timing.stuck_seconds:
                what, message = pod.waiting
                reason = f"pod {pod.name} stuck in {what}: {message}".rstrip(": ")
            elif pod.unschedulable and now - pod.created >= self.timing.unschedulable_seconds:
                reason = f"pod {pod.name} unschedulable for {now - pod.created:.0f}s: {pod.unschedulable}"
            elif pod.phase == "Pending" and now - since >= self.timing.stuck_seconds:
                if attach is None:
                    attach = self._multi_attach()
                if pod.name in attach:
                    reason = f"pod {pod.name} stuck: {attach[pod.name]}"
            if not reason:
                continue
            self.api.patch_job(
                job.name,
                {
                    "metadata": {"annotations": {FAILURE_ANNOTATION: reason[:1000]}},
                    "spec": {"activeDeadlineSeconds": 1},
                },
            )
            self._failed.add(job.name)
            failed.append(job.name)
            self.say(f"failed {job.name}: {reason}")
        return failed

    def _multi_attach(self) -> dict[str, str]:
        """Pods with a Multi-Attach volume error (events: FailedAttachVolume)."""
        found = {}
        for event in self.api.warning_events():
            involved = event.get("involvedObject") or {}
            message = str(event.get("message") or "")
            if event.get("reason") == "FailedAttachVolume" and "Multi-Attach" in message:
                found[str(involved.get("name", ""))] = message[:300]
        return found

    # -- GPU time -------------------------------------------------------------------------
    def _record_usage(self) -> None:
        """Write the GPU time of each generation pod that has ended (or was deleted) and held
        GPUs, once (``usage/pods/<pod>.json``)."""
        ended = [p for p in self.mirror.pods.values() if not p.live]
        gone = self.mirror.take_gone()
        for pod in [*ended, *gone]:
            if pod.name in self._recorded or pod.gpus <= 0 or pod.started is None:
                continue
            if pod.labels.get(PHASE_LABEL) != "generate":
                continue
            outcome = pod.phase if not pod.live else "Deleted"
            finished = pod.finished or self.clock()
            self._write_usage(pod, outcome, finished)
            self._recorded.add(pod.name)

    def _write_usage(self, pod: PodView, outcome: str, finished: float) -> None:
        from skillmix.artifacts import PodUsage, UnitRef
        from skillmix.store.base import KeyExists

        job = self.mirror.jobs.get(pod.job) or (
            self.deferred[pod.job].state if pod.job in self.deferred else None
        )
        units: list[UnitRef] = []
        if job is not None and job.unit:
            units = [UnitRef(student=job.unit[0], k=job.unit[1], round=job.unit[2])]
        started = pod.started or pod.created
        record = PodUsage(
            pod=pod.name,
            job=pod.job,
            attempt=self.attempt,
            student=pod.labels.get(STUDENT_LABEL, ""),
            units=units,
            gpus=round(pod.gpus, 4),
            gpu_resource=pod.gpu_resource,
            started_at=_iso(started),
            finished_at=_iso(finished),
            seconds=round(max(0.0, finished - started), 3),
            outcome=outcome,
        )
        with contextlib.suppress(KeyExists):  # recorded by an earlier coordinator pod
            self.run.store.write_bytes(
                RunLayout.pod_usage(pod.name),
                json.dumps(record.model_dump(mode="json"), indent=2).encode(),
                if_absent=True,
            )

    # -- the loop -------------------------------------------------------------------------
    def run_until_done(
        self,
        *,
        interval: float,
        timeout: float,
        sleep: Callable[[float], None] = time.sleep,
        outage_seconds: float = API_OUTAGE_SECONDS,
    ) -> None:
        """Pass after pass (as soon as a watch saw a change, at the latest every ``interval``
        seconds) until every Job of the attempt has finished. RunFailedError when nothing can
        progress (still so ``interval`` seconds later, once the launch has created every
        object), after ``timeout`` seconds, or when the API stays unreachable for
        ``outage_seconds`` (shorter errors are retried with backoff)."""
        try:
            self._loop(interval, timeout, sleep, outage_seconds)
        finally:
            self.mirror.stop()

    def _loop(
        self, interval: float, timeout: float, sleep: Callable[[float], None], outage: float
    ) -> None:
        start = time.monotonic()
        deadline = start + timeout
        stuck_since: float | None = None
        failing_since: float | None = None
        backoff = 1.0
        started = False
        waiting_for_launch = False  # said once
        while True:
            try:
                if not started:
                    self.mirror.start()
                    started = True
                else:  # a pass when something changed, at the latest every `interval`
                    self.mirror.wait(interval)
                    sleep(MIN_PASS_SECONDS)
                result = self.step(sync=False)
                failing_since, backoff = None, 1.0
            except (RunFailedError, OSError) as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= outage:
                    raise RunFailedError(
                        f"the Kubernetes API failed for {now - failing_since:.0f}s: {exc}"
                    ) from None
                self.say(f"API error (retrying in {backoff:.0f}s): {exc}")
                sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            complete = self.run.store.exists(RunLayout.launch_created(self.attempt))
            if result.done and complete:
                self.say(f"every Job of attempt {self.attempt} has finished")
                return
            if result.done:  # finished what exists, but the launch has more to create
                if not waiting_for_launch:
                    self.say(
                        f"every Job of attempt {self.attempt} created so far has finished; "
                        "the launch has not created every Job yet: waiting"
                    )
                waiting_for_launch = True
                if time.monotonic() >= deadline:
                    raise RunFailedError(
                        f"coordinator timed out after {timeout:g}s waiting for the launch of "
                        f"attempt {self.attempt} to create every Job"
                    )
                continue
            if result.stuck and not complete:
                result.stuck = ""  # the launch is still creating Jobs (or will resume)
                self.say(
                    f"the launch of attempt {self.attempt} has not created every Job yet: waiting"
                )
            # nothing can progress: only when it still holds a pass interval later
            if not result.stuck:
                stuck_since = None
            elif stuck_since is None:
                stuck_since = time.monotonic()
            elif time.monotonic() - stuck_since >= interval:
                raise RunFailedError(result.stuck)
            if time.monotonic() >= deadline:
                raise RunFailedError(
                    f"coordinator timed out after {timeout:g}s with {result.gated_left} "
                    f"gated Job(s) waiting and {result.unfinished} unfinished"
                )


def _order(job: JobState) -> tuple[int, str, int, int, str]:
    rank = {"generate": 0, "grade": 1, "aggregate": 2}.get(job.phase, 3)
    unit = job.unit or ("", 0, 0)
    return rank, unit[0], unit[1], unit[2], job.name


def _epoch(value: Any) -> float:
    if not value:
        return 0.0
    text = str(value).replace("Z", "+00:00")
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(amount: Any) -> float:
    try:
        return float(amount)
    except (TypeError, ValueError):
        return 0.0


__all__ = ["ClusterApi", "Coordinator", "DeferredJob", "Mirror", "Pass", "PodView", "Timing"]
