"""SIGKILL a real ``skillmix evaluate`` process mid-run, resume it, and check that finished
work was not paid for twice.

The mock server runs as its own process (``skillmix mock-server``) with a request log: one
JSON line per completion request with the request's content hash (``key``) and its status.
Requests answered 200 before the kill must not be asked again after it, except those in
flight when the process died (at most ``concurrency`` per client: their replies had not
reached the response cache yet).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from skillmix.loading import load_experiment
from skillmix.pipeline.context import RunContext, open_run, resolve_context
from tests.integration.run_checks import check_complete_and_unique, read_manifested_records

STUDENTS = {"s1": ("mock-s1", 0.8), "s2": ("mock-s2", 0.5)}
GRADER = ("judge", "mock-judge", 0.95)
KS = [2, 3]
COMBINATIONS = 40
STUDENT_CONCURRENCY = 4
GRADER_CONCURRENCY = 4
GRADING_ROUNDS = 3
UNITS = len(STUDENTS) * len(KS)  # one generation round
LATENCY_MS = 50
POLL_SECONDS = 0.01
WAIT_SECONDS = 60.0

pytestmark = pytest.mark.timeout(180)


@dataclass
class MockProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as resp:
            return cast(dict[str, Any], json.loads(resp.read()))

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        text = self.log.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """End a process this test started (and its group); bounded."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture(autouse=True)
def short_run_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A killed holder's lease expires within 2 s (inherited by the evaluate processes)."""
    monkeypatch.setenv("SKILLMIX_LOCK_SECONDS", "2")


@contextlib.contextmanager
def running_mock(tmp_path: Path, latency_ms: int) -> Iterator[MockProcess]:
    """`skillmix mock-server` in its own process (so that runs can be SIGKILLed beside it),
    serving the students and the grader, logging every request."""
    port_file = tmp_path / "mock.port"
    log = tmp_path / "requests.jsonl"
    models = [f"{model}={q}" for model, q in STUDENTS.values()] + [f"{GRADER[1]}={GRADER[2]}"]
    args = [sys.executable, "-m", "skillmix", "mock-server", "--host", "127.0.0.1"]
    args += ["--port", "0", "--port-file", str(port_file), "--request-log", str(log)]
    args += ["--latency-ms", str(latency_ms), "--seed", "1"]
    for m in models:
        args += ["--model", m]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for(lambda: port_file.exists() or proc.poll() is not None, "the mock server", 20)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        yield MockProcess(proc, int(port_file.read_text()), log)
    finally:
        stop(proc, signal.SIGTERM)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def mock_process(tmp_path: Path) -> Iterator[MockProcess]:
    with running_mock(tmp_path, LATENCY_MS) as mock:
        yield mock


def write_experiment(tmp_path: Path, base_url: str) -> Path:
    students = [
        {
            "name": name,
            "backend": "mock",
            "model": model,
            "quality": q,
            "base_url": base_url,
            "concurrency": STUDENT_CONCURRENCY,
        }
        for name, (model, q) in STUDENTS.items()
    ]
    grader = {
        "name": GRADER[0],
        "backend": "mock",
        "model": GRADER[1],
        "quality": GRADER[2],
        "base_url": base_url,
        "concurrency": GRADER_CONCURRENCY,
        "rounds": GRADING_ROUNDS,
    }
    exp = {
        "name": "crash",
        "seed": 5,
        "ks": KS,
        "combinations": COMBINATIONS,
        # One generation round: every request body (the mock's ``key``) is then unique within
        # a run, so a key answered twice is a repeat.
        "generation_rounds": 1,
        "students": students,
        "grader": grader,
        "metrics": {"bootstrap_samples": 100},
    }
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def evaluate_process(exp: Path, store: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "skillmix", "evaluate", "-f", str(exp), "--store", str(store)]
    return subprocess.Popen(
        [*args, "--no-progress", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def store_state(run_dir: Path) -> dict[str, int]:
    def count(top: str, pattern: str) -> int:
        base = run_dir / top
        return sum(1 for _ in base.rglob(pattern)) if base.is_dir() else 0

    return {
        "gen_parts": count("generations", "part-*.jsonl"),
        "gen_manifests": count("generations", "_SUCCESS"),
        "grade_parts": count("grades", "part-*.jsonl"),
        "grade_manifests": count("grades", "_SUCCESS"),
    }


def mid_generation(s: dict[str, int]) -> bool:
    return s["gen_parts"] > 0 and s["gen_manifests"] < UNITS


def mid_grading(s: dict[str, int]) -> bool:
    return (
        s["gen_manifests"] == UNITS
        and s["grade_parts"] > 0
        and s["grade_manifests"] < UNITS * GRADING_ROUNDS
    )


def ok_keys(lines: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((line["model"], line["key"]) for line in lines if line["status"] == 200)


def crash_and_resume(
    tmp_path: Path, server: MockProcess, when: Callable[[dict[str, int]], bool], phase: str
) -> tuple[RunContext, Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run, SIGKILL once ``when(store state)`` holds, resume to completion. Returns the run's
    context and folder and the request-log lines before and after the kill."""
    exp = write_experiment(tmp_path, server.base_url)
    store = tmp_path / "store"
    ctx = resolve_context(load_experiment(exp))
    run_dir = store / ctx.run_id

    first = evaluate_process(exp, store)
    try:
        wait_for(lambda: when(store_state(run_dir)) or first.poll() is not None, phase)
    finally:
        stop(first)
        out, err = first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL, (
        f"the run ended before it could be killed {phase}: {err.decode()[-2000:]}"
    )
    at_kill = store_state(run_dir)
    assert when(at_kill), f"killed outside {phase}: {at_kill}"
    assert not (run_dir / "report").exists()
    parts_at_kill = {p.relative_to(run_dir) for p in run_dir.rglob("part-*.jsonl")}

    # Requests of the dead client the server was still answering end now (cancelled); once
    # nothing is in flight, every later log line belongs to the resumed run.
    wait_for(lambda: server.stats()["in_flight"] == 0, "in-flight requests to end", 10)
    before = server.log_lines()

    # The killed process's run lock lives on until its lease expires (SKILLMIX_LOCK_SECONDS,
    # set short by the fixture): the resume waits for it.
    second = evaluate_process(exp, store, "--resume", "--wait-for-lock", "60", "--format", "json")
    try:
        out, err = second.communicate(timeout=WAIT_SECONDS)
    finally:
        stop(second)
    assert second.returncode == 0, err.decode()[-2000:]
    assert json.loads(out)["rows"]
    after = server.log_lines()[len(before) :]
    # Parts written before the kill are kept and listed (no record failed, so no unit had to
    # be consolidated into a new part).
    listed = {
        (m.parent / part["key"]).relative_to(run_dir)
        for m in run_dir.rglob("_SUCCESS")
        for part in json.loads(m.read_text())["parts"]
    }
    assert parts_at_kill and parts_at_kill <= listed, sorted(map(str, parts_at_kill - listed))
    return ctx, run_dir, before, after


def check_resumed_run(
    ctx: RunContext, run_dir: Path, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> None:
    assert (run_dir / "report" / "summary.json").is_file()
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    planned = len(STUDENTS) * len(KS) * COMBINATIONS
    assert summary["counts"]["generations"] == planned
    assert summary["counts"]["grades"] == summary["counts"]["planned_grades"]
    records = read_manifested_records(run_dir)
    check_complete_and_unique(ctx, records)
    _, stored_ctx = open_run(str(run_dir))
    assert stored_ctx.run_id == ctx.run_id

    ok_before, ok_after = ok_keys(before), ok_keys(after)
    assert ok_before and ok_after
    # Within one process every request body is asked (successfully) once.
    assert max(ok_before.values()) == 1 and max(ok_after.values()) == 1
    repeated: dict[str, int] = defaultdict(int)
    for model, _key in set(ok_before) & set(ok_after):
        repeated[model] += 1
    limits = {model: STUDENT_CONCURRENCY for model, _ in STUDENTS.values()}
    limits[GRADER[1]] = GRADER_CONCURRENCY
    for model, n in repeated.items():
        assert n <= limits[model], f"{model}: {n} requests answered before the kill were repeated"
    # The resumed run did strictly less than the whole run: finished work was reused.
    total = len(set(ok_before) | set(ok_after))
    assert sum(ok_after.values()) < total


def test_kill_during_generation_then_resume(tmp_path: Path, mock_process: MockProcess) -> None:
    ctx, run_dir, before, after = crash_and_resume(
        tmp_path, mock_process, mid_generation, "during generation"
    )
    check_resumed_run(ctx, run_dir, before, after)


def test_kill_during_grading_then_resume(tmp_path: Path, mock_process: MockProcess) -> None:
    ctx, run_dir, before, after = crash_and_resume(
        tmp_path, mock_process, mid_grading, "during grading"
    )
    check_resumed_run(ctx, run_dir, before, after)
    # Generation had finished before the kill: the resumed run asked no student anything.
    students = {model for model, _ in STUDENTS.values()}
    assert not [line for line in after if line["model"] in students]
