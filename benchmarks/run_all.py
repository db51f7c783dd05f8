"""Run every benchmark, one at a time, and print one JSON object keyed by benchmark name.

Each script runs as its own process (its stderr passes through as progress). A script that
fails is reported as ``{"error": ..., "returncode": ...}`` and the exit status is 1.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only generation,cli_start]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, emit, log

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "generation",
    "grading_rpm",
    "demo",
    "cli_start",
    "aggregate",
    "report_size",
    "launch",
)
QUICK_RPM_DURATION = "30"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"run the RPM benchmark for {QUICK_RPM_DURATION} s instead of 180 s",
    )
    p.add_argument("--only", default="", help="comma-separated subset of " + ", ".join(BENCHMARKS))
    args = p.parse_args(argv)
    args.names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    return args


def run_one(name: str, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *extra]
    log(f"== {name}: {' '.join(cmd[1:])}")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    log(f"== {name}: exit {proc.returncode} after {time.perf_counter() - started:.1f} s")
    if proc.returncode != 0:
        return {"error": f"bench_{name}.py failed", "returncode": proc.returncode}
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        return {"error": f"bench_{name}.py printed no JSON document: {exc}", "returncode": 0}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {}
    for name in args.names:
        extra = ["--duration", QUICK_RPM_DURATION] if args.quick and name == "grading_rpm" else []
        results[name] = run_one(name, extra)
    emit(results)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
