"""Budgets (concurrency, rpm, tpm) are a model's whole budget: the local executor gives each
model all of it; on Kubernetes every pod that shares a model gets budget/N: a student's
``replicas`` shards (each pod reads N from its ``--shards``), the grader's grading Jobs
(``--budget-share``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from skillmix.backends.factory import Budget, budget_share_of, make_client, make_clients
from skillmix.config import ModelSpec
from skillmix.loading import parse_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.store.local import LocalStore
from skillmix.store.runs import RunStore
from tests.fake_backend import FakeBackend, any_reply
from tests.helpers import run_cli


def spec(**kw: Any) -> ModelSpec:
    return ModelSpec(name="m", model="m", **kw)


def test_one_worker_gets_the_whole_budget() -> None:
    assert budget_share_of(spec(concurrency=16, rpm=600, tpm=90_000)) == Budget(600, 90_000, 16)


def test_shared_budgets_are_divided_among_the_workers() -> None:
    s = spec(concurrency=16, rpm=600, tpm=90_000)
    assert budget_share_of(s, 4) == Budget(150, 22_500, 4)
    assert budget_share_of(s, 3) == Budget(200, 30_000, 5)  # concurrency rounds down
    assert budget_share_of(s, 64).concurrency == 1  # never below one request in flight
    assert budget_share_of(s, 64).rpm == pytest.approx(600 / 64)


def test_unlimited_stays_unlimited() -> None:
    assert budget_share_of(spec(concurrency=8), 4) == Budget(0, 0, 2)


def test_config_fields_state_their_scope() -> None:
    from skillmix.config import GraderSpec

    for model in (ModelSpec, GraderSpec):
        for name in ("concurrency", "rpm", "tpm"):
            text = model.model_fields[name].description or ""
            assert "Locally" in text and "On Kubernetes" in text and "divided" in text
            assert "--budget-share" in text


def client_budget(client: Any) -> tuple[float, float, int]:
    pacer = client.pacer
    rpm = pacer.requests.per_minute if pacer.requests is not None else 0
    tpm = pacer.tokens.per_minute if pacer.tokens is not None else 0
    return rpm, tpm, client._semaphore._value


def test_clients_from_the_factory_get_their_share(tmp_path: Path) -> None:
    s = spec(concurrency=10, rpm=120, tpm=1000, base_url="http://127.0.0.1:9/v1")

    async def main() -> list[tuple[float, float, int]]:
        clients = [
            make_client(s, LocalStore(tmp_path)),
            make_client(s, LocalStore(tmp_path), budget_share=4),
            *make_clients([s], LocalStore(tmp_path)).values(),
        ]
        try:
            return [client_budget(c) for c in clients]
        finally:
            for c in clients:
                await c.close()

    whole, quarter, local = asyncio.run(main())
    assert whole == local == (120, 1000, 10)  # the local executor: per model
    assert quarter == (30, 250, 2)


# ---- the container tasks pass their share to the factory ----------------------------------


@pytest.fixture
def sharded_run(tmp_path: Path) -> Path:
    """A run as `launch` writes it: generation sharded by the student's replicas."""
    ctx = resolve_context(
        parse_experiment(
            {
                "name": "budgets",
                "ks": [2],
                "combinations": 4,
                "students": [{"name": "stu", "model": "stu", "replicas": 2}],
                "grader": {"name": "judge", "model": "judge", "rounds": 1},
            }
        )
    )
    ctx.sharded = True
    folder = tmp_path / "runs" / ctx.run_id
    RunStore(LocalStore(folder)).write_run_json(ctx.to_run_json())
    return folder


@pytest.fixture
def shares(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The (model, budget_share) of every client a task builds; the clients are in-memory."""
    from skillmix.executors import pod

    seen: list[tuple[str, int]] = []

    def fake_make_client(spec: ModelSpec, root: Any, **kw: Any) -> FakeBackend:
        seen.append((spec.name, kw.get("budget_share", 1)))
        return FakeBackend(any_reply)

    monkeypatch.setattr(pod, "make_client", fake_make_client)  # where the pod looks it up
    return seen


UNIT = ("--student", "stu", "--k", "2", "--round", "1")


def test_each_generation_shard_takes_its_share_from_shards(
    sharded_run: Path, shares: list[tuple[str, int]]
) -> None:
    for shard in ("0", "1"):
        result = run_cli(
            "task", "generate", "--run", str(sharded_run), *UNIT, "--shards", "2", "--shard", shard
        )
        assert result.exit_code == 0, result.stderr
    assert shares == [("stu", 2), ("stu", 2)]


def test_generation_budget_share_can_be_given(
    sharded_run: Path, shares: list[tuple[str, int]]
) -> None:
    args = ("task", "generate", "--run", str(sharded_run), *UNIT, "--shards", "2", "--shard", "0")
    result = run_cli(*args, "--budget-share", "1")
    assert result.exit_code == 0, result.stderr
    assert shares == [("stu", 1)]


def test_grading_takes_its_share_from_budget_share(
    sharded_run: Path, shares: list[tuple[str, int]]
) -> None:
    for shard in ("0", "1"):
        run_cli(
            "task", "generate", "--run", str(sharded_run), *UNIT, "--shards", "2", "--shard", shard
        )
    result = run_cli("task", "grade", "--run", str(sharded_run), *UNIT, "--budget-share", "3")
    assert result.exit_code == 0, result.stderr
    assert shares[-1] == ("judge", 3)
