"""Serving modes in the plan, the values and the estimates; vLLM pod sizing in the values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.artifacts import LaunchRecord, parse_artifact
from skillmix.config import Experiment
from skillmix.k8s.estimate import MODEL_LOAD_SECONDS
from skillmix.k8s.launch import plan_launch
from skillmix.k8s.profiles import ClusterProfile
from skillmix.k8s.values import build_values, student_values
from skillmix.pipeline.context import RunContext, resolve_context
from skillmix.pipeline.plan import (
    GenerateTask,
    ModelGenerateTask,
    generation_jobs,
    plan_tasks,
)
from tests.helpers import run_cli

GRADER = {"name": "g", "backend": "mock", "model": "mock-g", "rounds": 1}
QWEN = {"name": "qwen", "backend": "vllm", "model": "q", "concurrency": 64}


def context(**overrides: Any) -> RunContext:
    data: dict[str, Any] = {
        "name": "serving",
        "ks": [2, 3, 4],
        "combinations": 100,
        "generation_rounds": 3,
        "students": [QWEN],
        "grader": GRADER,
        **overrides,
    }
    ctx = resolve_context(Experiment.model_validate(data))
    ctx.sharded = True
    return ctx


def profile(**overrides: Any) -> ClusterProfile:
    return ClusterProfile.model_validate({"store": "s3://b/runs", **overrides})


def test_generation_jobs_group_units_per_model_students_only() -> None:
    ctx = context(
        serving="per-model",
        students=[QWEN, {"name": "m", "model": "mock-m", "serving": "per-unit", "replicas": 2}],
    )
    units = plan_tasks(ctx.experiment, sharded=True).units
    jobs = generation_jobs(ctx.experiment, units[1:])  # a relaunch: one unit already done
    [model_job, *unit_jobs] = jobs
    assert isinstance(model_job, ModelGenerateTask) and model_job.student == "qwen"
    assert model_job.units == tuple(u for u in units[1:] if u.student == "qwen")
    assert len(model_job.units) == 8
    assert all(isinstance(j, GenerateTask) and j.shards == 2 for j in unit_jobs)
    assert len(unit_jobs) == 9
    args = model_job.container_args("s3://b/r", attempt=2, base_url="http://x/v1")
    assert args[args.index("--units") + 1] == "2:2,2:3,3:1,3:2,3:3,4:1,4:2,4:3"
    assert "--k" not in args and args[args.index("--attempt") + 1] == "2"


def test_values_and_launch_record_list_per_model_units() -> None:
    ctx = context(serving="per-model")
    units = plan_tasks(ctx.experiment, sharded=True).units
    values = build_values(ctx, profile(), "c", attempt=1, generation=units, grading=units)
    assert values["generation"] == []
    [job] = values["modelGeneration"]
    assert job["student"] == "qwen" and len(job["units"]) == 9
    # its client runs 9 units in turn: the Job's deadline is the load budget plus 9 units'
    # estimated work with a margin (at least 900 s each), and the client stops a minute before
    d = profile().deadlines
    assert d.model_load_seconds + 9 * 900 <= job["deadlineSeconds"]
    assert job["deadlineSeconds"] <= d.model_load_seconds + 9 * d.generation_seconds
    limit = job["args"][job["args"].index("--time-limit") + 1]
    assert int(limit) == job["deadlineSeconds"] - 60
    # a relaunch's wait containers find the units this attempt redoes in its record
    record = LaunchRecord(attempt=1, values=values)
    assert record.units("generate") == [tuple(u) for u in units]
    assert record.units("grade") == [tuple(u) for u in units]
    # a resumed launch renders its release from the record's values: the same JSON comes back
    again = parse_artifact(LaunchRecord, record.model_dump_json().encode(), "attempt-001.json")
    assert json.dumps(again.values.as_dict()) == json.dumps(values)


def test_vllm_pods_are_sized_with_their_gpus_and_overridable() -> None:
    student = {
        **QWEN,
        "vllm": {"tensor_parallel_size": 2, "args": ["--pipeline-parallel-size", "2"]},
    }
    [entry] = student_values(context(students=[student]), profile()).values()
    assert entry["gpus"] == 4
    assert entry["resources"] == {
        "requests": {"cpu": "16", "memory": "128Gi", "ephemeral-storage": "210Gi"},
        "limits": {"memory": "128Gi", "ephemeral-storage": "210Gi"},
    }
    assert entry["modelVolumeSize"] == "200Gi"
    # the profile's resources, then the student's, over the sized defaults; a cache volume
    # takes the weights off the pod's ephemeral storage
    student["kubernetes"] = {
        "resources": {"limits": {"memory": "100Gi"}},
        "model_volume_size": "1Ti",
    }
    sized = profile(vllm_resources={"requests": {"cpu": "12"}})
    [entry] = student_values(context(students=[student]), sized).values()
    assert entry["resources"]["requests"]["cpu"] == "12"
    assert entry["resources"]["limits"] == {"memory": "100Gi", "ephemeral-storage": "1034Gi"}
    cached = profile(model_cache_pvc="hf-rwx")
    [entry] = student_values(context(students=[student]), cached).values()
    assert (
        entry["modelVolumeSize"] == ""
        and entry["resources"]["limits"]["ephemeral-storage"] == "10Gi"
    )


def test_a_students_kubernetes_settings_reach_the_values() -> None:
    student = {
        **QWEN,
        "vllm": {"image_tag": "v0.10.2", "env": {"VLLM_LOGGING_LEVEL": "DEBUG"}},
        "kubernetes": {
            "gpu_resource": "nvidia.com/mig-3g.40gb",
            "node_selector": {"pool": "mig"},
            "tolerations": [],
            "priority_class_name": "low",
            "kueue_priority_class": "batch",
            "pod_annotations": {"a": "b"},
            "shm_size": "1Gi",
        },
    }
    [entry] = student_values(context(students=[student]), profile()).values()
    assert entry["imageTag"] == "v0.10.2" and entry["env"] == {"VLLM_LOGGING_LEVEL": "DEBUG"}
    assert entry["gpuResource"] == "nvidia.com/mig-3g.40gb"
    assert entry["nodeSelector"] == {"pool": "mig"}
    assert entry["tolerations"] == []  # set (to none): the global gpu.tolerations do not apply
    assert (entry["priorityClassName"], entry["kueuePriorityClass"]) == ("low", "batch")
    assert entry["podAnnotations"] == {"a": "b"} and entry["shmSize"] == "1Gi"
    assert "affinity" not in entry and "podLabels" not in entry  # unset: the globals apply


def test_the_plan_shows_both_modes_and_recommends_per_model_for_many_units() -> None:
    """examples/vllm-local.yaml's shape: 9 units of one 7B model. Per-unit loads it 9 times
    (the issue's 92% of the GPU-hours), per-model once."""
    lp = plan_launch(context(), profile(), "c", None)
    unit, model = lp.serving["per-unit"], lp.serving["per-model"]
    assert (unit.loads, model.loads) == (9, 1)
    assert unit.load_share == pytest.approx(0.92, abs=0.01)
    assert unit.gpu_hours - model.gpu_hours == pytest.approx(8 * MODEL_LOAD_SECONDS / 3600)
    assert lp.gpu_hours == pytest.approx(unit.gpu_hours)  # the experiment's mode: per-unit
    lines = lp.serving_lines()
    assert lines[0].startswith("serving per-unit: ~1.6 GPU-hours, model loaded 9x (92%")
    assert lines[-1].startswith("recommendation: `serving: per-model` needs 82% fewer")
    record = lp.record()
    assert record.serving_estimates["per-model"].loads == 1
    per_model = plan_launch(context(serving="per-model"), profile(), "c", None)
    assert per_model.gpu_hours == pytest.approx(model.gpu_hours)
    assert [(j.student, j.k, j.round) for j in per_model.jobs if j.phase == "generate"] == [
        ("qwen", None, None)
    ]


def test_no_recommendation_when_the_modes_cost_about_the_same() -> None:
    # one unit: one load either way
    lp = plan_launch(context(ks=[2], generation_rounds=1), profile(), "c", None)
    assert lp.serving["per-unit"].gpu_hours == pytest.approx(lp.serving["per-model"].gpu_hours)
    assert not any(line.startswith("recommendation") for line in lp.serving_lines())
    # no vLLM student: nothing to say
    mock = context(students=[{"name": "m", "model": "mock-m"}])
    assert plan_launch(mock, profile(), "c", None).serving_lines() == []


def test_a_resumed_launch_renders_the_release_from_its_record_again() -> None:
    """launch.py gives helm the record's values as they were read: the same values and the
    same manifests as the attempt it resumes (per-model units included)."""
    ctx = context(serving="per-model", students=[QWEN, {"name": "m", "model": "mock-m"}])
    first = plan_launch(ctx, profile(), "c", None)
    record = LaunchRecord(attempt=first.attempt, plan=first.record(), values=first.values)
    stored = json.dumps(record.model_dump(mode="json"), indent=2).encode()  # as record_launch
    resume = parse_artifact(LaunchRecord, stored, "launches/attempt-001.json")
    again = plan_launch(ctx, profile(), "c", None, resume=resume)
    assert json.dumps(again.values) == json.dumps(first.values)
    assert again.rendered == first.rendered and again.attempt == first.attempt


def test_cache_warm_needs_a_vllm_student_and_a_cache_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prof = tmp_path / "skillmix.yaml"
    prof.write_text(yaml.safe_dump({"clusters": {"c": {"store": "s3://b/r"}}}), "utf-8")
    monkeypatch.setenv("SKILLMIX_CONFIG", str(prof))
    for students, needle in [
        ([QWEN], "cluster profile 'c' has no model_cache_pvc"),
        ([{"name": "m", "model": "mock-m"}], "has no vllm student: there is nothing to download"),
    ]:
        exp = tmp_path / "exp.yaml"
        data = {"name": "w", "ks": [2], "students": students, "grader": GRADER}
        exp.write_text(yaml.safe_dump(data), "utf-8")
        result = run_cli("cache", "warm", "-f", str(exp), "--dry-run")
        assert result.exit_code == 2 and needle in result.stderr, result.stderr


def test_an_offline_cache_needs_the_cache_volume() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="model_cache_offline needs model_cache_pvc"):
        profile(model_cache_offline=True)
    ctx = context()
    units = plan_tasks(ctx.experiment, sharded=True).units
    cached = profile(model_cache_pvc="hf", model_cache_offline=True)
    values = build_values(ctx, cached, "c", attempt=1, generation=units, grading=units)
    assert values["modelCache"]["offline"] is True


def test_fractional_cpu_is_a_quantity() -> None:
    student = {**QWEN, "kubernetes": {"resources": {"requests": {"cpu": 0.5}}}}
    [entry] = student_values(context(students=[student]), profile()).values()
    assert entry["resources"]["requests"]["cpu"] == 0.5
