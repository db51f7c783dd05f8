"""The ``make demo`` workload end to end: wall time and peak memory of one local run.

Runs ``skillmix evaluate -f examples/quickstart.yaml --store <fresh tmp dir> --no-progress``
as a subprocess (built-in mock backend, empty response cache), under ``/usr/bin/time -v`` when
it exists (else ``resource.getrusage(RUSAGE_CHILDREN)``), and reads the record counts from the
run's ``report/summary.json``. ``--combinations M`` runs a copy of the experiment with M
combinations per k (``--smoke``: 2).

    .venv/bin/python benchmarks/bench_demo.py [--experiment examples/quickstart.yaml] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import REPO, emit, log, machine_busy_seconds, machine_info, parse_args_with_smoke

SMOKE = {"combinations": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default=str(REPO / "examples" / "quickstart.yaml"))
    p.add_argument("--skillmix", default=str(Path(sys.executable).parent / "skillmix"))
    p.add_argument(
        "--combinations",
        type=int,
        default=None,
        help="M per k (default: the experiment's); runs a copy in a temporary folder, so the "
        "experiment's catalog and prompts must be built-in or absolute paths",
    )
    p.add_argument("--no-time-v", action="store_true", help="use getrusage even if time -v exists")
    return parse_args_with_smoke(p, argv, SMOKE)


def parse_time_v(text: str) -> dict[str, float]:
    """The figures we use from GNU time's ``-v`` report."""
    out: dict[str, float] = {}
    patterns = {
        "max_rss_kb": r"Maximum resident set size \(kbytes\):\s*(\d+)",
        "user_seconds": r"User time \(seconds\):\s*([\d.]+)",
        "system_seconds": r"System time \(seconds\):\s*([\d.]+)",
    }
    for key, pattern in patterns.items():
        match = re.search(pattern, text)
        if match:
            out[key] = float(match.group(1))
    return out


def experiment_size(path: str) -> dict[str, Any]:
    from skillmix.loading import load_experiment

    e = load_experiment(path)
    return {
        "name": e.name,
        "students": len(e.students),
        "ks": list(e.ks),
        "M": e.combinations,
        "G": e.generation_rounds,
        "R": e.grader.rounds,
        "planned_generations": len(e.students) * len(e.ks) * e.combinations * e.generation_rounds,
    }


def shown(path: str) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    gnu_time = "/usr/bin/time"
    time_v = gnu_time if not args.no_time_v and os.access(gnu_time, os.X_OK) else None
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="skillmix-bench-demo-") as tmp:
        store = Path(tmp) / "store"
        report = Path(tmp) / "time.txt"
        experiment = args.experiment
        if args.combinations is not None:  # a copy with M changed; nothing else differs
            doc = yaml.safe_load(Path(experiment).read_text())
            doc["combinations"] = args.combinations
            experiment = str(Path(tmp) / Path(experiment).name)
            Path(experiment).write_text(yaml.safe_dump(doc, sort_keys=False))
        cmd = [args.skillmix, "evaluate", "-f", experiment, "--store", str(store)]
        cmd += ["--no-progress", "--format", "json"]
        if time_v:
            cmd = [time_v, "-v", "-o", str(report), *cmd]
        log(" ".join(cmd))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        busy0 = machine_busy_seconds()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, check=False)
        wall = time.perf_counter() - started
        busy1 = machine_busy_seconds()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr.decode(errors="replace")[-4000:])
            raise SystemExit(f"the demo run failed with exit code {proc.returncode}")
        if time_v:
            figures = parse_time_v(report.read_text())
            rss_kb = figures.get("max_rss_kb")
            cpu = figures.get("user_seconds", 0.0) + figures.get("system_seconds", 0.0)
            method = "time -v"
        else:
            rss_kb = after.ru_maxrss  # kilobytes on Linux; the largest child so far
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            method = "getrusage(RUSAGE_CHILDREN)"
        summaries = sorted(store.glob("*/report/summary.json"))
        if len(summaries) != 1:
            raise SystemExit(f"expected one report/summary.json under {store}, found {summaries}")
        counts = json.loads(summaries[0].read_text())["counts"]
        size = experiment_size(experiment)
    records = int(counts["generations"]) + int(counts["grades"])
    return {
        "benchmark": "demo",
        "smoke": args.smoke,
        "command": f"skillmix evaluate -f {shown(args.experiment)} --store <tmp> --no-progress",
        "experiment": size,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": None if rss_kb is None else round(rss_kb / 1024, 1),
        "measured_with": method,
        "records": records,
        "generations": counts["generations"],
        "grades": counts["grades"],
        "records_per_second": round(records / wall, 1),
        "other_busy_cores": None
        if busy0 is None or busy1 is None
        else round(max(0.0, busy1 - busy0 - cpu) / wall, 2),
        **machine,
    }


if __name__ == "__main__":
    emit(main())
