"""Helm values of the model-cache pre-download Job (``skillmix cache warm``): the chart renders
that Job alone, into the ReadWriteMany volume the vLLM pods mount at HF_HOME."""

from __future__ import annotations

import hashlib
from typing import Any

from skillmix.config import Experiment
from skillmix.errors import SkillmixError
from skillmix.k8s.profiles import ClusterProfile
from skillmix.k8s.values import split_image


def cache_models(experiment: Experiment) -> list[str]:
    """The Hugging Face ids the experiment's vLLM students load (each once, in order)."""
    models = [s.vllm.model or s.model for s in experiment.students if s.backend == "vllm"]
    return list(dict.fromkeys(models))


def cache_warm_values(
    experiment: Experiment, profile: ClusterProfile, cluster: str
) -> tuple[str, dict[str, Any]]:
    """The release name and values of the pre-download Job (`skillmix cache warm`): the chart
    renders that Job alone. Its name follows the models, so warming the same set twice is
    refused by the API server while the first Job is kept."""
    models = cache_models(experiment)
    if not models:
        raise SkillmixError(
            f"experiment {experiment.name!r} has no vllm student: there is nothing to download"
        )
    if not profile.model_cache_pvc:
        raise SkillmixError(
            f"cluster profile {cluster!r} has no model_cache_pvc",
            hint="create a ReadWriteMany PVC and name it as model_cache_pvc in the profile",
        )
    digest = hashlib.sha256("\n".join(models).encode()).hexdigest()[:8]
    release = f"cache-{digest}"
    vllm_repo, vllm_tag = split_image(profile.vllm_image)
    hf = profile.secrets.get("HF_TOKEN")
    values: dict[str, Any] = {
        "run": {"id": release, "uri": "", "attempt": 1, "seed": experiment.seed},
        "imagePullSecrets": list(profile.image_pull_secrets),
        "vllm": {
            "image": {"repository": vllm_repo, "tag": vllm_tag, "pullPolicy": "IfNotPresent"},
            **(
                {"securityContext": profile.vllm_security_context}
                if profile.vllm_security_context is not None
                else {}
            ),
        },
        "modelCache": {
            "enabled": True,
            "claimName": profile.model_cache_pvc,
            "mountPath": profile.model_cache_path,
            "offline": False,
        },
        "cacheWarm": {"models": models},
        "hfToken": {
            "secretName": hf.name if hf else "",
            "key": (hf.key if hf else None) or "HF_TOKEN",
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
        "aggregation": {"enabled": False, "args": [], "waitArgs": []},
    }
    return release, values
