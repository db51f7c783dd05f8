"""The GPU time a Kubernetes run's generation pods held, beside the launch plans' estimate.

Pure arithmetic over the records (``usage/pods/<pod>.json``, written by the run's coordinator,
and each launch attempt's plan); :mod:`skillmix.report.build` reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from skillmix.artifacts import GpuTime, GpuUsageSection, LaunchPlanRecord, PodUsage
from skillmix.report.markup import fmt

# The plan's assumptions (skillmix.k8s.estimate, which this layer may not import; a unit test
# keeps the two equal).
MODEL_LOAD_SECONDS = 600
DECODE_TOKENS_PER_SECOND = 40.0
SUCCEEDED = "Succeeded"
# The "GPU time" table of report.md and report.html: a student column, then these.
GPU_TIME_COLUMNS = (
    "pods",
    "measured GPU-hours",
    "estimated GPU-hours",
    "measured / estimate",
    "of which failed or deleted: GPU-hours (pods)",
)
GPU_TIME_CAPTION = (
    "GPU time per student: measured from the generation pods, beside the launch plan's estimate"
)


@dataclass
class _Tally:
    pods: int = 0
    gpu_seconds: float = 0.0
    lost_pods: int = 0
    lost_gpu_seconds: float = 0.0

    def add(self, pod: PodUsage) -> None:
        self.pods += 1
        self.gpu_seconds += pod.gpu_seconds
        if pod.outcome != SUCCEEDED:  # Failed or Deleted: paid for, no result
            self.lost_pods += 1
            self.lost_gpu_seconds += pod.gpu_seconds

    def gpu_time(self, estimate: float | None) -> GpuTime:
        hours = self.gpu_seconds / 3600.0
        return GpuTime(
            pods=self.pods,
            gpu_seconds=round(self.gpu_seconds, 3),
            gpu_hours=round(hours, 4),
            failed_or_deleted_pods=self.lost_pods,
            failed_or_deleted_gpu_seconds=round(self.lost_gpu_seconds, 3),
            estimated_gpu_hours=None if estimate is None else round(estimate, 4),
            measured_over_estimate=round(hours / estimate, 4) if estimate else None,
        )


def pod_student(pod: PodUsage) -> str:
    """The student a pod generated for (its label; else its Job's units)."""
    if pod.student:
        return pod.student
    return pod.units[0].student if pod.units else "(unknown)"


def plan_gpu_hours(plan: LaunchPlanRecord) -> float:
    """An attempt's estimated generation GPU-hours: its students' (more precise than the
    rounded total), or the total where the record predates the per-student estimate."""
    by_student = plan.gpu_hours_by_student
    return sum(by_student.values()) if by_student else plan.estimated_gpu_hours


def _attempts_text(attempts: Sequence[int]) -> str:
    word = "attempt" if len(attempts) == 1 else "attempts"
    return f"{word} {', '.join(map(str, attempts))}"


def gpu_usage_note(attempts: Sequence[int], unmeasured: Sequence[int] = ()) -> str:
    """Where the numbers come from, in words (the report shows it above the table)."""
    text = (
        "Measured: each generation pod's GPUs (a MIG slice counts as its share of a GPU) times "
        "the time from the pod's start to its end, as the run's coordinator recorded it; pods "
        "that failed or were deleted count too (paid for, no result). Estimate: the launch "
        "plan's GPU-hours of the generation each attempt had to do"
        + (f", summed over launch {_attempts_text(attempts)}" if attempts else "")
        + f"; it assumes {MODEL_LOAD_SECONDS} s per model load and "
        f"{DECODE_TOKENS_PER_SECOND:g} tokens/s per request (every reply max_tokens long)."
    )
    if unmeasured:
        text += (
            f" Launch {_attempts_text(unmeasured)} planned GPU time but recorded none (no "
            "coordinator?): left out of both."
        )
    return text


def gpu_usage_section(
    pods: Iterable[PodUsage],
    plans: Mapping[int, LaunchPlanRecord | None],
    students: Sequence[str] = (),
    warnings: Sequence[str] = (),
) -> GpuUsageSection | None:
    """Per student and in total: pods, measured GPU-seconds and hours, those of pods that
    failed or were deleted, the plans' estimate summed over the attempts that recorded GPU time,
    and measured / estimate. ``plans``: each launch attempt's plan (None: a record without
    one); ``students``: the experiment's order; ``warnings``: records that could not be read.
    None when there is no usage record at all (local runs, reference imports)."""
    pods = list(pods)
    if not pods and not warnings:
        return None
    tallies: dict[str, _Tally] = {}
    total = _Tally()
    for pod in pods:
        tallies.setdefault(pod_student(pod), _Tally()).add(pod)
        total.add(pod)
    attempts = sorted({p.attempt for p in pods})
    estimates: dict[str, float] = {}
    total_estimate: float | None = None
    notes = list(warnings)
    for attempt in attempts:
        plan = plans.get(attempt)
        if plan is None:
            notes.append(
                f"launch attempt {attempt} has no launch record with a plan: its estimate is "
                "missing from the estimated GPU-hours"
            )
            continue
        total_estimate = (total_estimate or 0.0) + plan_gpu_hours(plan)
        for student, hours in plan.gpu_hours_by_student.items():
            estimates[student] = estimates.get(student, 0.0) + hours
    unmeasured = sorted(
        a for a, plan in plans.items() if a not in attempts and plan and plan_gpu_hours(plan) > 0
    )
    names = set(tallies) | set(estimates)
    order = [s for s in students if s in names] + sorted(names - set(students))
    return GpuUsageSection(
        students={s: tallies.get(s, _Tally()).gpu_time(estimates.get(s)) for s in order},
        total=total.gpu_time(total_estimate),
        attempts=attempts,
        unmeasured_attempts=unmeasured,
        note=gpu_usage_note(attempts, unmeasured),
        warnings=notes,
    )


def gpu_hours_text(hours: float | None) -> str:
    """GPU-hours for reading: 2 decimals from one hour up, 3 below (a short run is not 0.00)."""
    if hours is None:
        return "—"
    return fmt(hours, 2 if hours >= 1 else 3)


def gpu_time_cells(t: GpuTime) -> list[str]:
    """The numbers of one row of the "GPU time" table (GPU_TIME_COLUMNS)."""
    lost = t.failed_or_deleted_pods
    return [
        str(t.pods),
        gpu_hours_text(t.gpu_hours),
        gpu_hours_text(t.estimated_gpu_hours),
        fmt(t.measured_over_estimate),
        f"{gpu_hours_text(t.failed_or_deleted_gpu_seconds / 3600.0)} ({lost} pod"
        + ("s" if lost != 1 else "")
        + ")"
        if lost
        else "—",
    ]
