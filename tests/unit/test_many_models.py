"""An experiment with thousands of students on one server: one endpoint check and one
connection pool per endpoint, and progress on stderr from the start even without a terminal."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skillmix.backends.factory import make_clients
from skillmix.config import ModelSpec
from skillmix.store.local import LocalStore

REPO = Path(__file__).resolve().parents[2]


def specs(n: int, base_url: str = "http://127.0.0.1:9/v1", prefix: str = "s") -> list[ModelSpec]:
    return [
        ModelSpec(name=f"{prefix}{i}", backend="mock", model=f"m{i}", base_url=base_url)
        for i in range(n)
    ]


def test_one_endpoint_check_per_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from skillmix.executors import local

    calls: list[tuple[str, int]] = []

    async def fake(group: list[ModelSpec], url: str, key: str, timeout: float = 10.0) -> None:
        calls.append((url, len(group)))

    monkeypatch.setattr(local, "preflight_endpoint", fake)
    many = specs(300) + specs(2, "http://127.0.0.1:10/v1", "t")
    asyncio.run(local.check_endpoints(many, None))
    assert sorted(calls) == [("http://127.0.0.1:10/v1", 2), ("http://127.0.0.1:9/v1", 300)]


def test_clients_of_one_endpoint_share_one_connection_pool(tmp_path: Path) -> None:
    clients = make_clients(
        [*specs(3), *specs(1, "http://127.0.0.1:10/v1", "t")], LocalStore(tmp_path)
    )
    pools: dict[str, Any] = {name: c._client for name, c in clients.items()}
    assert pools["s0"] is pools["s1"] is pools["s2"]
    assert pools["t0"] is not pools["s0"]

    async def close_all() -> None:
        for client in clients.values():
            await client.close()  # a shared pool closes once, without an error

    asyncio.run(close_all())
    assert all(p.is_closed() for p in pools.values())


def test_progress_without_a_terminal_is_plain_lines_from_the_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skillmix", "evaluate", "--model", "stu", "--k", "2", "-n", "3",
         "--grading-rounds", "1", "--store", str(tmp_path / "store"), "--progress"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress:")]
    assert lines[0].startswith("progress: starting")
    assert lines[-1].startswith("progress: generate 3/3, grade 3/3")
