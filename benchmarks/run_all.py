"""Run every benchmark, one at a time, and print one JSON object keyed by benchmark name.

Each script runs as its own process (its stderr passes through as progress). A script that
fails is reported as ``{"error": ..., "returncode": ...}`` and the exit status is 1.
``--smoke`` runs every script with ``--smoke`` (the same code path at a tiny size, a few
seconds each, at most SMOKE_TIMEOUT): ``make benchmarks-smoke``, which ``make test`` runs,
so a benchmark that no longer works fails CI. Smoke numbers mean nothing.

    .venv/bin/python benchmarks/run_all.py [--quick | --smoke] [--only generation,cli_start]
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
    "scoring",
)
QUICK_RPM_DURATION = "30"
SMOKE_TIMEOUT = 300.0  # seconds, any one script in smoke mode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"run the RPM benchmark for {QUICK_RPM_DURATION} s instead of 180 s",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="every benchmark at a tiny size, only to check that it works (CI)",
    )
    p.add_argument("--only", default="", help="comma-separated subset of " + ", ".join(BENCHMARKS))
    args = p.parse_args(argv)
    args.names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if args.quick and args.smoke:
        p.error("--quick and --smoke exclude each other")
    return args


def run_one(name: str, extra: list[str], timeout: float | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *extra]
    log(f"== {name}: {' '.join(cmd[1:])}")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        log(f"== {name}: killed after {timeout:g} s")
        return {"error": f"bench_{name}.py did not finish within {timeout:g} s", "returncode": None}
    log(f"== {name}: exit {proc.returncode} after {time.perf_counter() - started:.1f} s")
    if proc.returncode != 0:
        return {"error": f"bench_{name}.py failed", "returncode": proc.returncode}
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        return {"error": f"bench_{name}.py printed no JSON document: {exc}", "returncode": 0}
    if not isinstance(result, dict):
        return {"error": f"bench_{name}.py printed no JSON object", "returncode": 0}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for name in args.names:
        if args.smoke:
            results[name] = run_one(name, ["--smoke"], timeout=SMOKE_TIMEOUT)
            continue
        extra = ["--duration", QUICK_RPM_DURATION] if args.quick and name == "grading_rpm" else []
        results[name] = run_one(name, extra)
    emit(results)
    failed = [name for name, r in results.items() if "error" in r]
    log(
        f"== {len(results) - len(failed)} of {len(results)} benchmarks ran in "
        f"{time.perf_counter() - started:.1f} s"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
