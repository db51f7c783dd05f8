"""The in-cluster coordinator: starts a run's gated Jobs when their inputs exist.

``skillmix launch`` creates every Job of an attempt at once, but the grading and aggregation
Jobs (and generation Jobs of API-served students whose budget is shared) are *gated*: created
with ``spec.suspend: true``, without the Kueue queue label, and labelled
``skillmix.io/gated=true``. A suspended Job has no pods and its ``activeDeadlineSeconds`` timer
does not run (unsuspending starts it afresh), so nothing waits on a deadline or holds quota.

The coordinator (``skillmix task coordinate``, one small CPU-only Job per attempt) polls the
store and the Jobs, and releases a gated Job when

- its inputs exist in the store (phases meet only there): a grading Job when its unit's
  generation manifests exist, the aggregation Job when every unit's grading manifests exist,
  a gated generation Job at once;
- and its pool has room: at most ``skillmix.io/pool-size`` released, unfinished Jobs per
  ``skillmix.io/pool`` (annotations), which is how at most P grading Jobs run at once, each with
  1/P of the grader's budget.

Releasing is ``spec.suspend: false``, or with Kueue (annotation ``skillmix.io/queue-name``)
adding the ``kueue.x-k8s.io/queue-name`` label so that Kueue admits and unsuspends it. Every
decision is recomputed from the Jobs and the store on each pass, so the coordinator is
idempotent and a restarted pod (or a relaunch's coordinator) takes over where it stopped. It
needs ``get/list/watch/patch`` on Jobs in its namespace and nothing else (k8s/rbac-launcher.yaml).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skillmix.errors import RunFailedError, SkillmixError
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.plan import Unit, plan_tasks
from skillmix.store.runs import RunStore

GATED_LABEL = "skillmix.io/gated"
POOL_ANNOTATION = "skillmix.io/pool"
POOL_SIZE_ANNOTATION = "skillmix.io/pool-size"
QUEUE_ANNOTATION = "skillmix.io/queue-name"
KUEUE_LABEL = "kueue.x-k8s.io/queue-name"
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass
class JobView:
    """What the coordinator needs of one Job of the attempt."""

    name: str
    phase: str
    unit: Unit | None
    gated: bool
    released: bool
    finished: bool
    failed: bool
    pool: str = ""
    pool_size: int = 0
    queue: str = ""

    @classmethod
    def from_job(cls, job: Any) -> JobView:
        meta, spec, status = job.metadata, job.spec, job.status
        labels = dict(meta.labels or {})
        notes = dict(meta.annotations or {})
        unit = None
        if "skillmix.io/student" in labels:
            unit = Unit(
                labels["skillmix.io/student"],
                int(labels.get("skillmix.io/k", "0")),
                int(labels.get("skillmix.io/round", "0")),
            )
        queue = notes.get(QUEUE_ANNOTATION, "")
        released = (KUEUE_LABEL in labels) if queue else not spec.suspend
        true = {c.type for c in (status.conditions if status else None) or [] if c.status == "True"}
        return cls(
            name=meta.name,
            phase=labels.get("skillmix.io/phase", ""),
            unit=unit,
            gated=labels.get(GATED_LABEL) == "true",
            released=released,
            finished=bool(true & {"Complete", "Failed"}),
            failed=bool(true & {"Failed", "FailureTarget"}),
            pool=notes.get(POOL_ANNOTATION, ""),
            pool_size=int(notes.get(POOL_SIZE_ANNOTATION, "0") or 0),
            queue=queue,
        )

    @property
    def active(self) -> bool:
        """Released and not finished: it holds a place in its pool."""
        return self.released and not self.finished


@dataclass
class Pass:
    """One pass's outcome: the Jobs released, and what is still gated."""

    released: list[str]
    gated_left: int
    stuck: str = ""  # why nothing can progress any more (empty: it can)


class Coordinator:
    """Releases gated Jobs of one attempt; ``jobs`` lists them, ``release`` patches one."""

    def __init__(
        self,
        run: RunStore,
        ctx: RunContext,
        attempt: int,
        *,
        jobs: Callable[[], list[JobView]],
        release: Callable[[JobView], None],
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        from skillmix.pipeline.tasks import pending_units

        self.run, self.ctx, self.attempt = run, ctx, attempt
        self.list_jobs, self.release, self.say = jobs, release, say
        self.units = plan_tasks(ctx.experiment).units
        self._pending = pending_units
        self._again: dict[str, list[Unit]] = {}
        self._ready: set[str] = set()  # Jobs whose inputs were seen (inputs never vanish)

    def _relaunched(self, phase: str) -> list[Unit]:
        """The units this attempt redoes in ``phase`` (their manifests must be this attempt's)."""
        if phase not in self._again:
            record = self.run.read_launch_record(self.attempt) if self.attempt > 0 else None
            if self.attempt > 0 and record is None:
                raise SkillmixError(f"{self.run.uri}: no record of launch attempt {self.attempt}")
            self._again[phase] = [Unit(*u) for u in record.units(phase)] if record else []
        return self._again[phase]

    def _inputs_exist(self, job: JobView, views: list[JobView]) -> bool:
        if job.name in self._ready:
            return True
        if job.phase == "generate":
            ok = True
        elif job.phase == "grade" and job.unit is not None:
            # read the store only once the unit's generation Job (if any) has ended
            gen = [v for v in views if v.phase == "generate" and v.unit == job.unit]
            if any(not v.finished for v in gen):
                return False
            ok = not self._pending(
                self.run,
                self.ctx,
                "generate",
                [job.unit],
                relaunched=self._relaunched("generate"),
                attempt=self.attempt,
            )
        elif job.phase == "aggregate":
            if any(v.phase == "grade" and not v.finished for v in views):
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

    def step(self) -> Pass:
        """One pass: release what may start, in unit order, within each pool's size."""
        # the coordinator's own Job is not work that could still produce inputs
        views = [v for v in self.list_jobs() if v.phase != "coordinate"]
        waiting = sorted((v for v in views if v.gated and not v.released), key=_order)
        active: dict[str, int] = {}
        for v in views:
            if v.gated and v.active and v.pool:
                active[v.pool] = active.get(v.pool, 0) + 1
        released = []
        for job in waiting:
            room = job.pool_size <= 0 or active.get(job.pool, 0) < job.pool_size
            if not room or not self._inputs_exist(job, views):
                continue
            self.release(job)
            job.released = True
            active[job.pool] = active.get(job.pool, 0) + 1
            released.append(job.name)
            self.say(f"released {job.name} ({job.phase})")
        left = [v for v in waiting if not v.released]
        stuck = ""
        if left and not any(v.active or (not v.gated and not v.finished) for v in views):
            failed = [v.name for v in views if v.failed]
            stuck = (
                f"{len(left)} gated Job(s) can never start (e.g. {left[0].name}): their inputs "
                f"are missing and no Job of attempt {self.attempt} is running"
                + (f"; failed: {', '.join(failed[:5])}" if failed else "")
            )
        return Pass(released, len(left), stuck)

    def run_until_done(self, *, interval: float, timeout: float) -> None:
        """Pass after pass until every gated Job is released; RunFailedError when nothing can
        progress (seen on two passes in a row) or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        stuck_before = False
        while True:
            result = self.step()
            if result.gated_left == 0:
                self.say(f"every gated Job of attempt {self.attempt} is released")
                return
            if result.stuck and stuck_before:
                raise RunFailedError(result.stuck)
            stuck_before = bool(result.stuck)
            if time.monotonic() >= deadline:
                raise RunFailedError(
                    f"coordinator timed out after {timeout:g}s with {result.gated_left} "
                    "gated Job(s) still waiting for their inputs"
                )
            time.sleep(min(interval, max(0.05, deadline - time.monotonic())))


def _order(job: JobView) -> tuple[int, str, int, int, str]:
    rank = {"generate": 0, "grade": 1, "aggregate": 2}.get(job.phase, 3)
    unit = job.unit or Unit("", 0, 0)
    return rank, unit.student, unit.k, unit.round, job.name


class InClusterJobs:
    """The Jobs of one run's attempt through the standard in-cluster configuration (the pod's
    ServiceAccount token and CA, KUBERNETES_SERVICE_HOST/PORT)."""

    def __init__(self, run_id: str, attempt: int, namespace: str | None = None) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            config.load_incluster_config()
        except ConfigException as exc:
            raise SkillmixError(
                f"no in-cluster Kubernetes configuration: {exc}",
                hint="`task coordinate` runs in a pod with a ServiceAccount token mounted",
            ) from None
        if namespace is None:
            with open(NAMESPACE_FILE, encoding="utf-8") as f:
                namespace = f.read().strip()
        self.namespace = namespace
        self.batch = client.BatchV1Api()
        self.selector = f"skillmix.io/run={run_id},skillmix.io/attempt={attempt}"

    def jobs(self) -> list[JobView]:
        items = self._call(
            "list Jobs",
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=self.selector,
        ).items
        return [JobView.from_job(j) for j in items if j.metadata.deletion_timestamp is None]

    def release(self, job: JobView) -> None:
        if job.queue:
            body: dict[str, Any] = {"metadata": {"labels": {KUEUE_LABEL: job.queue}}}
        else:
            body = {"spec": {"suspend": False}}
        self._call(
            f"release Job {job.name}",
            self.batch.patch_namespaced_job,
            job.name,
            self.namespace,
            body,
        )

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Transient API errors are retried a few times (the next pass would retry anyway);
        a refusal (403: the Role is missing) is one line."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for attempt in range(4):
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status in (429, 500, 502, 503, 504) and attempt < 3:
                    time.sleep(0.5 * 2**attempt)
                    continue
                if exc.status == 403:
                    raise SkillmixError(
                        f"{what}: forbidden in namespace {self.namespace}",
                        hint="bind the skillmix-coordinator Role of k8s/rbac-launcher.yaml to "
                        "the coordinator's ServiceAccount",
                    ) from None
                raise RunFailedError(f"{what}: HTTP {exc.status} {exc.reason}") from None
            except (HTTPError, OSError) as exc:
                if attempt < 3:
                    time.sleep(0.5 * 2**attempt)
                    continue
                raise RunFailedError(f"{what}: {exc.__class__.__name__}: {exc}") from None
        raise AssertionError("unreachable")


__all__ = ["Coordinator", "InClusterJobs", "JobView", "Pass"]
