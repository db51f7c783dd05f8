"""Aggregation of one million graded answers.

Synthesises ``GradedAnswer`` records for S students x K values of k x G generation rounds x
R grading rounds x M combinations (default 5 x 5 x 3 x 3 x 4,445 = 1,000,125): built-in
catalog skills and topics, a short answer per (student, k, round, combination) shared by its R
grading verdicts, random points from a seeded RNG (about 1 % unreadable). Then times
``aggregate(records, MetricOptions(bootstrap_samples=2000))`` followed by the three
leaderboards of the report (``leaderboards`` on the JSON rows with their per-combination
values: exact ranks, the paired test with 2,000 bootstrap resamples of every adjacent pair,
tie groups), as ``skillmix aggregate`` plus the report's statistics do. Building the records
is timed separately and not counted.

    .venv/bin/python benchmarks/bench_aggregate.py [--records 1000000] [--smoke]
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import resource
import time
from typing import Any

from _common import CpuMeter, emit, log, machine_info, parse_args_with_smoke

from skillmix.artifacts import MetricRowJson
from skillmix.catalog import builtin_catalog
from skillmix.method.metrics import aggregate
from skillmix.method.points import GradedAnswer, MetricOptions
from skillmix.report.leaderboard import leaderboards

SENTENCES = (
    "The lantern by the harbor flickered while {topic} filled the evening talk.",
    "Nobody said it aloud, but everyone knew {topic} had changed the town.",
    "A quiet compass of habit pointed us back to {topic} every spring.",
    "It was, to put it mildly, a small matter that {topic} ruined the picnic.",
    "Saffron light caught the glass as the guide explained {topic} once more.",
)
SMOKE = {"records": 2000, "bootstrap_samples": 50}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000, help="at least this many")
    p.add_argument("--students", type=int, default=5)
    p.add_argument("--ks", default="2,3,4,5,6", help="comma-separated k values")
    p.add_argument("--generation-rounds", type=int, default=3)
    p.add_argument("--grading-rounds", type=int, default=3)
    p.add_argument("--bootstrap-samples", type=int, default=2000)
    p.add_argument("--p-point", type=float, default=0.7, help="chance of each rubric point")
    p.add_argument("--p-unparsed", type=float, default=0.01, help="chance of no usable points")
    p.add_argument("--seed", type=int, default=0)
    return parse_args_with_smoke(p, argv, SMOKE)


def build_records(args: argparse.Namespace, ks: list[int], m: int) -> list[GradedAnswer]:
    catalog = builtin_catalog()
    names = catalog.skill_names
    rng = random.Random(args.seed)
    combos = {
        k: [(rng.choice(catalog.topics), tuple(rng.sample(names, k))) for _ in range(m)] for k in ks
    }
    records: list[GradedAnswer] = []
    for s in range(args.students):
        student = f"student-{s}"
        for k in ks:
            size = k + 3
            for g in range(args.generation_rounds):
                for index, (topic, skills) in enumerate(combos[k]):
                    count = rng.randint(1, max(1, k // 2 + 1))
                    answer = " ".join(
                        rng.choice(SENTENCES).format(topic=topic) for _ in range(count)
                    )
                    for r in range(args.grading_rounds):
                        points: tuple[float, ...] | None
                        if rng.random() < args.p_unparsed:
                            points = None
                        else:
                            points = tuple(
                                1.0 if rng.random() < args.p_point else 0.0 for _ in range(size)
                            )
                        records.append(
                            GradedAnswer(
                                student=student,
                                grader="grader",
                                k=k,
                                generation_round=g,
                                grading_round=r,
                                index=index,
                                topic=topic,
                                skills=skills,
                                answer=answer,
                                points=points,
                            )
                        )
    return records


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    ks = [int(x) for x in args.ks.split(",") if x.strip()]
    per_combination = args.students * len(ks) * args.generation_rounds * args.grading_rounds
    m = math.ceil(args.records / per_combination)
    machine = machine_info()
    log(f"building {per_combination * m:,} records ({per_combination} x M={m})")
    started = time.perf_counter()
    records = build_records(args, ks, m)
    build_seconds = time.perf_counter() - started
    rss_after_build = peak_rss_mb()
    gc.collect()
    options = MetricOptions(bootstrap_samples=args.bootstrap_samples)
    log(f"aggregating (bootstrap_samples={args.bootstrap_samples})")
    meter = CpuMeter()
    meter.start()
    began = time.perf_counter()
    rows = aggregate(records, options)
    aggregate_seconds = time.perf_counter() - began
    boards = leaderboards(
        [MetricRowJson.model_validate(r.as_dict(details=True)) for r in rows],
        samples=args.bootstrap_samples,
        seed=options.bootstrap_seed,
    )
    reading = meter.stop()
    seconds, cpu = reading.seconds, reading.own_cpu
    pairs = sum(len(b.pairwise) for b in boards)
    n = len(records)
    return {
        "benchmark": "aggregate",
        "smoke": args.smoke,
        "records": n,
        "students": args.students,
        "ks": ks,
        "M": m,
        "G": args.generation_rounds,
        "R": args.grading_rounds,
        "bootstrap_samples": args.bootstrap_samples,
        "rows": len(rows),
        "paired_tests": pairs,
        "aggregate_seconds": round(aggregate_seconds, 2),
        "leaderboard_seconds": round(seconds - aggregate_seconds, 2),
        "build_seconds": round(build_seconds, 2),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "records_per_second": round(n / seconds),
        "peak_rss_mb_after_build": rss_after_build,
        "peak_rss_mb": peak_rss_mb(),
        "other_busy_cores": reading.other_busy_cores(),
        **machine,
    }


if __name__ == "__main__":
    emit(main())
