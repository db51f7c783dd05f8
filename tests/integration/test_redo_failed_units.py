"""Units that finished with failed records are redone: by --resume locally, and by a relaunch on
Kubernetes, whose waits then require manifests written by the new attempt."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from skillmix.backends.factory import make_clients
from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from skillmix.loading import parse_experiment
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.generate import run_generate
from skillmix.pipeline.grade import run_grade
from skillmix.pipeline.plan import plan_tasks
from skillmix.pipeline.units import pending_units, unit_complete, unit_finished
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store
from tests.helpers import run_cli

MODELS = {"stu": 0.8, "grader-m": 0.95}


def experiment(base_url: str, store: Path) -> dict[str, Any]:
    model = {"backend": "mock", "base_url": base_url, "max_retries": 0, "timeout": 5}
    return {
        "name": "redo",
        "ks": [2],
        "combinations": 8,
        "store": str(store),
        "students": [{"name": "stu", "model": "stu", **model}],
        "grader": {"name": "grader-m", "model": "grader-m", "rounds": 2, **model},
    }


def test_relaunch_waits_for_fresh_manifests_and_redo_clears_failures(tmp_path: Path) -> None:
    store = tmp_path / "store"
    flaky = MockServerConfig(models=MODELS, seed=3)
    with MockServer(replace(flaky, fail_rate=0.5)) as server:
        data = experiment(server.base_url, store)
        (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
        result = run_cli("evaluate", "-f", str(tmp_path / "exp.yaml"), "--no-progress")
    assert result.exit_code == 1, result.stderr  # records failed for good: the run failed
    (run_dir,) = [p for p in store.iterdir() if p.name != "_cache"]
    run = RunStore(open_store(str(run_dir)))
    ctx = RunContext.from_run_json(run.read_run_json() or {})
    unit = plan_tasks(ctx.experiment).units[0]
    # finished (a downstream wait would proceed) but not complete (a relaunch redoes it)
    assert unit_finished(run, ctx, "generate", *unit) and unit_finished(run, ctx, "grade", *unit)
    assert not unit_complete(run, ctx, "generate", *unit)

    # a relaunch, attempt 2, redoes the unit: its waits must not accept the old manifests
    values = {
        "generation": [dict(zip(("student", "k", "round"), unit, strict=True))],
        "grading": [],
    }
    run.store.write_bytes(
        "launches/attempt-002.json", json.dumps({"attempt": 2, "values": values}).encode()
    )
    assert pending_units(run, ctx, "generate", [unit], relaunched=[unit], attempt=2) == [unit]
    waited = run_cli(
        "task",
        "wait",
        "--run",
        str(run_dir),
        "--phase",
        "generate",
        "--attempt",
        "2",
        "--timeout",
        "0.3",
        "--interval",
        "0.1",
    )
    assert waited.exit_code == 1 and "timed out" in waited.stderr

    with MockServer(flaky) as server:  # healthy now
        spec = parse_experiment(
            {
                **data,
                "students": [{**data["students"][0], "base_url": server.base_url}],
                "grader": {**data["grader"], "base_url": server.base_url},
            }
        )
        ctx.experiment = spec

        async def redo() -> None:
            clients = make_clients(ctx.model_specs(), open_store(str(store)), None)
            try:
                generated = await run_generate(ctx, run, clients["stu"], unit, attempt=2)
                assert not generated.skipped and generated.failed == 0
                graded = await run_grade(ctx, run, clients["grader-m"], unit, attempt=2)
                assert not graded.skipped and graded.failed == 0
            finally:
                for c in clients.values():
                    await c.close()

        asyncio.run(redo())
    manifest = run.manifest(f"generations/{unit[0]}/k{unit[1]}/r{unit[2]}")
    assert manifest is not None and manifest.attempt == 2 and manifest.failed == 0
    assert unit_complete(run, ctx, "generate", *unit) and unit_complete(run, ctx, "grade", *unit)
    assert pending_units(run, ctx, "generate", [unit], relaunched=[unit], attempt=2) == []
    waited = run_cli(
        "task",
        "wait",
        "--run",
        str(run_dir),
        "--phase",
        "generate",
        "--attempt",
        "2",
        "--timeout",
        "5",
        "--interval",
        "0.1",
    )
    assert waited.exit_code == 0, waited.stderr
    # the redone unit holds one record per combination and grading round, no duplicates
    gens = run.generation_records()
    assert sorted(g.index for g in gens) == list(range(8)) and all(g.status == "ok" for g in gens)
    grades = run.grade_records()
    assert sorted((g.grading_round, g.index) for g in grades) == [
        (r, i) for r in (1, 2) for i in range(8)
    ]
