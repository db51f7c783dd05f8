"""Two whole runs against a mock server with every injection on, and the same seed, give the
same records: the faults a request meets depend on the seed, the request and its try number,
not on the order in which the server happened to receive requests.

The RPM/TPM limits are the one time-based fault: a 429 is retried without drawing a fault, but it
spends one of the request's ``max_retries``, so the runs with limits on leave retries to spare.
"""

from __future__ import annotations

import functools
import json
import re
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
from tests.helpers import run_cli
from tests.integration.run_checks import read_manifested_records

pytestmark = pytest.mark.timeout(180)

STUDENTS = {"stu-a": 0.8, "stu-b": 0.5}
GRADER = "judge"

ALL_INJECTIONS = MockServerConfig(
    host="127.0.0.1",
    models={**STUDENTS, GRADER: 0.95},
    seed=11,
    latency_ms=5,
    jitter_ms=10,
    fail_rate=0.15,
    drop_rate=0.05,
    timeout_rate=0.03,
    timeout_seconds=4.0,  # longer than the client timeout below: a real client timeout
    malformed_rate=0.3,
    rpm=60,  # a sliding window shrunk to 0.5 s below: real 429s with Retry-After
)


@pytest.fixture
def short_rate_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # MockService builds its limiter from the module-level name when the server starts.
    monkeypatch.setattr(
        mock_service_module, "RateLimiter", functools.partial(RateLimiter, window=0.5)
    )


@pytest.fixture
def faulty_server(short_rate_window: None) -> Iterator[MockServer]:
    with MockServer(ALL_INJECTIONS) as server:
        yield server


def evaluate(base_url: str, tmp_path: Path, name: str, *, max_retries: int) -> Path:
    model = {
        "backend": "mock",
        "base_url": base_url,
        "max_retries": max_retries,
        "timeout": 2.0,  # generous: a slow reply on a busy machine is not an injected fault
        "concurrency": 6,
    }
    store = tmp_path / name
    experiment = {
        "name": "same",
        "seed": 4,
        "ks": [2, 3],
        "combinations": 6,
        "generation_rounds": 2,
        "students": [{"name": n, "model": n, **model} for n in STUDENTS],
        "grader": {"name": GRADER, "model": GRADER, "rounds": 2, **model},
        "metrics": {"bootstrap_samples": 50},
        "store": str(store),
    }
    exp_file = tmp_path / f"{name}.yaml"
    exp_file.write_text(yaml.safe_dump(experiment))
    # records that fail for good are part of what must repeat: accept the partial run
    result = run_cli("evaluate", "-f", str(exp_file), "--no-progress", "--allow-failures")
    assert result.exit_code == 0, result.stderr
    (run_dir,) = [p for p in store.iterdir() if p.name != "_cache"]
    return run_dir


def records_of(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every generation and grade record, in a fixed order (they hold no time or latency)."""
    records = read_manifested_records(run_dir)

    def dump(record: Any) -> dict[str, Any]:
        data: dict[str, Any] = record.model_dump(mode="json")
        if data["error"]:  # names the endpoint: two fresh servers listen on different ports
            data["error"] = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", data["error"])
        return data

    generations = sorted(
        (dump(r) for r in records.generations),
        key=lambda d: (d["student"], d["k"], d["generation_round"], d["index"]),
    )
    grades = sorted(
        (dump(r) for r in records.grades),
        key=lambda d: (d["student"], d["k"], d["generation_round"], d["index"], d["grading_round"]),
    )
    return generations, grades


def failures_of(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    failures: dict[str, Any] = summary["failures"]
    return failures


def test_two_runs_against_the_same_mock_give_the_same_records(
    faulty_server: MockServer, tmp_path: Path
) -> None:
    first = evaluate(faulty_server.base_url, tmp_path, "first", max_retries=8)
    second = evaluate(faulty_server.base_url, tmp_path, "second", max_retries=8)
    stats = faulty_server.stats()
    for counter in ("failed", "dropped", "timeouts", "malformed", "rate_limited"):
        assert stats[counter] > 0, (counter, stats)  # every fault really happened

    gens, grades = records_of(first)
    assert (gens, grades) == records_of(second)
    assert failures_of(first) == failures_of(second)
    assert any(g["attempts"] > 1 for g in grades)  # malformed replies were re-asked


def test_a_fresh_mock_with_the_same_seed_gives_the_same_records(tmp_path: Path) -> None:
    """Few retries, so that some records fail for good: the same ones in both runs."""
    runs = []
    for name in ("one", "two"):
        with MockServer(replace(ALL_INJECTIONS, rpm=0)) as server:
            runs.append(evaluate(server.base_url, tmp_path, name, max_retries=1))
    gens, grades = records_of(runs[0])
    assert (gens, grades) == records_of(runs[1])
    assert any(r["status"] == "failed" for r in gens + grades)
    assert any(r["status"] == "unparsed" for r in grades)


def test_a_run_killed_and_resumed_gives_the_same_records(tmp_path: Path) -> None:
    """SIGKILL a run mid-generation and resume it: the faults replayed after the kill are the
    ones the uninterrupted run met, so the records are the same."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = replace(ALL_INJECTIONS, rpm=0, latency_ms=40)
    with MockServer(config) as server:
        whole = evaluate(server.base_url, tmp_path, "whole", max_retries=8)
        exp_file = tmp_path / "killed.yaml"
        evaluate_file = tmp_path / "whole.yaml"
        exp_file.write_text(
            evaluate_file.read_text().replace(str(tmp_path / "whole"), str(tmp_path / "killed"))
        )
        env = {**os.environ, "SKILLMIX_LOCK_SECONDS": "2"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "skillmix", "evaluate", "-f", str(exp_file), "--no-progress"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not list((tmp_path / "killed").glob("*/generations/*/*/*/part-*.jsonl")):
                assert proc.poll() is None, "the run ended before it could be killed"
                assert time.monotonic() < deadline, "no generation part written in 60 s"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        resumed = run_cli(
            "evaluate", "-f", str(exp_file), "--resume", "--wait-for-lock", "30",
            "--no-progress", "--allow-failures",
        )  # fmt: skip
        assert resumed.exit_code == 0, resumed.stderr
    (killed,) = [p for p in (tmp_path / "killed").iterdir() if p.name != "_cache"]

    def uncached(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # a resumed run answers what it had asked before the kill from its cache
        return [{**r, "usage": {**r["usage"], "cached": False}} for r in records]

    (gens, grades), (want_gens, want_grades) = records_of(killed), records_of(whole)
    assert uncached(gens) == uncached(want_gens)
    assert uncached(grades) == uncached(want_grades)
