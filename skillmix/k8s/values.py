"""Helm values for one run, from the same plan the local executor runs."""

from __future__ import annotations

import math
import re
from typing import Any

from skillmix.errors import SkillmixError
from skillmix.k8s.profiles import ClusterProfile
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.plan import Unit, plan_tasks

MAX_RELEASE = 53  # Helm's limit for release names


def split_image(image: str) -> tuple[str, str]:
    """``registry:5000/repo/name:tag`` -> (``registry:5000/repo/name``, ``tag``); no tag -> latest."""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def release_name(run_id: str) -> str:
    """A DNS-1123 release name from the run id (Helm allows at most 53 characters)."""
    import hashlib

    name = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-") or "run"
    if len(name) <= MAX_RELEASE:
        return name
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{name[: MAX_RELEASE - 9].rstrip('-')}-{digest}"


def run_uri_for(profile: ClusterProfile, run_id: str) -> str:
    return f"{profile.store.rstrip('/')}/{run_id}"


def _secret_env(profile: ClusterProfile, env: str, cluster: str, why: str) -> dict[str, str]:
    ref = profile.secrets.get(env)
    if ref is None:
        raise SkillmixError(
            f"cluster profile {cluster!r} names no Secret for {env} (needed by {why})",
            hint=f"add `secrets: {{{env}: {{name: <secret-name>, key: {env}}}}}` to the profile",
        )
    return {"env": env, "secretName": ref.name, "key": ref.key or env}


def student_values(ctx: RunContext) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in ctx.experiment.students:
        entry: dict[str, Any] = {
            "backend": s.backend,
            "servedModelName": s.model,
            "replicas": s.replicas,
        }
        if s.backend == "vllm":
            entry.update(
                model=s.vllm.model or s.model,
                tensorParallelSize=s.vllm.tensor_parallel_size,
                gpus=s.vllm.gpus or s.vllm.tensor_parallel_size,
                extraArgs=list(s.vllm.args),
            )
        elif s.backend == "mock":
            entry["quality"] = s.quality  # resolved on the spec (config.MOCK_DEFAULT_QUALITY)
        out[s.name] = entry
    return out


def build_values(
    ctx: RunContext,
    profile: ClusterProfile,
    cluster: str,
    *,
    attempt: int,
    generation: list[Unit],
    grading: list[Unit],
    aggregation: bool = True,
    sidecar_port: int = 8000,
) -> dict[str, Any]:
    """Values for the chart. Only Secret names go in: every key stays in its Secret.

    Every container command of the skillmix image but the mock sidecar's comes from the plan's
    tasks (``generation[i].args``, ``grading[i].args`` / ``waitArgs``, ``aggregation.args`` /
    ``waitArgs``): the chart only places them."""
    e = ctx.experiment
    repo, tag = split_image(profile.image)
    vllm_repo, vllm_tag = split_image(profile.vllm_image)
    api_keys: dict[str, dict[str, str]] = {}
    for spec in ctx.model_specs():
        env = spec.resolved_api_key_env()
        if env and spec.backend != "mock":
            api_keys[env] = _secret_env(profile, env, cluster, f"{spec.name}")
    uses_vllm = any(s.backend == "vllm" for s in e.students)
    hf = profile.secrets.get("HF_TOKEN")
    grader = e.grader
    if grader.backend == "vllm" and not grader.base_url:
        raise SkillmixError(
            f"grader {grader.name}: a vllm grader needs base_url (an in-cluster Service) on Kubernetes"
        )
    period = 10
    uri = run_uri_for(profile, ctx.run_id)
    plan = plan_tasks(e, sharded=True)
    generation, grading = [Unit(*u) for u in generation], [Unit(*u) for u in grading]
    generate_tasks = {t.unit: t for t in plan.generate}
    grade_tasks = {t.unit: t for t in plan.grade}
    sidecar_url = f"http://localhost:{sidecar_port}/v1"
    # a mock grader without base_url is a sidecar of each grading pod (as the chart decides)
    grader_url = grader.base_url or (sidecar_url if grader.backend == "mock" else "")
    # an endpoint shared by every grading Job splits the grader's budget n ways; a mock grader
    # sidecar in each pod is a server of its own
    budget_share = 1 if grader_url == sidecar_url else max(1, len(grading))
    timeouts = {
        "grade": max(60, profile.deadlines.grading_seconds - 600),
        "aggregate": max(60, profile.deadlines.aggregation_seconds - 600),
    }

    def student_url(student: str) -> str:
        spec = e.student(student)
        return sidecar_url if spec.backend in ("vllm", "mock") else spec.base_url or ""

    def unit_entry(unit: Unit, **commands: list[str]) -> dict[str, Any]:
        return {"student": unit.student, "k": unit.k, "round": unit.round, **commands}

    values: dict[str, Any] = {
        "run": {
            "id": ctx.run_id,
            "uri": uri,
            "attempt": attempt,
            "seed": e.seed,
        },
        "image": {"repository": repo, "tag": tag, "pullPolicy": profile.image_pull_policy},
        "imagePullSecrets": list(profile.image_pull_secrets),
        "vllm": {
            "image": {"repository": vllm_repo, "tag": vllm_tag, "pullPolicy": "IfNotPresent"},
            "port": sidecar_port,
            "startupProbe": {
                "periodSeconds": period,
                "failureThreshold": max(
                    1, math.ceil(profile.deadlines.model_load_seconds / period)
                ),
            },
            "shmSize": profile.shm_size,
            "resources": profile.vllm_resources,
        },
        "modelCache": {
            "enabled": bool(profile.model_cache_pvc) and uses_vllm,
            "claimName": profile.model_cache_pvc or "",
            "mountPath": profile.model_cache_path,
        },
        "hfToken": {
            "secretName": hf.name if (hf and uses_vllm) else "",
            "key": (hf.key or "HF_TOKEN") if hf else "HF_TOKEN",
        },
        "store": {
            "endpointUrl": profile.s3.endpoint_url or "",
            "region": profile.s3.region,
            "credentialsSecret": profile.s3.credentials_secret or "",
        },
        "apiKeys": list(api_keys.values()),
        "gpu": {
            "resourceName": profile.gpu.resource_name,
            "nodeSelector": profile.gpu.node_selector,
            "tolerations": profile.gpu.tolerations,
            "affinity": profile.gpu.affinity,
            "runtimeClassName": profile.gpu.runtime_class or "",
        },
        "kueue": {"queueName": profile.kueue_queue or ""},
        "serviceAccount": {
            "create": profile.service_account.create,
            "name": profile.service_account.name or "",
            "annotations": dict(profile.service_account.annotations),
        },
        "jobs": {
            "backoffLimit": profile.backoff_limit,
            "ttlSecondsAfterFinished": profile.deadlines.ttl_seconds,
            "activeDeadlineSeconds": {
                "generation": profile.deadlines.generation_seconds,
                "grading": profile.deadlines.grading_seconds,
                "aggregation": profile.deadlines.aggregation_seconds,
            },
        },
        "students": student_values(ctx),
        "generation": [
            unit_entry(
                u,
                args=generate_tasks[u].container_args(
                    uri,
                    attempt=attempt,
                    base_url=student_url(u.student),
                    own_server=student_url(u.student) == sidecar_url,
                ),
            )
            for u in generation
        ],
        "grader": {
            "backend": "mock" if grader.backend == "mock" else "openai",
            "servedModelName": grader.model,
            # resolved on the spec (mock only), as for the local executor; else the default
            **({"quality": grader.quality} if grader.quality is not None else {}),
            "baseUrl": grader.base_url or "",
        },
        "grading": [
            unit_entry(
                u,
                args=grade_tasks[u].container_args(
                    uri, attempt=attempt, budget_share=budget_share, base_url=grader_url
                ),
                waitArgs=grade_tasks[u].wait_args(uri, attempt=attempt, timeout=timeouts["grade"]),
            )
            for u in grading
        ],
        "aggregation": {
            "enabled": aggregation,
            "args": plan.aggregate.container_args(uri),
            "waitArgs": plan.aggregate.wait_args(
                uri, attempt=attempt, timeout=timeouts["aggregate"]
            ),
        },
    }
    if profile.client_resources:
        values["client"] = {"resources": profile.client_resources}
    return values
