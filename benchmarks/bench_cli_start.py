"""CLI cold start: ``skillmix --help`` against ``python -c pass``.

Median wall time of N runs of each (alternating, after one unmeasured run of each to warm the
file cache), their difference, and which heavy libraries ``--help`` imports (there should be
none: commands load lazily), with the slowest imports from ``python -X importtime``.

    .venv/bin/python benchmarks/bench_cli_start.py [--runs 10] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, emit, log, machine_info, parse_args_with_smoke

HEAVY = (
    "openai",
    "boto3",
    "botocore",
    "kubernetes",
    "matplotlib",
    "numpy",
    "aiohttp",
    "pydantic",
    "httpx2",
)
SMOKE = {"runs": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--skillmix", default=str(Path(sys.executable).parent / "skillmix"))
    p.add_argument("--max-overhead-ms", type=float, default=None, help="optional target")
    args = parse_args_with_smoke(p, argv, SMOKE)
    if args.runs < 1:
        p.error("--runs must be positive")
    return args


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def imports(skillmix: str) -> list[tuple[str, float]]:
    """(module, cumulative import ms) for every module ``skillmix --help`` imports."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", skillmix, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    out = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        out.append((name, int(cumulative) / 1000))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    help_cmd = [args.skillmix, "--help"]
    pass_cmd = [sys.executable, "-c", "pass"]
    wall(help_cmd), wall(pass_cmd)  # warm the file cache
    help_times, pass_times = [], []
    for i in range(args.runs):
        help_times.append(wall(help_cmd))
        pass_times.append(wall(pass_cmd))
        log(
            f"run {i + 1}: --help {help_times[-1] * 1000:.0f} ms, pass {pass_times[-1] * 1000:.0f} ms"
        )
    modules = imports(args.skillmix)
    top_level = {name.split(".")[0] for name, _ in modules}
    heavy = sorted(m for m in HEAVY if m in top_level)
    roots = [(name, ms) for name, ms in modules if "." not in name]
    slowest = sorted(roots, key=lambda item: item[1], reverse=True)[:8]
    help_ms = statistics.median(help_times) * 1000
    pass_ms = statistics.median(pass_times) * 1000
    overhead = help_ms - pass_ms
    doc: dict[str, Any] = {
        "benchmark": "cli_start",
        "smoke": args.smoke,
        "runs": args.runs,
        "skillmix_help_ms": round(help_ms, 1),
        "python_pass_ms": round(pass_ms, 1),
        "difference_ms": round(overhead, 1),
        "skillmix_help_ms_min": round(min(help_times) * 1000, 1),
        "python_pass_ms_min": round(min(pass_times) * 1000, 1),
        "modules_imported": len(modules),
        "heavy_modules_imported": heavy,
        "slowest_top_level_imports_ms": {name: round(ms, 1) for name, ms in slowest},
        **machine_info(),
        "target_met": not heavy
        and (args.max_overhead_ms is None or overhead <= args.max_overhead_ms),
    }
    return doc


if __name__ == "__main__":
    emit(main())
