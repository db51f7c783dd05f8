"""Serving per-unit and per-model run the same store units: the pods' own commands (from the
Helm values `skillmix launch` builds) run here, shard by shard, against one mock server, and
the two reports are byte for byte the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from skillmix.k8s.profiles import ClusterProfile
from skillmix.k8s.values import build_values
from skillmix.loading import parse_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.pipeline.plan import plan_tasks
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store
from tests.helpers import run_cli

SEED = 7
SIDECAR = "http://localhost:8000/v1"
CREATED, REPORTED = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"


def experiment(serving: str, store: Path) -> dict[str, Any]:
    return {
        "name": "serving-modes",
        "seed": SEED,
        "ks": [2, 3],
        "combinations": 5,
        "generation_rounds": 2,
        "serving": serving,
        "students": [
            # two shards: each pod of the per-model Job takes its share of every unit
            {"name": "alpha", "backend": "mock", "model": "mock-a", "quality": 0.8, "replicas": 2},
            {"name": "beta", "backend": "mock", "model": "mock-b", "quality": 0.4},
        ],
        "grader": {"name": "judge", "backend": "mock", "model": "judge", "rounds": 2},
        "metrics": {"bootstrap_samples": 50},
        "store": str(store),
    }


def pods_of(values: dict[str, Any], serving: str) -> list[list[str]]:
    """The generation pods' client argv, as the chart places them (one per shard)."""
    jobs = values["modelGeneration"] if serving == "per-model" else values["generation"]
    other = values["generation"] if serving == "per-model" else values["modelGeneration"]
    assert jobs and not other
    pods = []
    for job in jobs:
        shards = values["students"][job["student"]]["replicas"]
        pods += [[*job["args"], "--shard", str(i)] for i in range(shards)]
    return pods


def run_as_pods(serving: str, store: Path, srv: MockServer) -> tuple[Path, list[list[str]]]:
    e = parse_experiment(experiment(serving, store))
    ctx = resolve_context(e)
    ctx.sharded = True
    ctx.created_at = CREATED  # both runs made "at once": only the serving differs
    run = RunStore(open_store(str(store)).child(ctx.run_id))
    run.write_run(ctx.to_run())
    profile = ClusterProfile(store=str(store))
    units = plan_tasks(e, sharded=True).units
    values = build_values(ctx, profile, "test", attempt=1, generation=units, grading=units)
    generation = pods_of(values, serving)

    def cli(args: list[str]) -> str:
        result = run_cli(*[srv.base_url if a == SIDECAR else a for a in args])
        assert result.exit_code == 0, result.stderr
        return result.stderr

    for args in generation:
        cli(args)
    for unit in values["grading"]:  # (their wait containers would pass: generation is done)
        cli(unit["args"])
    cli(values["aggregation"]["args"])
    return store / ctx.run_id, generation


def layout(run: Path) -> list[Path]:
    files = [p.relative_to(run) for p in run.rglob("*") if p.is_file()]
    return sorted(p.parent / "part" if p.name.startswith("part-") else p for p in files)


def test_per_model_report_is_byte_identical_to_per_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("skillmix.report.summary.utc_now", lambda: REPORTED)
    models = {"mock-a": 0.8, "mock-b": 0.4, "judge": 0.7}
    with MockServer(MockServerConfig(models=models, seed=SEED)) as srv:
        # the same store URI for both (the report names its folder), one after the other;
        # the first store (its response cache included) is moved away before the second run
        store = tmp_path / "store"
        unit_run, unit_pods = run_as_pods("per-unit", store, srv)
        store.rename(tmp_path / "per-unit")
        unit_run = tmp_path / "per-unit" / unit_run.name
        asked = srv.stats()["by_path"]["/v1/chat/completions"]
        model_run, model_pods = run_as_pods("per-model", store, srv)
        # the second run asked the models again (nothing came from the first one's cache)
        assert srv.stats()["by_path"]["/v1/chat/completions"] == 2 * asked
    assert unit_run.name == model_run.name  # serving is not part of the run id
    # per-unit: a pod per shard of each of the 8 units (alpha has 2 shards); per-model: a pod
    # per shard of each student, running its 4 units in turn
    assert len(unit_pods) == 4 * 2 + 4 and len(model_pods) == 2 + 1
    [alpha0, alpha1, beta] = model_pods
    assert alpha0[alpha0.index("--units") + 1] == "2:1,2:2,3:1,3:2"
    assert alpha0[-2:] == ["--shard", "0"] and alpha1[-2:] == ["--shard", "1"]
    assert "--budget-share" in alpha0  # each pod has its own mock sidecar
    assert "--shards" not in beta  # one shard: a plain Job
    # the same store layout: every part and manifest in the same place (parts are named by
    # the time they were written)
    unit_files, model_files = layout(unit_run), layout(model_run)
    assert unit_files == model_files
    assert any("shard-001-of-002" in str(p) for p in unit_files)
    report = [p for p in unit_files if p.parts[0] == "report"]
    assert {p.name for p in report} >= {"summary.json", "metrics.csv", "report.md"}
    assert len(report) >= 5  # the plots too
    for path in report:
        assert (unit_run / path).read_bytes() == (model_run / path).read_bytes(), path


def test_units_option_is_checked(tmp_path: Path) -> None:
    e = parse_experiment(experiment("per-model", tmp_path))
    ctx = resolve_context(e)
    run = RunStore(open_store(str(tmp_path)).child(ctx.run_id))
    run.write_run(ctx.to_run())
    uri = run.uri
    for extra, message in [
        (["--units", "2:1", "--k", "2"], "give either --k and --round"),
        ([], "give either --k and --round"),
        (["--units", "2-1"], "--units: expected K:R pairs"),
        (["--units", "2:1,2:1"], "--units: 2:1 is given twice"),
        (["--units", "9:1"], "k=9 is not in this run"),
    ]:
        result = run_cli("task", "generate", "--run", uri, "--student", "beta", *extra)
        assert result.exit_code == 2, (extra, result.stderr)
        assert message in result.stderr.strip().splitlines()[-1], (extra, result.stderr)
    assert sorted(p.name for p in Path(uri).iterdir()) == ["run.json"]


@pytest.mark.parametrize("serving", ["per-unit", "per-model"])
def test_plan_shape_for_both_modes(serving: str, tmp_path: Path) -> None:
    e = parse_experiment(experiment(serving, tmp_path))
    ctx = resolve_context(e)
    ctx.sharded = True
    units = plan_tasks(e, sharded=True).units
    values = build_values(
        ctx, ClusterProfile(store="s3://b/r"), "t", attempt=1, generation=units, grading=units
    )
    assert len(values["grading"]) == len(units)  # grading is per unit in both modes
    assert {s["serving"] for s in values["students"].values()} == {serving}


def test_a_per_model_relaunch_lists_only_unfinished_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A per-model pod that died after its first unit: the relaunch's Job names only the units
    not finished by every shard, and a shard skips what it had already finished."""
    from skillmix.k8s.launch import plan_launch

    # the plan from a local store (the chart wants an s3:// run; its rendering is not tested here)
    monkeypatch.setattr("skillmix.k8s.launch.helm_template", lambda *a, **k: "")

    e = parse_experiment(experiment("per-model", tmp_path))
    ctx = resolve_context(e)
    ctx.sharded = True
    run = RunStore(open_store(str(tmp_path)).child(ctx.run_id))
    run.write_run(ctx.to_run())
    profile = ClusterProfile(store=str(tmp_path))
    first = plan_launch(ctx, profile, "t", run)
    [alpha, beta] = first.values["modelGeneration"]
    with MockServer(MockServerConfig(models={"mock-a": 0.8, "mock-b": 0.4}, seed=SEED)) as srv:

        def pod(args: list[str], units: str, shard: str) -> str:
            args = [srv.base_url if a == SIDECAR else a for a in args]
            args[args.index("--units") + 1] = units  # it died after these units
            result = run_cli(*args, "--shard", shard)
            assert result.exit_code == 0, result.stderr
            return result.stderr

        pod(alpha["args"], "2:1,2:2", "0")  # alpha's shard 0: two units, then killed
        pod(alpha["args"], "2:1", "1")  # shard 1: one unit
        pod(beta["args"], "2:1,2:2,3:1,3:2", "0")  # beta finished
        # (the relaunch is attempt 1 again here: no launch record was written)
        again = plan_launch(ctx, profile, "t", run)
        [alpha2] = again.values["modelGeneration"]
        assert alpha2["units"] == [{"k": 2, "round": 2}, {"k": 3, "round": 1}, {"k": 3, "round": 2}]
        out = pod(alpha2["args"], "2:2,3:1,3:2", "0")
        assert out.count("already finished") == 1  # 2:2 on shard 0; the others generate
        assert len(again.values["grading"]) == 8  # nothing graded yet: every unit's grading
