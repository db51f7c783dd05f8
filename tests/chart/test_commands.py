"""Every command the chart renders for the skillmix image (client, wait, mock sidecar) parses
with the real click commands, and means the Job it runs in (unit, attempt, shards, run).

The argument lists come from the plan (``skillmix.pipeline.plan``) through ``build_values``; the
chart only places them. Renders: each values file of tests/chart/values and the values
``build_values`` writes for a few experiments.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, cast
from unittest import mock

import click
import pytest

from skillmix.cli import cli
from skillmix.cli.mock import mock_server
from skillmix.cli.task import task
from skillmix.config import Experiment
from skillmix.k8s.profiles import ClusterProfile
from skillmix.k8s.values import build_values
from skillmix.pipeline.context import resolve_context
from skillmix.pipeline.model_server import MODEL_LOG_START
from skillmix.pipeline.plan import plan_tasks, reasoning_jobs
from tests.chart.helpers import VALUES_FILES, Helm, Render

pytestmark = pytest.mark.tools

# the vLLM sidecar: bash runs vLLM (exec) with its output also in the model log
VLLM_EXEC = 'exec python3 -m vllm.entrypoints.openai.api_server "$@" '


def is_vllm(c: dict[str, Any]) -> bool:
    command = c["command"]
    return (
        command[:2] == ["/bin/bash", "-c"] and VLLM_EXEC in command[2] and command[3:] == ["vllm"]
    )


def mount_dir(c: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((m for m in c.get("volumeMounts", []) if m["name"] == name), None)


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Runs ``skillmix <argv>`` through the real CLI (``main`` path, standalone_mode=False) with
    the leaf commands' bodies replaced: returns the command path and the parsed parameters. A
    wrong flag, a missing required option or a bad value raises click's UsageError."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def capture(**params: Any) -> None:
        seen.append((click.get_current_context().command_path, params))

    leaves = [*task.commands.values(), mock_server]
    with ExitStack() as stack:
        for command in leaves:
            stack.enter_context(mock.patch.object(command, "callback", capture))
        cli.main(args=list(argv), prog_name="skillmix", standalone_mode=False)
    assert len(seen) == 1, argv
    return seen[0]


def containers(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = job["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_value(container: dict[str, Any], name: str) -> str | None:
    for e in container.get("env", []):
        if e["name"] == name:
            return cast(str | None, e.get("value"))
    return None


def check_job(job: dict[str, Any]) -> list[str]:
    """Parses every skillmix command of one Job; returns the container names it checked."""
    labels = job["metadata"]["labels"]
    component = labels["app.kubernetes.io/component"]
    attempt = int(labels["skillmix.io/attempt"])
    unit: tuple[str, int, int] | None = None
    per_model = labels.get("skillmix.io/serving") == "per-model"
    reasoning = labels.get("skillmix.io/task")  # a reasoning task's Job: no k, no round
    if component not in ("aggregation", "coordinator") and not per_model and not reasoning:
        unit = (
            labels["skillmix.io/student"],
            int(labels["skillmix.io/k"]),
            int(labels["skillmix.io/round"]),
        )
    checked = []
    model_log = None  # the vLLM sidecar's log: the file its wrapper writes, the client reads
    for c in containers(job):
        if is_vllm(c):
            assert c["name"] == "model"
            model_log = env_value(c, "SKILLMIX_MODEL_LOG")
            assert model_log and f'echo "{MODEL_LOG_START}' in c["command"][2]
            assert '> "$SKILLMIX_MODEL_LOG"' in c["command"][2]  # each start empties it
            mount = mount_dir(c, "model-log")
            assert mount is not None and model_log.startswith(mount["mountPath"] + "/")
            assert not mount.get("readOnly")
            continue
        assert c["command"] == ["skillmix"], c["command"]
        assert all(isinstance(a, str) for a in c["args"])
        path, params = parse(c["args"])
        checked.append(c["name"])
        if c["name"] == "model":
            assert path == "skillmix mock-server"
            assert params["port"] == c["ports"][0]["containerPort"]
            continue
        # the run the command names is the run the pod's environment names
        assert params["run_uri"] == env_value(c, "SKILLMIX_RUN")
        # the aggregation client writes no manifest: it is given no --attempt (as before)
        aggregating = component == "aggregation" and c["name"] == "client"
        assert params["attempt"] == (0 if aggregating else attempt)
        if c["name"] == "wait":
            assert path == "skillmix task wait"
            if component == "grading":
                assert params["phase"] == "generate"
                assert (params["student"], params["k"], params["g"]) == unit
            else:
                assert component == "aggregation" and params["phase"] == "grade"
                assert (params["student"], params["k"], params["g"]) == (None, None, None)
            assert params["timeout"] > 0 and params["interval"] > 0
            continue
        assert c["name"] == "client"
        phase = {
            "generation": "generate",
            "grading": "grade",
            "aggregation": "aggregate",
            "coordinator": "coordinate",
        }
        if reasoning:  # one Job per (task, student): each pod asks its shard of the problems
            assert path == "skillmix task reason"
            assert params["task_name"] == reasoning
            assert params["student"] == labels["skillmix.io/student"]
        else:
            assert path == f"skillmix task {phase[component]}"
        if unit is not None:
            assert (params["student"], params["k"], params["g"]) == unit
        if per_model:  # one Job per student: its units in --units, no --k/--round
            assert params["student"] == labels["skillmix.io/student"]
            assert (params["k"], params["g"]) == (None, None) and params["units"]
        if component == "generation":
            assert params["shards"] == job["spec"].get("completions", 1)
            assert params["shard"] is None  # Indexed Jobs: $JOB_COMPLETION_INDEX
            # a vLLM sidecar's model log reaches the client, read-only, under its path; a
            # client that waits for its sidecar (as build_values writes it) reads that log
            if params["model_log"] is not None or params["model_load_timeout"]:
                assert params["model_log"] == model_log
            mount = mount_dir(c, "model-log")
            if model_log is None:
                assert mount is None
            else:
                assert mount is not None and mount["readOnly"] is True
                assert model_log.startswith(mount["mountPath"] + "/")
        if component == "coordinator":
            assert params["interval"] > 0 and params["timeout"] > 0
    assert "client" in checked
    return checked


def check_render(render: Render) -> None:
    jobs = render.jobs()
    assert jobs
    for job in jobs:
        check_job(job)


@pytest.fixture(autouse=True)
def _no_run_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """--run must be on the command line, not filled in from this shell's SKILLMIX_RUN."""
    monkeypatch.delenv("SKILLMIX_RUN", raising=False)


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_values_files_commands_parse(helm: Helm, values_file: str) -> None:
    check_render(helm.template(values_file))


MOCK = {"backend": "mock"}
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "mixed": {
        "students": [
            {"name": "qwen", "backend": "vllm", "model": "q", "vllm": {"tensor_parallel_size": 2}},
            {"name": "mini", "backend": "openai", "model": "gpt-4o-mini"},
            {"name": "gw", "backend": "openai", "model": "x", "base_url": "https://gw.internal/v1"},
            {"name": "Mock.Big", "backend": "mock", "model": "mock-1", "replicas": 3},
        ],
        "grader": {"name": "judge", "backend": "openai", "model": "gpt-4o"},
    },
    "mock-grader": {
        "students": [{"name": "m", "model": "mock-m", **MOCK}],
        "grader": {"name": "g", "model": "mock-g", "quality": 0.8, **MOCK},
    },
    "mock-grader-base-url": {
        "students": [{"name": "m", "model": "mock-m", "replicas": 2, **MOCK}],
        "grader": {"name": "g", "model": "mock-g", "base_url": "http://mock.svc/v1", **MOCK},
    },
    "vllm-grader": {
        "students": [{"name": "m", "model": "mock-m", **MOCK}],
        "grader": {"name": "g", "backend": "vllm", "model": "j", "base_url": "http://j.svc/v1"},
    },
    "tasks": {
        "students": [
            {"name": "qwen", "backend": "vllm", "model": "q", "vllm": {"tensor_parallel_size": 2}},
            {"name": "mini", "backend": "openai", "model": "gpt-4o-mini"},
            {"name": "m", "model": "mock-m", **MOCK},
        ],
        "grader": {"name": "judge", "backend": "openai", "model": "gpt-4o"},
        "tasks": [{"name": "math500", "n": 4, "shards": 3}, {"name": "aime24"}],
    },
    "per-model": {
        "serving": "per-model",
        "students": [
            {"name": "qwen", "backend": "vllm", "model": "q", "vllm": {"tensor_parallel_size": 2}},
            {"name": "Mock.Big", "backend": "mock", "model": "mock-1", "replicas": 3},
            {"name": "unit", "backend": "mock", "model": "mock-2", "serving": "per-unit"},
        ],
        "grader": {"name": "judge", "backend": "openai", "model": "gpt-4o"},
    },
}
PROFILE = {
    "namespace": "evals",
    "image": "registry:5000/skillmix/skillmix:1.2.3",
    "vllm_image": "vllm/vllm-openai:v0.11.0",
    "store": "s3://bucket/runs/",
    "secrets": {"OPENAI_API_KEY": {"name": "openai"}},
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
@pytest.mark.parametrize("attempt", [1, 4])
def test_built_values_commands_parse(helm: Helm, name: str, attempt: int) -> None:
    e = Experiment.model_validate(
        {"name": f"cmd-{name}", "ks": [2, 3], "combinations": 3, "generation_rounds": 2}
        | EXPERIMENTS[name]
    )
    ctx = resolve_context(e)
    ctx.sharded = True
    units = plan_tasks(e, sharded=True).units
    # a relaunch redoes some units only
    generation, grading = (units, units) if attempt == 1 else (units[1:2], units[:3])
    values = build_values(
        ctx,
        ClusterProfile.model_validate(PROFILE),
        "prod",
        attempt=attempt,
        generation=generation,
        grading=grading,
        reasoning=reasoning_jobs(e),
        sidecar_port=8123,
    )
    render = helm.template(extra=values)
    check_render(render)
    tasks = [j for j in render.jobs("generation") if "skillmix.io/task" in j["metadata"]["labels"]]
    assert len(tasks) == len(e.tasks) * len(e.students)
    for job in tasks:  # shards: an Indexed Job of that many pods
        task = next(t for t in e.tasks if t.name == job["metadata"]["labels"]["skillmix.io/task"])
        assert job["spec"].get("completions", 1) == task.shards
    per_model = {s.name for s in e.students if e.serving_of(s.name) == "per-model"}
    jobs = len({u[0] for u in generation if u[0] in per_model})
    jobs += len([u for u in generation if u[0] not in per_model])
    assert len(render.jobs("generation")) == jobs + len(tasks)
    assert len(render.jobs("grading")) == len(grading)
    assert len(render.jobs("coordinator")) == 1
    # every grading Job waits for the coordinator; at most P run at once, each with 1/P of
    # the grader's budget when they share an endpoint (a mock sidecar grader is its own)
    pool = values["grader"]["parallelism"]
    assert 1 <= pool <= min(len(grading), 8)
    for job in render.jobs("grading"):
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["annotations"]["skillmix.io/pool-size"] == str(pool)
        args = next(c for c in containers(job) if c["name"] == "client")["args"]
        share = args[args.index("--budget-share") + 1]
        assert share == ("1" if name == "mock-grader" else str(pool))
    # model sidecars: the client waits for /health within the load budget
    for job in render.jobs("generation"):
        args = next(c for c in containers(job) if c["name"] == "client")["args"]
        has_sidecar = any(c["name"] == "model" for c in containers(job))
        assert ("--model-load-timeout" in args) is has_sidecar
        # the Job's deadline: the load budget (a sidecar) plus at least 900 s per unit (a
        # per-model Job runs its units in turn); the client stops itself a minute before it
        n_units = args[args.index("--units") + 1].count(",") + 1 if "--units" in args else 1
        deadline = job["spec"]["activeDeadlineSeconds"]
        load = 1800 if has_sidecar else 0
        assert load + 900 * n_units <= deadline <= load + 21600 * n_units
        assert args[args.index("--time-limit") + 1] == str(deadline - 60)


@pytest.mark.parametrize(
    "argv",
    [
        ["task", "generate", "--run", "s3://b/r", "--student", "s", "--k", "2", "--rounds", "1"],
        ["task", "grade", "--run", "s3://b/r", "--student", "s", "--k", "2"],
        ["task", "wait", "--run", "s3://b/r", "--phase", "aggregate"],
        ["task", "aggregate", "--run", "s3://b/r", "--attempt", "-1"],
        ["mock-server", "--port", "http"],
    ],
)
def test_a_wrong_command_fails_the_parse(argv: list[str]) -> None:
    with pytest.raises(click.UsageError):
        parse(argv)


def test_a_wrong_flag_in_the_values_fails_the_check(helm: Helm) -> None:
    render = helm.template("mock.yaml")
    (job, *_) = render.jobs("grading")
    client = next(c for c in containers(job) if c["name"] == "client")
    client["args"] = [a.replace("--budget-share", "--budget") for a in client["args"]]
    with pytest.raises(click.UsageError, match="--budget"):
        check_job(job)
