"""Scoring rate of reasoning answers, and the per-answer time limit under hostile input.

Scores 10,000 (response, reference) pairs drawn in turn from the project's held-out agreement
set (``tests/unit/data/math_agreement.jsonl``: several boxes, units, LaTeX variants,
intervals, matrices, text answers), each sent through ``score_responses`` as a reasoning run
does (worker processes, a per-answer limit), and reports responses per second. Then scores a
handful of hostile answers that make sympy run for minutes (a power tower, a huge polynomial
power) and reports the slowest answer's wall time: every one must come back "timed out"
within the limit (plus the cost of replacing its worker), so no response stalls a run.

    .venv/bin/python benchmarks/bench_scoring.py [--responses 10000] [--limit-s 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from _common import REPO, emit, log, machine_info, parse_args_with_smoke

from skillmix.pipeline.scoring import TIMED_OUT, score_responses

CASES = REPO / "tests" / "unit" / "data" / "math_agreement.jsonl"
HOSTILE = (
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{(x+1)^{200000}}",
    "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
    "\\boxed{10^{10^{10}}}",
)
SMOKE = {"responses": 200, "limit_s": 2.0}
MARGIN_S = 2.0  # replacing a killed worker (a fresh interpreter importing sympy)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--responses", type=int, default=10_000)
    p.add_argument("--limit-s", type=float, default=5.0, help="each answer's time limit")
    p.add_argument("--workers", type=int, default=None, help="default: the usable CPUs")
    return parse_args_with_smoke(p, argv, SMOKE)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines()]
    items = [("math", c["response"], c["answer"]) for c in cases]
    batch = [items[i % len(items)] for i in range(args.responses)]
    info = machine_info()
    log(f"scoring {len(batch)} responses ({len(cases)} distinct) with limit {args.limit_s}s")
    started = time.perf_counter()
    verdicts = score_responses(batch, args.limit_s, args.workers)
    seconds = time.perf_counter() - started
    expected = [c["skythought"] for c in cases]
    agree = sum(v.correct == expected[i % len(cases)] for i, v in enumerate(verdicts))
    slowest = 0.0
    hostile_timed_out = 0
    for response in HOSTILE:  # one at a time, so each wall time is that answer's own
        t = time.perf_counter()
        [verdict] = score_responses([("math", response, "1")], args.limit_s, 1)
        slowest = max(slowest, time.perf_counter() - t)
        hostile_timed_out += verdict.reason == TIMED_OUT
    doc: dict[str, Any] = {
        "benchmark": "scoring",
        "smoke": args.smoke,
        **info,
        "responses": len(batch),
        "seconds": round(seconds, 3),
        "responses_per_second": round(len(batch) / seconds, 1) if seconds else None,
        "agreement_with_skythought": round(agree / len(batch), 4),
        "timed_out_in_batch": sum(v.reason == TIMED_OUT for v in verdicts),
        "limit_s": args.limit_s,
        "hostile_answers": len(HOSTILE),
        "hostile_timed_out": hostile_timed_out,
        "slowest_hostile_answer_s": round(slowest, 3),
        "within_limit": slowest <= args.limit_s + MARGIN_S,
    }
    emit(doc)
    return 0 if doc["within_limit"] and hostile_timed_out == len(HOSTILE) else 1


if __name__ == "__main__":
    raise SystemExit(main())
