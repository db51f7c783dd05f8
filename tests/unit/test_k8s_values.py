"""The Kubernetes executor's pure parts: image refs, release names, Helm values, estimates, Job
states and the wait loop (driven by a plain in-memory fake of KubeClient and a fake clock)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from skillmix.config import Experiment
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.k8s.cluster import wait_for_run
from skillmix.k8s.jobs import JobCondition, JobState, WatchEvent, WatchExpired, run_selector
from skillmix.k8s.launch import estimate
from skillmix.k8s.profiles import ClusterProfile
from skillmix.k8s.values import MAX_RELEASE, build_values, release_name, split_image
from skillmix.pipeline.context import RunContext, resolve_context
from skillmix.pipeline.plan import plan_tasks
from skillmix.vocab import PHASE_LABEL

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CANARY = "sk-canary-never-in-values-41f0"

# ---------------------------------------------------------------------------------------------
# split_image
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("vllm/vllm-openai:v0.11.0", ("vllm/vllm-openai", "v0.11.0")),
        ("ghcr.io/skillmix/skillmix:0.1.0", ("ghcr.io/skillmix/skillmix", "0.1.0")),
        ("registry:5000/team/skillmix:rc-1", ("registry:5000/team/skillmix", "rc-1")),
        ("localhost:5000/skillmix", ("localhost:5000/skillmix", "latest")),  # port, no tag
        ("registry.local:5000/a/b/c", ("registry.local:5000/a/b/c", "latest")),
        ("skillmix", ("skillmix", "latest")),
        ("skillmix:kind-test", ("skillmix", "kind-test")),
        ("[::1]:5000/skillmix:dev", ("[::1]:5000/skillmix", "dev")),
    ],
)
def test_split_image(image: str, expected: tuple[str, str]) -> None:
    assert split_image(image) == expected


_component = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?", fullmatch=True)


@given(
    registry=st.one_of(
        st.none(), st.from_regex(r"[a-z][a-z0-9.-]{0,10}(:[0-9]{1,5})?", fullmatch=True)
    ),
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
)
def test_split_image_round_trips(registry: str | None, path: list[str], tag: str | None) -> None:
    repository = "/".join(([registry] if registry else []) + path)
    image = f"{repository}:{tag}" if tag else repository
    assert split_image(image) == (repository, tag or "latest")


# ---------------------------------------------------------------------------------------------
# release_name
# ---------------------------------------------------------------------------------------------


def test_release_name_keeps_short_ids() -> None:
    assert release_name("quickstart-1a2b3c4d") == "quickstart-1a2b3c4d"
    assert release_name("My_Run.v2-1A2B3C4D") == "my-run-v2-1a2b3c4d"
    assert release_name("___") == "run"


def test_release_name_hashes_long_ids() -> None:
    long_a = "a-very-long-experiment-name-for-the-evaluation-of-many-models-1a2b3c4d"
    long_b = long_a.replace("1a2b3c4d", "5e6f7a8b")
    a, b = release_name(long_a), release_name(long_b)
    assert len(a) <= MAX_RELEASE and len(b) <= MAX_RELEASE
    assert a != b  # same long prefix, different run ids: different releases
    assert a == release_name(long_a)  # stable
    assert DNS_1123_LABEL.match(a) and DNS_1123_LABEL.match(b)
    assert a.startswith("a-very-long-experiment-name")


@given(st.text(min_size=1, max_size=120))
def test_release_name_is_always_a_helm_release_name(run_id: str) -> None:
    name = release_name(run_id)
    assert 1 <= len(name) <= MAX_RELEASE
    assert DNS_1123_LABEL.match(name), name
    assert release_name(run_id) == name


# ---------------------------------------------------------------------------------------------
# build_values
# ---------------------------------------------------------------------------------------------


def experiment(**overrides: Any) -> Experiment:
    data: dict[str, Any] = {
        "name": "values-test",
        "ks": [2, 3],
        "combinations": 5,
        "generation_rounds": 2,
        "students": [
            {
                "name": "qwen",
                "backend": "vllm",
                "model": "qwen2.5-7b",
                "vllm": {
                    "model": "Qwen/Qwen2.5-7B-Instruct",
                    "tensor_parallel_size": 2,
                    "args": ["--max-model-len", "4096"],
                },
            },
            {"name": "mini", "backend": "openai", "model": "gpt-4o-mini"},
            {"name": "mocky", "backend": "mock", "model": "mock-1", "quality": 0.4, "replicas": 3},
        ],
        "grader": {"name": "judge", "backend": "openai", "model": "gpt-4o", "rounds": 3},
    }
    data.update(overrides)
    return Experiment.model_validate(data)


def cluster_profile(**overrides: Any) -> ClusterProfile:
    data: dict[str, Any] = {
        "namespace": "evals",
        "image": "registry:5000/skillmix/skillmix:1.2.3",
        "vllm_image": "vllm/vllm-openai:v0.11.0",
        "store": "s3://bucket/runs/",
        "s3": {"endpoint_url": "http://minio:9000", "credentials_secret": "s3-creds"},
        "secrets": {
            "OPENAI_API_KEY": {"name": "openai", "key": "api-key"},
            "HF_TOKEN": {"name": "hf"},
        },
        "deadlines": {"model_load_seconds": 905},
    }
    data.update(overrides)
    return ClusterProfile.model_validate(data)


@pytest.fixture(scope="module")
def ctx() -> RunContext:
    c = resolve_context(experiment())
    c.sharded = True
    return c


def values_for(
    c: RunContext, profile: ClusterProfile | None = None, *, attempt: int = 1
) -> dict[str, Any]:
    units = plan_tasks(c.experiment, sharded=True).units
    return build_values(
        c, profile or cluster_profile(), "prod", attempt=attempt, generation=units, grading=units
    )


def test_values_run_and_images(ctx: RunContext) -> None:
    v = values_for(ctx, attempt=3)
    assert v["run"] == {
        "id": ctx.run_id,
        "uri": f"s3://bucket/runs/{ctx.run_id}",
        "attempt": 3,
        "seed": ctx.experiment.seed,
    }
    assert v["image"] == {
        "repository": "registry:5000/skillmix/skillmix",
        "tag": "1.2.3",
        "pullPolicy": "IfNotPresent",
    }
    assert v["vllm"]["image"]["repository"] == "vllm/vllm-openai"
    assert v["vllm"]["image"]["tag"] == "v0.11.0"
    assert v["store"] == {
        "endpointUrl": "http://minio:9000",
        "region": "us-east-1",
        "credentialsSecret": "s3-creds",
    }


def test_values_students(ctx: RunContext) -> None:
    students = values_for(ctx)["students"]
    assert students["qwen"] == {
        "backend": "vllm",
        "servedModelName": "qwen2.5-7b",
        "replicas": 1,
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "tensorParallelSize": 2,
        "gpus": 2,  # GPUs = tensor parallel size by default
        "extraArgs": ["--max-model-len", "4096"],
        "serving": "per-unit",
        # sized for serving, scaled with the 2 GPUs; the weights' emptyDir counted in the
        # ephemeral storage (the kubelet evicts a pod whose emptyDirs outgrow its limits)
        "resources": {
            "requests": {"cpu": "8", "memory": "64Gi", "ephemeral-storage": "110Gi"},
            "limits": {"memory": "64Gi", "ephemeral-storage": "110Gi"},
        },
        "modelVolumeSize": "100Gi",
        "shmSize": "16Gi",  # the profile's (a MIG slice gets its share)
    }
    assert students["mini"] == {
        "backend": "openai",
        "servedModelName": "gpt-4o-mini",
        "replicas": 1,
        "serving": "per-unit",
    }
    assert students["mocky"] == {
        "backend": "mock",
        "servedModelName": "mock-1",
        "replicas": 3,
        "quality": 0.4,
        "serving": "per-unit",
    }


def test_values_vllm_gpus_model_and_base_url() -> None:
    e = experiment(
        students=[
            {
                "name": "big",
                "backend": "vllm",
                "model": "llama",
                "vllm": {"gpus": 8, "tensor_parallel_size": 4},
            },
            {
                "name": "api",
                "backend": "openai",
                "model": "gpt-4o-mini",
                "base_url": "https://llm.internal/v1",
            },
            {"name": "m", "backend": "mock", "model": "mock-1"},
        ]
    )
    c = resolve_context(e)
    students = values_for(c)["students"]
    assert students["big"]["gpus"] == 8 and students["big"]["tensorParallelSize"] == 4
    assert students["big"]["model"] == "llama"  # no vllm.model: the served name
    assert students["big"]["extraArgs"] == []
    # the endpoint override reaches the generation command (values carry no baseUrl of their own)
    assert "baseUrl" not in students["api"]
    (api_gen, *_) = [u for u in values_for(c)["generation"] if u["student"] == "api"]
    args = api_gen["args"]
    assert args[args.index("--base-url") + 1] == "https://llm.internal/v1"
    assert students["m"]["quality"] == 0.7  # the mock default


def test_values_api_keys_come_from_profile_secrets(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    v = values_for(ctx)
    # the openai student and the openai grader share one variable: one entry
    # ... given to the grading clients and to the openai student's generation clients only
    assert v["apiKeys"] == [
        {
            "env": "OPENAI_API_KEY",
            "secretName": "openai",
            "key": "api-key",
            "grader": True,
            "students": ["mini"],
        }
    ]
    assert CANARY not in json.dumps(v)


def test_values_api_key_default_key_and_custom_env() -> None:
    e = experiment(
        students=[
            {"name": "s", "backend": "openai", "model": "gpt-4o-mini", "api_key_env": "TEAM_KEY"}
        ],
        grader={"name": "g", "backend": "mock", "model": "mock-g"},
    )
    profile = cluster_profile(secrets={"TEAM_KEY": {"name": "team-secret"}})
    v = values_for(resolve_context(e), profile)
    assert v["apiKeys"] == [
        {
            "env": "TEAM_KEY",
            "secretName": "team-secret",
            "key": "TEAM_KEY",
            "grader": False,
            "students": ["s"],
        }
    ]
    assert v["grader"]["backend"] == "mock"


def test_values_missing_secret_names_the_key_and_the_fix(ctx: RunContext) -> None:
    with pytest.raises(SkillmixError) as info:
        values_for(ctx, cluster_profile(secrets={"HF_TOKEN": {"name": "hf"}}))
    message = info.value.one_line()
    assert "'prod'" in message and "OPENAI_API_KEY" in message
    assert "secrets: {OPENAI_API_KEY: {name: <secret-name>, key: OPENAI_API_KEY}}" in message
    assert info.value.exit_code == 2


def test_values_hf_token_only_with_a_vllm_student(ctx: RunContext) -> None:
    assert values_for(ctx)["hfToken"] == {"secretName": "hf", "key": "HF_TOKEN"}
    no_vllm = resolve_context(
        experiment(students=[{"name": "m", "backend": "mock", "model": "mock-1"}])
    )
    assert values_for(no_vllm)["hfToken"]["secretName"] == ""
    without_secret = cluster_profile(secrets={"OPENAI_API_KEY": {"name": "openai"}})
    assert values_for(ctx, without_secret)["hfToken"]["secretName"] == ""


def test_values_model_cache_only_with_vllm(ctx: RunContext) -> None:
    profile = cluster_profile(model_cache_pvc="hf-cache")
    assert values_for(ctx, profile)["modelCache"] == {
        "enabled": True,
        "claimName": "hf-cache",
        "mountPath": "/models/hf",
        "offline": False,
    }
    no_vllm = resolve_context(
        experiment(students=[{"name": "m", "backend": "mock", "model": "mock-1"}])
    )
    assert values_for(no_vllm, profile)["modelCache"]["enabled"] is False


def test_values_units_budget_share_and_load_budget(ctx: RunContext) -> None:
    units = plan_tasks(ctx.experiment, sharded=True).units
    v = build_values(
        ctx, cluster_profile(), "prod", attempt=1, generation=units[:2], grading=units[:5]
    )
    unit_keys = ("student", "k", "round")
    assert [tuple(e[key] for key in unit_keys) for e in v["generation"]] == units[:2]
    assert [tuple(e[key] for key in unit_keys) for e in v["grading"]] == units[:5]
    # 5 grading Jobs, at most 8 at once (the profile's cap) and 32 requests in flight: all 5
    # run at once, each with 1/5 of the RPM/TPM budget
    assert v["grader"]["parallelism"] == 5
    for entry in v["grading"]:
        assert entry["args"][entry["args"].index("--budget-share") + 1] == "5"
    capped = build_values(
        ctx,
        cluster_profile(parallel_jobs_per_budget=2),
        "prod",
        attempt=1,
        generation=[],
        grading=units[:5],
    )
    assert capped["grader"]["parallelism"] == 2  # the coordinator runs 2 at once, 1/2 each
    assert {e["args"][e["args"].index("--budget-share") + 1] for e in capped["grading"]} == {"2"}
    assert v["grader"]["backend"] == "openai" and v["grader"]["servedModelName"] == "gpt-4o"
    # the vLLM client waits for /health within the model-load budget (no startupProbe)
    assert "startupProbe" not in v["vllm"]
    (qwen, *_) = [e for e in v["generation"] if e["student"] == "qwen"]
    assert qwen["args"][qwen["args"].index("--model-load-timeout") + 1] == "905"
    # nothing left to grade: no grading Job, the aggregation still has its commands
    none = build_values(ctx, cluster_profile(), "prod", attempt=2, generation=[], grading=[])
    assert none["grading"] == [] and none["aggregation"]["args"]
    one = build_values(ctx, cluster_profile(), "prod", attempt=2, generation=[], grading=units[:1])
    assert one["grading"][0]["args"][-4:] == ["--budget-share", "1", "--attempt", "2"]
    assert one["coordinator"]["args"][:6] == [
        *("task", "coordinate", "--run", one["run"]["uri"], "--attempt", "2")
    ]


def test_values_commands_from_the_plan(ctx: RunContext) -> None:
    """Each container's `skillmix task ...` argv, built from the plan's tasks."""
    units = plan_tasks(ctx.experiment, sharded=True).units
    v = build_values(ctx, cluster_profile(), "prod", attempt=3, generation=units, grading=units[:4])
    uri = f"s3://bucket/runs/{ctx.run_id}"
    gen = {(e["student"], e["k"], e["round"]): e["args"] for e in v["generation"]}
    deadline = {(e["student"], e["k"], e["round"]): e["deadlineSeconds"] for e in v["generation"]}
    head = ["task", "generate", "--run", uri]
    # each Job's deadline: the load budget (a sidecar) + the unit's estimate with a margin,
    # at least 900 s; the client stops itself a minute before it
    assert deadline[("qwen", 2, 1)] == 905 + 900
    assert deadline[("mini", 3, 2)] == 900  # an API student: no load
    qwen = gen[("qwen", 2, 1)]
    assert qwen[: qwen.index("--model-load-timeout")] == [
        *head,
        *("--student", "qwen", "--k", "2", "--round", "1", "--attempt", "3"),
        *("--base-url", "http://localhost:8000/v1"),  # the vLLM sidecar
    ]
    assert qwen[qwen.index("--model-load-timeout") + 1] == "905"  # its /health (exit 3)
    assert qwen[-2:] == ["--time-limit", str(905 + 900 - 60)]
    assert gen[("mini", 3, 2)] == [
        *head,
        *("--student", "mini", "--k", "3", "--round", "2", "--attempt", "3"),
        # an API student: its 4 Jobs (cap 8, 16 in flight) run at once, 1/4 each
        *("--budget-share", "4", "--time-limit", "840"),
    ]
    assert gen[("mocky", 2, 2)] == [
        *head,
        *("--student", "mocky", "--k", "2", "--round", "2", "--attempt", "3"),
        *("--base-url", "http://localhost:8000/v1", "--shards", "3"),  # no --shard: the index
        # each shard pod has its own mock sidecar: its budget is not shared with the others
        *("--budget-share", "1"),
        *("--model-load-timeout", "905", "--time-limit", str(905 + 900 - 60)),
    ]
    (grade, *_) = v["grading"]
    assert grade["args"] == [
        *("task", "grade", "--run", uri, "--student", "qwen", "--k", "2", "--round", "1"),
        *("--budget-share", "4", "--attempt", "3"),  # the openai grader: its own endpoint
    ]
    assert grade["waitArgs"] == [
        *("task", "wait", "--run", uri, "--phase", "generate"),
        *("--student", "qwen", "--k", "2", "--round", "1"),
        *("--timeout", str(43200 - 600), "--interval", "10", "--attempt", "3"),
    ]
    assert v["aggregation"] == {
        "enabled": True,
        "args": ["task", "aggregate", "--run", uri],
        "waitArgs": [
            *("task", "wait", "--run", uri, "--phase", "grade"),
            *("--timeout", str(86400 - 600), "--interval", "15", "--attempt", "3"),
        ],
    }
    assert "quality" not in v["grader"]  # not a mock grader: the chart's default stays


@pytest.mark.parametrize(
    ("grader", "url"),
    [
        ({"backend": "mock", "model": "mock-g"}, "http://localhost:9000/v1"),  # the sidecar
        ({"backend": "mock", "model": "mock-g", "base_url": "http://m/v1"}, "http://m/v1"),
        ({"backend": "vllm", "model": "judge", "base_url": "http://judge/v1"}, "http://judge/v1"),
        ({"backend": "openai", "model": "gpt-4o", "base_url": "https://gw/v1"}, "https://gw/v1"),
    ],
)
def test_values_grader_endpoint_in_the_grading_command(grader: dict[str, Any], url: str) -> None:
    c = resolve_context(experiment(grader={"name": "g", **grader}))
    units = plan_tasks(c.experiment, sharded=True).units
    v = build_values(
        c, cluster_profile(), "prod", attempt=1, generation=[], grading=units, sidecar_port=9000
    )
    for entry in v["grading"]:
        args = entry["args"]
        assert args[args.index("--base-url") + 1] == url
        # a grader sidecar in the pod: the client waits for its /health first
        assert ("--model-load-timeout" in args) is (url == "http://localhost:9000/v1")
    assert v["grader"]["baseUrl"] == grader.get("base_url", "")


def test_values_jobs_and_scheduling() -> None:
    profile = cluster_profile(
        gpu={
            "resource_name": "amd.com/gpu",
            "node_selector": {"pool": "a100"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "runtime_class": "nvidia",
        },
        kueue_queue="team-a",
        backoff_limit=4,
        deadlines={"generation_seconds": 3600, "grading_seconds": 7200, "ttl_seconds": 60},
        client_resources={"requests": {"cpu": "1"}},
        image_pull_secrets=["regcred"],
    )
    c = resolve_context(experiment())
    v = values_for(c, profile)
    assert v["gpu"]["resourceName"] == "amd.com/gpu"
    assert v["gpu"]["nodeSelector"] == {"pool": "a100"}
    assert v["gpu"]["runtimeClassName"] == "nvidia"
    assert v["kueue"] == {"queueName": "team-a", "priorityClass": ""}
    assert v["coordinator"]["hold"] == "defer"  # Kueue without its admission gate
    assert v["imagePullSecrets"] == ["regcred"]
    assert v["client"] == {"resources": {"requests": {"cpu": "1"}}}
    jobs = v["jobs"]
    assert jobs["backoffLimit"] == 4 and jobs["ttlSecondsAfterFinished"] == 60
    assert jobs["activeDeadlineSeconds"]["generation"] == 3600
    # the waits give up 10 minutes before their Job's deadline
    for entry in v["grading"]:
        wait = entry["waitArgs"]
        assert wait[wait.index("--timeout") + 1] == str(7200 - 600)
        assert int(wait[wait.index("--timeout") + 1]) < jobs["activeDeadlineSeconds"]["grading"]
    wait = v["aggregation"]["waitArgs"]
    assert wait[wait.index("--timeout") + 1] == str(86400 - 600)  # the default deadline
    assert "client" not in values_for(c)  # the chart's defaults apply


def test_values_vllm_grader_needs_a_base_url() -> None:
    e = experiment(grader={"name": "g", "backend": "vllm", "model": "judge-70b"})
    with pytest.raises(SkillmixError, match="needs base_url"):
        values_for(resolve_context(e))


# ---------------------------------------------------------------------------------------------
# estimate
# ---------------------------------------------------------------------------------------------


def _estimate(e: Experiment) -> tuple[float, float | None]:
    c = resolve_context(e)
    units = plan_tasks(e, sharded=True).units
    return estimate(c, units, units)


MOCK_GRADER = {"name": "g", "backend": "mock", "model": "mock-g"}


def test_estimate_gpu_hours_only_with_vllm() -> None:
    vllm = experiment(
        students=[
            {"name": "q", "backend": "vllm", "model": "q", "vllm": {"tensor_parallel_size": 2}}
        ],
        grader=MOCK_GRADER,
    )
    hours, cost = _estimate(vllm)
    assert hours > 0 and cost == 0
    mock = experiment(students=[{"name": "m", "backend": "mock", "model": "m"}], grader=MOCK_GRADER)
    assert _estimate(mock) == (0, 0)
    # more GPUs per pod, more GPU-hours
    wide = experiment(
        students=[
            {"name": "q", "backend": "vllm", "model": "q", "vllm": {"tensor_parallel_size": 4}}
        ],
        grader=MOCK_GRADER,
    )
    assert _estimate(wide)[0] == pytest.approx(2 * hours)


def test_estimate_api_cost() -> None:
    known = experiment(
        students=[{"name": "s", "backend": "openai", "model": "gpt-4o-mini"}], grader=MOCK_GRADER
    )
    hours, cost = _estimate(known)
    assert hours == 0 and cost is not None and cost > 0
    unknown = experiment(
        students=[{"name": "s", "backend": "openai", "model": "house-model-x"}], grader=MOCK_GRADER
    )
    assert _estimate(unknown)[1] is None  # unknown price: no made-up number
    priced = experiment(
        students=[{"name": "s", "backend": "openai", "model": "house-model-x"}],
        grader=MOCK_GRADER,
        prices={"house-model-x": {"prompt": 1.0, "completion": 2.0}},
    )
    priced_cost = _estimate(priced)[1]
    assert priced_cost is not None and priced_cost > 0
    unknown_grader = experiment(
        students=[{"name": "m", "backend": "mock", "model": "m"}],
        grader={"name": "g", "backend": "openai", "model": "judge-unknown"},
    )
    assert _estimate(unknown_grader)[1] is None
    graded = experiment(
        students=[{"name": "m", "backend": "mock", "model": "m"}],
        grader={"name": "g", "backend": "openai", "model": "gpt-4o"},
    )
    graded_cost = _estimate(graded)[1]
    assert graded_cost is not None and graded_cost > 0


def test_estimate_counts_only_the_units_left() -> None:
    e = experiment(
        students=[{"name": "s", "backend": "openai", "model": "gpt-4o-mini"}], grader=MOCK_GRADER
    )
    c = resolve_context(e)
    units = plan_tasks(e, sharded=True).units
    full = estimate(c, units, units)[1]
    generation = estimate(c, units, [])[1]
    grading = estimate(c, [], units)[1]
    fewer = estimate(c, units[1:], units[1:])[1]
    assert full is not None and generation is not None and grading is not None
    assert fewer is not None
    assert generation + grading == pytest.approx(full)
    assert 0 < fewer < full
    assert estimate(c, [], []) == (0, 0)


# ---------------------------------------------------------------------------------------------
# JobState
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "active", "state"),
    [
        ([], 0, "Pending"),
        ([], 2, "Running"),
        ([("Complete", "CompletionsReached", "")], 0, "Complete"),
        ([("SuccessCriteriaMet", "CompletionsReached", "")], 1, "Complete"),
        (
            [("SuccessCriteriaMet", "", ""), ("Complete", "CompletionsReached", "")],
            0,
            "Complete",
        ),
        ([("FailureTarget", "BackoffLimitExceeded", "x")], 1, "Failed"),
        ([("Failed", "DeadlineExceeded", "x")], 0, "Failed"),
        (
            [("FailureTarget", "PodFailurePolicy", ""), ("Failed", "PodFailurePolicy", "")],
            0,
            "Failed",
        ),
        ([("Suspended", "JobSuspended", "Job suspended")], 0, "Suspended"),
    ],
)
def test_job_state(conditions: list[tuple[str, str, str]], active: int, state: str) -> None:
    true = [JobCondition(*c) for c in conditions]
    assert JobState("j", {}, active=active, conditions=true).state == state


def test_job_state_reason() -> None:
    failed = JobState(
        "j", {}, conditions=[JobCondition("Failed", "BackoffLimitExceeded", "limit reached")]
    )
    assert failed.reason == "BackoffLimitExceeded: limit reached"
    assert (
        JobState("j", {}, conditions=[JobCondition("Failed", "DeadlineExceeded", "")]).reason
        == "DeadlineExceeded"
    )
    assert (
        JobState("j", {}, conditions=[JobCondition("Complete", "CompletionsReached", "")]).reason
        == ""
    )
    assert JobState("j", {PHASE_LABEL: "grade"}).phase == "grade"
    assert JobState("j", {}).phase == "?"


def test_job_state_from_an_api_object() -> None:
    from kubernetes.client import (
        V1Job,
        V1JobCondition,
        V1JobSpec,
        V1JobStatus,
        V1ObjectMeta,
        V1PodSpec,
        V1PodTemplateSpec,
    )

    template = V1PodTemplateSpec(spec=V1PodSpec(containers=[]))
    job = V1Job(
        metadata=V1ObjectMeta(name="r-gen-a-k2-r1-a1", labels={PHASE_LABEL: "generate"}),
        spec=V1JobSpec(template=template, completions=3),
        status=V1JobStatus(
            active=1,
            succeeded=2,
            conditions=[
                # resumed by Kueue: the Suspended condition stays, with status False
                V1JobCondition(type="Suspended", status="False", reason="JobResumed"),
                V1JobCondition(type="FailureTarget", status="False"),
            ],
        ),
    )
    state = JobState.from_job(job)
    assert (state.name, state.phase, state.completions) == ("r-gen-a-k2-r1-a1", "generate", 3)
    assert (state.active, state.succeeded, state.failed) == (1, 2, 0)
    assert state.conditions == []
    assert state.state == "Running"
    bare = V1Job(
        metadata=V1ObjectMeta(name="x"), spec=V1JobSpec(template=template), status=V1JobStatus()
    )
    assert JobState.from_job(bare).state == "Pending" and JobState.from_job(bare).completions == 1


def test_run_selector() -> None:
    assert run_selector("r1") == "skillmix.io/run=r1"
    assert (
        run_selector("r1", phase="grade", student=None)
        == "skillmix.io/run=r1,skillmix.io/phase=grade"
    )
    assert (
        run_selector("r1", phase=None, student="weak")
        == "skillmix.io/run=r1,skillmix.io/student=weak"
    )


# ---------------------------------------------------------------------------------------------
# wait_for_run: the loop logic, against an in-memory KubeClient stand-in and a fake clock
# ---------------------------------------------------------------------------------------------


def job(name: str, phase: str, state: str = "Pending", reason: str = "") -> JobState:
    conditions: list[JobCondition] = {
        "Pending": [],
        "Running": [],
        "Complete": [JobCondition("Complete", "CompletionsReached", "")],
        "Failed": [JobCondition("Failed", reason or "BackoffLimitExceeded", "the limit")],
        "Suspended": [JobCondition("Suspended", "JobSuspended", "")],
    }[state]
    return JobState(
        name, {PHASE_LABEL: phase}, active=int(state == "Running"), conditions=conditions
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Event = tuple[str, JobState]


@dataclass
class FakeKube:
    """Lists return ``lists`` in turn (the last one repeats); each watch replays the next script:
    a list of events, then ``"410"`` to raise WatchExpired, or ``"hold"`` to block until its
    timeout (the clock advances by it), else it ends (the server closed it)."""

    clock: Clock
    lists: list[list[JobState]]
    watches: list[list[Event | str]]
    list_calls: int = 0
    events: int = 0
    watch_calls: list[tuple[str, str, int]] = field(default_factory=list)

    def jobs(self, run_id: str, **labels: str | None) -> tuple[list[JobState], str]:
        index = min(self.list_calls, len(self.lists) - 1)
        self.list_calls += 1
        return list(self.lists[index]), f"rv-{self.list_calls}"

    def watch_jobs(
        self, run_id: str, resource_version: str, timeout_seconds: int, **labels: object
    ) -> Iterator[WatchEvent]:
        self.watch_calls.append((run_id, resource_version, timeout_seconds))
        script = self.watches.pop(0) if self.watches else ["hold"]
        for step in script:
            if step == "410":
                raise WatchExpired()
            if step == "hold":
                self.clock.now += timeout_seconds
                return
            assert not isinstance(step, str)
            self.clock.now += 1
            self.events += 1
            yield WatchEvent(step[0], step[1], f"ev-{self.events}")


PENDING = [job("gen", "generate"), job("grd", "grade"), job("agg", "aggregate")]


def test_wait_returns_when_the_aggregation_completes() -> None:
    clock = Clock()
    kube = FakeKube(
        clock,
        lists=[PENDING],
        watches=[
            [
                ("MODIFIED", job("gen", "generate", "Complete")),
                ("MODIFIED", job("grd", "grade", "Running")),
                ("MODIFIED", job("grd", "grade", "Complete")),
                ("MODIFIED", job("agg", "aggregate", "Complete")),
                ("MODIFIED", job("never", "generate", "Failed")),  # not reached
            ]
        ],
    )
    seen: list[dict[str, str]] = []
    final = wait_for_run(
        kube,  # type: ignore[arg-type]
        "r1",
        timeout=600,
        clock=clock,
        on_change=lambda states: seen.append({s.name: s.state for s in states}),
    )
    assert {s.name: s.state for s in final} == {
        "gen": "Complete",
        "grd": "Complete",
        "agg": "Complete",
    }
    assert kube.list_calls == 1
    assert kube.watch_calls == [("r1", "rv-1", 300)]  # from the list's resourceVersion
    assert seen[0] == {"gen": "Pending", "grd": "Pending", "agg": "Pending"}
    assert seen[-1]["agg"] == "Complete"


def test_wait_relists_only_after_410_and_resumes_a_watch_that_ends() -> None:
    """A watch that simply ends (its timeout, a closed connection) is resumed from the last
    resourceVersion seen, with no list of every Job; only 410 Gone lists again. ``on_idle``
    runs after each watch that ended without a verdict (the CLI looks at pods then)."""
    clock = Clock()
    kube = FakeKube(
        clock,
        lists=[
            PENDING,
            [job("gen", "generate", "Complete"), job("grd", "grade"), job("agg", "aggregate")],
        ],
        watches=[
            [("MODIFIED", job("gen", "generate", "Complete")), "410"],
            [("MODIFIED", job("grd", "grade", "Running"))],  # then the server closes it
            [],  # ends with nothing: resumed from the same resourceVersion
            [("MODIFIED", job("agg", "aggregate", "Complete"))],
        ],
    )
    idle: list[int] = []
    final = wait_for_run(
        kube,  # type: ignore[arg-type]
        "r1",
        timeout=600,
        clock=clock,
        watch_seconds=60,
        on_idle=lambda states: idle.append(len(states)),
    )
    assert {s.name: s.state for s in final}["agg"] == "Complete"
    assert kube.list_calls == 2
    # after the 410: the new list's version; after that, the last event's version
    assert [c[1] for c in kube.watch_calls] == ["rv-1", "rv-2", "ev-2", "ev-2"]
    assert all(c[2] == 60 for c in kube.watch_calls)
    assert idle == [3, 3]


def test_wait_ends_on_the_first_failed_job() -> None:
    clock = Clock()
    kube = FakeKube(
        clock,
        lists=[PENDING],
        watches=[[("MODIFIED", job("gen", "generate", "Failed", "DeadlineExceeded"))]],
    )
    with pytest.raises(RunFailedError) as info:
        wait_for_run(kube, "r1", timeout=600, clock=clock)  # type: ignore[arg-type]
    message = info.value.one_line()
    assert "1 Job(s) failed: gen (DeadlineExceeded: the limit)" in message
    assert "launch again to resume" in message and info.value.exit_code == 1


def test_wait_sees_failures_already_listed() -> None:
    clock = Clock()
    failed = [job(f"g{i}", "generate", "Failed") for i in range(5)] + [job("agg", "aggregate")]
    kube = FakeKube(clock, lists=[failed], watches=[])
    with pytest.raises(RunFailedError, match=r"5 Job\(s\) failed: g0 .*g2 \(") as info:
        wait_for_run(kube, "r1", timeout=600, clock=clock)  # type: ignore[arg-type]
    assert "g3" not in str(info.value)  # at most three named
    assert kube.watch_calls == []


def test_wait_with_no_jobs() -> None:
    clock = Clock()
    kube = FakeKube(clock, lists=[[]], watches=[])
    with pytest.raises(RunFailedError, match="no Jobs of this run exist"):
        wait_for_run(kube, "r1", timeout=600, clock=clock)  # type: ignore[arg-type]


def test_wait_ends_when_the_run_is_cancelled_meanwhile() -> None:
    """`skillmix cancel` in another terminal: DELETED events for every Job end the wait at once
    (not after the watch's timeout and a re-list)."""
    clock = Clock()
    kube = FakeKube(
        clock,
        lists=[PENDING, []],
        watches=[[("DELETED", s) for s in PENDING] + ["hold"]],
    )
    with pytest.raises(RunFailedError, match="no Jobs of this run exist"):
        wait_for_run(kube, "r1", timeout=600, clock=clock)  # type: ignore[arg-type]
    assert kube.list_calls == 1
    assert clock.now == 1000 + len(PENDING)  # no watch timeout sat out


def test_wait_times_out_with_bounded_watches() -> None:
    clock = Clock()
    kube = FakeKube(clock, lists=[PENDING], watches=[["hold"]] * 10)
    with pytest.raises(RunFailedError) as info:
        wait_for_run(kube, "r1", timeout=100, clock=clock, watch_seconds=30)  # type: ignore[arg-type]
    assert "timed out after 100s waiting for run r1" in info.value.one_line()
    assert "skillmix status" in info.value.one_line()
    assert [c[2] for c in kube.watch_calls] == [30, 30, 30, 10]  # never past the deadline
    assert clock.now == 1100


def test_wait_times_out_while_events_keep_coming() -> None:
    clock = Clock()
    busy: list[Event | str] = [("MODIFIED", job("gen", "generate", "Running"))] * 50
    kube = FakeKube(clock, lists=[PENDING], watches=[busy])
    with pytest.raises(RunFailedError, match="timed out after 10s"):
        wait_for_run(kube, "r1", timeout=10, clock=clock)  # type: ignore[arg-type]
    assert clock.now <= 1000 + 11  # stopped reading at the deadline
    assert kube.list_calls == 1


def test_wait_needs_the_aggregation_job() -> None:
    """Generation and grading done is not the end: only the aggregation Job's completion is."""
    clock = Clock()
    done = [job("gen", "generate", "Complete"), job("grd", "grade", "Complete")]
    kube = FakeKube(
        clock,
        lists=[done],
        watches=[[("ADDED", job("agg", "aggregate", "Running"))], ["hold"]],
    )
    with pytest.raises(RunFailedError, match="timed out"):
        wait_for_run(kube, "r1", timeout=50, clock=clock, watch_seconds=30)  # type: ignore[arg-type]


def test_an_unset_mock_quality_means_the_same_on_both_executors() -> None:
    """Defect: an unset grader quality was 0.9 on Kubernetes and 0.7 locally while the run id
    hashed None. It is resolved once, on the spec, and the run id hashes the resolved value."""
    from skillmix.config import MOCK_DEFAULT_QUALITY

    unset = experiment(
        students=[{"name": "m", "backend": "mock", "model": "mock-m"}],
        grader={"name": "g", "backend": "mock", "model": "mock-g"},
    )
    explicit = experiment(
        students=[{"name": "m", "backend": "mock", "model": "mock-m", "quality": 0.7}],
        grader={"name": "g", "backend": "mock", "model": "mock-g", "quality": 0.7},
    )
    assert unset.grader.quality == unset.students[0].quality == MOCK_DEFAULT_QUALITY == 0.7
    c = resolve_context(unset)
    assert c.run_id == resolve_context(explicit).run_id
    v = values_for(c)
    assert v["grader"]["quality"] == v["students"]["m"]["quality"] == MOCK_DEFAULT_QUALITY


def test_budgets_are_divided_only_among_pods_that_share_an_endpoint() -> None:
    """An openai student's shards share its endpoint (the task divides by --shards); a
    mock/vLLM student's shards each have a model sidecar (--budget-share 1). The grader's
    budget is split among the grading Jobs only when they share an endpoint."""
    shared = experiment(
        students=[{"name": "api", "backend": "openai", "model": "gpt-4o-mini", "replicas": 2}],
        grader={"name": "g", "backend": "mock", "model": "mock-g"},
    )
    v = values_for(resolve_context(shared))
    (gen, *_) = v["generation"]
    # its Jobs run at once (fewer than the cap), each pod 1/(Jobs x shards) of the budget
    jobs = len(v["generation"])
    assert gen["args"][gen["args"].index("--budget-share") + 1] == str(jobs * 2)
    assert "--shards" in gen["args"] and "parallelism" not in v["students"]["api"]
    tight = values_for(resolve_context(shared), cluster_profile(parallel_jobs_per_budget=1))
    # at most 1 Job at once: gated in its pool, each pod half the budget (2 shards)
    assert tight["students"]["api"]["parallelism"] == 1
    (gen, *_) = tight["generation"]
    assert gen["args"][gen["args"].index("--budget-share") + 1] == "2"
    (grade, *_) = v["grading"]
    share = grade["args"][grade["args"].index("--budget-share") + 1]
    assert share == "1"  # a mock grader sidecar in every grading pod


def test_profile_file_with_a_repeated_key_is_an_error(tmp_path: Any) -> None:
    from skillmix.k8s.profiles import load_profiles

    path = tmp_path / "skillmix.yaml"
    path.write_text("clusters:\n  a:\n    namespace: one\n    namespace: two\n", encoding="utf-8")
    with pytest.raises(SkillmixError) as info:
        load_profiles(path)
    assert info.value.message == f"{path}:4: duplicate key 'namespace' (first on line 3)"


# ---------------------------------------------------------------------------------------------
# a shared GPU cluster: MIG slices, the GPU cap, Kueue's ways to hold a Job, labels
# ---------------------------------------------------------------------------------------------


def test_a_mig_slice_is_sized_as_its_share_of_a_gpu() -> None:
    """nvidia.com/mig-1g.10gb is 1/7 of a GPU: 1 CPU (not 4), 5Gi memory (not 32), an 8Gi model
    volume (not 50) and 3Gi of /dev/shm (not 16); a whole GPU keeps the full sizing."""
    qwen = {
        "name": "qwen",
        "backend": "vllm",
        "model": "q",
        "kubernetes": {"gpu_resource": "nvidia.com/mig-1g.10gb"},
    }
    c = resolve_context(experiment(students=[qwen]))
    entry = values_for(c)["students"]["qwen"]
    assert entry["resources"]["requests"] == {
        "cpu": "1",
        "memory": "5Gi",
        "ephemeral-storage": "18Gi",  # 10Gi scratch + the 8Gi model volume
    }
    assert entry["modelVolumeSize"] == "8Gi" and entry["shmSize"] == "3Gi"
    three = {**qwen, "kubernetes": {"gpu_resource": "nvidia.com/mig-3g.40gb"}}
    entry = values_for(resolve_context(experiment(students=[three])))["students"]["qwen"]
    assert entry["resources"]["requests"]["cpu"] == "2"
    assert entry["resources"]["requests"]["memory"] == "14Gi"
    whole = values_for(resolve_context(experiment(students=[{**qwen, "kubernetes": {}}])))
    assert whole["students"]["qwen"]["resources"]["requests"]["memory"] == "32Gi"


def test_hold_mode_follows_the_clusters_kueue() -> None:
    from skillmix.k8s.values import hold_mode

    assert hold_mode(cluster_profile()) == "suspend"
    assert hold_mode(cluster_profile(kueue_queue="q")) == "defer"
    assert hold_mode(cluster_profile(kueue_queue="q", kueue_admission_gate=True)) == "gate"
    with pytest.raises(ValidationError, match="kueue_admission_gate needs kueue_queue"):
        cluster_profile(kueue_admission_gate=True)


def test_the_gpu_cap_gates_vllm_jobs_and_refuses_a_job_bigger_than_the_cap(
    ctx: RunContext,
) -> None:
    v = values_for(ctx, cluster_profile(max_gpus=4))
    assert v["gpuCap"] == 4 and v["coordinator"]["enabled"]
    qwen = [e for e in v["generation"] if e["student"] == "qwen"]
    assert qwen and all(e["gpuWeight"] == 2 for e in qwen)  # tensor parallel 2
    assert all("gpuWeight" not in e for e in v["generation"] if e["student"] != "qwen")
    with pytest.raises(
        SkillmixError, match="needs 2 GPUs .* more than the cluster profile's max_gpus 1"
    ):
        values_for(ctx, cluster_profile(max_gpus=1))


def test_profile_labels_and_priority_reach_the_values() -> None:
    v = values_for(
        resolve_context(experiment()),
        cluster_profile(
            labels={"team": "nlp", "example.com/cost-centre": "42"},
            priority_class_name="batch-low",
            kueue_queue="q",
            kueue_priority_class="eval-low",
        ),
    )
    assert v["pods"] == {
        "labels": {"team": "nlp", "example.com/cost-centre": "42"},
        "priorityClassName": "batch-low",
    }
    assert v["kueue"] == {"queueName": "q", "priorityClass": "eval-low"}
    assert v["students"]["qwen"]["kueuePriorityClass"] == "eval-low"


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"skillmix.io/team": "x"}, "labels: skillmix.io/team is set by skillmix"),
        ({"team": "not ok"}, "labels.team: 'not ok' is not a Kubernetes label value"),
        ({"bad key!": "x"}, "'bad key!' is not a Kubernetes label key"),
    ],
)
def test_profile_labels_are_checked(labels: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        cluster_profile(labels=labels)


def test_the_coordinator_outlives_the_longest_chain_of_deadlines(ctx: RunContext) -> None:
    """Its deadline is a backstop at least as long as the longest generation Job's deadline
    plus grading and aggregation (not the sum of every phase's from creation)."""
    profile = cluster_profile(deadlines={"coordinator_seconds": 600, "model_load_seconds": 905})
    v = values_for(ctx, profile)
    longest = max(e["deadlineSeconds"] for e in v["generation"])
    d = profile.deadlines
    chain = longest + d.grading_seconds + d.aggregation_seconds
    assert v["jobs"]["activeDeadlineSeconds"]["coordinator"] == chain
    args = v["coordinator"]["args"]
    assert args[args.index("--timeout") + 1] == str(chain)
    assert args[args.index("--stuck-seconds") + 1] == "600"
    assert args[args.index("--unschedulable-seconds") + 1] == "1800"


def test_the_plan_warns_when_model_loads_outlast_kueues_wait_for_pods_ready(
    ctx: RunContext,
) -> None:
    from skillmix.k8s.launch import plan_warnings

    profile = cluster_profile(kueue_queue="q", kueue_wait_for_pods_ready_seconds=300)
    [warning] = plan_warnings(ctx, profile)
    assert "(deadlines.model_load_seconds 905s) exceeds Kueue's waitForPodsReady timeout" in warning
    fine = cluster_profile(kueue_queue="q", kueue_wait_for_pods_ready_seconds=1200)
    assert plan_warnings(ctx, fine) == []
    assert plan_warnings(ctx, cluster_profile(kueue_wait_for_pods_ready_seconds=300)) == []


def test_admission_problems_read_what_kueues_webhook_did() -> None:
    """The pre-flight's dry-run answers: a queue label the profile does not know (Kueue's
    LocalQueueDefaulting), a Job suspended by a webhook (manageJobsWithoutQueueName), another
    queue than the profile's."""
    from skillmix.k8s.create import admission_problems

    sent = {"j": {"metadata": {"name": "j"}, "spec": {}}}

    def answer(labels: dict[str, str], suspend: bool = False) -> list[dict[str, Any]]:
        return [{"metadata": {"name": "j", "labels": labels}, "spec": {"suspend": suspend}}]

    queued = answer({"kueue.x-k8s.io/queue-name": "default"}, True)
    [problem] = admission_problems(sent, queued, None)
    assert "LocalQueueDefaulting" in problem and "kueue_queue" in problem
    [problem] = admission_problems(sent, answer({}, suspend=True), None)
    assert "manageJobsWithoutQueueName" in problem
    [problem] = admission_problems(sent, queued, "mine")
    assert "changed its Kueue queue to 'default'" in problem
    assert (
        admission_problems(sent, answer({"kueue.x-k8s.io/queue-name": "mine"}, True), "mine") == []
    )
    assert admission_problems(sent, answer({}), None) == []
