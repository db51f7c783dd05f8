"""Helm values for one run, from the same plan the local executor runs."""

from __future__ import annotations

import math
import re
from typing import Any

from skillmix.errors import SkillmixError
from skillmix.k8s.profiles import ClusterProfile
from skillmix.pipeline.context import RunContext

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
        elif s.base_url:
            entry["baseUrl"] = s.base_url
        out[s.name] = entry
    return out


def build_values(
    ctx: RunContext,
    profile: ClusterProfile,
    cluster: str,
    *,
    attempt: int,
    generation: list[tuple[str, int, int]],
    grading: list[tuple[str, int, int]],
    aggregation: bool = True,
    sidecar_port: int = 8000,
) -> dict[str, Any]:
    """Values for the chart. Only Secret names go in: every key stays in its Secret."""
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
    values: dict[str, Any] = {
        "run": {
            "id": ctx.run_id,
            "uri": run_uri_for(profile, ctx.run_id),
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
        "jobs": {
            "backoffLimit": profile.backoff_limit,
            "ttlSecondsAfterFinished": profile.deadlines.ttl_seconds,
            "activeDeadlineSeconds": {
                "generation": profile.deadlines.generation_seconds,
                "grading": profile.deadlines.grading_seconds,
                "aggregation": profile.deadlines.aggregation_seconds,
            },
            "waitTimeoutSeconds": {
                "grading": max(60, profile.deadlines.grading_seconds - 600),
                "aggregation": max(60, profile.deadlines.aggregation_seconds - 600),
            },
        },
        "students": student_values(ctx),
        "generation": [{"student": s, "k": k, "round": g} for s, k, g in generation],
        "grader": {
            "backend": "mock" if grader.backend == "mock" else "openai",
            "servedModelName": grader.model,
            "quality": grader.quality,  # resolved on the spec, as for the local executor
            "baseUrl": grader.base_url or "",
            "budgetShare": max(1, len(grading)),
        },
        "grading": [{"student": s, "k": k, "round": g} for s, k, g in grading],
        "aggregation": {"enabled": aggregation},
    }
    if profile.client_resources:
        values["client"] = {"resources": profile.client_resources}
    return values
