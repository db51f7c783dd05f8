"""Rendered-Jobs e2e: the chart's Jobs, run as local processes, produce the local executor's report.

The run is rendered exactly as ``skillmix launch`` renders it (``prepare_launch`` ->
``plan_launch`` -> ``record_launch``), then every Job goes through ``tests/e2e/podrunner.py``
(a kubelet in a test) in phase order: all generation Jobs, all grading Jobs, the aggregation
Job. Pods talk to a moto S3 server with the credentials of a test Secret and to the mock
server the manifests start as native sidecars. Then the local executor runs the same
experiment into another store and the two reports must be equal. No cluster, no Docker.

Size: 2 students (one an Indexed Job of 2 shards) x 2 ks x 2 generation rounds is 17 Jobs,
21 pods and ~50 Python processes: ~70 s on an idle 2-core machine (more when it is shared).
Every generation and grading client imports ``inflect`` for number words in prompts, ~1.4 s
of CPU on its own (typeguard instruments it at import). ``ROUNDS = 1`` halves the run (11
pods, ~40 s); the Job mechanics are the same for every round.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.config import Experiment, parse_experiment
from skillmix.errors import SkillmixError
from skillmix.pipeline.context import RunContext
from skillmix.store.base import open_store
from skillmix.store.runs import RunStore
from tests.e2e.podrunner import (
    JobResult,
    PodResult,
    PodRunner,
    PodSpecError,
    UnsupportedContainer,
    check_job,
    free_port,
    image_config,
    pod_failure_action,
)
from tests.fixtures_s3 import (
    S3_TEST_ACCESS_KEY,
    S3_TEST_PREFIX,
    S3_TEST_SECRET,
    create_bucket,
    s3_test_env,
)

CLUSTER = "ci"
NAMESPACE = "evals"
SECRET_NAME = "skillmix-s3"
PHASE_LABEL = "skillmix.io/phase"
PHASES = ("generate", "grade", "aggregate")
KS = [2, 3]
ROUNDS = 2  # see the module docstring
STUDENTS = {"strong": 2, "weak": 1}  # name -> replicas (strong: an Indexed Job of 2 pods)

EXPERIMENT: dict[str, Any] = {
    "name": "e2e-jobs",
    "seed": 10,
    "ks": KS,
    "combinations": 6,
    "generation_rounds": ROUNDS,
    "catalog": {},
    "students": [
        {
            "name": "strong",
            "backend": "mock",
            "model": "mock-strong",
            "quality": 0.9,
            "replicas": STUDENTS["strong"],
        },
        {"name": "weak", "backend": "mock", "model": "mock-weak", "quality": 0.4},
    ],
    "grader": {
        "name": "mock-grader",
        "backend": "mock",
        "model": "mock-grader",
        "quality": 0.95,
        "rounds": 3,
        "use_n": "auto",
    },
}
UNITS = [(s, k, g) for s in STUDENTS for k in KS for g in range(1, ROUNDS + 1)]


def _helm_missing() -> str | None:
    from skillmix.k8s.helm import find_helm

    try:
        find_helm()  # PATH, $SKILLMIX_HELM, then the checkout's .tools/bin
    except SkillmixError as exc:
        return f"helm is not installed (run `make tools`): {exc}"
    return None


HELM_MISSING = _helm_missing()
pytestmark = [
    pytest.mark.tools,
    pytest.mark.skipif(HELM_MISSING is not None, reason=HELM_MISSING or ""),
]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def secrets_for(secret: str = S3_TEST_SECRET) -> dict[str, dict[str, str]]:
    """The namespace's Secrets as the kubelet would see them."""
    return {SECRET_NAME: {"AWS_ACCESS_KEY_ID": S3_TEST_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret}}


def write_profile(path: Path, store: str, endpoint: str) -> Path:
    profile = {
        "namespace": NAMESPACE,
        "store": store,
        "s3": {"endpoint_url": endpoint, "region": "us-east-1", "credentials_secret": SECRET_NAME},
        # the deadlines the Jobs carry; the podrunner caps them further
        "deadlines": {"generation_seconds": 600, "grading_seconds": 900},
    }
    path.write_text(yaml.safe_dump({"clusters": {CLUSTER: profile}}), encoding="utf-8")
    return path


@dataclass
class Rendered:
    experiment: Experiment
    ctx: RunContext
    run: RunStore
    run_uri: str
    port: int
    jobs: list[dict[str, Any]]
    values: dict[str, Any]


def render(experiment: Experiment, *, record: bool, check_store: bool = True) -> Rendered:
    """What `skillmix launch` does before it creates objects (SKILLMIX_CONFIG must be set)."""
    from skillmix.k8s.helm import manifests
    from skillmix.k8s.launch import plan_launch, prepare_launch, record_launch

    name, profile, ctx, run = prepare_launch(experiment, CLUSTER, check_store=check_store)
    port = free_port()
    lp = plan_launch(ctx, profile, name, run if check_store else None, sidecar_port=port)
    if record:
        record_launch(run, ctx, lp)
    docs = manifests(lp.rendered)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["Job", "ServiceAccount"], kinds
    jobs = [d for d in docs if d["kind"] == "Job"]
    return Rendered(experiment, ctx, run, lp.run_uri, port, jobs, lp.values)


def phase_of(job: dict[str, Any]) -> str:
    return str(job["metadata"]["labels"][PHASE_LABEL])


def unit_of(job: dict[str, Any]) -> tuple[str, int, int]:
    labels = job["metadata"]["labels"]
    return (
        labels["skillmix.io/student"],
        int(labels["skillmix.io/k"]),
        int(labels["skillmix.io/round"]),
    )


def jobs_in(rendered: Rendered, phase: str, student: str | None = None) -> list[dict[str, Any]]:
    return [
        j
        for j in rendered.jobs
        if phase_of(j) == phase and (student is None or unit_of(j)[0] == student)
    ]


# ---------------------------------------------------------------------------------------------
# the run (once per module: ~50 processes)
# ---------------------------------------------------------------------------------------------


@dataclass
class E2E:
    rendered: Rendered
    results: dict[str, list[JobResult]] = field(default_factory=dict)  # phase -> Jobs
    k8s_summary: dict[str, Any] = field(default_factory=dict)
    local_summary: dict[str, Any] = field(default_factory=dict)
    k8s_csv: bytes = b""
    local_csv: bytes = b""
    k8s_keys: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def all_jobs(self) -> list[JobResult]:
        return [r for phase in PHASES for r in self.results.get(phase, [])]

    def pods(self) -> list[PodResult]:
        return [p for r in self.all_jobs() for p in r.pods]


@pytest.fixture(scope="module")
def e2e(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    from skillmix.pipeline.local import evaluate

    tmp = tmp_path_factory.mktemp("rendered-jobs")
    with pytest.MonkeyPatch.context() as mp:
        # the test process's own S3 access (record_launch, reading the report); the pods get
        # nothing from this environment, only what their manifests declare
        s3_test_env(mp, moto_server, tmp)
        store = f"s3://{create_bucket(moto_server)}/{S3_TEST_PREFIX}"
        mp.setenv("SKILLMIX_CONFIG", str(write_profile(tmp / "skillmix.yaml", store, moto_server)))
        mp.delenv("SKILLMIX_CLUSTER", raising=False)
        experiment = parse_experiment(copy.deepcopy(EXPERIMENT), "e2e experiment")

        started = time.monotonic()
        rendered = render(experiment, record=True)
        out = E2E(rendered)
        out.seconds["render"] = time.monotonic() - started
        # a Job normally takes 3-15 s here; a hung container fails its Job after 90 s
        runner = PodRunner(secrets_for(), tmp / "pods", namespace=NAMESPACE, deadline_cap=90)
        assert sorted({phase_of(j) for j in rendered.jobs}) == sorted(PHASES)
        for phase in PHASES:  # the order the wait containers would impose on a cluster
            t0 = time.monotonic()
            out.results[phase] = []
            for job in jobs_in(rendered, phase):
                result = runner.run_job(job)
                out.results[phase].append(result)
                if not result.succeeded:
                    pytest.fail(f"{phase} Job failed:\n{result.describe()}")
            out.seconds[phase] = time.monotonic() - t0

        report = open_store(rendered.run_uri)
        out.k8s_summary = json.loads(report.read_bytes("report/summary.json"))
        out.k8s_csv = report.read_bytes("report/metrics.csv")
        out.k8s_keys = report.list_keys("")

        t0 = time.monotonic()
        local_store = tmp / "local-store"
        evaluate(experiment, store_uri=str(local_store), progress=False)
        local_report = local_store / rendered.ctx.run_id / "report"
        out.local_summary = json.loads((local_report / "summary.json").read_text("utf-8"))
        out.local_csv = (local_report / "metrics.csv").read_bytes()
        out.seconds["local"] = time.monotonic() - t0
        yield out


# ---------------------------------------------------------------------------------------------
# the e2e's checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_rendered_job_succeeds_in_phase_order(e2e: E2E) -> None:
    r = e2e.rendered
    gen = e2e.results["generate"]
    assert sorted(unit_of(j) for j in jobs_in(r, "generate")) == sorted(UNITS)
    assert sorted(unit_of(j) for j in jobs_in(r, "grade")) == sorted(UNITS)
    assert len(e2e.results["aggregate"]) == 1
    for result in e2e.all_jobs():
        assert result.succeeded and result.reason == "Complete", result.describe()
        for pod in result.pods:
            assert pod.phase == "Succeeded", pod.describe()
            assert all(code == 0 for code in pod.exit_codes.values()), pod.describe()
    # launched as `skillmix launch` does: run.json (sharded) and the launch record first
    assert {"run.json", "launches/attempt-001.json"} <= set(e2e.k8s_keys)
    assert e2e.rendered.run.read_run_json()["sharded"] is True
    # no retries were needed: one pod per completion
    expected = sum(STUDENTS[s] for s, _k, _g in UNITS)
    assert sum(len(j.pods) for j in gen) == expected
    # where the time goes (shown with -s): phases, and CPU-heavy containers by name
    by_name: dict[str, list[float]] = {}
    for pod in e2e.pods():
        for c in pod.containers:
            by_name.setdefault(f"{c.kind}/{c.name}", []).append(c.seconds)
    print("\ne2e seconds:", {k: round(v, 1) for k, v in e2e.seconds.items()})
    for name, seconds in sorted(by_name.items()):
        print(f"  {name}: {len(seconds)} x {sum(seconds) / len(seconds):.2f}s")


@pytest.mark.slow
def test_the_report_equals_the_local_executors(e2e: E2E) -> None:
    k8s, local = e2e.k8s_summary, e2e.local_summary
    assert k8s["metrics"]["rows"], "the report has no rows"
    assert k8s["metrics"]["rows"] == local["metrics"]["rows"]
    settings_k8s = dict(k8s["metrics"]["settings"])
    settings_local = dict(local["metrics"]["settings"])
    assert settings_k8s.pop("run") == e2e.rendered.run_uri
    settings_local.pop("run")
    assert settings_k8s == settings_local
    assert k8s["counts"] == local["counts"]
    assert e2e.k8s_csv == e2e.local_csv
    rows = {(row["student"], row["k"]) for row in k8s["metrics"]["rows"]}
    assert {(s, k) for s in STUDENTS for k in KS} <= rows, rows


@pytest.mark.slow
def test_pods_ran_in_phase_order(e2e: E2E) -> None:
    """Every grading pod's wait container found its generation finished, and the aggregation
    pod's found every grading unit finished: the phases met only in the store."""
    for result in e2e.results["grade"]:
        wait = result.pods[0].container("wait")
        assert "generate finished for 1 units" in wait.text(), result.describe()
        assert result.pods[0].containers[0].name == "model"  # the grader sidecar came first
    agg = e2e.results["aggregate"][0].pods[0]
    assert f"grade finished for {len(UNITS)} units" in agg.container("wait").text()
    ordered = [c for p in e2e.pods() for c in p.containers if c.kind != "sidecar"]
    assert all(a.started <= b.started for a, b in itertools.pairwise(ordered))


@pytest.mark.slow
def test_the_indexed_job_wrote_one_shard_per_pod(e2e: E2E) -> None:
    shards = STUDENTS["strong"]
    for job, result in zip(jobs_in(e2e.rendered, "generate"), e2e.results["generate"], strict=True):
        student, k, g = unit_of(job)
        if student != "strong":
            assert "completionMode" not in job["spec"]
            assert [p.index for p in result.pods] == [None]
            continue
        assert job["spec"]["completionMode"] == "Indexed"
        assert job["spec"]["completions"] == shards
        assert [p.index for p in result.pods] == list(range(shards))
        for pod in result.pods:
            client = pod.container("client")
            assert client.env["JOB_COMPLETION_INDEX"] == str(pod.index)
            assert f"{student} k={k} r{g} shard {pod.index}:" in client.text(), pod.describe()
        for shard in range(shards):
            prefix = f"generations/{student}/k{k}/r{g}/shard-{shard:03d}-of-{shards:03d}/"
            assert f"{prefix}_SUCCESS" in e2e.k8s_keys, sorted(e2e.k8s_keys)
    assert not any(k.startswith("generations/weak/") and "/shard-" in k for k in e2e.k8s_keys)


@pytest.mark.slow
def test_sidecars_started_on_probe_and_stopped_on_sigterm(e2e: E2E) -> None:
    port = str(e2e.rendered.port)
    for pod in e2e.pods():
        for c in (c for c in pod.containers if c.kind == "sidecar"):
            assert c.argv[c.argv.index("--port") + 1] == port, c.argv
            assert f"listening on http://127.0.0.1:{port}" in c.text(), pod.describe()
            assert c.stopped_by == "SIGTERM" and c.exit_code == 0, pod.describe()


@pytest.mark.slow
def test_pods_see_only_what_their_manifests_declare(e2e: E2E) -> None:
    image = image_config()
    injected = {"PATH", "PYTHONPATH", "TMPDIR", "JOB_COMPLETION_INDEX"}  # by this podrunner
    for pod in e2e.pods():
        for c in pod.containers:
            declared = {v["name"] for v in c.spec.get("env", [])}
            extra = set(c.env) - declared - set(image.env) - injected
            assert not extra, (pod.name, c.name, sorted(extra))
            assert c.env["AWS_SECRET_ACCESS_KEY"] == S3_TEST_SECRET  # from the Secret
            assert c.env["SKILLMIX_RUN"] == e2e.rendered.run_uri
            # HOME=/tmp and the image's /tmp workdir map onto the pod's emptyDir
            assert c.env["HOME"] == c.env["TMPDIR"] != "/tmp"
            assert Path(c.env["HOME"]).is_dir()
            assert ("JOB_COMPLETION_INDEX" in c.env) == (pod.index is not None)


@pytest.mark.slow
def test_no_secret_value_in_any_log(e2e: E2E) -> None:
    logs = [c for p in e2e.pods() for c in p.containers]
    assert logs and all(c.log is not None and c.log.is_file() for c in logs)
    for c in logs:
        assert S3_TEST_SECRET not in c.text(), f"the Secret's value leaked into {c.log}"
        assert S3_TEST_SECRET not in " ".join(c.argv)
    for job in e2e.rendered.jobs:  # the manifests name the Secret, never its value
        assert S3_TEST_SECRET not in json.dumps(job)
    assert S3_TEST_SECRET not in json.dumps(e2e.rendered.values)
    store = open_store(e2e.rendered.run_uri)  # nor in anything the pods wrote
    secret = S3_TEST_SECRET.encode()
    leaked = [key for key in e2e.k8s_keys if secret in store.read_bytes(key)]
    assert not leaked, leaked


# ---------------------------------------------------------------------------------------------
# failures, as the kubelet and the Job controller report them
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def profile_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_env: str) -> str:
    """A cluster profile aimed at the fixture's bucket; returns the store URI."""
    import os

    endpoint = os.environ["SKILLMIX_S3_ENDPOINT_URL"]
    monkeypatch.setenv(
        "SKILLMIX_CONFIG", str(write_profile(tmp_path / "skillmix.yaml", s3_env, endpoint))
    )
    monkeypatch.delenv("SKILLMIX_CLUSTER", raising=False)
    return s3_env


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    """The manifests alone (no store needed)."""
    tmp = tmp_path_factory.mktemp("offline")
    with pytest.MonkeyPatch.context() as mp:
        path = write_profile(tmp / "skillmix.yaml", "s3://bucket/prefix", "http://127.0.0.1:9")
        mp.setenv("SKILLMIX_CONFIG", str(path))
        mp.delenv("SKILLMIX_CLUSTER", raising=False)
        experiment = parse_experiment(copy.deepcopy(EXPERIMENT), "e2e experiment")
        yield render(experiment, record=False, check_store=False)


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ({}, f'secret "{SECRET_NAME}" not found'),
        (
            {SECRET_NAME: {"AWS_ACCESS_KEY_ID": S3_TEST_ACCESS_KEY}},
            f"couldn't find key AWS_SECRET_ACCESS_KEY in Secret {NAMESPACE}/{SECRET_NAME}",
        ),
    ],
    ids=["missing-secret", "missing-key"],
)
def test_a_missing_secret_is_a_create_container_config_error(
    offline: Rendered, tmp_path: Path, secrets: dict[str, dict[str, str]], message: str
) -> None:
    job = jobs_in(offline, "grade")[0]
    result = PodRunner(secrets, tmp_path, namespace=NAMESPACE).run_job(job)
    assert not result.succeeded
    assert result.reason == "DeadlineExceeded"  # the pod never starts; the Job times out
    [pod] = result.pods
    assert pod.phase == "Pending" and pod.reason == "CreateContainerConfigError"
    assert pod.message == f"container model: {message}", pod.describe()
    [model] = pod.containers  # the first container already fails: nothing was started
    assert model.reason == "CreateContainerConfigError" and model.exit_code is None
    assert model.log is None
    assert message in result.describe()


@pytest.mark.parametrize(
    ("phase", "container", "rule"),
    [("generate", "client", 0), ("grade", "wait", 1)],
    ids=["generation-client", "grading-wait"],
)
def test_bad_input_exit_2_fails_the_job_through_the_pod_failure_policy(
    profile_env: str, tmp_path: Path, phase: str, container: str, rule: int
) -> None:
    """Rendered and planned but never recorded: the run folder has no run.json, so the first
    skillmix container that opens the run exits 2 and the Job fails at once (no retries)."""
    rendered = render(parse_experiment(copy.deepcopy(EXPERIMENT), "e2e experiment"), record=False)
    assert rendered.run.read_run_json() is None
    job = jobs_in(rendered, phase, student="weak")[0]
    assert job["spec"]["backoffLimit"] >= 1  # so a retry would have been possible
    result = PodRunner(secrets_for(), tmp_path, namespace=NAMESPACE).run_job(job)
    assert not result.succeeded
    assert result.reason == "PodFailurePolicy", result.describe()
    [pod] = result.pods
    assert pod.phase == "Failed"
    assert pod.exit_codes[container] == 2, pod.describe()
    assert result.message == (
        f"Container {container} for pod {pod.name} failed with exit code 2 "
        f"matching FailJob rule at index {rule}"
    )
    failed = pod.container(container)
    assert "no run.json here" in failed.text(), pod.describe()
    assert "Traceback" not in failed.text()
    assert pod.container("model").stopped_by == "SIGTERM"  # the sidecar was cleaned up
    assert S3_TEST_SECRET not in failed.text()


def _pod(name: str, **codes: int | None) -> PodResult:
    from tests.e2e.podrunner import ContainerResult

    pod = PodResult(name=name, index=None, phase="Failed")
    for container, code in codes.items():
        pod.containers.append(ContainerResult(container, "main", exit_code=code))
    return pod


def test_pod_failure_policy_evaluation(offline: Rendered) -> None:
    grading = jobs_in(offline, "grade")[0]
    assert pod_failure_action(grading, _pod("p", wait=0, client=2))[0] == "FailJob"
    assert pod_failure_action(grading, _pod("p", wait=2))[0] == "FailJob"
    assert pod_failure_action(grading, _pod("p", wait=0, client=1))[0] == "Count"
    assert pod_failure_action(grading, _pod("p", wait=1))[0] == "Count"
    sidecar = _pod("p", model=2, client=1)
    sidecar.containers[0].stopped_by = "SIGTERM"  # stopped by the kubelet: not a failure
    assert pod_failure_action(grading, sidecar, sidecars={"model"})[0] == "Count"
    generation = jobs_in(offline, "generate")[0]
    assert pod_failure_action(generation, _pod("p", wait=2))[0] == "Count"  # no wait rule


def test_rendered_pod_specs_are_consistent(offline: Rendered) -> None:
    assert len(offline.jobs) == 2 * len(UNITS) + 1
    for job in offline.jobs:
        check_job(job)
        pod = job["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []):
            if c.get("restartPolicy") == "Always":  # every sidecar is awaited by a probe
                assert c["startupProbe"]["httpGet"]["path"] == "/health"
                assert str(offline.port) in c["args"]
        for c in pod["containers"]:
            if "--base-url" in c["args"]:
                url = c["args"][c["args"].index("--base-url") + 1]
                assert url == f"http://localhost:{offline.port}/v1"


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda pod: pod["volumes"].clear(), "names no volume"),
        (lambda pod: pod["initContainers"][0]["ports"].clear(), "not a named port"),
        (
            lambda pod: pod["initContainers"].pop(1),  # drop "wait": its FailJob rule dangles
            "podFailurePolicy.rules[1] names container 'wait'",
        ),
        (
            lambda pod: pod["containers"].append(copy.deepcopy(pod["containers"][0])),
            "container names repeat",
        ),
    ],
    ids=["volume", "probe-port", "failure-policy", "duplicate-name"],
)
def test_inconsistent_pod_specs_are_rejected(offline: Rendered, mutate: Any, error: str) -> None:
    job = copy.deepcopy(jobs_in(offline, "grade")[0])
    mutate(job["spec"]["template"]["spec"])
    with pytest.raises(PodSpecError, match=re.escape(error)):
        check_job(job)


def test_only_skillmix_containers_run_locally(offline: Rendered, tmp_path: Path) -> None:
    job = copy.deepcopy(jobs_in(offline, "generate", student="weak")[0])
    model = job["spec"]["template"]["spec"]["initContainers"][0]
    model["command"] = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    with pytest.raises(UnsupportedContainer, match="only skillmix containers"):
        PodRunner(secrets_for(), tmp_path, namespace=NAMESPACE).run_job(job)


def test_other_failures_are_retried_up_to_the_backoff_limit(
    profile_env: str, tmp_path: Path
) -> None:
    """Exit 1 (a run failure, here a wait that times out) matches no FailJob rule: the Job
    controller counts it and replaces the pod until backoffLimit is exceeded."""
    rendered = render(parse_experiment(copy.deepcopy(EXPERIMENT), "e2e experiment"), record=True)
    job = copy.deepcopy(jobs_in(rendered, "generate", student="weak")[0])
    job["spec"]["backoffLimit"] = 1
    client = job["spec"]["template"]["spec"]["containers"][0]
    client["args"] = ["task", "wait", "--phase", "grade", "--timeout", "0.01", "--interval", "0.01"]
    result = PodRunner(secrets_for(), tmp_path, namespace=NAMESPACE).run_job(job)
    assert not result.succeeded
    assert result.reason == "BackoffLimitExceeded", result.describe()
    assert [p.exit_codes["client"] for p in result.pods] == [1, 1]  # the first try + 1 retry
    assert "timed out" in result.pods[-1].container("client").text()
    assert all(p.container("model").stopped_by == "SIGTERM" for p in result.pods)
