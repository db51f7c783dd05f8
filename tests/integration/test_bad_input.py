"""Bad input through ``skillmix evaluate``: exit code 2, one ``error:`` line on stderr that
names the problem, nothing on stdout, and nothing written to the store. Also: API keys never
reach the store or the output."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from tests.fixtures_s3 import S3_TEST_SECRET
from tests.helpers import CliResult, run_cli, skill_row, skills_csv

KEY_ENV = "SKILLMIX_TEST_API_KEY"
SECRET = "sk-test-SECRET-123"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory (so the default store ``runs/`` would land here too)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("SKILLMIX_DEBUG", raising=False)
    return tmp_path


@pytest.fixture
def keyed_server() -> Iterator[MockServer]:
    """A mock server that requires ``Authorization: Bearer SECRET``."""
    config = MockServerConfig(
        host="127.0.0.1", models={"gpt-test": 0.8, "judge-test": 0.95}, seed=2, api_key=SECRET
    )
    with MockServer(config) as server:
        yield server


def tiny(**overrides: Any) -> dict[str, Any]:
    """A minimal experiment on the built-in mock backend."""
    exp: dict[str, Any] = {
        "name": "tiny",
        "seed": 1,
        "ks": [2],
        "combinations": 2,
        "students": [{"name": "s1", "backend": "mock", "model": "mock-s1", "quality": 0.8}],
        "grader": {"name": "g", "backend": "mock", "model": "mock-g", "rounds": 1},
        "metrics": {"bootstrap_samples": 10},
    }
    exp.update(overrides)
    return exp


def write(path: Path, exp: dict[str, Any] | str) -> Path:
    path.write_text(exp if isinstance(exp, str) else yaml.safe_dump(exp, sort_keys=False))
    return path


def evaluate(exp_file: Path, store: Path | str, *extra: str) -> CliResult:
    return run_cli("evaluate", "-f", str(exp_file), "--store", str(store), "--no-progress", *extra)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_bad_input(result: CliResult, *needles: str, store: Path | None = None) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stdout == ""
    message = result.stderr.rstrip("\n")
    assert "\n" not in message, f"not one line: {result.stderr!r}"
    assert message.startswith("error: "), message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert "Traceback" not in result.stderr
    if store is not None:
        assert not store.exists() or not any(store.iterdir()), sorted(store.rglob("*"))


def assert_nothing_written(work: Path, *inputs: Path) -> None:
    """Nothing but the test's own input files in the working directory (no runs/ either)."""
    allowed = {p.name for p in inputs}
    assert {p.name for p in work.iterdir()} <= allowed, sorted(p.name for p in work.iterdir())


# ---- the experiment file --------------------------------------------------------------------


def test_malformed_yaml_names_file_and_line(work: Path) -> None:
    exp = write(work / "exp.yaml", "name: tiny\nks: [2]\nstudents:\n  - name: s1\n   model: x\n")
    assert_bad_input(
        evaluate(exp, work / "store"), f"{exp}:5", "malformed YAML", store=work / "store"
    )
    assert_nothing_written(work, exp)


def test_unknown_nested_key_names_its_path(work: Path) -> None:
    data = tiny()
    data["students"][0]["bogus"] = 1
    exp = write(work / "exp.yaml", data)
    result = evaluate(exp, work / "store")
    assert_bad_input(result, str(exp), "unknown key", "students.0.bogus", store=work / "store")
    assert_nothing_written(work, exp)


def test_wrong_type_names_the_field(work: Path) -> None:
    exp = write(work / "exp.yaml", tiny(ks="two"))
    assert "ks: two\n" in exp.read_text()
    assert_bad_input(evaluate(exp, work / "store"), str(exp), "ks:", store=work / "store")
    assert_nothing_written(work, exp)


def test_k_larger_than_the_catalog(work: Path) -> None:
    csv = work / "three.csv"
    csv.write_text(skills_csv([skill_row("alpha"), skill_row("beta"), skill_row("gamma")]))
    exp = write(work / "exp.yaml", tiny(ks=[2, 4], catalog={"skills": str(csv)}))
    result = evaluate(exp, work / "store")
    assert_bad_input(result, "k=4", "number of active skills (3)", store=work / "store")
    assert_nothing_written(work, exp, csv)


def test_unknown_prompt_version(work: Path) -> None:
    exp = write(work / "exp.yaml", tiny(prompts={"generation": "no-such-version-v9"}))
    result = evaluate(exp, work / "store")
    assert_bad_input(result, "no-such-version-v9", "generation", store=work / "store")
    assert_nothing_written(work, exp)


def test_unknown_skill_in_metric_filter(work: Path) -> None:
    exp = write(work / "exp.yaml", tiny(metrics={"filter_skills": ["no such skill"]}))
    result = evaluate(exp, work / "store")
    assert_bad_input(result, "unknown skill 'no such skill'", store=work / "store")
    assert_nothing_written(work, exp)


# ---- endpoints and keys ---------------------------------------------------------------------


def openai_student(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "s1",
        "backend": "openai",
        "model": "gpt-test",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        **extra,
    }


def test_unreachable_endpoint(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    url = "http://127.0.0.1:9/v1"  # the discard port: nothing listens on loopback
    exp = write(work / "exp.yaml", tiny(students=[openai_student(url)]))
    result = evaluate(exp, work / "store")
    assert_bad_input(result, "cannot reach", url, store=work / "store")
    assert SECRET not in result.stderr
    assert_nothing_written(work, exp)


def test_wrong_api_key(
    work: Path, monkeypatch: pytest.MonkeyPatch, keyed_server: MockServer
) -> None:
    wrong = "sk-test-WRONG-456"
    monkeypatch.setenv(KEY_ENV, wrong)
    exp = write(work / "exp.yaml", tiny(students=[openai_student(keyed_server.base_url)]))
    result = evaluate(exp, work / "store")
    assert_bad_input(
        result, "rejected the API key", keyed_server.base_url, KEY_ENV, store=work / "store"
    )
    assert wrong not in result.stderr and SECRET not in result.stderr
    assert keyed_server.stats()["by_path"].get("/v1/chat/completions", 0) == 0
    assert_nothing_written(work, exp)


def test_missing_api_key_variable(work: Path, keyed_server: MockServer) -> None:
    exp = write(work / "exp.yaml", tiny(students=[openai_student(keyed_server.base_url)]))
    result = evaluate(exp, work / "store")
    assert_bad_input(result, KEY_ENV, "not set", store=work / "store")
    assert keyed_server.stats()["requests"] == 0  # found before any network call
    assert_nothing_written(work, exp)


def test_missing_s3_bucket(work: Path, s3_env: str) -> None:
    import boto3.session
    from botocore.config import Config

    bucket = f"no-such-bucket-{uuid.uuid4().hex[:12]}"
    exp = write(work / "exp.yaml", tiny())
    result = evaluate(exp, f"s3://{bucket}/x")
    assert_bad_input(result, f"s3://{bucket}", "does not exist")
    assert S3_TEST_SECRET not in result.stderr
    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["SKILLMIX_S3_ENDPOINT_URL"],  # set by s3_env (moto)
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    assert bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    assert_nothing_written(work, exp)


# ---- flags ----------------------------------------------------------------------------------


def test_resume_and_overwrite_exclude_each_other(work: Path) -> None:
    exp = write(work / "exp.yaml", tiny())
    result = evaluate(exp, work / "store", "--resume", "--overwrite")
    assert_bad_input(result, "--resume", "--overwrite", store=work / "store")
    assert_nothing_written(work, exp)


def test_existing_run_needs_resume_or_overwrite(work: Path) -> None:
    store = work / "store"
    exp = write(work / "exp.yaml", tiny())
    first = evaluate(exp, store)
    assert first.exit_code == 0, first.stderr
    before = snapshot(store)
    assert any(name.endswith("run.json") for name in before)

    result = evaluate(exp, store)
    assert_bad_input(result, "already exists", "--resume", "--overwrite")
    assert snapshot(store) == before  # byte for byte


def test_a_run_launched_on_kubernetes_is_not_resumed_locally(work: Path) -> None:
    """Defect: `evaluate --resume` accepted a launched (sharded) run and rewrote its run.json
    with sharded=false."""
    import json

    from skillmix.loading import load_experiment
    from skillmix.pipeline.context import resolve_context
    from skillmix.store.runs import RunStore
    from skillmix.store.uri import open_store

    store = work / "store"
    exp = write(work / "exp.yaml", tiny())
    ctx = resolve_context(load_experiment(exp))
    ctx.sharded = True  # what `skillmix launch` records
    RunStore(open_store(str(store)).child(ctx.run_id)).write_run_json(ctx.to_run_json())
    before = snapshot(store)
    result = evaluate(exp, store, "--resume")
    assert_bad_input(result, "launched on Kubernetes", "skillmix launch")
    assert snapshot(store) == before
    run_json = json.loads((store / ctx.run_id / "run.json").read_text())
    assert run_json["sharded"] is True


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--backend-args", "bogus=1"], ["--backend-args", "'bogus'"]),
        (["--sampling-params", "temperature=0.5,bogus=2"], ["--sampling-params", "'bogus'"]),
        (["--grader-args", "nope=3"], ["'nope'"]),
    ],
)
def test_quick_form_unknown_keys(work: Path, flags: list[str], needles: list[str]) -> None:
    store = work / "store"
    result = run_cli(
        "evaluate", "--model", "mock-a", "--k", "2", "-n", "2", "--store", str(store), *flags
    )
    assert_bad_input(result, *needles, store=store)
    assert_nothing_written(work)


def test_file_and_quick_form_exclude_each_other(work: Path) -> None:
    exp = write(work / "exp.yaml", tiny())
    result = evaluate(exp, work / "store", "--model", "mock-a")
    assert_bad_input(result, "--model", store=work / "store")
    assert_nothing_written(work, exp)


# ---- secrets --------------------------------------------------------------------------------


def test_api_key_never_leaks(
    work: Path, monkeypatch: pytest.MonkeyPatch, keyed_server: MockServer
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    store = work / "store"
    grader = {
        "name": "g",
        "backend": "openai",
        "model": "judge-test",
        "base_url": keyed_server.base_url,
        "api_key_env": KEY_ENV,
        "rounds": 2,
    }
    exp = write(
        work / "exp.yaml", tiny(students=[openai_student(keyed_server.base_url)], grader=grader)
    )
    results = [evaluate(exp, store), evaluate(exp, store, "--resume", "--format", "json")]
    for result in results:
        assert result.exit_code == 0, result.stderr
        assert SECRET not in result.stdout and SECRET not in result.stderr
    assert keyed_server.stats()["ok"] > 0  # the key was really used
    files = snapshot(store)
    assert any("_cache" in name for name in files) and any("report" in name for name in files)
    leaked = [name for name, data in files.items() if SECRET.encode() in data]
    assert not leaked, leaked
    # The run records which variable holds the key, never the key itself.
    (run_json,) = [data for name, data in files.items() if name.endswith("run.json")]
    assert KEY_ENV.encode() in run_json


# ---- the second probe's tracebacks (issue 24): one line, exit 2, nothing written -------------
@pytest.mark.parametrize("value", ["1e12", "1e100", "inf", "nan", "-5", "abc"])
def test_an_absurd_lock_lease_is_one_line(
    work: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SKILLMIX_LOCK_SECONDS", value)
    exp = write(work / "e.yaml", tiny())
    assert_bad_input(evaluate(exp, work / "runs"), "SKILLMIX_LOCK_SECONDS", store=work / "runs")


def test_a_shard_index_that_is_not_a_number_is_one_line(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = write(work / "e.yaml", tiny())
    made = run_cli("generate", "-f", str(exp), "--store", str(work / "runs"), "--no-progress")
    assert made.exit_code == 0, made.stderr
    [run] = [p for p in (work / "runs").iterdir() if (p / "run.json").exists()]
    before = snapshot(run)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "abc")
    result = run_cli(
        "task", "generate", "--run", str(run), "--student", "s1", "--k", "2", "--round", "1",
        "--shards", "1",
    )  # fmt: skip
    assert_bad_input(result, "JOB_COMPLETION_INDEX", "'abc'")
    assert snapshot(run) == before


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/v1\nx", "http://127.0.0.1:1/v1\tx"])
def test_a_control_character_in_a_base_url_is_one_line(
    work: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    result = run_cli(
        "evaluate", "--model", "m", "--backend", "openai", "--base-url", url, "--k", "2",
        "--combinations", "2", "--store", str(work / "runs"), "--no-progress",
    )  # fmt: skip
    assert_bad_input(result, "base_url", "control character", store=work / "runs")


def test_an_endless_or_huge_experiment_file_is_refused_by_size(work: Path) -> None:
    for path in (Path("/dev/zero"), write(work / "huge.yaml", "# " + "x" * 5_000_000 + "\n")):
        result = evaluate(path, work / "runs")
        assert_bad_input(result, str(path), "at most", store=work / "runs")


def test_an_endless_catalog_file_is_refused_by_size(work: Path) -> None:
    exp = write(work / "e.yaml", tiny(catalog={"skills": "/dev/zero"}))
    assert_bad_input(evaluate(exp, work / "runs"), "/dev/zero", "at most", store=work / "runs")


def test_a_store_under_a_regular_file_is_bad_input(work: Path) -> None:
    (work / "afile").write_text("x")
    exp = write(work / "e.yaml", tiny())
    result = evaluate(exp, work / "afile" / "runs")
    assert_bad_input(result, str(work / "afile"))


# ---- inputs accepted that should not be (issue 24) -------------------------------------------
@pytest.mark.parametrize(
    "student, needles",
    [
        ({"model": ""}, ["students.0.model", "at least 1 character"]),
        ({"timeout": float("inf")}, ["students.0.timeout", "finite"]),
        ({"sampling": {"temperature": float("nan")}}, ["temperature", "finite"]),
    ],
)
def test_an_empty_model_or_an_infinite_number_names_its_field(
    work: Path, student: dict[str, Any], needles: list[str]
) -> None:
    base = tiny()["students"][0]
    exp = write(work / "e.yaml", tiny(students=[{**base, **student}]))
    assert_bad_input(evaluate(exp, work / "runs"), *needles, store=work / "runs")


def test_a_negative_seed_is_refused(work: Path) -> None:
    exp = write(work / "e.yaml", tiny(seed=-3))
    assert_bad_input(evaluate(exp, work / "runs"), "seed", store=work / "runs")


@pytest.mark.parametrize(
    "topics, needle",
    [("a fine topic\nbell\x07rings\n", "control character"), ("x" * 2_000 + "\n", "longer than")],
)
def test_catalog_validate_refuses_control_characters_and_giant_topics(
    work: Path, topics: str, needle: str
) -> None:
    (work / "topics.txt").write_text(topics)
    result = run_cli("catalog", "validate", str(work / "topics.txt"))
    assert result.exit_code == 2 and needle in result.stderr, result.stderr
    assert "topics.txt:" in result.stderr


def test_mock_server_refuses_an_api_key_with_a_newline(work: Path) -> None:
    result = run_cli("mock-server", "--api-key", "abc\ndef", "--port", "0")
    assert_bad_input(result, "--api-key")


def test_a_newline_in_an_api_key_names_the_key_not_the_endpoint(
    work: Path, keyed_server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET + "\n")
    student = {
        "name": "s1",
        "backend": "openai",
        "model": "gpt-test",
        "base_url": keyed_server.base_url,
        "api_key_env": KEY_ENV,
    }
    exp = write(work / "e.yaml", tiny(students=[student]))
    result = evaluate(exp, work / "runs")
    assert_bad_input(result, KEY_ENV, "control character", store=work / "runs")
    assert "cannot reach" not in result.stderr and SECRET not in result.stderr


# ---- damaged run folders and empty runs (issue 24) -------------------------------------------
def test_generations_as_a_file_leaves_the_good_report(work: Path) -> None:
    """A finished run whose generations/ became a file: `report` refuses (it would otherwise
    rebuild a report of 0 generations over the good one) and `--resume` writes nothing."""
    exp = write(work / "e.yaml", tiny())
    assert evaluate(exp, work / "runs").exit_code == 0
    (run_dir,) = (work / "runs").glob("tiny-*")
    report = snapshot(run_dir / "report")
    shutil.rmtree(run_dir / "generations")
    (run_dir / "generations").write_text("oops")
    before = snapshot(run_dir)
    for result in (
        run_cli("report", str(run_dir)),
        evaluate(exp, work / "runs", "--resume"),
    ):
        assert_bad_input(result, f"{run_dir}/generations is a file", "damaged")
    assert snapshot(run_dir) == before and snapshot(run_dir / "report") == report


def test_aggregate_before_anything_was_generated_names_generation(work: Path) -> None:
    exp = write(work / "e.yaml", tiny())
    assert evaluate(exp, work / "runs").exit_code == 0
    (run_dir,) = (work / "runs").glob("tiny-*")
    empty = work / "empty"
    empty.mkdir()
    shutil.copy(run_dir / "run.json", empty / "run.json")
    result = run_cli("aggregate", str(empty))
    assert_bad_input(result, "no finished grades yet", "generation has not completed")
    assert "generations" not in result.stderr
    shutil.rmtree(run_dir / "grades")
    result = run_cli("aggregate", str(run_dir))
    assert_bad_input(result, "no finished grades yet", "grading has not completed")


def test_a_finished_run_resumes_while_its_endpoint_is_down(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing would be sent, so the endpoint is not checked; a run with work left still is."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    config = MockServerConfig(host="127.0.0.1", models={"gpt-test": 0.8}, seed=2, api_key=SECRET)
    with MockServer(config) as server:
        url = server.base_url
        exp = write(work / "e.yaml", tiny(students=[openai_student(url)]))
        assert evaluate(exp, work / "runs").exit_code == 0
    (run_dir,) = (work / "runs").glob("tiny-*")
    resumed = evaluate(exp, work / "runs", "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    shutil.rmtree(next((run_dir / "generations" / "s1").iterdir()))  # a unit to do again
    left = evaluate(exp, work / "runs", "--resume")
    assert_bad_input(left, "cannot reach", url)
