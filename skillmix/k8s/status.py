"""A run's state from both sides: Job conditions from the API, progress from the store."""

from __future__ import annotations

from typing import Any

from skillmix.k8s.cluster import STUDENT_LABEL, KubeClient
from skillmix.k8s.profiles import ClusterProfile
from skillmix.k8s.values import run_uri_for
from skillmix.store.runs import SUMMARY_JSON, RunStore
from skillmix.store.uri import open_store


def run_status(kube: KubeClient, profile: ClusterProfile, run_id: str) -> dict[str, Any]:
    states, _ = kube.jobs(run_id)
    run_uri = run_uri_for(profile, run_id)
    progress = store_progress(run_uri)
    jobs = []
    for s in sorted(
        states,
        key=lambda s: (
            ["generate", "grade", "aggregate"].index(s.phase)
            if s.phase in ("generate", "grade", "aggregate")
            else 9,
            s.name,
        ),
    ):
        unit = (
            s.labels.get(STUDENT_LABEL, ""),
            s.labels.get("skillmix.io/k", ""),
            s.labels.get("skillmix.io/round", ""),
        )
        jobs.append(
            {
                "name": s.name,
                "phase": s.phase,
                "student": unit[0],
                "k": unit[1],
                "round": unit[2],
                "state": s.state,
                "active": s.active,
                "succeeded": s.succeeded,
                "failed": s.failed,
                "completions": s.completions,
                "reason": s.reason,
                "progress": progress["units_detail"].get(
                    f"{s.phase}:{unit[0]}:{unit[1]}:{unit[2]}", ""
                ),
            }
        )
    overall = (
        "no jobs"
        if not jobs
        else (
            "failed"
            if any(j["state"] == "Failed" for j in jobs)
            else "complete"
            if progress["report"]
            else "running"
        )
    )
    progress.pop("units_detail")
    return {"run_id": run_id, "run": run_uri, "state": overall, "jobs": jobs, "progress": progress}


def store_progress(run_uri: str) -> dict[str, Any]:
    """Finished units from manifests, done records from parts (unfinished units included)."""
    from skillmix.pipeline.context import RunContext
    from skillmix.pipeline.plan import plan_tasks
    from skillmix.pipeline.tasks import shard_prefix, unit_finished
    from skillmix.store.runs import grade_prefix

    run = RunStore(open_store(run_uri))
    data = run.read_run()
    empty = {
        "units": 0,
        "generation_units_done": 0,
        "grading_units_done": 0,
        "report": False,
        "units_detail": {},
    }
    if data is None:
        return empty
    ctx = RunContext.from_run(data, f"{run_uri.rstrip('/')}/run.json")
    units = plan_tasks(ctx.experiment).units
    detail: dict[str, str] = {}
    gen_done = grade_done = 0
    m = ctx.experiment.combinations
    for student, k, g in units:
        if unit_finished(run, ctx, "generate", student, k, g):
            gen_done += 1
            detail[f"generate:{student}:{k}:{g}"] = f"{m}/{m}"
        else:
            shards = ctx.shards(student)
            records = sum(
                p.records
                for s in range(shards)
                for p in run.part_infos(shard_prefix(student, k, g, s, shards))
            )
            detail[f"generate:{student}:{k}:{g}"] = f"{min(records, m)}/{m}"
        rounds = ctx.experiment.grader.rounds
        if unit_finished(run, ctx, "grade", student, k, g):
            grade_done += 1
            detail[f"grade:{student}:{k}:{g}"] = "done"
        else:
            records = sum(
                p.records
                for r in range(1, rounds + 1)
                for p in run.part_infos(grade_prefix(ctx.experiment.grader.name, student, k, g, r))
            )
            detail[f"grade:{student}:{k}:{g}"] = f"{records}/{m * rounds}"
    return {
        "units": len(units),
        "generation_units_done": gen_done,
        "grading_units_done": grade_done,
        "report": run.store.exists(SUMMARY_JSON),
        "units_detail": detail,
    }
