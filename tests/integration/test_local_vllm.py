"""``--backend vllm`` without a base URL: skillmix runs ``vllm serve`` itself.

A stand-in ``vllm`` (tests/fake_vllm/vllm) speaks vLLM's CLI and serves the mock backend, so
the whole lifecycle runs without a GPU: start on a free port, the /health wait, a run whose
results equal a mock run's, shutdown with no process left (checked by pid, the stand-in's
worker included), a server that dies while loading, a load slower than the bound, a server that
ignores SIGTERM, and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.backends.vllm_server import (
    VllmServer,
    VllmServerFailed,
    vllm_api_server_args,
    vllm_serve_argv,
)
from skillmix.config import StudentSpec
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
FAKE_VLLM = ROOT / "tests" / "fake_vllm" / "vllm"
WAIT_SECONDS = 20.0


@dataclass
class FakeVllm:
    bin_dir: Path
    state: Path

    def read_state(self) -> dict[str, Any]:
        return dict(json.loads(self.state.read_text(encoding="utf-8")))

    def pids(self) -> list[int]:
        state = self.read_state()
        return [int(state["pid"]), int(state["worker_pid"])]


@pytest.fixture
def fake_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVllm]:
    """The stand-in first on PATH (run by this interpreter, skillmix importable)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "vllm"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    python_path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{python_path}".rstrip(os.pathsep))
    fake = FakeVllm(bin_dir, tmp_path / "fake-vllm.json")
    monkeypatch.setenv("FAKE_VLLM_STATE", str(fake.state))
    yield fake
    every = Path(f"{fake.state}.pids")  # every start's pids
    if every.exists():  # never leave a stand-in behind, even when a test failed
        for pid in map(int, every.read_text().split()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped by someone else."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def assert_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)], "a vLLM stand-in process was left behind"


def student(**vllm: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "backend": "vllm",
        "model": "tiny-chat",
        "vllm": {"model": "/models/tiny-llama", **vllm},
    }


def write_experiment(tmp_path: Path, students: list[dict[str, Any]], name: str = "lv") -> Path:
    exp = {
        "name": name,
        "seed": 10,
        "ks": [2],
        "combinations": 3,
        "students": students,
        "grader": {"name": "g", "backend": "mock", "model": "mock-grader", "rounds": 1},
        "metrics": {"bootstrap_samples": 50},
        "store": str(tmp_path / "store"),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def run_dir(store: Path) -> Path:
    (found,) = [p for p in store.iterdir() if not p.name.startswith("_")]
    return found


def answers(run: Path) -> list[tuple[int, str | None]]:
    records = [
        json.loads(line)
        for part in sorted((run / "generations").rglob("part-*.jsonl"))
        for line in part.read_text(encoding="utf-8").splitlines()
    ]
    return sorted((r["index"], r["answer"]) for r in records)


# --- the argv -----------------------------------------------------------------------------------


def test_both_executors_pass_the_same_vllm_settings() -> None:
    spec = StudentSpec.model_validate(
        student(tensor_parallel_size=2, args=["--max-model-len", "4096", "--dtype", "half"])
    )
    local = vllm_serve_argv(spec, port=1234, executable="/x/vllm")
    assert local[:3] == ["/x/vllm", "serve", "/models/tiny-llama"]
    pod = vllm_api_server_args(spec, port=8000)
    assert pod[:2] == ["--model", "/models/tiny-llama"]
    # both on loopback: a pod's client is in the same pod as its server
    for argv, host, port in ((local, "127.0.0.1", "1234"), (pod, "127.0.0.1", "8000")):
        assert argv[argv.index("--host") + 1] == host
        assert argv[argv.index("--port") + 1] == port
        assert argv[argv.index("--served-model-name") + 1] == "tiny-chat"
        assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
        assert argv[-4:] == ["--max-model-len", "4096", "--dtype", "half"]


@pytest.mark.parametrize("arg", ["--port", "--host=0.0.0.0", "--served-model-name"])
def test_args_that_skillmix_sets_are_refused(tmp_path: Path, fake_vllm: FakeVllm, arg: str) -> None:
    path = write_experiment(tmp_path, [student(args=[arg, "1"])])
    result = run_cli("evaluate", "-f", str(path), "--no-progress")
    assert result.exit_code == 2, result.stderr
    flag = arg.split("=")[0]
    assert result.stderr.strip() == (
        f"error: students.tiny.vllm.args: {flag} is set by skillmix; leave it out (the served "
        "model name is the student's `model`, the model loaded is `vllm.model`)"
    )
    assert not (tmp_path / "store").exists()
    assert not fake_vllm.state.exists()


def test_missing_vllm_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no vllm anywhere on PATH
    result = run_cli(
        "evaluate", "--model", "org/tiny", "--backend", "vllm", "--k", "2", "-n", "2",
        "--store", str(tmp_path / "store"), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: backend vllm without base_url needs the `vllm` executable")
    assert "pip install 'skillmix[vllm]'" in lines[0]
    assert not (tmp_path / "store").exists()


# --- the lifecycle --------------------------------------------------------------------------------


def test_quick_form_serves_the_model_and_matches_a_mock_run(
    tmp_path: Path, fake_vllm: FakeVllm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evaluate --model M --backend vllm` without --base-url: start, health wait, run, stop;
    the stand-in serves the mock, so the results are a mock run's."""
    monkeypatch.setenv("FAKE_VLLM_SEED", "10")  # the mock run's seed (the quick form's default)
    monkeypatch.setenv("FAKE_VLLM_LOAD_SECONDS", "1")
    common = ["--model", "org/tiny", "--k", "2", "-n", "3", "--grading-rounds", "1"]
    vllm_store, mock_store = tmp_path / "vllm", tmp_path / "mock"
    served = run_cli("evaluate", *common, "--backend", "vllm", "--store", str(vllm_store))
    assert served.exit_code == 0, served.stderr
    mocked = run_cli("evaluate", *common, "--backend", "mock", "--store", str(mock_store))
    assert mocked.exit_code == 0, mocked.stderr

    state = fake_vllm.read_state()
    argv = state["argv"]
    assert argv[:2] == ["serve", "org/tiny"]
    assert argv[argv.index("--served-model-name") + 1] == "org/tiny"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert_gone(fake_vllm.pids(), timeout=1.0)  # stopped before evaluate returned

    run = run_dir(vllm_store)
    log = (run / "logs" / "vllm-org-tiny.log").read_text(encoding="utf-8")
    assert f"--port {argv[argv.index('--port') + 1]}" in log.splitlines()[0]
    pid = state["pid"]
    assert f"# skillmix: pid {pid}; stop it with: kill -- -{pid}" in log.splitlines()
    assert "Loading safetensors checkpoint shards" in log
    assert "Application startup complete" in log and "Shutting down" in log
    ours, theirs = answers(run), answers(run_dir(mock_store))
    assert len(ours) == 3 and all(a for _, a in ours)
    assert ours == theirs
    metrics = (run / "report" / "metrics.csv").read_text()
    assert metrics == (run_dir(mock_store) / "report" / "metrics.csv").read_text()


def test_experiment_students_are_served_one_at_a_time_and_resume_needs_no_server(
    tmp_path: Path, fake_vllm: FakeVllm
) -> None:
    """Two local vLLM students and a mock one: each vLLM student gets its own server with its
    `vllm:` settings, one after the other; a resume of the finished run starts none, and one
    after a generation part was damaged starts that student's again."""
    second = {**student(tensor_parallel_size=2, args=["--seed", "10"]), "name": "tiny2"}
    second["model"] = "tiny-chat-2"
    students = [
        student(args=["--seed", "10", "--max-model-len", "256"]),
        second,
        {"name": "m", "backend": "mock", "model": "tiny-chat"},
    ]
    path = write_experiment(tmp_path, students)
    result = run_cli("evaluate", "-f", str(path), "--no-progress")
    assert result.exit_code == 0, result.stderr
    run = run_dir(tmp_path / "store")
    first_log = (run / "logs" / "vllm-tiny.log").read_text()
    second_log = (run / "logs" / "vllm-tiny2.log").read_text()
    assert "--max-model-len 256" in first_log.splitlines()[0]
    assert "--served-model-name tiny-chat-2 --tensor-parallel-size 2" in second_log
    last = fake_vllm.read_state()  # the second server's
    assert last["argv"][1] == "/models/tiny-llama" and "tiny-chat-2" in last["argv"]
    assert_gone(fake_vllm.pids(), timeout=1.0)
    # the vLLM student at quality 0.7 and seed 10 answers exactly as the mock student does
    gens = run / "generations"
    for name in ("tiny", "m"):
        assert (gens / name / "k2" / "r1" / "_SUCCESS").exists()
    by_student = {
        name: sorted(
            (r["index"], r["answer"])
            for part in (gens / name).rglob("part-*.jsonl")
            for r in map(json.loads, part.read_text().splitlines())
        )
        for name in ("tiny", "m")
    }
    assert by_student["tiny"] == by_student["m"]

    fake_vllm.state.unlink()
    again = run_cli("evaluate", "-f", str(path), "--no-progress", "--resume")
    assert again.exit_code == 0, again.stderr
    assert not fake_vllm.state.exists(), "a finished student's server was started again"

    # a damaged part is set aside and redone: that student's server is needed again
    (part, *_) = sorted((gens / "tiny2").rglob("part-*.jsonl"))
    part.write_text(part.read_text().replace('"answer"', '"answer" ', 1))  # altered bytes
    repaired = run_cli("evaluate", "-f", str(path), "--no-progress", "--resume")
    assert repaired.exit_code == 0, repaired.stderr
    assert "tiny-chat-2" in fake_vllm.read_state()["argv"]
    assert_gone(fake_vllm.pids(), timeout=1.0)


def test_server_that_dies_while_loading_shows_its_log_and_exits_1(
    tmp_path: Path, fake_vllm: FakeVllm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_CRASH", "1")
    monkeypatch.setenv("FAKE_VLLM_LOAD_SECONDS", "0.3")
    path = write_experiment(tmp_path, [student()])
    result = run_cli("evaluate", "-f", str(path), "--no-progress")
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "last lines of the vLLM log:" in lines
    assert "  | torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in lines
    log = run_dir(tmp_path / "store") / "logs" / "vllm-tiny.log"
    assert lines[-1] == (
        "error: vLLM server for tiny (/models/tiny-llama) exited with code 1 while loading the "
        f"model; its log: {log}"
    )
    assert_gone(fake_vllm.pids())  # the worker it left behind too


@pytest.mark.parametrize("how", ["flag", "env"])
def test_load_slower_than_the_bound_fails_and_stops_the_server(
    tmp_path: Path, fake_vllm: FakeVllm, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("FAKE_VLLM_LOAD_SECONDS", "60")
    extra = ["--vllm-health-timeout", "1.5"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("SKILLMIX_VLLM_HEALTH_TIMEOUT", "1.5")
    path = write_experiment(tmp_path, [student()])
    started = time.monotonic()
    result = run_cli("evaluate", "-f", str(path), "--no-progress", *extra)
    assert result.exit_code == 1, result.stderr
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert "did not become healthy within 1.5 s" in lines[-1]
    assert "--vllm-health-timeout" in lines[-1]
    assert any("Loading safetensors checkpoint shards" in line for line in lines[:-1])
    assert_gone(fake_vllm.pids())


def test_a_server_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path, fake_vllm: FakeVllm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_IGNORE_SIGTERM", "1")
    spec = StudentSpec.model_validate(student())
    server = VllmServer(
        spec, log_path=tmp_path / "vllm.log", executable="vllm", stop_grace=1.0, health_timeout=20
    )
    server.start()
    try:
        server.wait_healthy()
        pids = fake_vllm.pids()
    finally:
        started = time.monotonic()
        server.stop()
    assert time.monotonic() - started >= 1.0  # SIGTERM was ignored: SIGKILL after the grace
    assert_gone(pids)
    server.stop()  # idempotent


def test_health_wait_raises_with_the_log_tail(
    tmp_path: Path, fake_vllm: FakeVllm, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = StudentSpec.model_validate(student())
    log = tmp_path / "vllm.log"
    log.write_text("an older start's line\n")
    monkeypatch.setenv("FAKE_VLLM_CRASH", "1")
    server = VllmServer(spec, log_path=log, health_timeout=20)
    with pytest.raises(VllmServerFailed) as failure, server:
        server.wait_healthy()
    tail = failure.value.log_tail
    assert tail[0].startswith("# skillmix: ")  # this start's lines only
    assert tail[-1].startswith("torch.OutOfMemoryError")
    assert failure.value.exit_code == 1


@pytest.mark.parametrize(
    ("when", "sig", "code"),
    [
        ("loading", signal.SIGINT, 130),
        ("generating", signal.SIGINT, 130),
        ("loading", signal.SIGTERM, 143),
    ],
)
def test_ctrl_c_stops_the_server(
    tmp_path: Path, fake_vllm: FakeVllm, when: str, sig: int, code: int
) -> None:
    env = dict(os.environ)
    if when == "loading":
        env["FAKE_VLLM_LOAD_SECONDS"] = "60"
    else:
        env["FAKE_VLLM_LATENCY_MS"] = "30000"  # requests hang until the interrupt
    path = write_experiment(tmp_path, [student()])
    proc = subprocess.Popen(
        [sys.executable, "-m", "skillmix", "evaluate", "-f", str(path), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        marker = "Loading safetensors" if when == "loading" else "Application startup complete"
        deadline = time.monotonic() + WAIT_SECONDS
        logs = tmp_path / "store"
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            found = list(logs.glob("*/logs/vllm-tiny.log")) if logs.exists() else []
            if found and marker in found[0].read_text() and fake_vllm.state.exists():
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the stand-in never logged {marker!r}")
        if when == "generating":
            time.sleep(1.0)  # the health wait is over and requests are in flight
        pids = fake_vllm.pids()
        assert all(alive(p) for p in pids)
        proc.send_signal(sig)  # to skillmix only (the server has a session of its own)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == "interrupted", err
    assert_gone(pids)
