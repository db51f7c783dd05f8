"""What a pod's client does on its own: budget pools, the model server's health wait, its log
for the store, and the coordinator's release decisions (the cluster tests run them for real)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skillmix.backends.factory import budget_share_of, parallel_jobs
from skillmix.backends.mock_server import MockServer, MockServerConfig
from skillmix.cli.task import PodLog
from skillmix.config import Experiment
from skillmix.errors import ModelServerUnhealthy
from skillmix.k8s.coordinator import Coordinator, JobView
from skillmix.pipeline.context import resolve_context
from skillmix.pipeline.plan import Unit
from skillmix.pipeline.tasks import health_url, wait_for_model_server
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store


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


def _coordinator(tmp_path: Path, views: list[JobView], released: list[str]) -> Coordinator:
    e = Experiment.model_validate(
        {
            "name": "coord",
            "ks": [2],
            "generation_rounds": 2,
            "students": [{"name": "s", "backend": "mock", "model": "m"}],
            "grader": {"name": "g", "backend": "mock", "model": "mg"},
        }
    )
    ctx = resolve_context(e)

    def release(job: JobView) -> None:
        released.append(job.name)

    return Coordinator(
        RunStore(open_store(str(tmp_path))), ctx, 0, jobs=lambda: views, release=release
    )


def view(name: str, phase: str, unit: Unit | None, **state: Any) -> JobView:
    base: dict[str, Any] = {"gated": True, "released": False, "finished": False, "failed": False}
    return JobView(name=name, phase=phase, unit=unit, **(base | state))


def test_the_coordinator_keeps_each_pool_within_its_size(tmp_path: Path) -> None:
    """Gated generation Jobs (no inputs needed) of one pool of size 2: two released, the
    third only once one of them has finished; a second pass releases nothing new."""
    units = [Unit("s", 2, r) for r in (1, 2, 3)]
    views = [view(f"gen-{u.round}", "generate", u, pool="generate/s", pool_size=2) for u in units]
    released: list[str] = []
    c = _coordinator(tmp_path, views, released)
    first = c.step()
    assert released == ["gen-1", "gen-2"] and first.gated_left == 1 and not first.stuck
    assert c.step().released == []
    views[0].finished = True
    assert c.step().released == ["gen-3"]
    assert released == ["gen-1", "gen-2", "gen-3"]


def test_the_coordinator_holds_grading_until_the_generation_job_ends_and_says_when_stuck(
    tmp_path: Path,
) -> None:
    unit = Unit("s", 2, 1)
    views = [
        view("gen", "generate", unit, gated=False, released=True),
        view("grd", "grade", unit, pool="grade", pool_size=1),
        # its own Job, running: not work that could still produce inputs
        view("coo", "coordinate", None, gated=False, released=True),
    ]
    released: list[str] = []
    c = _coordinator(tmp_path, views, released)
    assert c.step().released == [] and released == []  # generation still running
    views[0].finished = views[0].failed = True  # it failed: no manifest will ever come
    result = c.step()
    assert released == [] and result.gated_left == 1
    assert "can never start" in result.stuck and "gen" in result.stuck


def test_coordinate_outside_a_pod_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from skillmix.errors import SkillmixError
    from skillmix.k8s.coordinator import InClusterJobs

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(SkillmixError) as caught:
        InClusterJobs("run-1", 1)
    assert caught.value.exit_code == 2
    assert "no in-cluster Kubernetes configuration" in caught.value.one_line()
    assert "ServiceAccount token" in caught.value.one_line()
