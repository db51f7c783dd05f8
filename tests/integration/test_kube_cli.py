"""The Kubernetes executor's CLI (clusters, render, launch, status, logs, cancel) end to end.

Everything goes through the real ``kubernetes`` client over HTTP to the fake API server of
``tests/fake_kube.py`` and through boto3 to a moto S3 server; nothing is mocked in-process.
Simulated pods ("the kubelet") run the same task functions the containers run, against the
built-in mock backend, and flip the Jobs' conditions like the Job controller would.

Tests that render the chart skip until ``helm/skillmix/templates/generation-jobs.yaml`` exists
and helm is installed (``make tools``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.config import load_experiment
from skillmix.errors import SkillmixError
from skillmix.k8s.cluster import PHASE_LABEL, RUN_LABEL, STUDENT_LABEL, WatchExpired
from skillmix.pipeline.context import RunContext, resolve_context
from skillmix.store.base import open_store
from skillmix.store.runs import RunStore
from tests.fake_kube import TOKEN, FakeKube, Request, closed_port_url, kubeconfig
from tests.fixtures_s3 import S3_TEST_SECRET
from tests.helpers import CliResult, run_cli

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "evals"
KS = (2, 3)
STUDENTS = ("strong", "weak")
UNITS = [(s, k, 1) for s in STUDENTS for k in KS]
GENERATION_JOBS = len(UNITS)  # one per (student, k, round), sharded or not
GRADING_JOBS = len(UNITS)
ALL_JOBS = GENERATION_JOBS + GRADING_JOBS + 1
LEAK_CANARY = "sk-canary-must-never-leak-7d1e"

EXPERIMENT = {
    "name": "kubetest",
    "seed": 10,
    "ks": list(KS),
    "combinations": 4,
    "generation_rounds": 1,
    "catalog": {},
    "students": [
        {
            "name": "strong",
            "backend": "mock",
            "model": "mock-strong",
            "quality": 0.95,
            "replicas": 2,
        },
        {"name": "weak", "backend": "mock", "model": "mock-weak", "quality": 0.3},
    ],
    "grader": {
        "name": "mock-grader",
        "backend": "mock",
        "model": "mock-grader",
        "quality": 0.95,
        "rounds": 2,
    },
    "metrics": {"bootstrap_samples": 50},
}


def _chart_missing() -> str | None:
    if not (ROOT / "helm" / "skillmix" / "templates" / "generation-jobs.yaml").is_file():
        return "chart templates not written yet (helm/skillmix/templates/generation-jobs.yaml)"
    from skillmix.k8s.helm import find_helm

    try:
        find_helm()
    except SkillmixError as exc:
        return f"helm is not installed (make tools): {exc}"
    return None


CHART_MISSING = _chart_missing()
needs_chart = pytest.mark.skipif(CHART_MISSING is not None, reason=CHART_MISSING or "")


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    server = FakeKube([NAMESPACE, "default"])
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert server.server_errors == [], "the fake API server failed a request"


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def run_id(exp: Path) -> str:
    return resolve_context(load_experiment(exp)).run_id


@pytest.fixture(autouse=True)
def _isolated_kube_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may fall back to the developer's kubeconfig or cluster profiles."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("SKILLMIX_CONFIG", str(tmp_path / "no-such-skillmix.yaml"))
    monkeypatch.delenv("SKILLMIX_CLUSTER", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", LEAK_CANARY)


def write_profiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clusters: dict[str, Any], **top: Any
) -> Path:
    path = tmp_path / "skillmix.yaml"
    path.write_text(yaml.safe_dump({**top, "clusters": clusters}, sort_keys=False), "utf-8")
    monkeypatch.setenv("SKILLMIX_CONFIG", str(path))
    return path


def profile(kubeconfig_path: Path | str, store: str, **extra: Any) -> dict[str, Any]:
    return {
        "context": "fake",
        "kubeconfig": str(kubeconfig_path),
        "namespace": NAMESPACE,
        "image": "registry.local:5000/skillmix/skillmix:test",
        "store": store,
        **extra,
    }


@dataclass
class Cluster:
    name: str
    store: str  # s3://bucket/prefix
    fake: FakeKube
    moto: str

    def run_uri(self, run_id: str) -> str:
        return f"{self.store}/{run_id}"

    def run(self, run_id: str) -> RunStore:
        return RunStore(open_store(self.run_uri(run_id)))

    def keys(self) -> list[str]:
        return sorted(open_store(self.store).list_keys(""))


@pytest.fixture
def cluster(
    fake: FakeKube, s3_env: str, moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Cluster:
    """Profile ``fake``: the fake API server, namespace ``evals``, the moto S3 store."""
    config = kubeconfig(fake, tmp_path / "kube" / "config", "fake")
    write_profiles(
        tmp_path,
        monkeypatch,
        {
            "fake": profile(
                config,
                s3_env,
                s3={"endpoint_url": moto_server, "credentials_secret": "s3-credentials"},
                secrets={"OPENAI_API_KEY": {"name": "openai", "key": "api-key"}},
            )
        },
        default="fake",
    )
    return Cluster("fake", s3_env, fake, moto_server)


@pytest.fixture
def mock_url(exp: Path) -> Iterator[str]:
    """The built-in mock backend serving the experiment's models (like the pods' sidecars)."""
    from skillmix.pipeline.local import mock_backend

    with mock_backend(load_experiment(exp)) as url:
        assert url is not None
        yield url


def run_units(
    run_uri: str,
    mock_url: str,
    *,
    generate: list[tuple[str, int, int]] | tuple[()] = (),
    grade: list[tuple[str, int, int]] | tuple[()] = (),
    aggregate: bool = False,
) -> None:
    """What the pods do: the task functions for these units, into the run's store."""
    from skillmix.pipeline.aggregate import run_aggregate_task
    from skillmix.pipeline.context import open_run, parent_store
    from skillmix.pipeline.local import make_clients
    from skillmix.pipeline.tasks import run_generate, run_grade

    run, ctx = open_run(run_uri)
    e = ctx.experiment

    async def main() -> None:
        clients = make_clients(
            [*e.students, e.grader], parent_store(run_uri), mock_url, seed=e.seed
        )
        try:
            for student, k, g in generate:
                shards = ctx.shards(student)
                for shard in range(shards):
                    await run_generate(
                        ctx, run, clients[student], student, k, g, shard=shard, shards=shards
                    )
            for student, k, g in grade:
                await run_grade(ctx, run, clients[e.grader.name], student, k, g)
        finally:
            for client in clients.values():
                await client.close()

    asyncio.run(main())
    if aggregate:
        run_aggregate_task(run, ctx)


def start_run(cluster: Cluster, exp: Path) -> RunContext:
    """run.json as `launch` writes it (sharded), without launching."""
    ctx = resolve_context(load_experiment(exp))
    ctx.sharded = True
    cluster.run(ctx.run_id).write_run_json(ctx.to_run_json())
    return ctx


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@contextlib.contextmanager
def background(script: Callable[[threading.Event], None], timeout: float = 60.0) -> Iterator[None]:
    """Run ``script(stop)`` in a thread (the simulated kubelet); re-raise its error at exit."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def target() -> None:
        try:
            script(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="kubelet", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout)
    assert not thread.is_alive(), "the simulated kubelet did not finish"
    if errors:
        raise errors[0]


def flat(text: str) -> str:
    """Table output with its wrapping undone (rich wraps long captions and cells)."""
    return " ".join(text.split())


def one_line_error(result: CliResult) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def job_unit(job: dict[str, Any]) -> tuple[str, str, str]:
    labels = job["metadata"]["labels"]
    return (labels[PHASE_LABEL], labels.get(STUDENT_LABEL, "-"), labels.get("skillmix.io/k", "-"))


def complete(fake: FakeKube, job: dict[str, Any]) -> None:
    done = job["spec"].get("completions") or 1
    fake.set_job_status(
        job["metadata"]["name"],
        [
            {"type": "SuccessCriteriaMet", "reason": "CompletionsReached"},
            {"type": "Complete", "reason": "CompletionsReached"},
        ],
        namespace=NAMESPACE,
        succeeded=done,
        active=0,
    )


def creates(fake: FakeKube, suffix: str) -> list[Request]:
    """POSTs that persisted something (launch validates everything with dryRun=All first)."""
    return [r for r in fake.requests_for("POST", suffix) if r.query.get("dryRun") != "All"]


def dry_runs(fake: FakeKube, suffix: str) -> list[Request]:
    return [r for r in fake.requests_for("POST", suffix) if r.query.get("dryRun") == "All"]


def job_posts(fake: FakeKube) -> list[Request]:
    return creates(fake, "/jobs")


def seeded_job(
    run_id: str,
    phase: str,
    student: str | None = None,
    k: int | None = None,
    g: int | None = None,
    *,
    attempt: int = 1,
    completions: int = 1,
) -> dict[str, Any]:
    """A Job labelled like the chart's (for status/logs/cancel, which do not render)."""
    abbrev = {"generate": "gen", "grade": "grd", "aggregate": "agg"}[phase]
    unit = [student, f"k{k}", f"r{g}"] if student else []
    name = "-".join([run_id, abbrev, *unit, f"a{attempt}"])
    labels = {RUN_LABEL: run_id, PHASE_LABEL: phase, "skillmix.io/attempt": str(attempt)}
    if student:
        labels.update(
            {STUDENT_LABEL: student, "skillmix.io/k": str(k), "skillmix.io/round": str(g)}
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "completions": completions,
            "parallelism": completions,
            "completionMode": "Indexed" if completions > 1 else "NonIndexed",
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "client", "image": "skillmix:test", "args": ["task", phase]}
                    ],
                },
            },
        },
    }


def seed_jobs(fake: FakeKube, run_id: str) -> dict[tuple[str, str, str], str]:
    """The run's Jobs as a first launch creates them; returns (phase, student, k) -> name."""
    names = {}
    for phase in ("generate", "grade"):
        for student, k, g in UNITS:
            shards = 2 if (phase == "generate" and student == "strong") else 1
            job = fake.create_job(
                seeded_job(run_id, phase, student, k, g, completions=shards), NAMESPACE
            )
            names[(phase, student, str(k))] = job["metadata"]["name"]
    job = fake.create_job(seeded_job(run_id, "aggregate"), NAMESPACE)
    names[("aggregate", "-", "-")] = job["metadata"]["name"]
    return names


# ---------------------------------------------------------------------------------------------
# cluster profiles and bad input (no chart, no cluster, no store needed)
# ---------------------------------------------------------------------------------------------


def test_clusters_lists_profiles(
    fake: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(fake, tmp_path / "kubeconfig", "fake")
    path = write_profiles(
        tmp_path,
        monkeypatch,
        {
            "fake": profile(config, "s3://bucket/runs", kueue_queue="gpu-queue"),
            "other": profile(config, "s3://other/runs", namespace="team-b", context=None),
        },
        default="fake",
    )
    table = run_cli("clusters")
    assert table.exit_code == 0, table.stderr
    for text in ("fake (default)", "other", "evals", "team-b", "s3://bucket/runs", "gpu-queue"):
        assert text in flat(table.stdout)
    assert "(current)" in table.stdout  # no context: kubeconfig's current one

    listed = run_cli("clusters", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["file"] == str(path)
    assert data["default"] == "fake"
    assert set(data["clusters"]) == {"fake", "other"}
    assert data["clusters"]["fake"]["namespace"] == NAMESPACE
    assert data["clusters"]["fake"]["kueue_queue"] == "gpu-queue"
    assert data["clusters"]["other"]["context"] is None
    assert fake.requests == []  # listing profiles never calls the API


def test_no_profile_file(exp: Path, tmp_path: Path) -> None:
    listed = run_cli("clusters")
    assert listed.exit_code == 0
    assert "no cluster profiles" in listed.stderr
    assert str(tmp_path / "no-such-skillmix.yaml") in listed.stderr

    for args in (
        ("render", "-f", str(exp), "--cluster", "prod"),
        ("status", "some-run", "--cluster", "prod"),
    ):
        result = run_cli(*args)
        assert result.exit_code == 2, result
        line = one_line_error(result)
        assert "no cluster profiles found" in line and "skillmix.yaml" in line


def test_unknown_profile_names_the_known_ones(
    fake: FakeKube, exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(fake, tmp_path / "kubeconfig", "fake")
    write_profiles(
        tmp_path,
        monkeypatch,
        {"fake": profile(config, "s3://b/r"), "backup": profile(config, "s3://c/r")},
    )
    for args in (
        ("status", "some-run", "--cluster", "prod"),
        ("launch", "-f", str(exp), "--cluster", "prod"),
        ("render", "-f", str(exp), "--cluster", "prod"),
    ):
        result = run_cli(*args)
        assert result.exit_code == 2, result
        line = one_line_error(result)
        assert "'prod'" in line and "known: backup, fake" in line
    # two profiles and no default: the name is required
    result = run_cli("status", "some-run")
    assert result.exit_code == 2
    assert "pick one with --cluster" in one_line_error(result)
    assert fake.requests == []


def test_missing_kube_context(
    fake: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(fake, tmp_path / "kubeconfig", "fake")
    write_profiles(
        tmp_path, monkeypatch, {"prod": profile(config, "s3://b/r", context="prod-admin")}
    )
    for args in (("status", "r1"), ("logs", "r1"), ("cancel", "r1")):
        result = run_cli(*args, "--cluster", "prod")
        assert result.exit_code == 2, result
        line = one_line_error(result)
        assert "kube context 'prod-admin' not found" in line
        assert str(config) in line
    assert fake.requests == []


def test_openai_grader_needs_a_secret_in_the_profile(
    fake: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = {
        **EXPERIMENT,
        "grader": {"name": "gpt-4o", "backend": "openai", "model": "gpt-4o", "rounds": 2},
    }
    exp = tmp_path / "openai.yaml"
    exp.write_text(yaml.safe_dump(experiment), encoding="utf-8")
    config = kubeconfig(fake, tmp_path / "kubeconfig", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, "s3://b/r")})
    result = run_cli("render", "-f", str(exp), "--cluster", "fake", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result
    line = one_line_error(result)
    assert "OPENAI_API_KEY" in line and "gpt-4o" in line
    assert "secrets:" in line  # the fix: name the Secret in the profile
    assert LEAK_CANARY not in result.stderr + result.stdout
    assert not (tmp_path / "o").exists()


def test_store_must_be_s3(
    fake: FakeKube, exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(fake, tmp_path / "kubeconfig", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, str(tmp_path / "runs"))})
    for args in (("render", "-f", str(exp)), ("launch", "-f", str(exp), "--dry-run")):
        result = run_cli(*args, "--cluster", "fake")
        assert result.exit_code == 2, result
        line = one_line_error(result)
        assert "is not an s3:// URI" in line
    assert not (tmp_path / "runs").exists()
    assert fake.requests == []


# ---------------------------------------------------------------------------------------------
# render (needs helm and the chart; no cluster, no store)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def _no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any S3 call would fail: credentials and endpoint point nowhere.
    monkeypatch.setenv("SKILLMIX_S3_ENDPOINT_URL", closed_port_url())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "none")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "none")


def _render_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the API server does not exist either: render must need neither
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, "s3://nowhere/runs")})


@pytest.mark.tools
@needs_chart
@pytest.mark.usefixtures("_no_store")
def test_render_writes_values_and_manifests(
    exp: Path, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _render_profile(tmp_path, monkeypatch)
    out = tmp_path / "rendered"
    result = run_cli("render", "-f", str(exp), "--cluster", "fake", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert f"run id: {run_id}" in result.stderr
    values = yaml.safe_load((out / "values.yaml").read_text(encoding="utf-8"))
    assert values["run"] == {
        "id": run_id,
        "uri": f"s3://nowhere/runs/{run_id}",
        "attempt": 1,
        "seed": 10,
    }
    docs = [d for d in yaml.safe_load_all((out / "manifests.yaml").read_text("utf-8")) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("ServiceAccount") == 1
    assert kinds.count("Job") == ALL_JOBS
    for doc in docs:
        assert doc["metadata"]["labels"][RUN_LABEL] == run_id
    assert str(ALL_JOBS) + " Jobs" in flat(result.stdout)  # the plan table's caption


@pytest.mark.tools
@needs_chart
@pytest.mark.usefixtures("_no_store")
def test_render_to_stdout(
    exp: Path, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _render_profile(tmp_path, monkeypatch)
    result = run_cli("render", "-f", str(exp), "--cluster", "fake")
    assert result.exit_code == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sum(d["kind"] == "Job" for d in docs) == ALL_JOBS
    assert all(d["metadata"]["labels"][RUN_LABEL] == run_id for d in docs)


# ---------------------------------------------------------------------------------------------
# launch (chart + fake API server + moto S3)
# ---------------------------------------------------------------------------------------------


def launch(exp: Path, *extra: str) -> CliResult:
    return run_cli("launch", "-f", str(exp), "--cluster", "fake", *extra)


@pytest.mark.tools
@needs_chart
def test_launch_creates_the_run(cluster: Cluster, exp: Path, run_id: str) -> None:
    fake = cluster.fake
    result = launch(exp)
    assert result.exit_code == 0, result.stderr
    assert f"run id: {run_id}" in result.stderr
    assert f"run {run_id}: attempt 1 on fake/{NAMESPACE}" in flat(result.stdout)  # the plan table
    assert f"{ALL_JOBS} Jobs" in flat(result.stdout)
    assert f"created {ALL_JOBS + 1} objects in namespace {NAMESPACE}" in result.stderr

    # the API server saw one ServiceAccount and the Jobs, all in the profile's namespace
    sa_posts = creates(fake, "/serviceaccounts")
    assert [r.path for r in sa_posts] == [f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts"]
    # every object was validated by a server-side dry run before anything was created
    assert len(dry_runs(fake, "/jobs")) == ALL_JOBS and len(dry_runs(fake, "/serviceaccounts")) == 1
    posts = fake.requests_for("POST")
    assert max(i for i, r in enumerate(posts) if r.query.get("dryRun") == "All") < min(
        i for i, r in enumerate(posts) if r.query.get("dryRun") != "All"
    )
    assert len(job_posts(fake)) == ALL_JOBS
    assert {r.path for r in job_posts(fake)} == {f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"}
    assert all(r.status == 201 for r in [*sa_posts, *job_posts(fake)])
    jobs = fake.jobs(NAMESPACE)
    assert len(jobs) == ALL_JOBS
    for job in jobs:
        assert job["metadata"]["labels"][RUN_LABEL] == run_id
        assert job["spec"]["template"]["metadata"]["labels"][RUN_LABEL] == run_id
    units = sorted(job_unit(j) for j in jobs)
    assert units == sorted(
        [("generate", s, str(k)) for s, k, _ in UNITS]
        + [("grade", s, str(k)) for s, k, _ in UNITS]
        + [("aggregate", "-", "-")]
    )
    # the student with replicas: 2 runs each generation unit as 2 shards
    for job in jobs:
        phase, student, _k = job_unit(job)
        if phase == "generate":
            assert job["spec"]["completions"] == (2 if student == "strong" else 1)
    [account] = fake.service_accounts(NAMESPACE)
    assert account["metadata"]["labels"][RUN_LABEL] == run_id

    # the store: run.json (sharded) and the audit record of attempt 1, without secret values
    run = cluster.run(run_id)
    data = run.read_run_json()
    assert data is not None and data["run_id"] == run_id and data["sharded"] is True
    record_text = run.store.read_bytes("launches/attempt-001.json").decode()
    record = json.loads(record_text)
    assert record["attempt"] == 1
    assert record["plan"]["run_id"] == run_id
    assert record["values"]["store"]["credentialsSecret"] == "s3-credentials"
    for secret in (S3_TEST_SECRET, LEAK_CANARY, TOKEN):
        assert secret not in record_text
        assert secret not in result.stdout + result.stderr
    for job in jobs:  # credentials reach pods only as Secret references
        assert S3_TEST_SECRET not in json.dumps(job) and LEAK_CANARY not in json.dumps(job)


@pytest.mark.tools
@needs_chart
def test_launch_dry_run_creates_and_writes_nothing(
    cluster: Cluster, exp: Path, run_id: str
) -> None:
    before = cluster.keys()
    result = launch(exp, "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["run_id"] == run_id
    assert plan["attempt"] == 1 and plan["namespace"] == NAMESPACE
    assert len(plan["jobs"]) == ALL_JOBS
    assert plan["estimated_gpu_hours"] == 0  # mock students need no GPU
    assert plan["estimated_api_cost_usd"] == 0  # nor API money
    assert plan["finished_units"] == 0 and plan["total_units"] == len(UNITS)
    assert "dry run" in result.stderr
    assert cluster.fake.requests == []  # not even a connection
    assert cluster.keys() == before == []


@pytest.mark.tools
@needs_chart
def test_launch_json_prints_the_plan(cluster: Cluster, exp: Path, run_id: str) -> None:
    result = launch(exp, "--format", "json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert plan["run_id"] == run_id and plan["release"]
    assert {"estimated_gpu_hours", "estimated_api_cost_usd", "gpus"} <= set(plan)
    assert sorted((j["phase"], j["student"], j["pods"]) for j in plan["jobs"]) == sorted(
        [("generate", s, 2 if s == "strong" else 1) for s, _k, _g in UNITS]
        + [("grade", s, 1) for s, _k, _g in UNITS]
        + [("aggregate", "-", 1)]
    )
    assert len(job_posts(cluster.fake)) == ALL_JOBS


@pytest.mark.tools
@needs_chart
def test_relaunch_resumes_with_new_job_names(
    cluster: Cluster, exp: Path, run_id: str, mock_url: str
) -> None:
    fake = cluster.fake
    first = launch(exp)
    assert first.exit_code == 0, first.stderr
    first_names = {j["metadata"]["name"] for j in fake.jobs(NAMESPACE)}
    # some pods finished: all of `weak`, and the generation of `strong` k=2
    weak = [u for u in UNITS if u[0] == "weak"]
    run_units(cluster.run_uri(run_id), mock_url, generate=[*weak, ("strong", 2, 1)], grade=weak)

    second = launch(exp)
    assert second.exit_code == 0, second.stderr
    assert f"attempt 2 on fake/{NAMESPACE}" in flat(second.stdout)
    assert f"2/{len(UNITS)} units already finished" in flat(second.stdout)
    new = [j for j in fake.jobs(NAMESPACE) if j["metadata"]["name"] not in first_names]
    assert len(job_posts(fake)) == ALL_JOBS + len(new)
    assert sorted(job_unit(j) for j in new) == [
        ("aggregate", "-", "-"),
        ("generate", "strong", "3"),
        ("grade", "strong", "2"),
        ("grade", "strong", "3"),
    ]
    for job in new:
        assert "a2" in job["metadata"]["name"].split("-")
        assert job["metadata"]["labels"].get("skillmix.io/attempt") == "2"
    assert all("a1" in n.split("-") for n in first_names)
    run = cluster.run(run_id)
    assert run.store.exists("launches/attempt-001.json")
    record = json.loads(run.store.read_bytes("launches/attempt-002.json"))
    assert record["attempt"] == 2 and record["plan"]["finished_units"] == 2
    assert len(fake.service_accounts(NAMESPACE)) == 1  # reused (409 on the second create)
    assert [r.status for r in creates(fake, "/serviceaccounts")] == [201, 409]


def _jobs_of(fake: FakeKube, phase: str) -> list[dict[str, Any]]:
    return [j for j in fake.jobs(NAMESPACE) if j["metadata"]["labels"][PHASE_LABEL] == phase]


@pytest.mark.tools
@needs_chart
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", ["table", "json"])
def test_launch_wait_follows_the_run_through_an_expired_watch(
    cluster: Cluster, exp: Path, run_id: str, mock_url: str, fmt: str
) -> None:
    fake = cluster.fake
    run_uri = cluster.run_uri(run_id)
    phases: list[str] = []

    def kubelet(stop: threading.Event) -> None:
        wait_until(lambda: len(fake.jobs(NAMESPACE)) == ALL_JOBS, "the Jobs")
        wait_until(lambda: fake.open_watches() > 0, "the client's watch")
        run_units(run_uri, mock_url, generate=UNITS)
        for job in _jobs_of(fake, "generate"):
            complete(fake, job)
        phases.append("generate")
        # the API server compacts: the open watch ends with ERROR 410, the client re-lists
        watches = len(fake.requests_for("GET", "/jobs", watch=True))
        fake.compact()
        wait_until(
            lambda: (
                len(fake.requests_for("GET", "/jobs", watch=True)) > watches
                and fake.open_watches() > 0
            ),
            "a new watch after the 410",
        )
        run_units(run_uri, mock_url, grade=UNITS)
        for job in _jobs_of(fake, "grade"):
            complete(fake, job)
        phases.append("grade")
        run_units(run_uri, mock_url, aggregate=True)
        for job in _jobs_of(fake, "aggregate"):
            complete(fake, job)
        phases.append("aggregate")

    with background(kubelet):
        result = launch(exp, "--wait", "--timeout", "30", "--format", fmt)
    assert phases == ["generate", "grade", "aggregate"]
    assert result.exit_code == 0, result.stderr
    assert f"run {run_id} finished" in result.stderr
    if fmt == "table":
        assert "SKILL-MIX metrics" in result.stdout
        for student in STUDENTS:
            assert student in result.stdout.split("SKILL-MIX metrics", 1)[1]
    else:  # exactly one JSON document: the plan with the metrics
        document = json.loads(result.stdout)
        assert document["run_id"] == run_id and len(document["jobs"]) == ALL_JOBS
        rows = document["metrics"]["rows"]
        assert {(r["student"], r["k"]) for r in rows} == {(s, k) for s in STUDENTS for k in KS}
    # the request log: list, watch, a watch that ended with 410, a re-list, a new watch
    gets = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/jobs")]
    expired = [i for i, r in enumerate(gets) if r.watch_error == 410]
    assert expired, [(r.query, r.watch_error) for r in gets]
    first = expired[0]
    assert not gets[0].is_watch  # the wait starts with a list
    assert any(not r.is_watch for r in gets[first + 1 :]), "no re-list after the 410"
    relist = next(i for i in range(first + 1, len(gets)) if not gets[i].is_watch)
    assert any(r.is_watch for r in gets[relist + 1 :]), "no watch after the re-list"
    for r in gets:
        if r.is_watch:
            assert r.query["resourceVersion"] and 1 <= int(r.query["timeoutSeconds"]) <= 30
            assert r.query["labelSelector"] == f"{RUN_LABEL}={run_id}"


@pytest.mark.tools
@needs_chart
@pytest.mark.parametrize("fmt", ["table", "json"])
def test_launch_of_a_finished_run_prints_its_metrics(
    cluster: Cluster, exp: Path, run_id: str, mock_url: str, fmt: str
) -> None:
    start_run(cluster, exp)
    run_units(cluster.run_uri(run_id), mock_url, generate=UNITS, grade=UNITS, aggregate=True)
    before = cluster.keys()
    result = launch(exp, "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert "nothing to launch" in result.stderr
    if fmt == "json":
        document = json.loads(result.stdout)  # one document
        assert document["finished_units"] == document["total_units"] == len(UNITS)
        assert len(document["metrics"]["rows"]) == len(STUDENTS) * len(KS)
    else:
        assert "SKILL-MIX metrics" in result.stdout
    assert cluster.fake.requests == []
    assert cluster.keys() == before


@pytest.mark.tools
@needs_chart
@pytest.mark.timeout(120)
def test_launch_wait_failed_job_exits_1(cluster: Cluster, exp: Path) -> None:
    fake = cluster.fake
    failed: list[str] = []

    def kubelet(stop: threading.Event) -> None:
        wait_until(lambda: len(fake.jobs(NAMESPACE)) == ALL_JOBS, "the Jobs")
        wait_until(lambda: fake.open_watches() > 0, "the client's watch")
        job = next(j for j in _jobs_of(fake, "generate") if job_unit(j)[1] == "weak")
        failed.append(job["metadata"]["name"])
        fake.set_job_status(
            job["metadata"]["name"],
            [
                {
                    "type": "FailureTarget",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                },
                {
                    "type": "Failed",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                },
            ],
            namespace=NAMESPACE,
            failed=3,
        )

    with background(kubelet):
        result = launch(exp, "--wait", "--timeout", "30")
    assert result.exit_code == 1, result.stderr
    line = one_line_error(result)
    assert failed[0] in line
    assert "BackoffLimitExceeded" in line and "launch again to resume" in line
    assert "SKILL-MIX metrics" not in result.stdout


@pytest.mark.tools
@needs_chart
@pytest.mark.timeout(120)
def test_launch_wait_survives_a_dropped_watch(cluster: Cluster, exp: Path) -> None:
    """A watch connection cut mid-stream (API server restart, load balancer timeout) is
    listed again, not a crash: the wait goes on and still sees the Job that fails later."""
    fake = cluster.fake
    failed: list[str] = []

    def kubelet(stop: threading.Event) -> None:
        wait_until(lambda: len(fake.jobs(NAMESPACE)) == ALL_JOBS, "the Jobs")
        wait_until(lambda: fake.open_watches() > 0, "the client's watch")
        lists = len(fake.requests_for("GET", "/jobs", watch=False))
        fake.drop_watches()
        wait_until(
            lambda: (
                len(fake.requests_for("GET", "/jobs", watch=False)) > lists
                and fake.open_watches() > 0
            ),
            "a re-list and a new watch after the drop",
        )
        job = _jobs_of(fake, "aggregate")[0]
        failed.append(job["metadata"]["name"])
        fake.set_job_status(
            job["metadata"]["name"],
            [{"type": "Failed", "reason": "DeadlineExceeded", "message": "too slow"}],
            namespace=NAMESPACE,
            failed=1,
        )

    with background(kubelet):
        result = launch(exp, "--wait", "--timeout", "30")
    assert result.exit_code == 1, result.stderr
    line = one_line_error(result)
    assert failed[0] in line and "DeadlineExceeded: too slow" in line
    assert any(r.watch_error == -1 for r in fake.requests)


@pytest.mark.tools
@needs_chart
@pytest.mark.timeout(120)
def test_launch_wait_ends_when_the_run_is_cancelled(
    cluster: Cluster, exp: Path, run_id: str
) -> None:
    """`skillmix cancel` from another terminal while `launch --wait` watches: the DELETED
    events end the wait at once with exit 1 (not after the watch's timeout)."""
    from skillmix.k8s.cluster import KubeClient
    from skillmix.k8s.profiles import get_profile

    fake = cluster.fake

    def other_terminal(stop: threading.Event) -> None:
        wait_until(lambda: len(fake.jobs(NAMESPACE)) == ALL_JOBS, "the Jobs")
        wait_until(lambda: fake.open_watches() > 0, "the client's watch")
        _name, prof = get_profile("fake")
        assert KubeClient(prof).delete_run(run_id) == (ALL_JOBS, 1)

    started = time.monotonic()
    with background(other_terminal):
        result = launch(exp, "--wait", "--timeout", "60")
    assert time.monotonic() - started < 30
    assert result.exit_code == 1, result.stderr
    assert "no Jobs of this run exist" in one_line_error(result)
    assert len(fake.requests_for("GET", "/jobs", watch=True)) == 1  # ended inside the first watch


@pytest.mark.tools
@needs_chart
@pytest.mark.timeout(60)
def test_launch_wait_times_out(cluster: Cluster, exp: Path, run_id: str) -> None:
    started = time.monotonic()
    result = launch(exp, "--wait", "--timeout", "2")
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.stderr
    line = one_line_error(result)
    assert "timed out after 2s" in line and run_id in line
    assert elapsed < 20
    assert len(cluster.fake.jobs(NAMESPACE)) == ALL_JOBS  # the run keeps running


@pytest.mark.tools
@needs_chart
@pytest.mark.parametrize("resource", ["jobs", "serviceaccounts"])
def test_launch_forbidden_names_the_rbac_file(cluster: Cluster, exp: Path, resource: str) -> None:
    cluster.fake.inject_error("POST", resource, 403)
    result = launch(exp)
    assert result.exit_code == 2, result.stderr
    line = one_line_error(result)
    assert "forbidden" in line and f"namespace {NAMESPACE}" in line
    assert "k8s/rbac-launcher.yaml" in line
    assert cluster.fake.jobs(NAMESPACE) == []
    assert not cluster.keys()  # a refused launch writes nothing to the store


@pytest.mark.tools
@needs_chart
def test_launch_into_a_missing_namespace(
    cluster: Cluster, exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(cluster.fake, tmp_path / "kube2" / "config", "fake")
    write_profiles(
        tmp_path,
        monkeypatch,
        {"fake": profile(config, cluster.store, namespace="nope")},
    )
    cluster.fake.inject_error("POST", "serviceaccounts", 404)
    result = launch(exp)
    assert result.exit_code == 2, result.stderr
    assert "does namespace 'nope' exist?" in one_line_error(result)


@pytest.mark.tools
@needs_chart
@pytest.mark.timeout(60)
def test_launch_with_an_unreachable_api_server(
    cluster: Cluster, exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    config = kubeconfig(url, tmp_path / "kube3" / "config", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, cluster.store)})
    result = launch(exp)
    assert result.exit_code == 1, result.stderr
    line = one_line_error(result)
    assert "cannot reach the Kubernetes API" in line and url in line


# ---------------------------------------------------------------------------------------------
# status, logs, cancel (Jobs and pods seeded in the fake server; no chart needed)
# ---------------------------------------------------------------------------------------------


def _status_fixture(cluster: Cluster, exp: Path, mock_url: str) -> dict[tuple[str, str, str], str]:
    fake = cluster.fake
    ctx = start_run(cluster, exp)
    names = seed_jobs(fake, ctx.run_id)
    run_units(
        cluster.run_uri(ctx.run_id),
        mock_url,
        generate=[("strong", 2, 1), ("weak", 3, 1)],
        grade=[("strong", 2, 1)],
    )
    complete(fake, fake.job(names[("generate", "strong", "2")], NAMESPACE))
    complete(fake, fake.job(names[("grade", "strong", "2")], NAMESPACE))
    fake.set_job_status(
        names[("generate", "weak", "2")],
        [
            {
                "type": "FailureTarget",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            },
            {
                "type": "Failed",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            },
        ],
        namespace=NAMESPACE,
        failed=3,
    )
    fake.set_job_status(names[("generate", "strong", "3")], [], namespace=NAMESPACE, active=2)
    fake.set_job_status(
        names[("grade", "weak", "3")],
        [{"type": "Suspended", "reason": "JobSuspended", "message": "Job suspended"}],
        namespace=NAMESPACE,
    )
    # an unrelated run in the same namespace stays out of the picture
    fake.create_job(seeded_job("other-run-1234abcd", "aggregate"), NAMESPACE)
    return names


def test_status_json(cluster: Cluster, exp: Path, run_id: str, mock_url: str) -> None:
    names = _status_fixture(cluster, exp, mock_url)
    result = run_cli("status", run_id, "--cluster", "fake", "--format", "json")
    assert result.exit_code == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["run_id"] == run_id and status["run"] == cluster.run_uri(run_id)
    assert status["state"] == "failed"
    jobs = {j["name"]: j for j in status["jobs"]}
    assert set(jobs) == set(names.values())
    assert [j["phase"] for j in status["jobs"]] == ["generate"] * 4 + ["grade"] * 4 + ["aggregate"]

    def job(phase: str, student: str, k: str) -> dict[str, Any]:
        return jobs[names[(phase, student, k)]]

    assert job("generate", "strong", "2")["state"] == "Complete"
    assert job("generate", "strong", "2")["succeeded"] == 2
    assert job("generate", "strong", "2")["completions"] == 2
    assert job("generate", "strong", "2")["progress"] == "4/4"
    failed = job("generate", "weak", "2")
    assert failed["state"] == "Failed" and failed["failed"] == 3
    assert failed["reason"] == "BackoffLimitExceeded: Job has reached the specified backoff limit"
    assert failed["progress"] == "0/4"
    assert job("generate", "strong", "3")["state"] == "Running"
    assert job("generate", "strong", "3")["active"] == 2
    assert job("generate", "weak", "3")["state"] == "Pending"
    assert job("generate", "weak", "3")["progress"] == "4/4"  # its pods finished the unit
    assert job("grade", "weak", "3")["state"] == "Suspended"
    assert job("grade", "weak", "3")["reason"] == "JobSuspended: Job suspended"
    assert job("grade", "strong", "2")["progress"] == "done"
    assert job("grade", "strong", "3")["progress"] == "0/8"  # M x R records
    assert job("aggregate", "-", "-")["state"] == "Pending"
    assert status["progress"] == {
        "units": 4,
        "generation_units_done": 2,
        "grading_units_done": 1,
        "report": False,
    }
    # one list call, by the run's label
    lists = cluster.fake.requests_for("GET", "/jobs")
    assert [r.query["labelSelector"] for r in lists] == [f"{RUN_LABEL}={run_id}"]


def test_status_table(cluster: Cluster, exp: Path, run_id: str, mock_url: str) -> None:
    names = _status_fixture(cluster, exp, mock_url)
    result = run_cli("status", run_id, "--cluster", "fake")
    assert result.exit_code == 0, result.stderr
    assert f"run {run_id}: failed" in flat(result.stdout)
    for text in ("Complete", "Failed", "Running", "Suspended", "Pending", "BackoffLimitExce"):
        assert text in flat(result.stdout)
    assert names[("generate", "weak", "2")][:20] in result.stdout
    assert "store: generation 2/4 units, grading 1/4 units, report not yet" in result.stderr


def test_status_of_an_unknown_run(cluster: Cluster) -> None:
    result = run_cli("status", "never-launched-00000000", "--cluster", "fake", "--format", "json")
    assert result.exit_code == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "no jobs" and status["jobs"] == []
    assert status["progress"]["units"] == 0


def test_status_with_an_unreachable_api_server(
    fake: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    config = kubeconfig(url, tmp_path / "kubeconfig", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, "s3://b/r")})
    for args in (("status", "r1"), ("logs", "r1"), ("cancel", "r1")):
        result = run_cli(*args, "--cluster", "fake")
        assert result.exit_code == 1, result
        line = one_line_error(result)
        assert "cannot reach the Kubernetes API" in line and url in line


def test_api_rejects_the_token(
    fake: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(fake, tmp_path / "kubeconfig", "fake", token="expired-token")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, "s3://b/r")})
    result = run_cli("status", "r1", "--cluster", "fake")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "401" in line and "rbac-launcher.yaml" in line
    assert "expired-token" not in result.stderr


def _pods(fake: FakeKube, names: dict[tuple[str, str, str], str]) -> dict[str, str]:
    """One pod per Job (two for the 2-shard Jobs); returns pod -> Job name."""
    pods = {}
    for (phase, student, k), job_name in names.items():
        job = fake.job(job_name, NAMESPACE)
        labels = dict(job["spec"]["template"]["metadata"]["labels"])
        for index in range(job["spec"]["completions"]):
            pod = f"{job_name}-{index}-x{index}z"
            fake.add_pod(
                pod,
                {**labels, "batch.kubernetes.io/job-completion-index": str(index)},
                {
                    "client": f"start {phase} {student} k={k}\n{phase} {student} k={k}: done\n",
                    "model": f"INFO model server for {student} ready\n",
                },
                namespace=NAMESPACE,
                job=job_name,
            )
            pods[pod] = job_name
    return pods


def test_logs_prefixes_and_filters(cluster: Cluster, run_id: str) -> None:
    fake = cluster.fake
    names = seed_jobs(fake, run_id)
    pods = _pods(fake, names)

    everything = run_cli("logs", run_id, "--cluster", "fake")
    assert everything.exit_code == 0, everything.stderr
    lines = everything.stdout.splitlines()
    assert len(lines) == 2 * len(pods)
    for pod in pods:
        assert f"[{pod}/client] " in everything.stdout
    grd = names[("grade", "weak", "3")]
    assert f"[{grd}-0-x0z/client] start grade weak k=3" in lines
    assert f"[{grd}-0-x0z/client] grade weak k=3: done" in lines

    graded = run_cli("logs", run_id, "--cluster", "fake", "--phase", "grade")
    assert graded.exit_code == 0, graded.stderr
    assert graded.stdout and all(
        "start grade" in line or "grade " in line for line in graded.stdout.splitlines()
    )
    assert len(graded.stdout.splitlines()) == 2 * GRADING_JOBS

    strong = run_cli(
        "logs", run_id, "--cluster", "fake", "--model", "strong", "--phase", "generate"
    )
    assert strong.exit_code == 0, strong.stderr
    strong_lines = strong.stdout.splitlines()
    assert len(strong_lines) == 2 * 2 * 2  # 2 k x 2 shards x 2 lines
    assert all(" strong " in line for line in strong_lines)

    model = run_cli("logs", run_id, "--cluster", "fake", "--model", "weak", "--container", "model")
    assert model.exit_code == 0, model.stderr
    assert set(line.split("] ", 1)[1] for line in model.stdout.splitlines()) == {
        "INFO model server for weak ready"
    }
    assert all("/model] " in line for line in model.stdout.splitlines())

    tail = run_cli("logs", run_id, "--cluster", "fake", "--phase", "aggregate", "--tail", "1")
    assert tail.exit_code == 0, tail.stderr
    assert tail.stdout.splitlines() == [
        f"[{names[('aggregate', '-', '-')]}-0-x0z/client] aggregate - k=-: done"
    ]
    selectors = {r.query["labelSelector"] for r in fake.requests_for("GET", "/pods")}
    assert f"{RUN_LABEL}={run_id},{PHASE_LABEL}=grade" in selectors
    assert f"{RUN_LABEL}={run_id},{PHASE_LABEL}=generate,{STUDENT_LABEL}=strong" in selectors
    logs = fake.requests_for("GET", "/log")
    assert any(r.query.get("tailLines") == "1" for r in logs)


def test_logs_keep_json_lines_verbatim(cluster: Cluster, run_id: str) -> None:
    """A container that logs one JSON line (structured logging) must come out unchanged."""
    fake = cluster.fake
    names = seed_jobs(fake, run_id)
    job = names[("aggregate", "-", "-")]
    line = '{"event": "aggregated", "rows": 4, "ok": true}'
    fake.add_pod(
        f"{job}-0-json",
        fake.job(job, NAMESPACE)["spec"]["template"]["metadata"]["labels"],
        {"client": line + "\n"},
        namespace=NAMESPACE,
        job=job,
    )
    result = run_cli("logs", run_id, "--cluster", "fake", "--phase", "aggregate")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [f"[{job}-0-json/client] {line}"]


@pytest.mark.timeout(60)
def test_logs_follow_streams_until_the_pods_end(cluster: Cluster, run_id: str) -> None:
    fake = cluster.fake
    names = seed_jobs(fake, run_id)
    pods = _pods(fake, names)
    started = time.monotonic()
    result = run_cli("logs", run_id, "--cluster", "fake", "--phase", "generate", "--follow")
    assert time.monotonic() - started < 30
    assert result.exit_code == 0, result.stderr
    gen_pods = [p for p, j in pods.items() if "-gen-" in j]
    expected = sorted(
        f"[{pod}/client] {text}" for pod in gen_pods for text in fake_logs_of(fake, pod)
    )
    # every line whole (the server splits each line over two HTTP chunks), none lost
    assert sorted(result.stdout.splitlines()) == expected
    follows = fake.requests_for("GET", "/log")
    assert len(follows) == len(gen_pods)
    assert all(r.query.get("follow") in ("True", "true") for r in follows)


def fake_logs_of(fake: FakeKube, pod: str) -> list[str]:
    job = next(p for p in fake.pods(NAMESPACE) if p["metadata"]["name"] == pod)
    labels = job["metadata"]["labels"]
    phase, student, k = labels[PHASE_LABEL], labels[STUDENT_LABEL], labels["skillmix.io/k"]
    return [f"start {phase} {student} k={k}", f"{phase} {student} k={k}: done"]


def test_logs_without_pods_exits_2(cluster: Cluster, run_id: str) -> None:
    seed_jobs(cluster.fake, run_id)  # Jobs, but no pod yet
    result = run_cli("logs", run_id, "--cluster", "fake")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert f"no pods of run {run_id} match" in line and "skillmix status" in line


def test_logs_of_a_missing_container_warns(cluster: Cluster, run_id: str) -> None:
    fake = cluster.fake
    names = seed_jobs(fake, run_id)
    _pods(fake, names)
    result = run_cli(
        "logs", run_id, "--cluster", "fake", "--phase", "aggregate", "--container", "vllm"
    )
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "warning:" in result.stderr and "/vllm" in result.stderr and "400" in result.stderr


def test_cancel_deletes_by_label_and_keeps_the_data(
    cluster: Cluster, exp: Path, run_id: str, mock_url: str
) -> None:
    fake = cluster.fake
    ctx = start_run(cluster, exp)
    run_units(cluster.run_uri(run_id), mock_url, generate=[("weak", 2, 1)])
    names = seed_jobs(fake, ctx.run_id)
    _pods(fake, names)
    fake.create_service_account(run_id, {RUN_LABEL: run_id}, namespace=NAMESPACE)
    other = fake.create_job(seeded_job("other-run-1234abcd", "aggregate"), NAMESPACE)
    fake.create_service_account("other", {RUN_LABEL: "other-run-1234abcd"}, namespace=NAMESPACE)
    before = cluster.keys()
    assert before

    result = run_cli("cancel", run_id, "--cluster", "fake")
    assert result.exit_code == 0, result.stderr
    assert f"deleted {ALL_JOBS} Jobs and 1 ServiceAccounts of run {run_id}" in result.stderr
    assert cluster.run_uri(run_id) in result.stderr

    [delete] = fake.requests_for("DELETE", "/jobs")
    assert delete.path == f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    assert delete.query["labelSelector"] == f"{RUN_LABEL}={run_id}"
    assert delete.query["propagationPolicy"] == "Background"  # the pods go too
    [sa_delete] = fake.requests_for("DELETE", f"/serviceaccounts/{run_id}")
    assert sa_delete.status == 200
    assert [j["metadata"]["name"] for j in fake.jobs(NAMESPACE)] == [other["metadata"]["name"]]
    assert [a["metadata"]["name"] for a in fake.service_accounts(NAMESPACE)] == ["other"]
    assert fake.pods(NAMESPACE) == []
    assert cluster.keys() == before  # the store is untouched: the run can resume

    again = run_cli("logs", run_id, "--cluster", "fake")
    assert again.exit_code == 2


# ---------------------------------------------------------------------------------------------
# RBAC: every call the CLI makes is one k8s/rbac-launcher.yaml allows
# ---------------------------------------------------------------------------------------------

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)


def rbac_verb(request: Request) -> tuple[str, str, str]:
    """(apiGroup, resource[/subresource], verb) as the API server authorizes the request."""
    match = _PATH.match(request.path)
    assert match, request.path
    group, resource = match["group"] or "", match["resource"]
    if match["sub"]:
        resource = f"{resource}/{match['sub']}"
    if request.method == "POST":
        verb = "create"
    elif request.method == "DELETE":
        verb = "delete" if match["name"] else "deletecollection"
    elif match["name"]:
        verb = "get"
    else:
        verb = "watch" if request.is_watch else "list"
    return group, resource, verb


def launcher_rules() -> set[tuple[str, str, str]]:
    docs = list(yaml.safe_load_all((ROOT / "k8s" / "rbac-launcher.yaml").read_text("utf-8")))
    [role] = [d for d in docs if d and d.get("kind") == "Role"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.timeout(60)
def test_every_api_call_is_allowed_by_the_launcher_role(
    cluster: Cluster, exp: Path, run_id: str
) -> None:
    from skillmix.k8s.cluster import KubeClient
    from skillmix.k8s.profiles import get_profile
    from skillmix.k8s.values import release_name

    fake = cluster.fake
    _name, prof = get_profile("fake")
    kube = KubeClient(prof)
    # launch: the chart's ServiceAccount (named after the release) and the Jobs
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": release_name(run_id), "labels": {RUN_LABEL: run_id}},
    }
    kube.apply([account, seeded_job(run_id, "generate", "weak", 2, 1, attempt=2)])
    kube.apply(
        [account, seeded_job(run_id, "aggregate", attempt=2)]
    )  # a relaunch: 409 on the account
    names = seed_jobs(fake, run_id)
    _pods(fake, {k: v for k, v in names.items() if k[0] == "grade"})
    _states, version = kube.jobs(run_id)
    fake.compact(expire_watches=False)
    with pytest.raises(WatchExpired):  # launch --wait
        list(kube.watch_jobs(run_id, version, 1))
    for args in (
        ("logs", run_id),
        ("logs", run_id, "--follow", "--phase", "grade", "--model", "weak"),
        ("cancel", run_id),
    ):
        result = run_cli(*args, "--cluster", "fake")
        assert result.exit_code == 0, (args, result.stderr)
    assert fake.service_accounts(NAMESPACE) == [] and fake.jobs(NAMESPACE) == []
    used = {rbac_verb(r) for r in fake.requests}
    assert {v for _g, _r, v in used} >= {"create", "list", "watch", "deletecollection", "get"}
    allowed = launcher_rules()
    assert used - allowed == set(), f"calls k8s/rbac-launcher.yaml does not allow: {used - allowed}"
