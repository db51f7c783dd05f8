"""The Helm values of an experiment's reasoning tasks (``taskGeneration``): one generation
Job per (task, student), Indexed over the task's shards. The chart renders each with the same
generation-Job template as SKILL-MIX's (sidecars, gating, GPU cap, Kueue), so only the
client's arguments and the Job's deadline are decided here."""

from __future__ import annotations

from typing import Any

from skillmix.k8s.estimate import CLIENT_MARGIN_SECONDS
from skillmix.k8s.profiles import ClusterProfile
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.plan import TaskGenerateTask


def task_generation_values(
    ctx: RunContext,
    profile: ClusterProfile,
    jobs: list[TaskGenerateTask],
    *,
    uri: str,
    attempt: int,
    sidecar_url: str,
) -> list[dict[str, Any]]:
    """``taskGeneration`` entries: student, task, replicas (shards), args, deadlineSeconds and,
    under a GPU cap, gpuWeight. A vLLM student asks its sidecar; a mock student's client
    starts a mock with the task's answer key itself (so its numbers can be checked); an API
    student's pods share its budget."""
    out = []
    d = profile.deadlines
    for job in jobs:
        spec = ctx.experiment.student(job.student)
        sidecar = spec.backend == "vllm"
        load = d.model_load_seconds if sidecar else 0
        deadline = load + d.generation_seconds
        args = job.container_args(
            uri,
            attempt=attempt,
            base_url=sidecar_url if sidecar else "",
            own_server=sidecar or spec.backend == "mock",
        )
        if sidecar:
            args += ["--model-load-timeout", str(load)]
            args += ["--model-log", "/var/run/skillmix-model/model.log"]
        args += ["--time-limit", str(max(60, deadline - CLIENT_MARGIN_SECONDS))]
        entry: dict[str, Any] = {
            "student": job.student,
            "task": job.task,
            "replicas": job.shards,
            "args": args,
            "deadlineSeconds": deadline,
        }
        if profile.max_gpus and sidecar:
            entry["gpuWeight"] = job.shards * spec.vllm.gpu_count
        out.append(entry)
    return out
