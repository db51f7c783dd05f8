"""What a pod's client does on its own: budget pools, the model server's health wait and its log
for the store (the coordinator's decisions: test_coordinator.py)."""

from __future__ import annotations

from typing import Any

import pytest

from skillmix.backends.factory import budget_share_of, parallel_jobs
from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from skillmix.config import Experiment
from skillmix.errors import ModelServerUnhealthy
from skillmix.executors.pod import PodLog
from skillmix.pipeline.model_server import health_url, wait_for_model_server
from skillmix.store.layout import RunLayout


def grader(**budget: Any) -> Any:
    e = Experiment.model_validate(
        {
            "name": "pools",
            "ks": [2],
            "combinations": 3,
            "generation_rounds": 1,
            "students": [{"name": "s", "backend": "mock", "model": "m"}],
            "grader": {"name": "g", "backend": "openai", "model": "gpt-4o", **budget},
        }
    )
    return e.grader


@pytest.mark.parametrize(
    ("jobs", "concurrency", "cap", "pods", "expected"),
    [
        (500, 64, 8, 1, 8),  # the cap
        (500, 4, 8, 1, 4),  # every Job keeps one request in flight
        (3, 64, 8, 1, 3),  # fewer Jobs than the cap
        (500, 8, 8, 4, 2),  # 4 shards per Job: 8 // 4
        (500, 1, 8, 4, 1),  # at least one
        (0, 8, 8, 1, 1),
    ],
)
def test_parallel_jobs(jobs: int, concurrency: int, cap: int, pods: int, expected: int) -> None:
    spec = grader(concurrency=concurrency)
    assert parallel_jobs(jobs, spec, cap=cap, pods_per_job=pods) == expected


def test_p_jobs_share_the_whole_budget() -> None:
    """P Jobs at once, each with 1/P: together the organisation's budget, not 1/jobs of it."""
    spec = grader(concurrency=32, rpm=6000, tpm=1_200_000)
    p = parallel_jobs(500, spec, cap=8)
    share = budget_share_of(spec, p)
    assert p == 8
    assert (share.rpm * p, share.tpm * p, share.concurrency * p) == (6000, 1_200_000, 32)
    static = budget_share_of(spec, 500)  # the old split: most of it idle
    assert static.rpm * p < spec.rpm / 10


def test_pod_log_key() -> None:
    assert RunLayout.pod_log("run-grd-a1-x7k2p") == "logs/pods/run-grd-a1-x7k2p.log"


def test_health_url() -> None:
    assert health_url("http://localhost:8000/v1") == "http://localhost:8000/health"
    assert health_url("http://localhost:8000/v1/") == "http://localhost:8000/health"


def test_the_health_wait_returns_once_the_server_is_healthy() -> None:
    lines: list[str] = []
    with MockServer(MockServerConfig(startup_delay=0.6)) as server:
        wait_for_model_server(server.base_url, 10, interval=0.1, say=lines.append)
    assert lines and "healthy after" in lines[-1]


def test_a_server_that_never_becomes_healthy_is_exit_code_3() -> None:
    with (
        MockServer(MockServerConfig(startup_delay=60)) as server,
        pytest.raises(ModelServerUnhealthy) as caught,
    ):
        wait_for_model_server(server.base_url, 0.5, interval=0.1)
    assert caught.value.exit_code == 3
    assert "never became healthy" in str(caught.value) and "HTTP 503" in str(caught.value)


def test_nothing_listening_is_named_too() -> None:
    with pytest.raises(ModelServerUnhealthy, match="within 0.3s"):
        wait_for_model_server("http://127.0.0.1:9/v1", 0.3, interval=0.1)


def test_pod_log_keeps_head_and_tail_and_takes_bytes() -> None:
    log = PodLog("p", keep=10)
    log.write("start-----\n")
    for i in range(100):
        log.write(f"line {i}\n")
    log.write(b"error: last words\n")
    text = log.text()
    assert text.startswith("start-----\n")
    assert text.endswith("error: last words\n")
    assert "characters left out" in text and "line 5\n" not in text
