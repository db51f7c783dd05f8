"""Generation client throughput against the mock server at a fixed latency.

The mock server runs as a separate process (``python -m skillmix mock-server``) so this
process's CPU time is the client's alone. N distinct generation requests (the built-in
``two-turn-v1`` first turn, about 1 KB, ``max_tokens`` 512) go through one ``ChatClient`` at
concurrency C, without cache or RPM limit. With latency L the best possible rate is C / L;
``efficiency`` is the achieved fraction of it (target >= 0.9).

``--driver`` swaps the client for diagnosis: ``chatclient-sdk-aiohttp`` is ``ChatClient`` on the
SDK's aiohttp transport (``DefaultAioHttpClient``), ``chatclient-raw-aiohttp`` is ``ChatClient``
with its request done by a plain aiohttp POST (a prototype of the fix), ``sdk`` the bare
``AsyncOpenAI`` call that ``ChatClient`` wraps, ``aiohttp`` a raw HTTP POST with no client
logic at all (the floor of client cost).

    .venv/bin/python benchmarks/bench_generation.py [--requests 2000] [--concurrency 64] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import (
    CpuMeter,
    CpuReading,
    MockServerProcess,
    emit,
    generation_messages,
    log,
    machine_info,
    mock_server_process,
    parse_args_with_smoke,
    percentile,
)

from skillmix.backends.client import BackendError, ChatClient, ChatResult, estimate_tokens
from skillmix.config import SamplingParams, StudentSpec

Messages = list[dict[str, str]]
DRIVERS = ("chatclient", "chatclient-sdk-aiohttp", "chatclient-raw-aiohttp", "sdk", "aiohttp")
SMOKE = {"requests": 40, "concurrency": 8, "warmup": 8}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="measured requests")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=100.0, help="mock server latency")
    p.add_argument(
        "--jitter-ms", type=float, default=0.0, help="uniform extra server latency in [0, J]"
    )
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--k", type=int, default=2, help="skills per prompt (k=2: about 1.1 KB)")
    p.add_argument(
        "--warmup", type=int, default=64, help="unmeasured requests that open the connections"
    )
    p.add_argument("--target", type=float, default=0.9, help="efficiency target")
    p.add_argument("--driver", choices=DRIVERS, default="chatclient", help="see the module doc")
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of the measured phase")
    p.add_argument("--seed", type=int, default=0)
    args = parse_args_with_smoke(p, argv, SMOKE)
    if args.latency_ms <= 0 or args.requests < 1 or args.concurrency < 1:
        p.error("--latency-ms, --requests and --concurrency must be positive")
    return args


async def loop_lag_monitor(samples: list[float], stop: asyncio.Event, tick: float = 0.01) -> None:
    """How late the event loop wakes a 10 ms sleeper: a saturated loop shows up here."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(tick)
        samples.append(max(0.0, loop.time() - started - tick))


class GcTimer:
    """A ``gc.callbacks`` entry that records every collection's pause."""

    def __init__(self, pauses: list[float]) -> None:
        self.pauses = pauses
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self.started)


class RawAiohttpChatClient(ChatClient):
    """Diagnosis only: ``ChatClient`` (cache key, semaphore, pacer, stats) with ``_request``
    sending the JSON body over a plain ``aiohttp`` session instead of the OpenAI SDK.
    No retries: a prototype of the transport change, not a replacement."""

    _session: Any = None

    async def _request(self, messages: list[dict[str, str]], n: int, sample: str) -> ChatResult:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.spec.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.spec.timeout),
                headers={"Authorization": "Bearer EMPTY"},
            )
        params = self.spec.sampling.request_params()
        estimate = estimate_tokens(messages, params.get("max_tokens"), n)
        await self.pacer.acquire(estimate)
        self.stats.requests += 1
        body = {"model": self.spec.model, "messages": messages, "n": n, **params}
        async with self._session.post(f"{self.base_url}/chat/completions", json=body) as resp:
            if resp.status != 200:
                self.stats.failures += 1
                raise BackendError(f"HTTP {resp.status}", status=resp.status)
            data = json.loads(await resp.read())
            self.pacer.observe_headers(resp.headers)
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion_tokens = int(usage.get("completion_tokens", 0))
        self.pacer.settle(estimate, prompt_tokens + completion_tokens)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        choices = sorted(data["choices"], key=lambda c: c["index"])
        return ChatResult(
            texts=[c["message"]["content"] or "" for c in choices],
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            attempts=1,
            finish_reasons=[str(c.get("finish_reason")) for c in choices],
        )

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()


async def make_driver(
    args: argparse.Namespace, base_url: str
) -> tuple[Callable[[Messages], Awaitable[None]], Callable[[], Awaitable[None]], Any]:
    """(send one request, close, ChatClient or None) for the chosen driver."""
    spec = StudentSpec(
        name="bench-student",
        backend="mock",
        model="mock-bench",
        base_url=base_url,
        concurrency=args.concurrency,
        sampling=SamplingParams(max_tokens=args.max_tokens),
    )
    if args.driver.startswith("chatclient"):
        cls = RawAiohttpChatClient if args.driver == "chatclient-raw-aiohttp" else ChatClient
        client = cls(spec, base_url=base_url, api_key="EMPTY", cache=None, rpm=0, tpm=0)
        if args.driver == "chatclient-sdk-aiohttp":
            from openai import AsyncOpenAI, DefaultAioHttpClient

            await client.close()
            client._client = AsyncOpenAI(
                base_url=base_url,
                api_key="EMPTY",
                max_retries=0,
                timeout=spec.timeout,
                http_client=DefaultAioHttpClient(timeout=spec.timeout),
            )

        async def send(messages: Messages) -> None:
            result = await client.chat(messages, n=1, sample="bench")
            if not result.texts or not result.texts[0]:
                raise BackendError("empty reply")

        return send, client.close, client

    semaphore = asyncio.Semaphore(args.concurrency)
    params = spec.sampling.request_params()
    if args.driver == "sdk":
        from openai import AsyncOpenAI

        sdk = AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=spec.timeout)

        async def send(messages: Messages) -> None:
            async with semaphore:
                raw = await sdk.chat.completions.with_raw_response.create(
                    model=spec.model,
                    messages=messages,  # type: ignore[arg-type]
                    n=1,
                    **params,
                )
                completion = raw.parse()
            if not completion.choices[0].message.content:
                raise RuntimeError("empty reply")

        return send, sdk.close, None

    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.concurrency),
        headers={"Authorization": "Bearer EMPTY"},
    )
    url = f"{base_url}/chat/completions"

    async def send(messages: Messages) -> None:
        body = {"model": spec.model, "messages": messages, "n": 1, **params}
        async with semaphore, session.post(url, json=body) as response:
            response.raise_for_status()
            data = json.loads(await response.read())
        if not data["choices"][0]["message"]["content"]:
            raise RuntimeError("empty reply")

    return send, session.close, None


async def drive(args: argparse.Namespace, server: MockServerProcess) -> dict[str, Any]:
    total = args.warmup + args.requests
    conversations = generation_messages(total, k=args.k, seed=args.seed)
    warmup, measured = conversations[: args.warmup], conversations[args.warmup :]
    send, close, client = await make_driver(args, server.base_url)
    errors: list[str] = []

    async def one(messages: Messages) -> None:
        try:
            await send(messages)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])

    try:
        if warmup:
            log(f"warm-up: {len(warmup)} requests")
            await asyncio.gather(*(one(m) for m in warmup))
            errors.clear()
        requests_before = client.stats.requests if client is not None else 0
        retries_before = client.stats.retries if client is not None else 0
        lags: list[float] = []
        stop = asyncio.Event()
        monitor = asyncio.create_task(loop_lag_monitor(lags, stop))
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        log(f"measuring: {len(measured)} requests at concurrency {args.concurrency}")
        gc_pauses: list[float] = []
        gc_timer = GcTimer(gc_pauses)
        gc.callbacks.append(gc_timer)
        meter = CpuMeter(server.proc.pid)
        meter.start()
        try:
            await asyncio.gather(*(one(m) for m in measured))
        finally:
            reading = meter.stop()
            gc.callbacks.remove(gc_timer)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        stop.set()
        await monitor
    finally:
        await close()
    prompt_bytes = [sum(len(m["content"].encode()) for m in c) for c in measured]
    return {
        "reading": reading,
        "gc_pauses": gc_pauses,
        "errors": errors,
        "lags": lags,
        "http_requests": (client.stats.requests - requests_before) if client else None,
        "retries": (client.stats.retries - retries_before) if client else 0,
        "prompt_bytes_mean": statistics.fmean(prompt_bytes) if prompt_bytes else 0,
    }


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    server_args = ["--latency-ms", f"{args.latency_ms:g}", "--seed", str(args.seed)]
    if args.jitter_ms:
        server_args += ["--jitter-ms", f"{args.jitter_ms:g}"]
    machine = machine_info()
    with mock_server_process(server_args) as server:
        run = asyncio.run(drive(args, server))
        server_stats = server.stats()
    reading: CpuReading = run["reading"]
    n = args.requests
    seconds = reading.seconds
    throughput = n / seconds
    mean_latency = (args.latency_ms + args.jitter_ms / 2) / 1000.0
    bound = args.concurrency / mean_latency
    efficiency = throughput / bound
    slot = args.concurrency * seconds / n  # Little's law: mean time a request holds a slot
    server_cpu = reading.server_cpu
    errors = len(run["errors"])
    return {
        "benchmark": "generation",
        "smoke": args.smoke,
        "driver": args.driver,
        "requests": n,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "max_tokens": args.max_tokens,
        "prompt_bytes_mean": round(run["prompt_bytes_mean"], 1),
        "seconds": round(seconds, 3),
        "throughput_rps": round(throughput, 1),
        "bound_rps": round(bound, 1),
        "efficiency": round(efficiency, 3),
        "client_cpu_seconds": round(reading.own_cpu, 3),
        "client_cpu_ms_per_request": round(reading.own_cpu * 1000 / n, 3),
        "client_cpu_utilisation": round(reading.own_cpu / seconds, 3),
        "server_cpu_seconds": None if server_cpu is None else round(server_cpu, 3),
        "server_cpu_ms_per_request": None
        if server_cpu is None
        else round(server_cpu * 1000 / n, 3),
        "server_cpu_utilisation": None if server_cpu is None else round(server_cpu / seconds, 3),
        "slot_ms_mean": ms(slot),
        "client_overhead_ms_per_request": ms(slot - mean_latency),
        "gc_collections": len(run["gc_pauses"]),
        "gc_pause_ms_total": ms(sum(run["gc_pauses"])),
        "gc_pause_ms_max": ms(max(run["gc_pauses"], default=0.0)),
        "loop_lag_ms_p50": ms(percentile(run["lags"], 50)),
        "loop_lag_ms_p99": ms(percentile(run["lags"], 99)),
        "loop_lag_ms_max": ms(max(run["lags"], default=0.0)),
        "server_max_in_flight": server_stats.get("max_in_flight"),
        "http_requests": run["http_requests"],
        "retries": run["retries"],
        "errors": errors,
        "error_samples": sorted(set(run["errors"]))[:5],
        "other_busy_cores": reading.other_busy_cores(),
        **machine,
        "target_efficiency": args.target,
        "target_met": errors == 0 and efficiency >= args.target,
    }


if __name__ == "__main__":
    result = main()
    emit(result)
    if result["smoke"] and result["errors"]:  # a smoke run checks that requests work
        raise SystemExit(f"smoke: {result['errors']} requests failed: {result['error_samples']}")
