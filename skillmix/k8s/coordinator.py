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
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from skillmix.artifacts import PodUsage, UnitRef
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.k8s.jobs import JobState, read_deferred
from skillmix.k8s.mirror import MAX_BACKOFF, ClusterApi, Mirror, PodView
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.plan import plan_tasks
from skillmix.pipeline.task_units import pending_task_units
from skillmix.pipeline.units import pending_units
from skillmix.retrying import RetryPolicy, retry
from skillmix.store.base import KeyExists
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.vocab import (
    ADMISSION_GATE_ANNOTATION,
    ATTEMPT_LABEL,
    FAILURE_ANNOTATION,
    PHASE_LABEL,
    RUN_LABEL,
    STUDENT_LABEL,
    Unit,
)

API_OUTAGE_SECONDS = 900.0  # API errors retried this long (with backoff) before giving up
MIN_PASS_SECONDS = 0.5  # a pass's changes are batched this long (pods change often)


def _api_down(exc: BaseException, seconds: float) -> BaseException:
    return RunFailedError(f"the Kubernetes API failed for {seconds:.0f}s: {exc}")


# a pass that met an API error (RunFailedError from the client, or a broken connection):
# again after 1, 2, 4... seconds (at most MAX_BACKOFF), until the API has failed for
# `within` seconds (run_until_done's outage_seconds)
PASS_RETRY = RetryPolicy(
    "coordinator-pass",
    retry_on=lambda exc: isinstance(exc, RunFailedError | OSError),
    delay=lambda _exc, attempt: min(MAX_BACKOFF, 2.0**attempt),
    within=API_OUTAGE_SECONDS,
    give_up=_api_down,
)


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
        self.run, self.ctx, self.attempt = run, ctx, attempt
        self.api, self.say, self.clock = api, say, clock
        self.timing = timing or Timing()
        run_id = run_id or ctx.run_id
        self.mirror = Mirror(api, f"{RUN_LABEL}={run_id},{ATTEMPT_LABEL}={attempt}")
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
            self._again[phase] = record.units(phase) if record else []
        return self._again[phase]

    def _inputs_exist(self, job: JobState, unfinished: set[tuple[str, Unit | None]]) -> bool:
        """``unfinished``: (phase, unit) of every Job of the attempt not finished, made once a
        pass (scanning every Job for each waiting one cost ~3 s of CPU a pass at 1,501 Jobs)."""
        if job.name in self._ready:
            return True
        unit = job.unit
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
            # every grading Job, and every generation Job (a reasoning task's among them)
            if any(phase in ("grade", "generate") for phase, _ in unfinished):
                return False
            ok = not self._pending(
                self.run,
                self.ctx,
                "grade",
                self.units,
                relaunched=self._relaunched("grade"),
                attempt=self.attempt,
            ) and not pending_task_units(
                self.run, self.ctx.experiment, sharded=True, attempt=self.attempt
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
        waiting = sorted(
            (v for v in views if v.gated and not v.released), key=lambda job: job.order
        )
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
        job = self.mirror.jobs.get(pod.job) or (
            self.deferred[pod.job].state if pod.job in self.deferred else None
        )
        units: list[UnitRef] = []
        if job is not None and job.unit:
            units = [UnitRef(student=job.unit.student, k=job.unit.k, round=job.unit.round)]
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

    def _passes(self, interval: float, sleep: Callable[[float], None]) -> Callable[[], Pass]:
        """The next pass, each call: the first lists (start the watches), every later one
        waits until something changed, at the latest ``interval`` seconds."""
        started = False

        def next_pass() -> Pass:
            nonlocal started
            if not started:
                self.mirror.start()
                started = True
            else:
                self.mirror.wait(interval)
                sleep(MIN_PASS_SECONDS)
            return self.step(sync=False)

        return next_pass

    def _api_error(self, exc: BaseException, delay: float) -> None:
        self.say(f"API error (retrying in {delay:.0f}s): {exc}")

    def _loop(
        self, interval: float, timeout: float, sleep: Callable[[float], None], outage: float
    ) -> None:
        deadline = time.monotonic() + timeout
        stuck_since: float | None = None
        waiting_for_launch = False  # said once
        next_pass = self._passes(interval, sleep)
        policy = replace(PASS_RETRY, within=outage)
        while True:
            result = retry(next_pass, policy, sleep=sleep, on_retry=self._api_error)
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


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["Coordinator", "Pass", "Timing"]
