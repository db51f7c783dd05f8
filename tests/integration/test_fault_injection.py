"""A whole run through ``skillmix evaluate`` against a mock server that misbehaves.

The in-process mock server answers 500s, drops connections, stalls past the client timeout,
sends malformed grader replies and enforces a request rate limit (real 429s with Retry-After).
The run must still finish, account for every planned record, and leave a consistent store.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

import skillmix.backends.mock_service as mock_service_module
from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_faults import RateLimiter
from skillmix.backends.mock_server import MockServer
from skillmix.pipeline.context import open_run
from tests.helpers import run_cli
from tests.integration.run_checks import (
    RunRecords,
    check_complete_and_unique,
    gen_key,
    grade_key,
    planned_generation_keys,
    read_manifested_records,
)

STUDENTS = {"stu-a": 0.8, "stu-b": 0.5}
GRADER = "judge"
KS = [2, 3]
COMBINATIONS = 15
GENERATION_ROUNDS = 2
GRADING_ROUNDS = 3
# The server's limit counts requests in a sliding window; the real window is a minute, far
# longer than a test may take, so the test shrinks it: RATE_LIMIT requests per RATE_WINDOW s.
RATE_LIMIT = 50
RATE_WINDOW = 1.0
RUN_BUDGET_SECONDS = 60.0

pytestmark = pytest.mark.timeout(120)


FAULTS = MockServerConfig(
    host="127.0.0.1",
    models={**STUDENTS, GRADER: 0.95},
    seed=7,
    latency_ms=10,
    jitter_ms=10,
    fail_rate=0.10,
    drop_rate=0.05,
    malformed_rate=0.05,
    timeout_rate=0.02,
    timeout_seconds=3.0,  # longer than the client timeout below: a real client timeout
    rpm=RATE_LIMIT,
)


@pytest.fixture
def faulty_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockServer]:
    # MockService builds its limiter from the module-level name when the server starts.
    monkeypatch.setattr(
        mock_service_module, "RateLimiter", functools.partial(RateLimiter, window=RATE_WINDOW)
    )
    with MockServer(FAULTS) as server:
        yield server


def experiment(base_url: str, store: Path, *, max_retries: int = 10) -> dict[str, Any]:
    common = {
        "backend": "mock",
        "base_url": base_url,
        "max_retries": max_retries,
        "timeout": 1.0,
        "concurrency": 8,  # no client rpm: the server's limit is what paces us (429s)
    }
    return {
        "name": "faults",
        "seed": 3,
        "ks": KS,
        "combinations": COMBINATIONS,
        "generation_rounds": GENERATION_ROUNDS,
        "students": [{"name": n, "model": n, **common} for n in STUDENTS],
        "grader": {"name": GRADER, "model": GRADER, "rounds": GRADING_ROUNDS, **common},
        "metrics": {"bootstrap_samples": 200},
        "store": str(store),
    }


def run_evaluate(exp: dict[str, Any], tmp_path: Path) -> tuple[Any, float]:
    exp_file = tmp_path / "faults.yaml"
    exp_file.write_text(yaml.safe_dump(exp))
    started = time.monotonic()
    result = run_cli("evaluate", "-f", str(exp_file), "--no-progress", "--format", "json")
    return result, time.monotonic() - started


def check_run(store: Path) -> tuple[dict[str, Any], RunRecords]:
    """The checks every run must pass, however many of its requests failed for good."""
    (run_dir,) = [p for p in store.iterdir() if p.name != "_cache"]
    _, ctx = open_run(str(run_dir))
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert (run_dir / "report" / "metrics.csv").is_file()
    assert (run_dir / "report" / "report.md").is_file()

    planned = len(STUDENTS) * len(KS) * GENERATION_ROUNDS * COMBINATIONS
    counts = summary["counts"]
    assert counts["planned_generations"] == planned
    assert counts["generations"] == planned
    assert counts["grades"] == counts["planned_grades"]

    # The store: manifests consistent with their parts, no duplicate, nothing missing.
    records = read_manifested_records(run_dir)
    assert records.manifests == len(STUDENTS) * len(KS) * GENERATION_ROUNDS * (1 + GRADING_ROUNDS)
    check_complete_and_unique(ctx, records)
    assert len(planned_generation_keys(ctx)) == planned
    assert len(records.grades) == counts["grades"]

    # Every record is ok, or listed in summary.json with a reason.
    failures = summary["failures"]
    listed_gen = {
        (f["student"], f["k"], f["generation_round"], f["index"]): f for f in failures["generation"]
    }
    listed_grade = {
        (f["student"], f["k"], f["generation_round"], f["index"], f["grading_round"]): f
        for f in failures["grading"]
    }
    for gen in records.generations:
        if gen.status == "ok":
            assert gen.answer is not None
            assert gen_key(gen) not in listed_gen
        else:
            assert listed_gen[gen_key(gen)]["reason"], gen_key(gen)
    for grade in records.grades:
        if grade.status == "ok":
            assert grade.points is not None
            assert grade_key(grade) not in listed_grade
        else:
            entry = listed_grade[grade_key(grade)]
            assert entry["status"] == grade.status
            assert entry["reason"], grade_key(grade)
    assert failures["generation_failed"] == sum(
        1 for g in records.generations if g.status == "failed"
    )
    assert failures["grading_failed"] == sum(1 for g in records.grades if g.status == "failed")
    assert failures["grading_unparsed"] == sum(1 for g in records.grades if g.status == "unparsed")

    # A metrics row for every (student, k).
    rows = summary["metrics"]["rows"]
    assert {(r["student"], r["k"]) for r in rows} == {(s, k) for s in STUDENTS for k in KS}
    assert all(r["grader"] == GRADER and 1 <= r["n"] <= COMBINATIONS for r in rows)
    return summary, records


def test_run_survives_injected_faults(faulty_server: MockServer, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result, elapsed = run_evaluate(experiment(faulty_server.base_url, store), tmp_path)
    assert result.exit_code == 0, result.stderr
    assert elapsed < RUN_BUDGET_SECONDS, f"the run took {elapsed:.1f}s"
    assert json.loads(result.stdout)["rows"]  # exactly one JSON document

    # The faults really happened (otherwise this test proves nothing).
    stats = faulty_server.stats()
    for counter in ("failed", "dropped", "timeouts", "rate_limited", "malformed", "ok"):
        assert stats[counter] > 0, (counter, stats)
    assert stats["in_flight"] == 0, stats

    summary, _ = check_run(store)
    # Malformed grader replies were re-asked, not accepted.
    assert summary["failures"]["grading_retried"] > 0


def test_failures_without_retries_are_accounted_for(tmp_path: Path) -> None:
    """No retries at all: records fail for good, and each is listed with its reason."""
    store = tmp_path / "store"
    with MockServer(replace(FAULTS, rpm=0)) as server:
        exp = experiment(server.base_url, store, max_retries=0)
        exp["grader"]["max_parse_retries"] = 0
        result, elapsed = run_evaluate(exp, tmp_path)
        stats = server.stats()
    # records failed for good: the run failed (exit 1) and says what failed and how to retry
    assert result.exit_code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: run faults-") and "records failed for good" in error, error
    assert "most common error" in error and "--resume" in error and "--allow-failures" in error
    assert "skillmix status" not in result.stderr  # a cluster-only command
    assert elapsed < RUN_BUDGET_SECONDS, f"the run took {elapsed:.1f}s"
    assert stats["failed"] > 0 and stats["dropped"] > 0 and stats["malformed"] > 0, stats

    summary, records = check_run(store)
    failures = summary["failures"]
    assert failures["generation_failed"] > 0
    assert failures["grading_failed"] > 0
    assert failures["grading_unparsed"] > 0
    assert "records failed after retries" in result.stderr
    reasons = {f["reason"] for f in failures["generation"]}
    assert any("HTTP 500" in r for r in reasons), reasons
    assert any("connection failed" in r or "timed out" in r for r in reasons), reasons
    # A failed generation is not sent to the grader.
    failed_gens = {gen_key(g) for g in records.generations if g.status == "failed"}
    assert not {grade_key(g)[:4] for g in records.grades} & failed_gens


def test_resume_retries_records_that_failed_for_good(tmp_path: Path) -> None:
    store = tmp_path / "store"
    flaky = MockServerConfig(host="127.0.0.1", models={"stu-a": 0.8, GRADER: 0.95}, seed=1)
    with MockServer(replace(flaky, fail_rate=0.4)) as server:
        exp = experiment(server.base_url, store, max_retries=0)
        exp["students"] = exp["students"][:1]
        exp["generation_rounds"] = 1
        result, _ = run_evaluate(exp, tmp_path)
    assert result.exit_code == 1, result.stderr  # records failed for good
    (run_dir,) = [p for p in store.iterdir() if p.name != "_cache"]
    first = json.loads((run_dir / "report" / "summary.json").read_text())["failures"]
    assert first["generation_failed"] + first["grading_failed"] > 0

    with MockServer(flaky) as server:  # healthy now; endpoints are not part of the run id
        exp["students"][0]["base_url"] = exp["grader"]["base_url"] = server.base_url
        exp_file = tmp_path / "faults.yaml"
        exp_file.write_text(yaml.safe_dump(exp))
        result = run_cli("evaluate", "-f", str(exp_file), "--no-progress", "--resume")
    assert result.exit_code == 0, result.stderr
    second = json.loads((run_dir / "report" / "summary.json").read_text())["failures"]
    assert second["generation_failed"] == 0 and second["grading_failed"] == 0, second
