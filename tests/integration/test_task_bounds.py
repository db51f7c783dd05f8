"""A pod's client bounds itself: the model server's health within the load budget (exit 3),
its own time limit (exit 4), and its log uploaded to the store at exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skillmix.executors.local import prepare_run
from skillmix.loading import load_experiment
from skillmix.store.layout import RunLayout
from tests.helpers import run_cli
from tests.integration.test_pipeline_local import (
    SECRET,
    SECRET_ENV,
    experiment_data,
    mock_server,
    write_experiment,
)


@pytest.fixture
def run_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    path = write_experiment(tmp_path / "exp.yaml", experiment_data(tmp_path / "store"))
    ctx, _root, run, _exists = prepare_run(
        load_experiment(path), None, resume=False, overwrite=False
    )
    run.write_run_json(ctx.to_run_json())
    return str(run.uri)


def unit(run_uri: str) -> list[str]:
    return ["task", "generate", "--run", run_uri, "--student", "alpha", "--k", "2", "--round", "1"]


def test_a_model_server_never_healthy_is_exit_3_and_writes_nothing(run_uri: str) -> None:
    with mock_server(startup_delay=60) as srv:
        result = run_cli(*unit(run_uri), "--base-url", srv.base_url, "--model-load-timeout", "1")
    assert result.exit_code == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model server never became healthy:") and "HTTP 503" in last
    assert not (Path(run_uri) / "generations").exists()


def test_the_health_wait_lets_a_loading_server_finish(run_uri: str) -> None:
    with mock_server(startup_delay=1) as srv:
        result = run_cli(*unit(run_uri), "--base-url", srv.base_url, "--model-load-timeout", "30")
    assert result.exit_code == 0, result.stderr
    assert "model server healthy after" in result.stderr


def test_the_time_limit_is_exit_4_and_a_rerun_finishes_the_unit(run_uri: str) -> None:
    with mock_server(latency_ms=2000) as srv:
        slow = run_cli(*unit(run_uri), "--base-url", srv.base_url, "--time-limit", "1")
        assert slow.exit_code == 4, slow.stderr
        assert slow.stderr.strip().splitlines()[-1].startswith("error: time limit of 1s reached")
        again = run_cli(*unit(run_uri), "--base-url", srv.base_url)
    assert again.exit_code == 0, again.stderr
    assert "generated" in again.stderr or "already finished" in again.stderr


def test_a_pod_uploads_its_own_log_at_exit_failures_included(run_uri: str) -> None:
    env = {**os.environ, "SKILLMIX_POD_NAME": "run-gen-alpha-k2-r1-a1-x7k2p"}
    with mock_server(startup_delay=60) as srv:
        result = subprocess.run(
            [
                *(sys.executable, "-m", "skillmix", *unit(run_uri)),
                *("--base-url", srv.base_url, "--model-load-timeout", "0.5"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 3, result.stderr
    stored = Path(run_uri) / RunLayout.pod_log("run-gen-alpha-k2-r1-a1-x7k2p")
    text = stored.read_text(encoding="utf-8")
    assert text == result.stderr  # everything it said, the final error line included
    assert text.strip().splitlines()[-1].startswith("error: model server never became healthy")
    assert SECRET not in text
