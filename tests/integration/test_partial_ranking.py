"""Failed units must not re-rank models silently (issue 23).

Two identical mock models (same model id, same server settings), one behind a server that fails
40% of the requests, without retries. The flaky twin must not be ranked (above or below its
complete twin): summary.json says the run is partial, reports planned against done per model
and phase, and every report (summary, Markdown, HTML, CSV, compare, aggregate) says why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from skillmix.pipeline.aggregate import COMPLETENESS_RULE
from tests.helpers import run_cli

pytestmark = pytest.mark.timeout(120)

SERVER = MockServerConfig(host="127.0.0.1", models={"twin": 0.6, "judge": 0.95}, seed=4)
KS = [2, 3]
COMBINATIONS = 10
GENERATION_ROUNDS = 2


def _experiment(clean_url: str, flaky_url: str, store: Path) -> dict[str, Any]:
    common = {"backend": "mock", "max_retries": 0, "timeout": 5}
    return {
        "name": "twins",
        "seed": 2,
        "ks": KS,
        "combinations": COMBINATIONS,
        "generation_rounds": GENERATION_ROUNDS,
        "students": [
            {"name": "complete-twin", "model": "twin", "base_url": clean_url, **common},
            {"name": "flaky-twin", "model": "twin", "base_url": flaky_url, **common},
        ],
        "grader": {"name": "judge", "model": "judge", "rounds": 1, "base_url": clean_url, **common},
        "metrics": {"bootstrap_samples": 100},
        "store": str(store),
    }


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("twins")
    with MockServer(SERVER) as clean, MockServer(SERVER, fail_rate=0.4) as flaky:
        exp_file = tmp / "twins.yaml"
        exp_file.write_text(yaml.safe_dump(_experiment(clean.base_url, flaky.base_url, tmp)))
        result = run_cli("evaluate", "-f", str(exp_file), "--no-progress", "--allow-failures")
        assert flaky.stats()["failed"] > 0  # the faults really happened
    assert result.exit_code == 0, result.stderr
    (run_dir,) = [p for p in tmp.iterdir() if p.is_dir() and p.name != "_cache"]
    return run_dir


def _summary(run_dir: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((run_dir / "report" / "summary.json").read_text())
    return summary


def test_flaky_twin_is_not_ranked_and_the_run_is_partial(twin_run: Path) -> None:
    summary = _summary(twin_run)
    assert summary["status"] == "partial"
    progress = {(p["student"], p["phase"]): p for p in summary["progress"]}
    planned = len(KS) * GENERATION_ROUNDS * COMBINATIONS
    clean, flaky = progress["complete-twin", "generate"], progress["flaky-twin", "generate"]
    assert clean == {**clean, "planned": planned, "done": planned, "failed": 0, "missing": 0}
    assert flaky["planned"] == planned and flaky["failed"] > 0
    assert flaky["done"] + flaky["failed"] + flaky["missing"] == planned
    failed_records = summary["failures"]["generation_failed"]
    assert flaky["failed"] == failed_records
    grades = progress["flaky-twin", "grade"]
    assert grades["planned"] == planned and grades["done"] <= flaky["done"]
    assert grades["missing"] >= flaky["failed"]  # no verdict for an answer that failed

    reason = f"{flaky['failed']} of {planned} planned answers failed"
    for board in summary["leaderboards"]:
        rows = {r["student"]: r for r in board["rows"]}
        assert rows["complete-twin"]["rank"] == 1
        assert rows["flaky-twin"]["rank"] is None and rows["flaky-twin"]["score"] is None
        assert reason in rows["flaky-twin"]["excluded"]
        assert "excluded" not in rows["complete-twin"]
        assert board["pairwise"] == []  # nothing left to pair with the complete twin
        assert "not ranked" in board["ranking_note"]
        # its per-k numbers are still there, over what it has
        assert all(c is not None for c in rows["flaky-twin"]["cells"].values())
    assert any(w.startswith("flaky-twin: not ranked") and reason in w for w in summary["warnings"])


def test_every_report_says_why(twin_run: Path) -> None:
    markdown = (twin_run / "report" / "report.md").read_text()
    html = (twin_run / "report" / "report.html").read_text()
    for page in (markdown, html):
        assert "not ranked (partial:" in page
        assert COMPLETENESS_RULE.split(":")[0] in page
    assert "Partial run" in markdown


def test_compare_and_aggregate_apply_the_same_rule(twin_run: Path, tmp_path: Path) -> None:
    result = run_cli("compare", str(twin_run), "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = {r["student"]: r for r in json.loads(result.stdout)["leaderboards"][0]["rows"]}
    assert rows["complete-twin"]["rank"] == 1 and rows["flaky-twin"]["rank"] is None
    assert "planned answers failed" in rows["flaky-twin"]["excluded"]
    assert "flaky-twin" in result.stderr and "not ranked" in result.stderr

    result = run_cli("aggregate", str(twin_run))
    assert result.exit_code == 0, result.stderr
    assert (
        "flaky-twin: not ranked, partial:" in result.stderr and "complete-twin" not in result.stderr
    )


def test_aggregate_warns_about_a_unit_without_its_manifest(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with MockServer(SERVER) as server:
        exp = _experiment(server.base_url, server.base_url, store)
        exp["students"] = exp["students"][:1]
        exp["generation_rounds"] = 1
        exp_file = tmp_path / "one.yaml"
        exp_file.write_text(yaml.safe_dump(exp))
        assert run_cli("evaluate", "-f", str(exp_file), "--no-progress").exit_code == 0
    (run_dir,) = [p for p in store.iterdir() if p.name != "_cache"]
    result = run_cli("aggregate", str(run_dir))
    assert result.exit_code == 0 and "manifest" not in result.stderr, result.stderr
    manifest = sorted((run_dir / "grades").rglob("_SUCCESS"))[0]  # one of the two k values
    manifest.unlink()  # a grading task that never finished: its parts are there, unread
    unit = manifest.parent.relative_to(run_dir).as_posix()
    expected = f"no _SUCCESS manifest (unfinished; their records are left out): {unit}"
    for args in (("aggregate", str(run_dir)), ("report", str(run_dir), "--out", str(tmp_path))):
        result = run_cli(*args)
        assert result.exit_code == 0, result.stderr
        assert expected in result.stderr, result.stderr
        assert "complete-twin: not ranked, partial:" in result.stderr  # its verdicts are missing
