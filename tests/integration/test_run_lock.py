"""One writer per run: two real ``skillmix evaluate`` processes on the same run folder, against
a mock server process with a request log (see test_crash_resume.py).

The second process is refused (exit 2, one line naming the holder) before it sends a request
or deletes anything, or waits with ``--wait-for-lock``; a SIGKILLed holder's lease expires and
is taken over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skillmix.loading import load_experiment
from skillmix.pipeline.context import RunContext, resolve_context
from tests.integration.run_checks import check_complete_and_unique, read_manifested_records
from tests.integration.test_crash_resume import (
    MockProcess,
    ok_keys,
    running_mock,
    stop,
    store_state,
    wait_for,
    write_experiment,
)

LATENCY_MS = 100  # a run of ~15 s: long enough for a second process to start while it runs
TIMEOUT = 120.0

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MockProcess]:
    with running_mock(tmp_path, LATENCY_MS) as mock:
        yield mock


def evaluate(
    exp: Path, store: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "skillmix", "evaluate", "-f", str(exp), "--store", str(store)]
    return subprocess.Popen(
        [*args, "--no-progress", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        stop(proc)
    return proc.returncode, err.decode()


def leases(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "_lock").glob("lease-*.json"))


def setup_run(tmp_path: Path, server: MockProcess) -> tuple[Path, Path, RunContext, Path]:
    exp = write_experiment(tmp_path, server.base_url)
    store = tmp_path / "store"
    ctx = resolve_context(load_experiment(exp))
    return exp, store, ctx, store / ctx.run_id


def started(run_dir: Path) -> bool:
    """The first process is writing parts (it takes the lock before it writes anything)."""
    return store_state(run_dir)["gen_parts"] > 0


def check_once(ctx: RunContext, run_dir: Path, server: MockProcess) -> None:
    """The run finished, every record once, and no request was answered twice."""
    assert (run_dir / "report" / "summary.json").is_file()
    check_complete_and_unique(ctx, read_manifested_records(run_dir))
    counts = ok_keys(server.log_lines())
    assert counts and max(counts.values()) == 1, "a request was sent twice"
    assert not (run_dir / "_lock").exists() or not leases(run_dir), "the lock was not released"


def test_second_writer_is_refused_naming_the_holder(tmp_path: Path, server: MockProcess) -> None:
    exp, store, ctx, run_dir = setup_run(tmp_path, server)
    first = evaluate(exp, store)
    try:
        wait_for(lambda: started(run_dir) or first.poll() is not None, "the first run to start")
        assert first.poll() is None
        second = evaluate(exp, store, "--resume")
        rc, err = finish(second)
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        rc1, err1 = finish(first)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"pid {first.pid}" in lines[0] and "host " in lines[0] and "since " in lines[0]
    assert "held by another skillmix process" in lines[0]
    assert rc1 == 0, err1[-2000:]
    check_once(ctx, run_dir, server)


def test_wait_for_lock_waits_then_resumes(tmp_path: Path, server: MockProcess) -> None:
    exp, store, ctx, run_dir = setup_run(tmp_path, server)
    first = evaluate(exp, store)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: started(run_dir) or first.poll() is not None, "the first run to start")
        assert first.poll() is None
        second = evaluate(exp, store, "--resume", "--wait-for-lock", "120", "--format", "json")
        rc1, err1 = finish(first)
        assert second.poll() is None, "the second run did not wait for the first"
        out, err = second.communicate(timeout=TIMEOUT)
    finally:
        stop(first)
        if second is not None:
            stop(second)
    assert rc1 == 0, err1[-2000:]
    assert second.returncode == 0, err.decode()[-2000:]
    assert json.loads(out)["rows"]
    check_once(ctx, run_dir, server)


def test_overwrite_is_refused_while_the_run_is_held(tmp_path: Path, server: MockProcess) -> None:
    exp, store, ctx, run_dir = setup_run(tmp_path, server)
    first = evaluate(exp, store)
    try:
        wait_for(lambda: started(run_dir) or first.poll() is not None, "the first run to start")
        before = store_state(run_dir)
        rc, err = finish(evaluate(exp, store, "--overwrite"))
        assert first.poll() is None
        after = store_state(run_dir)
        assert (run_dir / "run.json").is_file()
        assert after["gen_parts"] >= before["gen_parts"] > 0, "the run was deleted"
    finally:
        rc1, err1 = finish(first)
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and f"pid {first.pid}" in err, err
    assert rc1 == 0, err1[-2000:]
    check_once(ctx, run_dir, server)


def test_sigkilled_holder_lease_expires_and_is_taken_over(
    tmp_path: Path, server: MockProcess
) -> None:
    exp, store, ctx, run_dir = setup_run(tmp_path, server)
    env = {"SKILLMIX_LOCK_SECONDS": "10"}
    first = evaluate(exp, store, env=env)
    try:
        wait_for(lambda: started(run_dir) or first.poll() is not None, "the first run to start")
        assert first.poll() is None
    finally:
        stop(first)  # SIGKILL: nothing released
        first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL
    [lease_file] = leases(run_dir)
    lease = json.loads(lease_file.read_text())
    assert lease["pid"] == first.pid

    # Until the lease expires the dead holder still holds the run.
    rc, err = finish(evaluate(exp, store, "--resume", env=env))
    if time.time() < lease["expires"]:
        assert rc == 2 and f"pid {first.pid}" in err, err
    wait_for(lambda: server.stats()["in_flight"] == 0, "in-flight requests to end", 10)
    before = len(server.log_lines())

    resumed = evaluate(exp, store, "--resume", "--wait-for-lock", "60", env=env)
    rc, err = finish(resumed)
    assert rc == 0, err[-2000:]
    assert time.time() >= lease["expires"]
    assert (run_dir / "report" / "summary.json").is_file()
    check_complete_and_unique(ctx, read_manifested_records(run_dir))
    assert server.log_lines()[before:], "the resumed run did nothing"
    assert not leases(run_dir)


def skillmix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skillmix", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_unlock_names_the_holder_asks_then_breaks_the_lock(
    tmp_path: Path, server: MockProcess
) -> None:
    """`skillmix unlock RUN` shows who holds the run, refuses to break it without a yes, then
    frees it: the holder fails once it notices (one line saying who broke it), and a resume
    completes the run with every record once."""
    exp, store, ctx, run_dir = setup_run(tmp_path, server)
    first = evaluate(exp, store, env={"SKILLMIX_LOCK_SECONDS": "3"})
    try:
        wait_for(lambda: started(run_dir) or first.poll() is not None, "the first run to start")
        assert first.poll() is None
        asked = skillmix("unlock", str(run_dir))
        assert asked.returncode == 2, asked.stderr
        assert f"pid {first.pid}" in asked.stderr and "--yes" in asked.stderr
        assert first.poll() is None and leases(run_dir)
        broken = skillmix("unlock", str(run_dir), "--yes")
        assert broken.returncode == 0, broken.stderr
        assert f"pid {first.pid}" in broken.stderr and "unlocked" in broken.stderr
        again = skillmix("unlock", str(run_dir), "--yes")
        assert again.returncode == 0 and "is not locked" in again.stderr
    finally:
        rc1, err1 = finish(first)
    assert rc1 == 1, err1[-2000:]
    assert "its lock was broken by host" in err1 and "skillmix unlock" in err1
    resumed = evaluate(exp, store, "--resume")
    rc, err = finish(resumed)
    assert rc == 0, err[-2000:]
    check_complete_and_unique(ctx, read_manifested_records(run_dir))
    assert skillmix("unlock", str(tmp_path / "nowhere")).returncode == 2
