"""Reasoning tasks listed in an experiment file (``tasks:``): asked of every student beside
SKILL-MIX into the same run folder, scored at aggregation, written in SkyThought's layout
under report/tasks/ with the boards in report/tasks.html; resumable like generation units;
the same numbers as ``skillmix evaluate --task``. Mock models with the answer key: the numbers
are checked, not just produced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.loading import load_experiment
from skillmix.pipeline.context import resolve_context
from tests.helpers import run_cli

DATA = Path(__file__).resolve().parents[1] / "data" / "tasks"
pytestmark = pytest.mark.timeout(240)


def experiment(tmp_path: Path, **overrides: Any) -> Path:
    data: dict[str, Any] = {
        "name": "tasks",
        "seed": 3,
        "ks": [2],
        "combinations": 3,
        "students": [
            {"name": "strong", "backend": "mock", "model": "mock-strong", "quality": 0.9},
            {"name": "weak", "backend": "mock", "model": "mock-weak", "quality": 0.3},
        ],
        "grader": {"name": "g", "backend": "mock", "model": "mock-g", "rounds": 1},
        "metrics": {"bootstrap_samples": 10},
        "tasks": [
            {"name": "math500", "n": 4, "dataset_file": str(DATA / "math500.jsonl")},
            {"name": "gpqa_diamond", "n": 2, "dataset_file": str(DATA / "gpqa_diamond.jsonl")},
        ],
    }
    data.update(overrides)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def evaluate(exp: Path, store: Path, *extra: str) -> Path:
    result = run_cli("evaluate", "-f", str(exp), "--store", str(store), "--no-progress", *extra)
    assert result.exit_code == 0, result.stderr
    (run_dir,) = [p for p in store.iterdir() if p.name.startswith("tasks-")]
    return run_dir


def summaries(run_dir: Path) -> dict[str, dict[str, Any]]:
    """model_task -> summary.json of report/tasks/."""
    out = {}
    for path in sorted((run_dir / "report" / "tasks").glob("*/summary.json")):
        data = json.loads(path.read_text())
        config = data["configuration"]
        out[f"{config['model']}_{config['task']}"] = data
    return out


def test_tasks_run_beside_skillmix_into_one_run_folder_and_report(tmp_path: Path) -> None:
    run_dir = evaluate(experiment(tmp_path), tmp_path / "store")
    assert (run_dir / "report" / "summary.json").is_file()  # SKILL-MIX ran too
    found = summaries(run_dir)
    assert sorted(found) == [
        "mock-strong_gpqa_diamond",
        "mock-strong_math500",
        "mock-weak_gpqa_diamond",
        "mock-weak_math500",
    ]
    for task, problems, n in (("math500", 12, 4), ("gpqa_diamond", 8, 2)):
        strong, weak = found[f"mock-strong_{task}"], found[f"mock-weak_{task}"]
        assert strong["accuracy"] > 0.6 > 0.4 > weak["accuracy"]
        assert sorted(strong["pass_at_k"]) == sorted({f"k={k}" for k in (1, 2, n)})
        assert strong["skillmix"]["problems_planned"] == strong["skillmix"]["problems_done"]
        assert strong["skillmix"]["problems_done"] == problems
        folder = next((run_dir / "report" / "tasks").glob(f"mock-strong_{task}_*"))
        results = json.loads((folder / "results.json").read_text())
        assert len(results) == problems
        entry = next(iter(results.values()))
        assert len(entry["responses"]) == n and len(entry["token_usages"]) == n
        assert {"content", "correctness", "reason"} <= set(entry["responses"][0])
        assert entry["input_conversation"][-1]["role"] == "user"
        correct = sum(r["correctness"] for e in results.values() for r in e["responses"])
        assert correct / (problems * n) == pytest.approx(strong["accuracy"], abs=1e-4)
    html = (run_dir / "report" / "tasks.html").read_text()
    assert "math500" in html and "gpqa_diamond" in html and "mock-weak" in html
    # SkyThought's layout: skillmix's own readers take it as they take SkyThought's folders
    board = run_cli("leaderboard", str(run_dir / "report" / "tasks"), "--format", "json")
    assert board.exit_code == 0, board.stderr
    assert {b["task"] for b in json.loads(board.stdout)} == {"math500", "gpqa_diamond"}
    folder = next((run_dir / "report" / "tasks").glob("mock-weak_math500_*"))
    rescored = run_cli("score", "--task", "math500", "--run-dir", str(folder))
    assert rescored.exit_code == 0, rescored.stderr
    after = json.loads((folder / "summary.json").read_text())
    assert after["accuracy"] == found["mock-weak_math500"]["accuracy"]


def test_the_same_numbers_as_evaluate_task(tmp_path: Path) -> None:
    """One student, no system prompt: the experiment's math500 run and `skillmix evaluate
    --task math500` send the same requests, so the mock gives the same answers and numbers."""
    students = [
        {
            "name": "strong",
            "backend": "mock",
            "model": "mock-strong",
            "quality": 0.9,
            "system_prompt": None,
        }
    ]
    run_dir = evaluate(experiment(tmp_path, students=students), tmp_path / "store")
    ours = summaries(run_dir)["mock-strong_math500"]
    args = ["--task", "math500", "--model", "mock-strong", "--backend", "mock"]
    args += ["--backend-args", "quality=0.9", "--n", "4", "--seed", "3"]
    args += ["--dataset-file", str(DATA / "math500.jsonl"), "--result-dir", str(tmp_path / "rd")]
    alone = run_cli("evaluate", *args)
    assert alone.exit_code == 0, alone.stderr
    (summary,) = (tmp_path / "rd").glob("*/summary.json")
    theirs = json.loads(summary.read_text())
    assert ours["accuracy"] == theirs["accuracy"]
    assert ours["pass_at_k"] == theirs["pass_at_k"]


def test_a_resume_redoes_only_an_unfinished_task_unit(tmp_path: Path) -> None:
    exp = experiment(tmp_path)
    run_dir = evaluate(exp, tmp_path / "store")
    before = summaries(run_dir)
    unit = run_dir / "tasks" / "math500" / "weak" / "s0of1"
    other = run_dir / "tasks" / "math500" / "strong" / "s0of1"
    kept = sorted(p.name for p in other.iterdir())
    (unit / "_SUCCESS").unlink()  # a crash before the manifest: its parts stay
    for part in sorted(unit.glob("part-*"))[1:]:
        part.unlink()  # ... and only the first part had been written
    evaluate(exp, tmp_path / "store", "--resume")
    assert (unit / "_SUCCESS").is_file()
    assert sorted(p.name for p in other.iterdir()) == kept  # a finished unit is not touched
    assert summaries(run_dir) == before  # the cache and the seeded mock answer the same


def test_the_run_id_covers_the_tasks_and_their_files(tmp_path: Path) -> None:
    def run_id(**overrides: Any) -> str:
        return resolve_context(load_experiment(experiment(tmp_path, **overrides))).run_id

    base = run_id()
    assert run_id(tasks=[]) != base
    copy = tmp_path / "math.jsonl"
    shutil.copy(DATA / "math500.jsonl", copy)
    moved = [{"name": "math500", "n": 4, "dataset_file": str(copy)}]
    with_copy = run_id(tasks=moved)
    copy.write_text(copy.read_text().replace("3+4", "3+5"))
    assert run_id(tasks=moved) != with_copy  # the file's content, not its path
    sharded = [{"name": "math500", "n": 4, "dataset_file": str(copy), "shards": 3}]
    assert run_id(tasks=sharded) == run_id(tasks=moved)  # shards do not change results


@pytest.mark.parametrize(
    "task, needle",
    [
        ({"name": "no_such_task"}, "unknown task 'no_such_task'"),
        ({"name": "math500", "dataset_file": "/nowhere.jsonl"}, "tasks.0: /nowhere.jsonl"),
        ({"name": "math500", "n": 0}, "tasks.0.n"),
        ({"name": "math500", "shots": 5}, "tasks.0.shots"),
    ],
)
def test_a_bad_task_is_one_line_and_writes_nothing(
    tmp_path: Path, task: dict[str, Any], needle: str
) -> None:
    exp = experiment(tmp_path, tasks=[task])
    result = run_cli("evaluate", "-f", str(exp), "--store", str(tmp_path / "store"))
    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "store").exists()


def test_render_has_one_indexed_job_per_task_and_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart renders a reasoning task as generation Jobs labelled with the task, running
    `skillmix task reason`, Indexed over the task's shards (tests/cluster runs them)."""
    config = tmp_path / "skillmix.yaml"
    profile = {"namespace": "evals", "image": "r:5000/skillmix:1", "store": "s3://b/runs"}
    config.write_text(yaml.safe_dump({"clusters": {"p": profile}}))
    monkeypatch.setenv("SKILLMIX_CONFIG", str(config))
    tasks = [
        {"name": "math500", "n": 4, "shards": 3, "dataset_file": str(DATA / "math500.jsonl")},
        {"name": "gpqa_diamond", "dataset_file": str(DATA / "gpqa_diamond.jsonl")},
    ]
    result = run_cli("render", "-f", str(experiment(tmp_path, tasks=tasks)), "--cluster", "p")
    assert result.exit_code == 0, result.stderr
    jobs = [
        d
        for d in yaml.safe_load_all(result.stdout)
        if d and d["kind"] == "Job" and "skillmix.io/task" in d["metadata"]["labels"]
    ]
    found = {
        (j["metadata"]["labels"]["skillmix.io/task"], j["metadata"]["labels"]["skillmix.io/student"]):
        j for j in jobs
    }  # fmt: skip
    assert sorted(found) == [
        (t, s) for t in ("gpqa_diamond", "math500") for s in ("strong", "weak")
    ]
    math = found[("math500", "weak")]["spec"]
    assert math["completions"] == 3 and math["completionMode"] == "Indexed"
    client = next(c for c in math["template"]["spec"]["containers"] if c["name"] == "client")
    assert client["args"][:2] == ["task", "reason"] and "--shards" in client["args"]
    # a mock student's task pod answers from the key itself: no model sidecar
    assert not math["template"]["spec"].get("initContainers")


def test_num_replicas_is_skythoughts_name_for_shards(tmp_path: Path) -> None:
    """In an experiment, SkyThought's `num_replicas` means `shards`; on the quick form (one
    local server) it is refused with where it does apply."""
    tasks = [{"name": "math500", "num_replicas": 4, "dataset_file": str(DATA / "math500.jsonl")}]
    assert load_experiment(experiment(tmp_path, tasks=tasks)).tasks[0].shards == 4
    args = ["--task", "math500", "--model", "m", "--backend", "mock"]
    result = run_cli("evaluate", *args, "--backend-args", "num_replicas=2")
    assert result.exit_code == 2 and "num_replicas splits a task's problems" in result.stderr


def test_the_leaderboard_example_resolves() -> None:
    """examples/leaderboard.yaml (make demo-tasks): its task files are found from its folder."""
    example = Path(__file__).resolve().parents[2] / "examples" / "leaderboard.yaml"
    ctx = resolve_context(load_experiment(example))
    assert [t.name for t in ctx.experiment.tasks] == ["math500", "gpqa_diamond"]
    assert all(Path(t.dataset_file or "").is_file() for t in ctx.experiment.tasks)
