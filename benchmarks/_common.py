"""Helpers shared by the benchmark scripts: the mock server as a separate process, realistic
SKILL-MIX prompts, CPU readings and the one-JSON-document output convention."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries exactly one JSON document."""
    print(message, file=sys.stderr, flush=True)


def emit(doc: dict[str, Any]) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def parse_args_with_smoke(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, smoke: dict[str, Any]
) -> argparse.Namespace:
    """Parse ``argv`` with a ``--smoke`` flag added: the same code path at the tiny size that
    ``smoke`` gives as new defaults (``run_all.py --smoke``, which CI runs, finishes in
    seconds). Options given explicitly still win; ``args.smoke`` says which mode ran."""
    sizes = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in smoke.items())
    parser.add_argument(
        "--smoke", action="store_true", help=f"a tiny run that only checks it works: {sizes}"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args(argv)
    return args


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process, from /proc (None where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the ")" of comm: state is fields[0]; utime and stime are fields 11 and 12
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores of the machine spent busy since boot (from /proc/stat)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def machine_info() -> dict[str, Any]:
    """Cores and load average, so a result can be judged against what else was running."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {"cpus": os.cpu_count(), "loadavg_1m_before": load[0]}


@dataclass
class CpuReading:
    """Wall and CPU seconds over one measured phase (None where /proc is unavailable)."""

    seconds: float
    own_cpu: float
    server_cpu: float | None
    machine_busy: float | None

    def other_busy_cores(self) -> float | None:
        """Cores kept busy by processes other than ours (a noise indicator on shared hosts)."""
        if self.machine_busy is None or self.seconds <= 0:
            return None
        ours = self.own_cpu + (self.server_cpu or 0.0)
        return round(max(0.0, self.machine_busy - ours) / self.seconds, 2)


class CpuMeter:
    """Measures this process's CPU (``time.process_time``), the server process's and the
    machine's between ``start()`` and ``stop()``."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self._start: tuple[float, float, float | None, float | None] | None = None

    def _snapshot(self) -> tuple[float, float, float | None, float | None]:
        server = process_cpu_seconds(self.server_pid) if self.server_pid else None
        return time.perf_counter(), time.process_time(), server, machine_busy_seconds()

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> CpuReading:
        assert self._start is not None, "start() first"
        wall0, cpu0, server0, busy0 = self._start
        wall1, cpu1, server1, busy1 = self._snapshot()
        return CpuReading(
            seconds=wall1 - wall0,
            own_cpu=cpu1 - cpu0,
            server_cpu=None if server0 is None or server1 is None else server1 - server0,
            machine_busy=None if busy0 is None or busy1 is None else busy1 - busy0,
        )


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class MockServerProcess:
    """A running ``skillmix mock-server`` child process."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = http_get_json(f"{self.url}/stats")
        return data

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.proc.pid)


@contextlib.contextmanager
def mock_server_process(
    args: Sequence[str], *, start_timeout: float = 30.0
) -> Iterator[MockServerProcess]:
    """Start ``python -m skillmix mock-server --port 0 ARGS`` and stop it (SIGTERM) on exit."""
    with tempfile.TemporaryDirectory(prefix="skillmix-bench-") as tmp:
        port_file = Path(tmp) / "port"
        errors = Path(tmp) / "server.log"
        cmd = [
            sys.executable,
            "-m",
            "skillmix",
            "mock-server",
            "--host",
            HOST,
            "--port",
            "0",
            "--port-file",
            str(port_file),
            *args,
        ]
        with errors.open("wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        try:
            port = _wait_for_port(proc, port_file, errors, start_timeout)
            server = MockServerProcess(proc, port)
            _wait_healthy(server, start_timeout)
            log(f"mock server pid {proc.pid} on {server.url} ({' '.join(args)})")
            yield server
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_for_port(
    proc: subprocess.Popen[bytes], port_file: Path, errors: Path, timeout: float
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the mock server exited with {proc.returncode}: {errors.read_text()[-2000:]}"
            )
        with contextlib.suppress(OSError, ValueError):
            return int(port_file.read_text().strip())
        time.sleep(0.05)
    raise RuntimeError(f"the mock server did not write its port within {timeout:g} s")


def _wait_healthy(server: MockServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            http_get_json(f"{server.url}/health", timeout=1.0)
            return
        time.sleep(0.05)
    raise RuntimeError(f"the mock server at {server.url} was not healthy within {timeout:g} s")


# ----------------------------------------------------------------------------- prompts


def _draws(n: int, k: int, seed: int) -> list[tuple[str, tuple[Any, ...]]]:
    """``n`` distinct (topic, skills) pairs from the built-in catalog."""
    from skillmix.catalog import builtin_catalog

    catalog = builtin_catalog()
    rng = random.Random(seed)
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    while len(out) < n:
        skills = tuple(rng.sample(catalog.skills, k))
        topic = rng.choice(catalog.topics)
        key = (topic, tuple(s.name for s in skills))
        if key in seen:
            continue
        seen.add(key)
        out.append((topic, skills))
    return out


def generation_messages(n: int, *, k: int = 3, seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` distinct first-turn generation conversations (system + user), as a student sees
    them in a run: the built-in ``two-turn-v1`` prompt for k skills (about 1-1.5 KB)."""
    from skillmix.config import DEFAULT_SYSTEM_PROMPT
    from skillmix.method.prompts import render_generation_prompts
    from skillmix.promptset import load_prompt_version

    template = load_prompt_version("generation", "two-turn-v1")
    out = []
    for topic, skills in _draws(n, k, seed):
        user = render_generation_prompts(template, skills, topic)[0]
        out.append(
            [
                {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ]
        )
    return out


def grading_messages(n: int, *, k: int = 3, seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` distinct grading conversations with the built-in ``table-v1`` prompt and a
    short student answer."""
    from skillmix.config import DEFAULT_SYSTEM_PROMPT
    from skillmix.method.prompts import render_grading_prompt
    from skillmix.promptset import load_prompt_version

    template = load_prompt_version("grading", "table-v1")
    out = []
    for i, (topic, skills) in enumerate(_draws(n, k, seed)):
        answer = (
            f"On the subject of {topic}, the old lantern by the harbor flickered as the "
            f"saffron sky dimmed; passage {i} keeps its promise in a few quiet sentences."
        )
        user = render_grading_prompt(template, skills, topic, answer, "table")
        out.append(
            [
                {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ]
        )
    return out
