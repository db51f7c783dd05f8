"""End-to-end local runs through the CLI: the local executor, the task entrypoints, resume,
overwrite, the report commands and an S3 store (moto), all on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from skillmix.executors.local import prepare_run
from skillmix.loading import load_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.records import GenerationRecord, GradeRecord
from skillmix.store.runs import RunStore
from tests.helpers import run_cli

STUDENTS = {"alpha": ("mock-a", 0.9), "beta": ("mock-b", 0.5)}
GRADER = ("judge", "mock-grader", 0.95)
KS = (2, 3)
COMBINATIONS = 6
GENERATION_ROUNDS = 2
GRADING_ROUNDS = 3
SEED = 10
SECRET_ENV = "SKILLMIX_TEST_STUDENT_KEY"
SECRET = "sk-test-do-not-leak-8c41f0"


def experiment_data(
    store: str | Path, name: str = "tiny", base_url: str | None = None
) -> dict[str, Any]:
    students = []
    for student, (model, quality) in STUDENTS.items():
        spec: dict[str, Any] = {
            "name": student,
            "backend": "mock",
            "model": model,
            "quality": quality,
            "api_key_env": SECRET_ENV,
        }
        if base_url:
            spec["base_url"] = base_url
        students.append(spec)
    grader: dict[str, Any] = {
        "name": GRADER[0],
        "backend": "mock",
        "model": GRADER[1],
        "quality": GRADER[2],
        "rounds": GRADING_ROUNDS,
    }
    if base_url:
        grader["base_url"] = base_url
    return {
        "name": name,
        "seed": SEED,
        "ks": list(KS),
        "combinations": COMBINATIONS,
        "generation_rounds": GENERATION_ROUNDS,
        "students": students,
        "grader": grader,
        "store": str(store),
    }


def write_experiment(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def mock_server(**overrides: Any) -> MockServer:
    """An external server that answers exactly as the built-in one for this experiment."""
    models = {model: quality for model, quality in STUDENTS.values()}
    models[GRADER[1]] = GRADER[2]
    return MockServer(MockServerConfig(models=models, seed=SEED, **overrides))


def completions(srv: MockServer) -> int:
    return int(srv.stats()["by_path"].get("/v1/chat/completions", 0))


def cli_ok(*args: str) -> Any:
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    return result


def summary_of(run_dir: Path) -> dict[str, Any]:
    text = (run_dir / "report" / "summary.json").read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


def metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], summary_of(run_dir)["metrics"]["rows"])


def without_details(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    details = ("per_skill", "per_topic", "combinations")
    return [{k: v for k, v in row.items() if k not in details} for row in rows]


def the_run(store: Path) -> Path:
    runs = [p for p in store.iterdir() if p.is_dir() and not p.name.startswith("_")]
    assert len(runs) == 1, runs
    return runs[0]


@dataclass
class LocalRun:
    experiment: Path
    store: Path
    run_dir: Path
    stdout: str
    stderr: str
    seconds: float


@pytest.fixture(scope="module")
def secret_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_ENV, SECRET)
        yield


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, secret_env: None) -> LocalRun:
    """One evaluation on the built-in mock backend; several tests read its results."""
    base = tmp_path_factory.mktemp("local")
    store = base / "store"
    exp = write_experiment(base / "exp.yaml", experiment_data(store))
    started = time.monotonic()
    result = cli_ok("evaluate", "-f", str(exp))
    seconds = time.monotonic() - started
    return LocalRun(exp, store, the_run(store), result.stdout, result.stderr, seconds)


# ---- one local run -------------------------------------------------------------------------


def test_evaluate_prints_table(local_run: LocalRun) -> None:
    out = local_run.stdout
    assert "SKILL-MIX metrics" in out
    assert local_run.run_dir.name in out
    for student in STUDENTS:
        assert student in out
    assert "Ratio of Full Marks" in out
    assert f"run {local_run.run_dir.name} finished" in local_run.stderr
    assert "report.md" in local_run.stderr
    assert local_run.seconds < 60  # a tiny run: seconds, even on a loaded machine


def test_run_id_is_name_and_config_hash(local_run: LocalRun) -> None:
    name = local_run.run_dir.name
    assert re.fullmatch(r"tiny-[0-9a-f]{8}", name)
    assert resolve_context(load_experiment(local_run.experiment)).run_id == name
    data = json.loads((local_run.run_dir / "run.json").read_text(encoding="utf-8"))
    assert data["run_id"] == name


def test_json_format_rows(local_run: LocalRun) -> None:
    result = cli_ok("evaluate", "-f", str(local_run.experiment), "--resume", "--format", "json")
    doc = json.loads(result.stdout)  # exactly one JSON document
    rows = doc["rows"]
    assert {(r["student"], r["k"]) for r in rows} == {(s, k) for s in STUDENTS for k in KS}
    assert len(rows) == len(STUDENTS) * len(KS)
    for row in rows:
        assert row["n"] == COMBINATIONS
        assert row["grader"] == GRADER[0]
        assert row["unparsed"] == 0
        for metric in ("full_marks", "all_skills", "skill_fraction"):
            assert 0.0 <= row[metric]["mean"] <= 1.0
    assert without_details(metric_rows(local_run.run_dir)) == rows


def test_run_json_contents(local_run: LocalRun) -> None:
    text = (local_run.run_dir / "run.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["kind"] == "evaluation"
    experiment = data["experiment"]
    assert experiment["name"] == "tiny"
    assert experiment["ks"] == list(KS)
    assert [s["name"] for s in experiment["students"]] == list(STUDENTS)
    assert experiment["students"][0]["sampling"]["max_tokens"] == 512  # resolved defaults
    assert experiment["grader"]["rounds"] == GRADING_ROUNDS
    skills = data["catalog"]["skills"]
    assert len(skills) > 100
    assert {"name", "definition", "example", "category"} <= set(skills[0])
    assert len(data["catalog"]["topics"]) > 100
    assert data["prompts"]["generation"]["name"] == "two-turn-v1"
    assert len(data["prompts"]["generation"]["turns"]) == 2
    assert all(isinstance(t, str) and t for t in data["prompts"]["generation"]["turns"])
    assert data["prompts"]["grading"]["turns"]
    assert data["prompts"]["grading"]["style"] == "table"
    # secrets stay in the environment: the variable's name is recorded, its value never
    assert SECRET not in text
    assert experiment["students"][0]["api_key_env"] == SECRET_ENV
    for path in local_run.run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_layout(local_run: LocalRun) -> None:
    run = local_run.run_dir
    for student in STUDENTS:
        for k in KS:
            for g in range(1, GENERATION_ROUNDS + 1):
                assert (run / "generations" / student / f"k{k}" / f"r{g}" / "_SUCCESS").is_file()
                for r in range(1, GRADING_ROUNDS + 1):
                    unit = run / "grades" / GRADER[0] / student / f"k{k}" / f"r{g}" / f"g{r}"
                    assert (unit / "_SUCCESS").is_file(), unit
    for name in ("summary.json", "metrics.csv", "report.md"):
        assert (run / "report" / name).is_file()
    manifests = list(run.rglob("_SUCCESS"))
    units = len(STUDENTS) * len(KS) * GENERATION_ROUNDS
    assert len(manifests) == units * (1 + GRADING_ROUNDS)
    assert not list(run.rglob(".tmp-*"))
    assert (local_run.store / "_cache").is_dir()  # the shared response cache, beside the run


def test_manifests_list_exactly_the_parts(local_run: LocalRun) -> None:
    run_store = run_store_at(local_run.run_dir)
    for manifest_path in local_run.run_dir.rglob("_SUCCESS"):
        folder = manifest_path.parent
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed = {p["key"] for p in manifest["parts"]}
        present = {p.name for p in folder.iterdir() if p.name.startswith("part-")}
        assert listed == present, folder
        assert not [p for p in folder.iterdir() if p.is_dir()]
        total = 0
        for part in manifest["parts"]:
            data = (folder / part["key"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == part["sha256"]
            lines = [line for line in data.splitlines() if line.strip()]
            assert len(lines) == part["records"]
            total += part["records"]
        assert manifest["records"] == total
        assert manifest["failed"] == 0
        is_generation = folder.relative_to(local_run.run_dir).parts[0] == "generations"
        prefix = folder.relative_to(local_run.run_dir).as_posix()
        records: list[GenerationRecord] | list[GradeRecord] | None = (
            run_store.finished_records(prefix, GenerationRecord)
            if is_generation
            else run_store.finished_records(prefix, GradeRecord)
        )
        assert records is not None and len(records) == total == COMBINATIONS
        assert sorted(r.index for r in records) == list(range(COMBINATIONS))
    generations = run_store.generation_records()
    assert len(generations) == len(STUDENTS) * len(KS) * GENERATION_ROUNDS * COMBINATIONS
    assert all(g.status == "ok" and g.answer for g in generations)
    grades = run_store.grade_records()
    assert len(grades) == len(generations) * GRADING_ROUNDS


def run_store_at(path: Path) -> RunStore:
    from skillmix.store.local import LocalStore

    return RunStore(LocalStore(path))


def test_report_and_aggregate_commands(local_run: LocalRun, tmp_path: Path) -> None:
    out = tmp_path / "report-copy"
    result = cli_ok("report", str(local_run.run_dir), "--out", str(out))
    written = {p.name for p in out.iterdir()}
    assert {"metrics.csv", "report.md", "summary.json"} <= written
    for name in written:
        assert (local_run.run_dir / "report" / name).exists(), name
    assert "SKILL-MIX metrics" in result.stdout
    copied = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert copied["metrics"]["rows"] == metric_rows(local_run.run_dir)
    assert (out / "metrics.csv").read_bytes() == (
        local_run.run_dir / "report" / "metrics.csv"
    ).read_bytes()
    assert "| student |" in (out / "report.md").read_text(encoding="utf-8")
    summary_rows = metric_rows(local_run.run_dir)
    plain = json.loads(cli_ok("aggregate", str(local_run.run_dir), "--format", "json").stdout)
    assert plain["rows"] == without_details(summary_rows)
    detailed = json.loads(
        cli_ok("aggregate", str(local_run.run_dir), "--format", "json", "--details").stdout
    )
    assert detailed["rows"] == summary_rows
    as_json = json.loads(cli_ok("report", str(local_run.run_dir), "--format", "json").stdout)
    assert as_json["metrics"]["rows"] == summary_rows


def test_existing_run_needs_resume_or_overwrite(local_run: LocalRun) -> None:
    before = sorted(p for p in local_run.run_dir.rglob("*"))
    result = run_cli("evaluate", "-f", str(local_run.experiment))
    assert result.exit_code == 2
    assert "already exists" in result.stderr and "--resume" in result.stderr
    assert sorted(p for p in local_run.run_dir.rglob("*")) == before
    both = run_cli("evaluate", "-f", str(local_run.experiment), "--resume", "--overwrite")
    assert both.exit_code == 2


# ---- resume and overwrite against an external server ---------------------------------------


def test_resume_and_overwrite_make_no_model_requests(tmp_path: Path, secret_env: None) -> None:
    with mock_server() as srv:
        store = tmp_path / "store"
        exp = write_experiment(tmp_path / "exp.yaml", experiment_data(store, base_url=srv.base_url))
        cli_ok("evaluate", "-f", str(exp))
        run_dir = the_run(store)
        first_rows = metric_rows(run_dir)
        first_created = json.loads((run_dir / "run.json").read_text())["created_at"]
        asked = completions(srv)
        gen_turns = len(STUDENTS) * len(KS) * GENERATION_ROUNDS * COMBINATIONS * 2
        assert asked >= gen_turns  # two turns per generation, plus grading

        cli_ok("evaluate", "-f", str(exp), "--resume")
        assert completions(srv) == asked  # nothing asked again
        assert metric_rows(run_dir) == first_rows
        assert json.loads((run_dir / "run.json").read_text())["created_at"] == first_created

        # --overwrite replaces the run folder; the store's response cache answers every request
        (run_dir / "stray.txt").write_text("left from an old run")
        old_parts = {p.name for p in run_dir.rglob("part-*.jsonl")}
        cli_ok("evaluate", "-f", str(exp), "--overwrite")
        assert completions(srv) == asked
        assert not (run_dir / "stray.txt").exists()
        assert not old_parts & {p.name for p in run_dir.rglob("part-*.jsonl")}
        assert json.loads((run_dir / "run.json").read_text())["created_at"] != first_created
        assert metric_rows(run_dir) == first_rows
        cached = [
            json.loads(line)
            for p in run_dir.glob("generations/*/*/*/part-*.jsonl")
            for line in p.read_text().splitlines()
        ]
        assert cached and all(r["usage"]["cached"] for r in cached)


# ---- generate, then score ------------------------------------------------------------------


def test_generate_then_score_equals_evaluate(
    local_run: LocalRun, tmp_path: Path, secret_env: None
) -> None:
    store = tmp_path / "store"
    exp = write_experiment(tmp_path / "exp.yaml", experiment_data(store))
    generated = cli_ok("generate", "-f", str(exp))
    run_uri = generated.stdout.strip().splitlines()[-1]
    run_dir = Path(run_uri)
    assert run_dir.name == local_run.run_dir.name
    assert list(run_dir.glob("generations/*/*/*/_SUCCESS"))
    assert not (run_dir / "grades").exists()
    assert not (run_dir / "report").exists()
    scored = cli_ok("score", run_uri, "--format", "json")
    rows = json.loads(scored.stdout)["rows"]
    assert metric_rows(run_dir) == metric_rows(local_run.run_dir)
    assert rows == without_details(metric_rows(local_run.run_dir))


def test_score_by_bare_name_from_inside_the_store_keeps_the_cache_beside_the_run(
    tmp_path: Path, secret_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: `skillmix score NAME` run from inside the store folder opened the response cache
    inside the run folder; `evaluate` keeps it beside the run (in the store)."""
    store = tmp_path / "store"
    exp = write_experiment(tmp_path / "exp.yaml", experiment_data(store))
    run_dir = Path(cli_ok("generate", "-f", str(exp)).stdout.strip().splitlines()[-1])
    monkeypatch.chdir(store)
    cli_ok("score", run_dir.name)
    assert not (run_dir / "_cache").exists()
    assert list((store / "_cache").rglob("*.json"))  # grading replies cached in the store
    assert (run_dir / "report" / "summary.json").is_file()


# ---- the task entrypoints, unit by unit ----------------------------------------------------


def test_task_commands_equal_local_executor(
    local_run: LocalRun, tmp_path: Path, secret_env: None
) -> None:
    store = tmp_path / "store"
    experiment = load_experiment(write_experiment(tmp_path / "exp.yaml", experiment_data(store)))
    ctx, _root, run, exists = prepare_run(experiment, None, resume=False, overwrite=False)
    assert not exists
    run.write_run_json(ctx.to_run_json())
    uri = run.uri
    assert Path(uri).name == local_run.run_dir.name

    # bad input: exit 2, one line, nothing written
    bad = run_cli(
        "task", "generate", "--run", uri, "--student", "alpha", "--k", "99", "--round", "1"
    )
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: k=99 is not in this run")
    bad = run_cli("task", "grade", "--run", uri, "--student", "nobody", "--k", "2", "--round", "1")
    assert bad.exit_code == 2
    assert sorted(p.name for p in Path(uri).iterdir()) == ["run.json"]

    # waiting for an unfinished unit gives up after its timeout
    started = time.monotonic()
    waited = run_cli(
        "task", "wait", "--run", uri, "--phase", "generate", "--student", "alpha",
        "--k", "2", "--round", "1", "--timeout", "1", "--interval", "0.2",
    )  # fmt: skip
    assert waited.exit_code == 1
    assert time.monotonic() - started < 10
    last = waited.stderr.strip().splitlines()[-1]
    assert last.startswith("error: timed out after 1s waiting for generate of 1 units")
    assert sum(line.startswith("error:") for line in waited.stderr.splitlines()) == 1

    with mock_server() as srv:
        units = [(s, k, g) for s in STUDENTS for k in KS for g in range(1, GENERATION_ROUNDS + 1)]
        for student, k, g in units:
            result = cli_ok(
                "task", "generate", "--run", uri, "--student", student, "--k", str(k),
                "--round", str(g), "--base-url", srv.base_url,
            )  # fmt: skip
            assert f"generated {COMBINATIONS} records, 0 failed" in result.stderr
        cli_ok("task", "wait", "--run", uri, "--phase", "generate", "--timeout", "5")
        for student, k, g in units:
            cli_ok(
                "task", "grade", "--run", uri, "--student", student, "--k", str(k),
                "--round", str(g), "--base-url", srv.base_url, "--wait-timeout", "5",
            )  # fmt: skip
        # a finished unit is skipped without asking the model again
        asked = completions(srv)
        again = cli_ok(
            "task", "generate", "--run", uri, "--student", "alpha", "--k", "2",
            "--round", "1", "--base-url", srv.base_url,
        )  # fmt: skip
        assert "already finished" in again.stderr
        assert completions(srv) == asked
    cli_ok("task", "wait", "--run", uri, "--phase", "grade", "--timeout", "5")
    aggregated = cli_ok("task", "aggregate", "--run", uri, "--wait-timeout", "5")
    assert f"aggregated {len(STUDENTS) * len(KS)} rows" in aggregated.stderr
    assert metric_rows(Path(uri)) == metric_rows(local_run.run_dir)


# ---- an S3 store ---------------------------------------------------------------------------


def test_s3_store_run(local_run: LocalRun, s3_env: str, tmp_path: Path, secret_env: None) -> None:
    from skillmix.store.uri import open_store

    exp = write_experiment(tmp_path / "exp.yaml", experiment_data(tmp_path / "unused"))
    result = cli_ok("evaluate", "-f", str(exp), "--store", s3_env, "--format", "json")
    run_uri = f"{s3_env}/{local_run.run_dir.name}"
    assert run_uri in result.stderr
    assert not (tmp_path / "unused").exists()
    s3_rows = json.loads(cli_ok("aggregate", run_uri, "--format", "json").stdout)["rows"]
    local_rows = json.loads(cli_ok("aggregate", str(local_run.run_dir), "--format", "json").stdout)[
        "rows"
    ]
    assert s3_rows == local_rows
    assert json.loads(result.stdout)["rows"] == local_rows
    keys = open_store(run_uri).list_keys()
    assert "run.json" in keys
    assert "report/summary.json" in keys
    assert sum(k.endswith("/_SUCCESS") for k in keys) == len(
        list(local_run.run_dir.rglob("_SUCCESS"))
    )
    assert open_store(s3_env).list_keys("_cache")  # the cache lives beside the run in S3 too


# ---- prompt and grader variants ------------------------------------------------------------


def test_points_prompt_and_no_n(tmp_path: Path, secret_env: None) -> None:
    log = tmp_path / "requests.jsonl"
    with mock_server(request_log=str(log)) as srv:
        data = experiment_data(tmp_path / "store", name="points", base_url=srv.base_url)
        data["prompts"] = {"grading": "points-v1"}
        data["grader"]["use_n"] = "never"
        exp = write_experiment(tmp_path / "exp.yaml", data)
        result = cli_ok("evaluate", "-f", str(exp), "--format", "json")
        asked = completions(srv)
    rows = json.loads(result.stdout)["rows"]
    assert {(r["student"], r["k"]) for r in rows} == {(s, k) for s in STUDENTS for k in KS}
    assert all(r["n"] == COMBINATIONS for r in rows)
    run_dir = the_run(tmp_path / "store")
    summary = summary_of(run_dir)
    assert summary["prompts"]["grading"]["name"] == "points-v1"
    assert summary["prompts"]["grading"]["style"] == "points"
    store = run_store_at(run_dir)
    generations = store.generation_records()
    grades = store.grade_records()
    assert all(g.style == "points" and g.prompt_version == "points-v1" for g in grades)
    assert sum(g.status == "ok" for g in grades) > 0.9 * len(grades)
    # use_n: never asks once per grading round (n=1), re-asks included
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    chat = [entry for entry in logged if entry["path"] == "/v1/chat/completions"]
    assert len(chat) == asked
    assert all(entry["n"] in (1, None) for entry in chat)
    generation_requests = sum(len(g.turns) for g in generations)
    assert asked == generation_requests + sum(g.attempts for g in grades)
