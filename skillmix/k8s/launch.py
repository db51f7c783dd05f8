"""The Kubernetes executor: render the plan as one Helm release and submit it.

Launching the same run again resumes it: units whose manifests exist in the store are left
out, and Job names carry the attempt number because Jobs are immutable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from skillmix.artifacts import EvaluationRun, LaunchPlanRecord, LaunchRecord, ReleaseValues
from skillmix.backends.pricing import cost_usd, price_for
from skillmix.config import Experiment
from skillmix.errors import SkillmixError
from skillmix.k8s.estimate import DECODE_TOKENS_PER_SECOND, MODEL_LOAD_SECONDS, unit_decode_seconds
from skillmix.k8s.helm import RenderedDoc, helm_template, split_manifests
from skillmix.k8s.jobs import JobState, read_deferred
from skillmix.k8s.profiles import ClusterProfile, get_profile
from skillmix.k8s.status import coordinator_state
from skillmix.k8s.values import build_values, release_name, run_uri_for
from skillmix.method.prompts import render_generation_prompts, render_grading_prompt
from skillmix.pipeline.context import RunContext, resolve_context
from skillmix.pipeline.plan import (
    GenerateTask,
    TaskGenerateTask,
    generation_jobs,
    plan_tasks,
    reasoning_jobs,
)
from skillmix.pipeline.task_units import TaskUnit, task_unit_complete
from skillmix.pipeline.units import shard_prefix, unit_complete
from skillmix.store.base import KeyExists
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore, utc_now
from skillmix.store.uri import open_store
from skillmix.urls import has_credentials, redact_url
from skillmix.vocab import Unit

# Recommend the other serving mode when it saves at least this share of the GPU-hours.
RECOMMEND_SAVING = 0.25
SERVING_MODES = ("per-unit", "per-model")


@dataclass
class ServingEstimate:
    """GPU-hours of the planned generation if every vLLM student were served one way."""

    gpu_hours: float
    load_share: float  # of those GPU-hours, the share spent loading models
    loads: int  # model loads (pods that start a vLLM server)


@dataclass
class JobPlan:
    phase: str
    student: str
    k: int | None
    round: int | None
    pods: int
    gpus_per_pod: int
    backend: str


@dataclass
class LaunchPlan:
    run_id: str
    run_uri: str
    cluster: str
    namespace: str
    release: str
    attempt: int
    jobs: list[JobPlan] = field(default_factory=list)
    gpu_hours: float = 0.0
    api_cost_usd: float | None = 0.0
    finished_units: int = 0
    total_units: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    rendered: str = ""
    serving: dict[str, ServingEstimate] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    gpu_hours_by_student: dict[str, float] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return sum(j.pods * j.gpus_per_pod for j in self.jobs)

    def record(self) -> LaunchPlanRecord:
        """What ``launch --format json`` prints and the launch record keeps."""
        return LaunchPlanRecord.model_validate(
            {
                **asdict(self),  # values, rendered and the unrounded estimates are left out
                "run": self.run_uri,
                "gpus": self.gpus,
                "estimated_gpu_hours": round(self.gpu_hours, 2),
                "estimated_api_cost_usd": None
                if self.api_cost_usd is None
                else round(self.api_cost_usd, 2),
                "serving_estimates": {
                    mode: {
                        "gpu_hours": round(est.gpu_hours, 2),
                        "load_share": round(est.load_share, 3),
                        "loads": est.loads,
                    }
                    for mode, est in self.serving.items()
                },
            }
        )

    def serving_lines(self) -> list[str]:
        """What ``launch`` and ``render`` print about the serving modes' costs; a recommendation
        when the other mode saves at least RECOMMEND_SAVING of the GPU-hours."""
        if not self.serving or all(e.loads == 0 for e in self.serving.values()):
            return []
        lines = [
            f"serving {mode}: ~{est.gpu_hours:.1f} GPU-hours, model loaded {est.loads}x "
            f"({est.load_share:.0%} of the GPU-hours loading models)"
            for mode, est in self.serving.items()
        ]
        lines[-1] += (
            f" [assumes {MODEL_LOAD_SECONDS} s per load, {DECODE_TOKENS_PER_SECOND:g} tokens/s "
            "per request]"
        )
        unit, model = self.serving["per-unit"], self.serving["per-model"]
        cheap, cheaper, dear = (
            ("per-model", model, unit)
            if model.gpu_hours < unit.gpu_hours
            else ("per-unit", unit, model)
        )
        saving = 1 - cheaper.gpu_hours / dear.gpu_hours if dear.gpu_hours > 0 else 0.0
        if saving >= RECOMMEND_SAVING:
            lines.append(
                f"recommendation: `serving: {cheap}` needs {saving:.0%} fewer GPU-hours"
                + (
                    " (the model loads once per student; per-unit runs every unit at once, "
                    "so it finishes sooner when GPUs are plentiful)"
                    if cheap == "per-model"
                    else ""
                )
            )
        return lines


def prepare_launch(
    experiment: Experiment, cluster: str | None, *, check_store: bool = True
) -> tuple[str, ClusterProfile, RunContext, RunStore]:
    name, profile = get_profile(cluster)
    if not profile.store.startswith("s3://"):
        raise SkillmixError(
            f"cluster profile {name!r}: store {profile.store!r} is not an s3:// URI",
            hint="pods read and write the run through S3-compatible storage",
        )
    for spec in [*experiment.students, experiment.grader]:
        if spec.base_url and has_credentials(spec.base_url):
            raise SkillmixError(
                f"{spec.name}: base_url {redact_url(spec.base_url)} carries credentials; on "
                "Kubernetes they would be stored in the release's values",
                hint="put the key in a Secret named in the cluster profile and use api_key_env",
            )
    ctx = resolve_context(experiment)
    ctx.sharded = True
    root = open_store(profile.store)
    if check_store:
        root.check()
    run = RunStore(root.child(ctx.run_id))
    if check_store:
        existing = run.read_run()
        if existing is not None and not isinstance(existing, EvaluationRun):
            raise SkillmixError(
                f"{run.uri}/run.json: not an evaluation run (kind={existing.kind!r})"
            )
        if existing is not None and existing.run_id != ctx.run_id:
            raise SkillmixError(f"{run.uri}/run.json belongs to run {existing.run_id!r}")
        if existing is not None and not existing.sharded:
            raise SkillmixError(
                f"run {ctx.run_id} was started by the local executor",
                hint="resume it with `skillmix evaluate --resume`",
            )
    return name, profile, ctx, run


def plan_launch(
    ctx: RunContext,
    profile: ClusterProfile,
    cluster: str,
    run: RunStore | None,
    *,
    sidecar_port: int = 8000,
    kube_version: str | None = None,
    resume: LaunchRecord | None = None,
) -> LaunchPlan:
    """Which units still need Jobs (from the store), their values and rendered manifests.

    ``resume``: the record of an attempt whose objects were not all created (the launch
    stopped halfway); its values are rendered again, so the same objects come out and the
    next ``apply`` creates only the missing ones."""
    e = ctx.experiment
    plan = plan_tasks(e, sharded=True)
    units = plan.units
    gen_todo, grade_todo, attempt = _units_to_do(ctx, units, run, resume)
    task_todo = _tasks_to_do(ctx, run, resume)
    values = (
        resume.values.as_dict()
        if resume is not None
        else build_values(
            ctx,
            profile,
            cluster,
            attempt=attempt,
            generation=gen_todo,
            grading=grade_todo,
            reasoning=task_todo,
            sidecar_port=sidecar_port,
        )
    )
    release = release_name(ctx.run_id)
    rendered = helm_template(values, release, profile.namespace, kube_version=kube_version)
    lp = LaunchPlan(
        run_id=ctx.run_id,
        run_uri=run_uri_for(profile, ctx.run_id),
        cluster=cluster,
        namespace=profile.namespace,
        release=release,
        attempt=attempt,
        values=values,
        rendered=rendered,
        finished_units=(
            resume.plan.finished_units
            if resume is not None and resume.plan is not None
            else len(units) - len(grade_todo)
        ),
        total_units=len(units),
    )
    for job in generation_jobs(e, gen_todo):
        spec = e.student(job.student)
        gpus = spec.vllm.gpu_count if spec.backend == "vllm" else 0
        k, g = (job.k, job.round) if isinstance(job, GenerateTask) else (None, None)
        lp.jobs.append(JobPlan("generate", job.student, k, g, spec.replicas, gpus, spec.backend))
    for task in task_todo:
        spec = e.student(task.student)
        gpus = spec.vllm.gpu_count if spec.backend == "vllm" else 0
        lp.jobs.append(
            JobPlan("generate", task.student, None, None, task.shards, gpus, spec.backend)
        )
    for student, k, g in grade_todo:
        lp.jobs.append(JobPlan("grade", student, k, g, 1, 0, e.grader.backend))
    lp.jobs.append(JobPlan("aggregate", "-", None, None, 1, 0, "-"))
    if values["coordinator"]["enabled"]:  # releases the gated Jobs (k8s/coordinator.py)
        lp.jobs.append(JobPlan("coordinate", "-", None, None, 1, 0, "-"))
    lp.gpu_hours, lp.api_cost_usd = estimate(ctx, gen_todo, grade_todo)
    lp.gpu_hours_by_student = {
        s.name: round(sum(_gpu_seconds(ctx, mine, e.serving_of)[:2]) / 3600.0, 4)
        for s in e.students
        if s.backend == "vllm" and (mine := [u for u in gen_todo if u[0] == s.name])
    }
    lp.warnings = plan_warnings(ctx, profile)
    lp.serving = {mode: serving_estimate(ctx, gen_todo, mode) for mode in SERVING_MODES}
    return lp


def _units_to_do(
    ctx: RunContext, units: list[Unit], run: RunStore | None, resume: LaunchRecord | None
) -> tuple[list[Unit], list[Unit], int]:
    """The units to generate and to grade, and the attempt's number: the resumed attempt's
    own; else, from the store, the units not finished (finished with failed records counts
    as not finished; a redone generation is regraded); else all of them, attempt 1."""
    if resume is not None:
        gen_todo = resume.units("generate")
        grade_todo = resume.units("grade")
        return gen_todo, grade_todo, resume.attempt
    if run is not None:
        # units finished with failed records are redone; redone generations are regraded
        # one listing of the run finds the units that have manifests; only those are read
        keys = set(run.store.list_keys(""))
        gen_todo = [
            u
            for u in units
            if not (
                _has_manifests(keys, ctx, "generate", *u)
                and unit_complete(run, ctx, "generate", *u)
            )
        ]
        todo = set(gen_todo)
        grade_todo = [
            u
            for u in units
            if u in todo
            or not (_has_manifests(keys, ctx, "grade", *u) and unit_complete(run, ctx, "grade", *u))
        ]
        attempt = 1 + len(
            [k for k in run.store.list_keys(RunLayout.LAUNCHES) if k.endswith(".json")]
        )
        return gen_todo, grade_todo, attempt
    return list(units), list(units), 1


def _tasks_to_do(
    ctx: RunContext, run: RunStore | None, resume: LaunchRecord | None
) -> list[TaskGenerateTask]:
    """The reasoning-task Jobs of this attempt: the resumed attempt's own, else those with a
    shard not complete in the store (all of them without a store: a dry run)."""
    if resume is not None:
        entries = resume.values.as_dict().get("taskGeneration", [])
        return [TaskGenerateTask(e["task"], e["student"], e.get("replicas", 1)) for e in entries]
    jobs = reasoning_jobs(ctx.experiment)
    if run is None:
        return jobs
    return [
        job
        for job in jobs
        if not all(
            task_unit_complete(run, TaskUnit(job.task, job.student, shard=shard, shards=job.shards))
            for shard in range(job.shards)
        )
    ]


def plan_warnings(ctx: RunContext, profile: ClusterProfile) -> list[str]:
    """What in the profile works against the plan: a model-load budget longer than Kueue's
    waitForPodsReady (Kueue would evict a pod still loading its model)."""
    out = []
    ready = profile.kueue_wait_for_pods_ready_seconds
    load = profile.deadlines.model_load_seconds
    served = [s.name for s in ctx.experiment.students if s.backend in ("vllm", "mock")]
    if ready is not None and profile.kueue_queue and served and load > ready:
        out.append(
            f"the model-load budget (deadlines.model_load_seconds {load}s) exceeds Kueue's "
            f"waitForPodsReady timeout ({ready}s): Kueue evicts a generation pod of "
            f"{', '.join(served[:3])} still loading its model; raise the cluster's "
            "waitForPodsReady.timeout or lower deadlines.model_load_seconds"
        )
    return out


def _gpu_seconds(
    ctx: RunContext, gen_todo: Sequence[Unit], serving: Callable[[str], str]
) -> tuple[float, float, int]:
    """GPU-seconds loading models and decoding, and the number of loads, of the generation
    units to do, each vLLM student served as ``serving(student)`` says: per-unit loads the
    model in every pod of every unit's Job, per-model once per pod of the student's Job."""
    e = ctx.experiment
    load = decode = 0.0
    loads = 0
    loaded: set[str] = set()
    for student, k, _g in gen_todo:
        spec = e.student(student)
        if spec.backend != "vllm":
            continue
        gpus = spec.vllm.gpu_count
        decode += gpus * unit_decode_seconds(ctx, student, k)
        if serving(student) == "per-unit" or student not in loaded:
            loaded.add(student)
            load += gpus * spec.replicas * MODEL_LOAD_SECONDS
            loads += spec.replicas
    return load, decode, loads


def serving_estimate(ctx: RunContext, gen_todo: Sequence[Unit], mode: str) -> ServingEstimate:
    """The estimate with every vLLM student served ``mode`` (per-unit or per-model)."""
    load, decode, loads = _gpu_seconds(ctx, gen_todo, lambda _student: mode)
    total = load + decode
    return ServingEstimate(total / 3600.0, load / total if total else 0.0, loads)


def _has_manifests(
    keys: set[str], ctx: RunContext, phase: str, student: str, k: int, g: int
) -> bool:
    """Every manifest the unit needs is among ``keys`` (a unit without them is unfinished,
    with no read of the store)."""
    if phase == "generate":
        shards = ctx.shards(student)
        prefixes = [shard_prefix(student, k, g, s, shards) for s in range(shards)]
    else:
        grader = ctx.experiment.grader
        prefixes = [
            RunLayout.grade_prefix(grader.name, student, k, g, r)
            for r in range(1, grader.rounds + 1)
        ]
    return all(f"{p}/{RunLayout.MANIFEST}" in keys for p in prefixes)


def estimate(
    ctx: RunContext, gen_todo: Sequence[Unit], grade_todo: Sequence[Unit]
) -> tuple[float, float | None]:
    """Rough GPU-hours (each student served as the experiment says) and API cost (upper
    bounds: every reply uses max_tokens)."""
    e = ctx.experiment
    overrides = {m: (p.prompt, p.completion) for m, p in e.prices.items()}
    load, decode, _loads = _gpu_seconds(ctx, gen_todo, e.serving_of)
    cost: float | None = 0.0
    for student, k, _g in gen_todo:
        spec = e.student(student)
        combo = ctx.combinations(k)[0]
        turns = render_generation_prompts(
            ctx.generation_prompt, ctx.skills(combo.skills), combo.topic
        )
        max_tokens = spec.sampling.max_tokens or 512
        prompt_tokens = sum(len(t) // 4 + i * max_tokens for i, t in enumerate(turns))
        requests = e.combinations * len(turns)
        cost = _add_cost(
            cost,
            spec.backend,
            spec.model,
            e.combinations * prompt_tokens,
            requests * max_tokens,
            overrides,
        )
    grader = e.grader
    for _student, k, _g in grade_todo:
        combo = ctx.combinations(k)[0]
        prompt = render_grading_prompt(
            ctx.grading_prompt, ctx.skills(combo.skills), combo.topic, "x" * 400
        )
        max_tokens = grader.sampling.max_tokens or 1024
        requests = e.combinations * (
            1 if grader.rounds > 1 and grader.use_n != "never" else grader.rounds
        )
        cost = _add_cost(
            cost,
            grader.backend,
            grader.model,
            requests * len(prompt) // 4,
            e.combinations * grader.rounds * max_tokens,
            overrides,
        )
    return (load + decode) / 3600.0, cost


def _add_cost(
    total: float | None,
    backend: str,
    model: str,
    prompt: int,
    completion: int,
    overrides: dict[str, tuple[float, float]],
) -> float | None:
    value = cost_usd(prompt, completion, price_for(backend, model, overrides))
    if total is None or value is None:
        return None
    return total + value


def record_launch(run: RunStore, ctx: RunContext, lp: LaunchPlan) -> None:
    """run.json (first launch only) and an audit record of this attempt; the values hold
    Secret names only, never secret values."""
    if run.read_run() is None:
        run.write_run(ctx.to_run())
    record = LaunchRecord(
        attempt=lp.attempt,
        launched_at=utc_now(),
        plan=lp.record(),
        values=ReleaseValues.model_validate(lp.values),
    )
    run.store.write_bytes(
        RunLayout.launch_record(lp.attempt),
        json.dumps(record.model_dump(mode="json"), indent=2).encode(),
        if_absent=True,
    )


def rendered_manifests(lp: LaunchPlan) -> list[RenderedDoc]:
    return split_manifests(lp.rendered)


_DEFERRED = re.compile(r'^\s*skillmix\.io/hold: "defer"\s*$', re.MULTILINE)


def split_deferred(docs: list[RenderedDoc]) -> tuple[list[RenderedDoc], list[RenderedDoc]]:
    """The objects the launch creates, and the Jobs it leaves to the coordinator (held back
    with Kueue: ``skillmix.io/hold: defer``, see k8s/values.py hold_mode)."""
    create: list[RenderedDoc] = []
    deferred: list[RenderedDoc] = []
    for d in docs:
        (deferred if d.kind == "Job" and _DEFERRED.search(d.text) else create).append(d)
    return create, deferred


def store_deferred(run: RunStore, attempt: int, deferred: list[RenderedDoc]) -> None:
    """Keep the deferred Jobs' manifests where the coordinator reads them, once per attempt
    (a resumed launch renders the same ones)."""
    if not deferred:
        return
    text = "".join(f"---\n{d.text.strip()}\n" for d in deferred)
    key = RunLayout.launch_deferred(attempt)
    try:
        run.store.write_bytes(key, text.encode("utf-8"), if_absent=True)
    except KeyExists:
        if run.store.read_bytes(key).decode("utf-8") != text:
            raise SkillmixError(
                f"{run.uri}/{key} exists and differs from this launch's deferred Jobs",
                hint="another launch of the run at the same time? see `skillmix status`",
            ) from None


def unfinished_attempt(run: RunStore) -> LaunchRecord | None:
    """The latest attempt's record when its objects were not all created (``launch``
    stopped by an API error or an interrupt after recording it): the next launch completes
    that attempt rather than burning a new attempt number and leaving orphans."""
    attempts = sorted(k for k in run.store.list_keys(RunLayout.LAUNCHES) if k.endswith(".json"))
    if not attempts:
        return None
    latest = len(attempts)
    if run.store.exists(RunLayout.launch_created(latest)):
        return None
    return run.read_launch_record(latest)


def stalled_attempt(run: RunStore, states: list[JobState]) -> LaunchRecord | None:
    """The latest attempt's record when its held-back Jobs wait for a coordinator that failed
    or does not exist: the next launch completes that attempt with a new coordinator (the
    Jobs that exist are kept) rather than refusing to run the same units twice."""
    if not states:
        return None
    latest = max(s.attempt for s in states)
    current = [s for s in states if s.attempt == latest]
    names = {s.name for s in current}
    current += [d.state for n, d in read_deferred(run, latest).items() if n not in names]
    state = coordinator_state(current)
    if state is None or state["state"] not in ("Failed", "Missing"):
        return None
    return run.read_launch_record(latest)


def mark_created(run: RunStore, attempt: int) -> None:
    """Every object of ``attempt`` exists (see :func:`unfinished_attempt`)."""
    run.store.write_bytes(RunLayout.launch_created(attempt), f"{utc_now()}\n".encode())
