"""Grading under an enforced requests-per-minute limit.

The mock server runs as a separate process with ``--rpm R`` (a sliding 60 s window, 429 with
``Retry-After`` beyond it) and a fixed latency. One grader ``ChatClient`` configured with the
same ``rpm`` paces itself; C workers issue distinct grading requests (the built-in ``table-v1``
prompt, ``n`` = 3 choices as a run asks for 3 grading rounds) continuously until the duration
has elapsed, then wait for the requests already issued. Every request's outcome is counted.

Targets: achieved rate over the whole window / limit >= 0.9, 429s <= 2 % of HTTP requests,
no request lost (issued = completed + failed with a reason).

    .venv/bin/python benchmarks/bench_grading_rpm.py [--duration 180] [--rpm 600] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import time
from typing import Any

from _common import (
    CpuMeter,
    emit,
    grading_messages,
    log,
    machine_info,
    mock_server_process,
    parse_args_with_smoke,
)

from skillmix.backends.client import ChatClient
from skillmix.config import GraderSpec, SamplingParams

SMOKE = {"duration": 2.0, "concurrency": 4, "drain_timeout": 30.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=180.0, help="seconds of issuing requests")
    p.add_argument("--rpm", type=int, default=600, help="limit of the server and the client")
    p.add_argument(
        "--client-rpm",
        type=int,
        default=None,
        help="the client's own budget (default: --rpm; set it higher to see 429s counted)",
    )
    p.add_argument("--latency-ms", type=float, default=200.0, help="mock server latency")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--n", type=int, default=3, help="choices per request (grading rounds)")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--k", type=int, default=3, help="skills per graded answer")
    p.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds to wait for issued requests"
    )
    p.add_argument("--target-ratio", type=float, default=0.9)
    p.add_argument("--max-429-ratio", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    args = parse_args_with_smoke(p, argv, SMOKE)
    if args.duration <= 0 or args.rpm < 1 or args.concurrency < 1:
        p.error("--duration, --rpm and --concurrency must be positive")
    if args.client_rpm is None:
        args.client_rpm = args.rpm
    return args


class Ledger:
    """Every issued request and what became of it."""

    def __init__(self) -> None:
        self.issued = 0
        self.completed_at: list[float] = []  # perf_counter of each success
        self.failures: dict[str, int] = {}
        self.bad_replies = 0

    @property
    def completed(self) -> int:
        return len(self.completed_at)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def fail(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:120]
        self.failures[reason] = self.failures.get(reason, 0) + 1


async def drive(args: argparse.Namespace, base_url: str, server_pid: int) -> dict[str, Any]:
    spec = GraderSpec(
        name="bench-grader",
        backend="mock",
        model="mock-grader",
        base_url=base_url,
        concurrency=args.concurrency,
        rpm=args.client_rpm,
        sampling=SamplingParams(temperature=0.7, max_tokens=args.max_tokens),
    )
    client = ChatClient(
        spec, base_url=base_url, api_key="EMPTY", cache=None, rpm=args.client_rpm, tpm=0
    )
    # more distinct prompts than the limit allows in the duration; recycled with a new
    # sample name (a new cache key) if ever exhausted
    pool = grading_messages(
        math.ceil(max(args.rpm, args.client_rpm) * args.duration / 60 * 1.25) + args.concurrency,
        k=args.k,
        seed=args.seed,
    )
    counter = itertools.count()
    ledger = Ledger()
    meter = CpuMeter(server_pid)

    async def worker() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            messages = pool[i % len(pool)]
            ledger.issued += 1
            try:
                result = await client.chat(messages, n=args.n, sample=f"bench:{i}")
            except Exception as exc:
                ledger.fail(exc)
                continue
            ledger.completed_at.append(time.perf_counter())
            if len(result.texts) != args.n or not all(result.texts):
                ledger.bad_replies += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(15)
            elapsed = time.perf_counter() - started
            log(
                f"{elapsed:6.0f} s: issued {ledger.issued} completed {ledger.completed} "
                f"failed {ledger.failed} ({ledger.completed / elapsed * 60:.0f} rpm), "
                f"429s {client.stats.rate_limited}"
            )

    log(
        f"{args.concurrency} workers pacing to {args.client_rpm} rpm for {args.duration:g} s "
        f"against --rpm {args.rpm} "
        f"(latency {args.latency_ms:g} ms)"
    )
    meter.start()
    started = time.perf_counter()
    deadline = started + args.duration
    reporter = asyncio.create_task(report())
    workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
    try:
        _done, pending = await asyncio.wait(workers, timeout=args.duration + args.drain_timeout)
        for task in pending:  # still running after the drain timeout: counted as lost
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        reading = meter.stop()
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await client.close()
    return {
        "ledger": ledger,
        "deadline": deadline,
        "reading": reading,
        "stats": client.stats,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    machine = machine_info()
    server_args = ["--rpm", str(args.rpm), "--latency-ms", f"{args.latency_ms:g}"]
    with mock_server_process([*server_args, "--seed", str(args.seed)]) as server:
        run = asyncio.run(drive(args, server.base_url, server.proc.pid))
        server_stats = server.stats()
    ledger: Ledger = run["ledger"]
    in_window = sum(1 for t in ledger.completed_at if t <= run["deadline"])
    achieved_rpm = in_window / args.duration * 60
    ratio = achieved_rpm / args.rpm
    http_requests = int(server_stats.get("by_path", {}).get("/v1/chat/completions", 0))
    http_429 = int(server_stats.get("rate_limited", 0))
    ratio_429 = http_429 / http_requests if http_requests else 0.0
    lost = ledger.issued - ledger.completed - ledger.failed
    stats = run["stats"]
    reading = run["reading"]
    return {
        "benchmark": "grading_rpm",
        "smoke": args.smoke,
        "limit_rpm": args.rpm,
        "client_rpm": args.client_rpm,
        "duration_s": args.duration,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "n": args.n,
        "issued": ledger.issued,
        "completed": ledger.completed,
        "completed_in_window": in_window,
        "failed": ledger.failed,
        "failure_reasons": ledger.failures,
        "bad_replies": ledger.bad_replies,
        "lost": lost,
        "achieved_rpm": round(achieved_rpm, 1),
        "ratio": round(ratio, 4),
        "drain_seconds": round(reading.seconds - args.duration, 2),
        "http_requests": http_requests,
        "http_429": http_429,
        "ratio_429": round(ratio_429, 4),
        "client_rate_limited": stats.rate_limited,
        "client_retries": stats.retries,
        "client_failures": stats.failures,
        "client_paced_seconds": round(stats.paced_seconds, 1),
        "server_ok": server_stats.get("ok"),
        "client_cpu_seconds": round(reading.own_cpu, 2),
        "other_busy_cores": reading.other_busy_cores(),
        **machine,
        "target_ratio": args.target_ratio,
        "target_max_429_ratio": args.max_429_ratio,
        "target_met": ratio >= args.target_ratio and ratio_429 <= args.max_429_ratio and lost == 0,
    }


if __name__ == "__main__":
    result = main()
    emit(result)
    if result["smoke"] and (result["failed"] or result["lost"] or not result["completed"]):
        # a smoke run checks that requests work
        raise SystemExit(
            f"smoke: {result['completed']} completed, {result['failed']} failed "
            f"({result['failure_reasons']}), {result['lost']} lost"
        )
