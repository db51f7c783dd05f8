"""The Kubernetes executor's CLI where no cluster is needed (cluster profiles, bad input,
`render`, a dry run, an unreachable API server: none of them may open a connection), and
`launch` through what a real API server cannot be made to do on demand: a watch expired with
410 Gone, a watch connection cut mid-stream, 429 and 500 answers (the fake API server of
``tests/fake_kube.py``, over real HTTP with the official client). Everything else runs on the
real control plane in ``tests/cluster/`` (``test_kube_cli_on_cluster.py`` among others).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.errors import SkillmixError
from skillmix.loading import load_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.vocab import PHASE_LABEL, RUN_LABEL, Unit
from tests.fake_kube import FakeKube, closed_port_url, kubeconfig
from tests.helpers import CliResult, run_cli

NAMESPACE = "evals"
KS = (2, 3)
STUDENTS = ("strong", "weak")
UNITS = [(s, k, 1) for s in STUDENTS for k in KS]
GENERATION_JOBS = len(UNITS)  # one per (student, k, round), sharded or not
GRADING_JOBS = len(UNITS)
ALL_JOBS = GENERATION_JOBS + GRADING_JOBS + 2  # + the aggregation and the coordinator
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


def _helm_missing() -> str | None:
    from skillmix.k8s.helm import find_helm

    try:
        find_helm()
    except SkillmixError as exc:
        return f"helm is not installed (make tools): {exc}"
    return None


HELM_MISSING = _helm_missing()
needs_chart = pytest.mark.skipif(HELM_MISSING is not None, reason=HELM_MISSING or "")


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    server = FakeKube()
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert server.server_errors == [], "the fake API server failed a request"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every socket connection refused; the addresses tried, which the test expects empty."""
    tried: list[object] = []

    def no_connect(sock: socket.socket, address: object) -> None:
        tried.append(address)
        raise ConnectionRefusedError(111, "the test allows no network call")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    return tried


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
    store: str  # s3://bucket/prefix
    fake: FakeKube

    def run_uri(self, run_id: str) -> str:
        return f"{self.store}/{run_id}"


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
    return Cluster(s3_env, fake)


@pytest.fixture
def mock_url(exp: Path) -> Iterator[str]:
    """The built-in mock backend serving the experiment's models (like the pods' sidecars)."""
    from skillmix.executors.local import mock_backend

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
    from skillmix.backends.factory import make_clients
    from skillmix.pipeline.context import open_run, parent_store
    from skillmix.pipeline.generate import run_generate
    from skillmix.pipeline.grade import run_grade
    from skillmix.report.build import run_aggregate_task

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
                        ctx, run, clients[student], Unit(student, k, g), shard=shard, shards=shards
                    )
            for student, k, g in grade:
                await run_grade(ctx, run, clients[e.grader.name], Unit(student, k, g))
        finally:
            for client in clients.values():
                await client.close()

    asyncio.run(main())
    if aggregate:
        run_aggregate_task(run, ctx)


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


def complete(fake: FakeKube, job: dict[str, Any]) -> None:
    fake.set_job_status(
        job["metadata"]["name"],
        conditions=[
            {"type": "SuccessCriteriaMet", "reason": "CompletionsReached"},
            {"type": "Complete", "reason": "CompletionsReached"},
        ],
        succeeded=job["spec"].get("completions") or 1,
        active=0,
    )


# ---------------------------------------------------------------------------------------------
# cluster profiles and bad input (no chart, no cluster, no store needed)
# ---------------------------------------------------------------------------------------------


def test_clusters_lists_profiles(
    offline: list[object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
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
    assert offline == []  # listing profiles never calls the API


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
    offline: list[object], exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
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
    assert offline == []


def test_missing_kube_context(
    offline: list[object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
    write_profiles(
        tmp_path, monkeypatch, {"prod": profile(config, "s3://b/r", context="prod-admin")}
    )
    for args in (("status", "r1"), ("logs", "r1"), ("cancel", "r1")):
        result = run_cli(*args, "--cluster", "prod")
        assert result.exit_code == 2, result
        line = one_line_error(result)
        assert "kube context 'prod-admin' not found" in line
        assert str(config) in line
    assert offline == []


def test_openai_grader_needs_a_secret_in_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = {
        **EXPERIMENT,
        "grader": {"name": "gpt-4o", "backend": "openai", "model": "gpt-4o", "rounds": 2},
    }
    exp = tmp_path / "openai.yaml"
    exp.write_text(yaml.safe_dump(experiment), encoding="utf-8")
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, "s3://b/r")})
    result = run_cli("render", "-f", str(exp), "--cluster", "fake", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result
    line = one_line_error(result)
    assert "OPENAI_API_KEY" in line and "gpt-4o" in line
    assert "secrets:" in line  # the fix: name the Secret in the profile
    assert LEAK_CANARY not in result.stderr + result.stdout
    assert not (tmp_path / "o").exists()


def test_store_must_be_s3(
    offline: list[object], exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, str(tmp_path / "runs"))})
    for args in (("render", "-f", str(exp)), ("launch", "-f", str(exp), "--dry-run")):
        result = run_cli(*args, "--cluster", "fake")
        assert result.exit_code == 2, result
        line = one_line_error(result)
        assert "is not an s3:// URI" in line
    assert not (tmp_path / "runs").exists()
    assert offline == []


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
    assert kinds.count("ServiceAccount") == 2  # the profile's: the pods' and the coordinator's
    assert kinds.count("NetworkPolicy") == 1  # the run's, per attempt
    assert kinds.count("Job") == ALL_JOBS
    for doc in docs:  # the accounts are shared by runs: no run label
        assert (RUN_LABEL in doc["metadata"]["labels"]) is (doc["kind"] != "ServiceAccount")
        assert doc["metadata"]["labels"].get(RUN_LABEL, run_id) == run_id
    assert str(ALL_JOBS) + " Jobs" in flat(result.stdout)  # the plan table's caption


@pytest.mark.tools
@needs_chart
@pytest.mark.usefixtures("_no_store")
@pytest.mark.parametrize(
    ("account", "expected_name", "created"),
    [
        (
            {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/skillmix"}},
            None,
            True,
        ),
        ({"create": False, "name": "irsa-runner"}, "irsa-runner", False),
    ],
)
def test_the_profile_names_or_creates_the_pods_service_account(
    exp: Path,
    run_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    account: dict[str, Any],
    expected_name: str | None,
    created: bool,
) -> None:
    """Workload identity (IRSA, EKS Pod Identity, GKE) is bound to a ServiceAccount: a created
    one carries the profile's annotations; an existing one is only named. Every object is
    labelled as managed by skillmix (not Helm: there is no release)."""
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
    write_profiles(
        tmp_path,
        monkeypatch,
        {"fake": profile(config, "s3://nowhere/runs", service_account=account)},
    )
    result = run_cli("render", "-f", str(exp), "--cluster", "fake")
    assert result.exit_code == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    jobs = [d for d in docs if d["kind"] == "Job"]
    coordinator = "coordinator"  # has its own ServiceAccount (k8s/rbac-coordinator.yaml)
    names = {
        j["spec"]["template"]["spec"]["serviceAccountName"]
        for j in jobs
        if j["metadata"]["labels"]["app.kubernetes.io/component"] != coordinator
    }
    if created:
        assert {a["metadata"]["name"] for a in accounts} == {"skillmix", "skillmix-coordinator"}
        for sa in accounts:  # the coordinator's too: it reaches the store the same way
            assert sa["metadata"]["annotations"] == account["annotations"]
        assert names == {"skillmix"}
    else:
        assert accounts == [] and names == {expected_name}
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "skillmix"


def test_existing_service_accounts_take_no_annotations(
    exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
    account = {"create": False, "annotations": {"iam.gke.io/gcp-service-account": "x@y"}}
    write_profiles(
        tmp_path,
        monkeypatch,
        {"fake": profile(config, "s3://nowhere/runs", service_account=account)},
    )
    result = run_cli("render", "-f", str(exp), "--cluster", "fake")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "service_account" in line and "annotate the existing ones instead" in line


@needs_chart
def test_the_chart_is_rendered_for_the_clusters_version(
    exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--kube-version` reaches helm: Chart.yaml's kubeVersion (>= 1.29) rejects an older
    cluster with one line, and accepts the real control plane's version."""
    from skillmix.k8s.launch import plan_launch, prepare_launch

    _render_profile(tmp_path, monkeypatch)
    name, prof, ctx, _run = prepare_launch(load_experiment(exp), "fake", check_store=False)
    with pytest.raises(SkillmixError, match=r"Kubernetes v1\.27\.3 is not supported.*kubeVersion"):
        plan_launch(ctx, prof, name, None, kube_version="v1.27.3")
    lp = plan_launch(ctx, prof, name, None, kube_version="v1.34.4")
    assert lp.rendered.count("kind: Job") == ALL_JOBS


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
    assert all(d["metadata"]["labels"][RUN_LABEL] == run_id for d in docs if d["kind"] == "Job")


@pytest.mark.tools
@needs_chart
@pytest.mark.parametrize("fmt", ["table", "json"])
def test_launch_dry_run_makes_no_network_call(
    exp: Path,
    run_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    offline: list[object],
) -> None:
    """Offline, with the store's endpoint and the API server on closed ports: a dry run plans a
    first launch without trying either, and says so."""
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
    store = {"endpoint_url": closed_port_url(), "credentials_secret": "s3-credentials"}
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, "s3://nowhere/runs", s3=store)})
    monkeypatch.setenv("SKILLMIX_S3_ENDPOINT_URL", store["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "none")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "none")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    started = time.monotonic()
    result = launch(exp, "--dry-run", "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started < 30
    assert offline == []
    assert "the store was not read, so this is the plan of a first launch" in flat(result.stderr)
    assert f"run id: {run_id}" in result.stderr
    if fmt == "json":
        plan = json.loads(result.stdout)
        assert plan["run_id"] == run_id and plan["attempt"] == 1
        assert plan["finished_units"] == 0 and len(plan["jobs"]) == ALL_JOBS
    else:
        assert str(ALL_JOBS) + " Jobs" in flat(result.stdout)


# ---------------------------------------------------------------------------------------------
# launch: 410 Gone, a dropped watch, 429 and 500 (chart + fake API + moto S3); no API server
# ---------------------------------------------------------------------------------------------


def launch(exp: Path, *extra: str) -> CliResult:
    return run_cli("launch", "-f", str(exp), "--cluster", "fake", *extra)


def _jobs_of(fake: FakeKube, phase: str) -> list[dict[str, Any]]:
    return [j for j in fake.jobs() if j["metadata"]["labels"][PHASE_LABEL] == phase]


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
        wait_until(lambda: len(fake.jobs()) == ALL_JOBS, "the Jobs")
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
            assert r.query["labelSelector"] == f"{RUN_LABEL}={run_id},skillmix.io/attempt=1"


@pytest.mark.tools
@needs_chart
@pytest.mark.timeout(120)
def test_launch_wait_survives_a_dropped_watch(cluster: Cluster, exp: Path) -> None:
    """A watch connection cut mid-stream (API server restart, load balancer timeout) is
    resumed from the last resourceVersion, not listed again and not a crash: the wait goes on
    and still sees the Job that fails later."""
    fake = cluster.fake
    failed: list[str] = []
    lists: list[int] = []

    def kubelet(stop: threading.Event) -> None:
        wait_until(lambda: len(fake.jobs()) == ALL_JOBS, "the Jobs")
        wait_until(lambda: fake.open_watches() > 0, "the client's watch")
        lists.append(len(fake.requests_for("GET", "/jobs", watch=False)))
        watches = len(fake.requests_for("GET", "/jobs", watch=True))
        fake.drop_watches()
        wait_until(
            lambda: (
                len(fake.requests_for("GET", "/jobs", watch=True)) > watches
                and fake.open_watches() > 0
            ),
            "a new watch after the drop",
        )
        lists.append(len(fake.requests_for("GET", "/jobs", watch=False)))
        job = _jobs_of(fake, "aggregate")[0]
        failed.append(job["metadata"]["name"])
        fake.set_job_status(
            job["metadata"]["name"],
            conditions=[{"type": "Failed", "reason": "DeadlineExceeded", "message": "too slow"}],
            failed=1,
        )

    with background(kubelet):
        result = launch(exp, "--wait", "--timeout", "30")
    assert result.exit_code == 1, result.stderr
    line = one_line_error(result)
    assert failed[0] in line and "DeadlineExceeded: too slow" in line
    assert any(r.watch_error == -1 for r in fake.requests)
    assert lists[0] == lists[1]  # no list of every Job after the drop
    watches = fake.requests_for("GET", "/jobs", watch=True)
    assert (
        len(watches) >= 2
        and watches[1].query["resourceVersion"] == (watches[0].query["resourceVersion"])
    )  # no event came before the drop: the same version


@pytest.mark.tools
@needs_chart
@pytest.mark.timeout(120)
def test_launch_retries_429_and_500_and_creates_every_job_once(
    cluster: Cluster, exp: Path, run_id: str
) -> None:
    """One 429 with Retry-After and one 500 in the middle of creation are retried, not a launch
    aborted halfway: every Job exists once, and the launch says it retried. (The pre-flight,
    warnings and RBAC of a launch: tests/cluster/test_kube_cli_on_cluster.py.)"""
    fake = cluster.fake
    fake.fail_next("POST", "/jobs", 429, retry_after="1")
    fake.fail_next("POST", "/jobs", 500)
    started = time.monotonic()
    result = launch(exp)
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started >= 1  # Retry-After was honoured
    names = [j["metadata"]["name"] for j in fake.jobs()]
    assert len(names) == ALL_JOBS == len(set(names))
    posts = [r for r in fake.requests_for("POST", "/jobs") if r.query.get("dryRun") != "All"]
    assert sorted(r.status or 0 for r in posts) == [201] * ALL_JOBS + [429, 500]
    assert "2 transient API errors retried" in flat(result.stderr)


@pytest.mark.tools
@needs_chart
@pytest.mark.timeout(60)
def test_launch_with_an_unreachable_api_server(
    s3_env: str, exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    config = kubeconfig(url, tmp_path / "kubeconfig", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, s3_env)})
    result = launch(exp)
    assert result.exit_code == 1, result.stderr
    line = one_line_error(result)
    assert "cannot reach the Kubernetes API" in line and url in line


def test_status_with_an_unreachable_api_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    config = kubeconfig(url, tmp_path / "kubeconfig", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, "s3://b/r")})
    for args in (("status", "r1"), ("logs", "r1"), ("cancel", "r1")):
        result = run_cli(*args, "--cluster", "fake")
        assert result.exit_code == 1, result
        line = one_line_error(result)
        assert "cannot reach the Kubernetes API" in line and url in line


@needs_chart
def test_render_out_to_an_unwritable_place_is_one_line(
    exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(closed_port_url(), tmp_path / "kubeconfig", "fake")
    write_profiles(tmp_path, monkeypatch, {"fake": profile(config, "s3://b/r")})
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli("render", "-f", str(exp), "--cluster", "fake", "--out", str(blocker / "o"))
    assert result.exit_code == 2, result
    line = one_line_error(result)
    assert str(blocker) in line and "cannot write" in line
    assert "Traceback" not in result.stderr
