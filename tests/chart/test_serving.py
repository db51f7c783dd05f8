"""The chart's serving modes and vLLM pods: one Job per student (per-model), each student's
own Kubernetes settings over the global ones, pods sized and hardened for serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.chart.helpers import Render
from tests.chart.test_chart import GPU, env, pod, sidecar

pytestmark = pytest.mark.tools

RenderFn = Callable[..., Render]
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def by_student(r: Render) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["labels"]["skillmix.io/student"]: j for j in r.jobs("generation")}


def test_per_model_is_one_job_per_student(render: RenderFn) -> None:
    r = render("per-model.yaml")
    jobs = by_student(r)
    assert len(r.jobs("generation")) == 2 and set(jobs) == {"qwen-small", "mocky"}
    assert jobs["qwen-small"]["metadata"]["name"] == "per-model-5a6b7c8d-gen-qwen-small-a1"
    mocky = jobs["mocky"]["spec"]
    assert (mocky["completionMode"], mocky["completions"], mocky["parallelism"]) == (
        "Indexed",
        2,
        2,
    )
    assert "completionMode" not in jobs["qwen-small"]["spec"]
    for job in jobs.values():
        assert job["metadata"]["labels"]["skillmix.io/serving"] == "per-model"
        client = pod(job)["containers"][0]
        assert client["args"][client["args"].index("--units") + 1] == "2:1,3:1"
    assert len(r.jobs("grading")) == 2  # grading stays per unit


def test_a_students_settings_override_the_global_ones(render: RenderFn) -> None:
    job = by_student(render("per-model.yaml"))["qwen-small"]
    p, model = pod(job), sidecar(job)
    assert model is not None
    assert model["image"] == "vllm/vllm-openai:v0.10.2"  # the student's image_tag
    assert model["resources"]["requests"] == {
        "cpu": "2",
        "memory": "16Gi",
        "ephemeral-storage": "10Gi",
        "nvidia.com/mig-1g.10gb": 1,
    }
    assert GPU not in model["resources"]["limits"]
    assert p["nodeSelector"] == {"nvidia.com/mig.config": "all-1g.10gb"}  # not gpu.nodeSelector
    assert p["tolerations"] == [{"key": "mig", "operator": "Exists", "effect": "NoSchedule"}]
    assert p["priorityClassName"] == "eval-batch"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "eval-low"
    template = job["spec"]["template"]["metadata"]
    assert template["annotations"] == {
        "team.example.com/owner": "evals",
        "eks.amazonaws.com/skip-containers": "model",  # no cloud credentials for the model
    }
    assert template["labels"]["team"] == "evals"
    e = env(model)
    assert e["VLLM_ATTENTION_BACKEND"]["value"] == "FLASH_ATTN"
    assert e["HF_HUB_OFFLINE"]["value"] == "1"  # modelCache.offline: the cache was warmed
    assert e["HF_HOME"]["value"] == "/models/hf"
    volumes = {v["name"]: v for v in p["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hf-cache-rwx"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert model["securityContext"] == RESTRICTED


def test_mock_pods_get_no_gpu_scheduling_unless_the_student_asks(render: RenderFn) -> None:
    job = by_student(render("per-model.yaml"))["mocky"]
    p = pod(job)
    for key in ("nodeSelector", "tolerations", "affinity", "runtimeClassName"):
        assert key not in p
    spot = {"tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]}
    job = by_student(render("per-model.yaml", extra={"students": {"mocky": spot}}))["mocky"]
    assert pod(job)["tolerations"] == spot["tolerations"]


def test_vllm_defaults_restricted_sized_and_an_emptydir_for_the_weights(
    render: RenderFn,
) -> None:
    extra = {"students": {"llama3-8b": {"modelVolumeSize": "50Gi"}}}
    for job in render("vllm-tp1.yaml", extra=extra).jobs("generation"):
        model = sidecar(job)
        assert model is not None
        assert model["securityContext"] == RESTRICTED
        e = env(model)
        assert e["HOME"]["value"] == "/tmp" and "HF_HUB_OFFLINE" not in e
        volumes = {v["name"]: v for v in pod(job)["volumes"]}
        assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {"sizeLimit": "50Gi"}}
        assert {"name": "vllm-tmp", "mountPath": "/tmp"} in model["volumeMounts"]
        assert model["image"] == "vllm/vllm-openai:v0.11.0"


def test_a_students_security_context_replaces_the_default(render: RenderFn) -> None:
    root = {"runAsNonRoot": False, "allowPrivilegeEscalation": False}
    extra = {"students": {"llama3-8b": {"securityContext": root}}}
    for job in render("vllm-tp1.yaml", extra=extra).jobs("generation"):
        model = sidecar(job)
        assert model is not None and model["securityContext"] == root


def test_per_model_entries_are_checked(render: RenderFn) -> None:
    r = render("per-model.yaml", extra={"modelGeneration": [{"student": "mocky", "args": ["x"]}]})
    assert r.returncode != 0
    assert "/modelGeneration/0" in r.stderr and "units" in r.stderr


def cache_values(**profile: Any) -> dict[str, Any]:
    from skillmix.config import Experiment
    from skillmix.k8s.cache_values import cache_warm_values
    from skillmix.k8s.profiles import ClusterProfile

    e = Experiment.model_validate(
        {
            "name": "warm",
            "ks": [2],
            "students": [
                {"name": "a", "backend": "vllm", "model": "a", "vllm": {"model": "org/A"}},
                {"name": "b", "backend": "vllm", "model": "org/B"},
                {"name": "a2", "backend": "vllm", "model": "a2", "vllm": {"model": "org/A"}},
                {"name": "m", "backend": "mock", "model": "m"},
            ],
            "grader": {"model": "g"},
        }
    )
    p = ClusterProfile.model_validate(
        {"store": "s3://b/r", "model_cache_pvc": "hf-rwx", "secrets": {"HF_TOKEN": {"name": "hf"}}}
        | profile
    )
    return cache_warm_values(e, p, "c")[1]


def test_cache_warm_is_one_download_job_without_gpus(render: RenderFn) -> None:
    r = render(extra=cache_values())
    [job] = [d for d in r.docs if d["kind"] == "Job"]
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "cache-warm"
    [c] = pod(job)["containers"]
    assert c["args"] == ["org/A", "org/B"]  # each model once
    assert c["command"][:2] == ["python3", "-c"] and "snapshot_download" in c["command"][2]
    assert not any("gpu" in k for part in c["resources"].values() for k in part)
    e = env(c)
    assert e["HF_HOME"]["value"] == "/models/hf"
    assert e["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "HF_TOKEN"}
    assert c["securityContext"] == RESTRICTED
    volumes = {v["name"]: v for v in pod(job)["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hf-rwx"}
    assert {d["kind"] for d in r.docs} == {"Job", "ServiceAccount"}


def test_cache_warm_needs_the_cache_volume(render: RenderFn) -> None:
    values = cache_values()
    values["modelCache"]["enabled"] = False
    r = render(extra=values)
    assert r.returncode != 0 and "cacheWarm.models needs modelCache.enabled" in r.stderr
