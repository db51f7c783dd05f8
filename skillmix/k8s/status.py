"""A run's state from both sides: Jobs, pods and events from the API, progress from the store.

Cheap on purpose (a 1,500-Job run answers in well under 2 s): one list of the run's Jobs, and
only while some Job of the current attempt is unfinished one list of its pods and one of the
namespace's Warning events; the store is listed once. When the Jobs are gone
(``ttlSecondsAfterFinished``, or cancelled) the store alone says how far the run got.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from skillmix.k8s.jobs import JobState, deferred_jobs
from skillmix.k8s.profiles import ClusterProfile
from skillmix.k8s.values import run_uri_for
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.plan import plan_tasks
from skillmix.pipeline.units import shard_prefix
from skillmix.store.layout import RunLayout
from skillmix.store.runs import SUMMARY_JSON, RunStore, grade_prefix
from skillmix.store.uri import open_store
from skillmix.vocab import JOB_NAME_LABELS, JOB_PHASES, TASK_LABEL

if TYPE_CHECKING:  # the client imports kubernetes; status's pure parts are read without it
    from skillmix.k8s.cluster import KubeClient

# waiting reasons of a container that mean "this pod is stuck", not "starting"
STUCK_WAITING = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
)
EVENT_REASONS = ("FailedScheduling", "Failed", "FailedMount", "FailedCreate", "BackOff")
LOG_LINES = 5  # last lines of a crashing container shown with its reason
MAX_LOGS = 3  # crashing containers whose logs status reads (one request each)


def run_status(
    kube: KubeClient, profile: ClusterProfile, run_id: str, *, logs: bool = True
) -> dict[str, Any]:
    run_uri = run_uri_for(profile, run_id)
    # the four reads at once (the pods and events are only used while a Job is unfinished)
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs_read = pool.submit(kube.jobs, run_id, cached=True)
        store_read = pool.submit(store_progress, run_uri)
        pods_read = pool.submit(kube.pods, run_id, cached=True)
        events_read = pool.submit(kube.warning_events)
        states, _ = jobs_read.result()
        progress = store_read.result()
        pods, events = pods_read.result(), events_read.result()
    attempt = max((s.attempt for s in states), default=0)
    current = [s for s in states if s.attempt == attempt]
    reasons: dict[str, list[str]] = {}
    if any(not s.finished for s in current):
        reasons = job_reasons(kube, run_id, current, logs=logs, pods=pods, events=events)
    # Jobs the launch left to the coordinator (with Kueue) that it has not created yet
    names = {s.name for s in current}
    deferred = [d for d in progress.pop("deferred") if d.name not in names]
    if current and deferred and deferred[0].attempt == attempt:
        current += deferred
    coordinator = coordinator_state(current, pods)
    created = progress.pop("created")
    incomplete = bool(current) and not created
    if incomplete:  # the launch stopped before creating every object: the coordinator waits
        coordinator = {
            "state": (coordinator or {}).get("state", "Missing"),
            "reason": f"the launch of attempt {attempt} stopped before creating every Job; "
            "`skillmix launch` again completes it",
        }
    detail = progress.pop("units_detail")
    jobs = [_job_row(s, detail, reasons.get(s.name, []), coordinator) for s in _ordered(current)]
    counts: dict[str, dict[str, int]] = {}
    for j in jobs:
        by_state = counts.setdefault(j["phase"], {})
        by_state[j["state"]] = by_state.get(j["state"], 0) + 1
    attention = [j for j in jobs if j["state"] == "Failed" or j["reasons"]]
    if current:
        source = "cluster"
        if any(j["state"] == "Failed" and j["phase"] != "coordinate" for j in jobs):
            overall = "failed"
        elif progress["report"] and all(j["state"] == "Complete" for j in jobs):
            overall = "complete"
        elif incomplete or (coordinator and coordinator["state"] in ("Missing", "Failed")):
            overall = "stalled"  # held-back Jobs nothing releases; `launch` again recovers
        elif any(j["state"] == "Failed" for j in jobs):
            overall = "failed"
        else:
            overall = "running"
    else:
        source = "store"  # no Jobs: cancelled, expired after the TTL, or never launched
        if progress["report"]:
            overall = "complete"
        elif progress["launched"]:
            overall = "stopped"
        else:
            overall = "no jobs"
    return {
        "run_id": run_id,
        "run": run_uri,
        "state": overall,
        "source": source,
        "coordinator": coordinator,
        "gpu_cap": gpu_cap(current),
        "attempt": attempt or progress["attempts"] or None,
        "counts": counts,
        "attention": attention,
        "jobs": jobs,
        "previous_attempt_jobs": len(states) - len(current),
        "progress": progress,
    }


def _ordered(states: list[JobState]) -> list[JobState]:
    return sorted(
        states, key=lambda s: (JOB_PHASES.index(s.phase) if s.phase in JOB_PHASES else 9, s.name)
    )


def coordinator_state(
    jobs: list[JobState], pods: list[dict[str, Any]] | None = None
) -> dict[str, str] | None:
    """Whether the attempt's held-back Jobs have a coordinator to release them: None when none
    waits; else its state (Running, Complete...), "Missing" or "Failed", and why (its pod's
    last words when ``pods`` has them)."""
    waiting = [s for s in jobs if s.gated and not s.released and not s.finished]
    if not waiting:
        return None
    mine = [s for s in jobs if s.phase == "coordinate"]
    if not mine:
        return {
            "state": "Missing",
            "reason": f"no coordinator Job: nothing releases the {len(waiting)} held-back "
            "Job(s); `skillmix launch` again creates it",
        }
    state = mine[0].state
    if state == "Failed":
        why = _last_words(mine[0].name, pods or []) or mine[0].reason or "see its logs"
        return {
            "state": "Failed",
            "reason": f"the coordinator failed ({why}); the "
            f"{len(waiting)} held-back Job(s) wait; `skillmix launch` again replaces it",
        }
    return {"state": state, "reason": ""}


def _last_words(job: str, pods: list[dict[str, Any]]) -> str:
    """The last line of the termination message of the Job's latest failed client."""
    latest = ""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp"))):
        if pod_job(pod) != job:
            continue
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((c.get("state") or {}).get("terminated") or {}).get("message") or ""
            lines = [line for line in message.splitlines() if line.strip()]
            if c.get("name") == "client" and lines:
                latest = _one_line(lines[-1])
    return latest


def gpu_cap(jobs: list[JobState]) -> dict[str, int] | None:
    """The GPU cap's pool (generation Jobs weighed in GPUs): the cap, GPUs in use, Jobs
    queued (held back), running and done; None without a cap."""
    capped = [s for s in jobs if s.gated and s.pool == "gpu"]
    if not capped:
        return None
    running = [s for s in capped if s.released and not s.finished]
    return {
        "cap": capped[0].pool_size,
        "gpus_in_use": sum(s.pool_weight for s in running),
        "queued": sum(1 for s in capped if not s.released),
        "running": len(running),
        "done": sum(1 for s in capped if s.finished),
    }


def _job_row(
    s: JobState,
    detail: dict[str, str],
    reasons: list[str],
    coordinator: dict[str, str] | None = None,
) -> dict[str, Any]:
    unit = s.unit_labels
    reason = s.reason
    state: str = s.state
    if s.gated and not s.released and not s.finished:
        # by design: the coordinator releases it once its inputs exist and its pool has room
        state = "Gated"
        if coordinator and coordinator["state"] in ("Missing", "Failed"):
            reason = coordinator["reason"]
        elif not s.exists:
            reason = "not created yet: the coordinator creates it once its inputs exist"
        elif s.pool == "gpu":
            reason = reason or "queued under the GPU cap (the coordinator starts it)"
        else:
            reason = reason or "waiting for its inputs (the coordinator releases it)"
    elif state == "Suspended" and s.queue:
        state = "Queued"  # in Kueue's queue: admitted when the ClusterQueue has room
    progress = detail.get(f"{s.phase}:{unit[0]}:{unit[1]}:{unit[2]}", "")
    task = s.labels.get(TASK_LABEL, "")
    if task:  # a reasoning task's Job: its shards' manifests are the aggregation's to read
        progress = f"task {task}"
    elif s.phase == "generate" and unit[0] and not unit[1]:  # serving per-model: all its units
        mine = [v for key, v in detail.items() if key.startswith(f"generate:{unit[0]}:")]
        done = sum(1 for v in mine if v.split("/")[0] == v.split("/")[-1] != "")
        progress = f"{done}/{len(mine)} units" if mine else ""
    return {
        "name": s.name,
        "phase": s.phase,
        "attempt": s.attempt,
        "student": unit[0],
        "k": unit[1],
        "round": unit[2],
        "state": state,
        "active": s.active,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "completions": s.completions,
        "reason": reason,
        "reasons": reasons,
        "progress": progress,
    }


def job_reasons(
    kube: KubeClient,
    run_id: str,
    jobs: list[JobState],
    *,
    logs: bool = True,
    pods: list[dict[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, list[str]]:
    """Why unfinished Jobs make no progress: one list of pods, one of Warning events (unless
    given), the Kueue Workloads where a Job waits in a queue, and the last log lines of up to
    MAX_LOGS crashing containers."""
    names = {s.name for s in jobs}
    pods = [p for p in (kube.pods(run_id) if pods is None else pods) if pod_job(p) in names]
    events = kube.warning_events() if events is None else events
    fetch: Callable[[str, str], str] | None = None
    if logs:
        budget = [MAX_LOGS]

        def fetch(pod: str, container: str) -> str:
            if budget[0] <= 0:
                return ""
            budget[0] -= 1
            for previous in (True, False):  # the crashed run's log, else the current one
                try:
                    text = str(kube.pod_log(pod, container, tail=LOG_LINES, previous=previous))
                except Exception:  # the log is a bonus, never fatal
                    continue
                if text.strip():
                    return text
            return ""

    reasons = diagnose(pods, events, jobs, fetch_log=fetch)
    queued = [s for s in jobs if s.state == "Suspended" and s.queue and s.released]
    if queued:
        workloads = kube.workloads()
        if workloads is not None:  # Kueue installed (else: nothing to say, quietly)
            owned = {
                ref.get("name")
                for w in workloads
                for ref in (w.get("metadata") or {}).get("ownerReferences") or []
            }
            waiting = {s.queue for s in queued if s.name not in owned}
            missing = {q for q in waiting if kube.local_queue_exists(q) is False}
            for name, text in kueue_reasons(queued, workloads, missing).items():
                reasons.setdefault(name, []).append(text)
    return reasons


def pod_job(pod: dict[str, Any]) -> str:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    for key in JOB_NAME_LABELS:
        if labels.get(key):
            return str(labels[key])
    return ""


def diagnose(
    pods: list[dict[str, Any]],
    events: list[dict[str, Any]],
    jobs: list[JobState],
    *,
    fetch_log: Callable[[str, str], str] | None = None,
) -> dict[str, list[str]]:
    """Job name -> why its pods are not making progress (pure, but for ``fetch_log``): the
    scheduler's verdict, container waiting reasons (image pulls, a missing Secret key, crash
    loops with the last log lines), OOM kills, and Warning events the pods do not show."""
    out: dict[str, list[str]] = {}

    def add(job: str, text: str) -> None:
        texts = out.setdefault(job, [])
        if text not in texts:
            texts.append(text)

    by_pod: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        obj = e.get("involvedObject") or {}
        by_pod.setdefault(f"{obj.get('kind')}/{obj.get('name')}", []).append(e)
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        job, name = pod_job(pod), meta.get("name", "")
        if status.get("phase") == "Succeeded" or meta.get("deletionTimestamp"):
            continue
        scheduled = [c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"]
        if scheduled and scheduled[0].get("status") == "False":
            message = _one_line(scheduled[0].get("message"))
            add(job, f"{scheduled[0].get('reason') or 'Unschedulable'}: {message}".rstrip(": "))
        for c in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            state, last = c.get("state") or {}, c.get("lastState") or {}
            waiting = state.get("waiting") or {}
            terminated = state.get("terminated") or last.get("terminated") or {}
            container = c.get("name", "")
            if terminated.get("reason") == "OOMKilled":
                add(
                    job,
                    f"{container}: OOMKilled (exit {terminated.get('exitCode')}); raise its memory limit",
                )
            if waiting.get("reason") in STUCK_WAITING:
                text = f"{container}: {waiting['reason']}"
                message = _one_line(waiting.get("message"))
                if message:
                    text += f": {message}"
                if waiting["reason"] == "CrashLoopBackOff":
                    code = (last.get("terminated") or {}).get("exitCode")
                    if code is not None:
                        text += f" (last exit {code})"
                    log = fetch_log(name, container) if fetch_log else ""
                    lines = [line for line in log.splitlines() if line.strip()][-LOG_LINES:]
                    if lines:
                        text += " | last log lines: " + " / ".join(lines)
                add(job, text)
        if job not in out:  # nothing in the pod's status: the events may say more
            for e in by_pod.get(f"Pod/{name}", []):
                if e.get("reason") in EVENT_REASONS:
                    add(job, f"{e['reason']}: {_one_line(e.get('message'))}")
    names = {s.name for s in jobs}
    for s in jobs:
        if s.name in names and not s.finished:
            for e in by_pod.get(f"Job/{s.name}", []):
                if e.get("reason") in EVENT_REASONS:
                    add(s.name, f"{e['reason']}: {_one_line(e.get('message'))}")
    return out


def kueue_reasons(
    jobs: list[JobState],
    workloads: list[dict[str, Any]],
    missing_queues: set[str] | frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Suspended Jobs in a Kueue queue: the Workload's conditions say why it is not admitted
    (no quota, an inactive LocalQueue); a Job whose LocalQueue does not exist gets no
    Workload at all and stays suspended for ever."""
    by_owner: dict[str, dict[str, Any]] = {}
    for w in workloads:
        for ref in (w.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                by_owner[ref.get("name", "")] = w
    out: dict[str, str] = {}
    for s in jobs:
        queue = s.queue
        workload = by_owner.get(s.name)
        if workload is None and queue in missing_queues:
            out[s.name] = (
                f"Kueue: LocalQueue {queue!r} does not exist in this namespace; the Job stays "
                "suspended (fix kueue_queue in the cluster profile, or create the LocalQueue)"
            )
            continue
        if workload is None:
            out[s.name] = (
                f"Kueue: no Workload for queue {queue!r} yet (does LocalQueue {queue} exist?)"
            )
            continue
        conditions = {
            c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []
        }
        if (conditions.get("Admitted") or {}).get("status") == "True":
            continue
        why = conditions.get("QuotaReserved") or conditions.get("Admitted") or {}
        message = _one_line(why.get("message")) or "waiting for quota"
        out[s.name] = f"Kueue: not admitted in queue {queue!r}: {message}"
    return out


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split())[:300]


def store_progress(run_uri: str, *, max_part_reads: int = 50) -> dict[str, Any]:
    """Finished units from one listing of the run's keys (manifests), records of unfinished
    units from their parts (at most ``max_part_reads`` units read; the rest say "running")."""
    run = RunStore(open_store(run_uri))
    data = run.read_run()
    empty: dict[str, Any] = {
        "created": False,
        "deferred": [],
        "units": 0,
        "generation_units_done": 0,
        "grading_units_done": 0,
        "report": False,
        "launched": False,
        "attempts": 0,
        "units_detail": {},
    }
    if data is None:
        return empty
    ctx = RunContext.from_run(data, f"{run_uri.rstrip('/')}/run.json")
    keys = set(run.store.list_keys(""))
    attempts = len(
        [k for k in keys if k.startswith(f"{RunLayout.LAUNCHES}/") and k.endswith(".json")]
    )
    units = plan_tasks(ctx.experiment).units
    m = ctx.experiment.combinations
    rounds = ctx.experiment.grader.rounds
    grader = ctx.experiment.grader.name
    detail: dict[str, str] = {}
    gen_done = grade_done = 0
    reads = [max_part_reads]

    for student, k, g in units:
        shards = ctx.shards(student)
        prefixes = [shard_prefix(student, k, g, s, shards) for s in range(shards)]
        if all(f"{p}/_SUCCESS" in keys for p in prefixes):
            gen_done += 1
            detail[f"generate:{student}:{k}:{g}"] = f"{m}/{m}"
        else:
            n = _count_records(run, keys, prefixes, reads)
            detail[f"generate:{student}:{k}:{g}"] = "running" if n is None else f"{min(n, m)}/{m}"
        prefixes = [grade_prefix(grader, student, k, g, r) for r in range(1, rounds + 1)]
        if all(f"{p}/_SUCCESS" in keys for p in prefixes):
            grade_done += 1
            detail[f"grade:{student}:{k}:{g}"] = "done"
        else:
            n = _count_records(run, keys, prefixes, reads)
            detail[f"grade:{student}:{k}:{g}"] = "running" if n is None else f"{n}/{m * rounds}"
    deferred: list[JobState] = []
    key = RunLayout.launch_deferred(attempts)
    if attempts and key in keys:
        text = run.store.read_bytes(key).decode("utf-8", errors="replace")
        deferred = [d.state for d in deferred_jobs(text).values()]
    return {
        "created": RunLayout.launch_created(attempts) in keys,
        "deferred": deferred,
        "units": len(units),
        "generation_units_done": gen_done,
        "grading_units_done": grade_done,
        "report": SUMMARY_JSON in keys,
        "launched": attempts > 0,
        "attempts": attempts,
        "units_detail": detail,
    }


def _count_records(
    run: RunStore, keys: set[str], prefixes: list[str], reads: list[int]
) -> int | None:
    """Records in the parts under ``prefixes`` (0 without parts); None once ``reads[0]``,
    the unit reads left to this status, is spent."""
    parts = [
        k
        for p in prefixes
        for k in keys
        if k.startswith(p + "/") and "/_" not in k[len(p) :] and k.count("/") == p.count("/") + 1
    ]
    if not parts:
        return 0
    if reads[0] <= 0:
        return None
    reads[0] -= 1
    total = 0
    for key in parts:
        try:
            total += sum(1 for line in run.store.read_bytes(key).split(b"\n") if line.strip())
        except Exception:  # a part replaced while we read it
            continue
    return total
