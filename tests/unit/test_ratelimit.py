"""Client-side pacing: token-bucket arithmetic with an injected clock, no real waiting."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from skillmix.backends.ratelimit import Bucket, Pacer


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        # A real monotonic clock always moves forward a little across a sleep, even for a
        # sleep shorter than the float resolution at this magnitude.
        self.now = max(self.now + seconds, math.nextafter(self.now, math.inf))


# ---- Bucket --------------------------------------------------------------------------------


def test_bucket_defaults() -> None:
    b = Bucket(600)
    assert b.capacity == 10  # at most 10 requests of burst
    assert b.rate == pytest.approx(590 / 60)  # capacity + 60 s of refill == the budget
    assert b.level == b.capacity
    small = Bucket(30)
    assert small.capacity == 1
    assert small.rate == pytest.approx(29 / 60)
    tiny = Bucket(1)
    assert tiny.capacity == 1
    assert tiny.rate == pytest.approx(0.5 / 60)  # never slower than half the budget
    explicit = Bucket(6000, burst=50)
    assert explicit.capacity == 50
    assert explicit.rate == pytest.approx(5950 / 60)


def test_bucket_take_and_wait() -> None:
    b = Bucket(600)
    t = 0.0
    for _ in range(10):
        assert b.wait_time(1, t) == 0.0
        b.take(1, t)
    assert b.level == pytest.approx(0.0)
    assert b.wait_time(1, t) == pytest.approx(60 / 590)
    assert b.wait_time(3, t) == pytest.approx(3 * 60 / 590)
    # refill is continuous
    assert b.wait_time(1, t + 30 / 590) == pytest.approx(30 / 590)
    assert b.wait_time(1, t + 60 / 590) == pytest.approx(0.0, abs=1e-12)


def test_bucket_refill_caps_at_capacity() -> None:
    b = Bucket(600)
    b.take(10, 0.0)
    b.wait_time(1, 3600.0)
    assert b.level == b.capacity


def test_bucket_oversized_amount_waits_for_full_bucket_then_goes_negative() -> None:
    b = Bucket(60)  # capacity 1
    assert b.wait_time(5, 0.0) == 0.0  # a full bucket admits anything once
    b.take(5, 0.0)
    assert b.level == pytest.approx(-4.0)
    assert b.wait_time(5, 0.0) == pytest.approx(5 / b.rate)  # pays the debt back first


def test_bucket_give_back() -> None:
    b = Bucket(600)
    b.take(8, 0.0)
    b.give_back(3)
    assert b.level == pytest.approx(5.0)
    b.give_back(100)
    assert b.level == b.capacity


# ---- Pacer.delay_for -----------------------------------------------------------------------


def test_pacer_disabled() -> None:
    p = Pacer(0, 0)
    assert not p.enabled
    assert p.requests is None and p.tokens is None
    assert p.delay_for(10**9, 0.0) == 0.0


def test_pacer_delay_for_requests() -> None:
    p = Pacer(rpm=60)
    assert p.enabled
    assert p.delay_for(0, 0.0) == 0.0
    p.requests.take(1, 0.0)  # type: ignore[union-attr]
    assert p.delay_for(0, 0.0) == pytest.approx(60 / 59)


def test_pacer_delay_for_tokens() -> None:
    p = Pacer(tpm=60_000)
    assert p.tokens is not None
    assert p.tokens.capacity == pytest.approx(2000)  # two seconds of budget as burst
    assert p.delay_for(1500, 0.0) == 0.0
    p.tokens.take(1500, 0.0)
    rate = p.tokens.rate
    assert rate == pytest.approx(58_000 / 60)
    assert p.delay_for(1000, 0.0) == pytest.approx(500 / rate)


def test_pacer_delay_is_the_larger_of_both_budgets() -> None:
    p = Pacer(rpm=60, tpm=60_000)
    p.requests.take(1, 0.0)  # type: ignore[union-attr]
    p.tokens.take(2000, 0.0)  # type: ignore[union-attr]
    req = 60 / 59
    tok = 1900 / (58_000 / 60)
    assert p.delay_for(1900, 0.0) == pytest.approx(max(req, tok))
    assert p.delay_for(10, 0.0) == pytest.approx(req)


def test_pacer_delay_for_pause() -> None:
    clock = FakeClock(100.0)
    p = Pacer(clock=clock)
    p.pause(2.5)
    assert p.paused_until == pytest.approx(102.5)
    assert p.delay_for(0, 100.0) == pytest.approx(2.5)
    assert p.delay_for(0, 102.0) == pytest.approx(0.5)
    assert p.delay_for(0, 103.0) == 0.0
    p.pause(1.0)  # a shorter pause never shortens the longer one
    assert p.paused_until == pytest.approx(102.5)


# ---- the sliding-window guarantee ----------------------------------------------------------


def simulate(pacer: Pacer, seconds: float, tokens: float = 0.0) -> list[float]:
    """Admit requests back to back as fast as the pacer allows; returns admission times."""
    clock = FakeClock(0.0)
    admitted: list[float] = []
    while True:
        delay = pacer.delay_for(tokens, clock.now)
        if delay > 0:
            clock.advance(delay)
            continue
        if clock.now >= seconds:
            return admitted
        if pacer.requests is not None:
            pacer.requests.take(1, clock.now)
        if pacer.tokens is not None:
            pacer.tokens.take(tokens, clock.now)
        admitted.append(clock.now)


def max_in_window(times: list[float], window: float = 60.0) -> int:
    """The most admissions in any sliding window, counted as a server does: a request at t
    sees every earlier one with a stamp in (t - window, t]."""
    return max(
        bisect.bisect_right(times, t) - bisect.bisect_right(times, t - window) for t in times
    )


def test_rpm_600_never_exceeds_budget_in_any_minute_and_keeps_throughput() -> None:
    times = simulate(Pacer(rpm=600), 180.0)
    assert max_in_window(times) <= 600
    # also with half-open windows starting at every admission
    assert (
        max(bisect.bisect_left(times, t + 60) - bisect.bisect_left(times, t) for t in times) <= 600
    )
    assert len(times) >= 0.95 * 600 * 3
    assert times == sorted(times)


@pytest.mark.parametrize("rpm", [30, 60, 500, 1000, 3500])
def test_other_budgets_stay_inside_the_window(rpm: int) -> None:
    times = simulate(Pacer(rpm=rpm), 180.0)
    assert max_in_window(times) <= rpm
    assert len(times) >= 0.9 * rpm * 3


def test_tpm_budget_stays_inside_the_window() -> None:
    tpm, size = 90_000, 700
    times = simulate(Pacer(tpm=tpm), 180.0, tokens=size)
    assert max_in_window(times) * size <= tpm
    assert len(times) * size >= 0.95 * tpm * 3 - size


# ---- server hints and settling -------------------------------------------------------------


def test_observe_headers_pauses_until_reset() -> None:
    clock = FakeClock(50.0)
    p = Pacer(rpm=600, clock=clock)
    p.observe_headers({"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "1.5s"})
    assert p.paused_until == pytest.approx(51.5)
    assert p.delay_for(1, clock.now) == pytest.approx(1.5)
    p.observe_headers({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"})
    assert p.paused_until == pytest.approx(50.0 + 360.0)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "10s"},
        {"x-ratelimit-remaining-requests": "0"},  # no reset: nothing to wait for
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"},
        {"x-ratelimit-remaining-requests": "none", "x-ratelimit-reset-requests": "10s"},
        {"x-ratelimit-remaining-tokens": "12", "x-ratelimit-reset-tokens": "1s"},
    ],
)
def test_observe_headers_without_exhaustion_does_not_pause(headers: dict[str, str]) -> None:
    clock = FakeClock(50.0)
    p = Pacer(rpm=600, clock=clock)
    p.observe_headers(headers)
    assert p.paused_until == 0.0
    assert p.delay_for(1, clock.now) == 0.0


def test_settle_corrects_token_debit() -> None:
    clock = FakeClock(0.0)
    p = Pacer(tpm=60_000, clock=clock)
    assert p.tokens is not None
    p.tokens.take(1500, clock.now)  # estimated
    assert p.tokens.level == pytest.approx(500)
    p.settle(1500, 400)  # used less: the difference comes back
    assert p.tokens.level == pytest.approx(1600)
    p.tokens.take(1000, clock.now)
    p.settle(1000, 1800)  # used more: the extra is debited
    assert p.tokens.level == pytest.approx(-200)
    p.settle(0, 10**6)
    assert p.tokens.level < 0
    p.settle(10**7, 0)
    assert p.tokens.level == p.tokens.capacity  # never above capacity


def test_settle_without_token_budget_is_a_no_op() -> None:
    p = Pacer(rpm=60)
    p.settle(100, 5000)
    assert p.tokens is None


# ---- acquire (asyncio) ---------------------------------------------------------------------


@pytest.fixture
def fake_sleep(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeClock], list[float]]:
    """Replace ``asyncio.sleep`` as the pacer sees it with one that advances a fake clock."""

    def install(clock: FakeClock) -> list[float]:
        real_sleep = asyncio.sleep
        sleeps: list[float] = []

        async def sleep(seconds: float, result: Any = None) -> Any:
            sleeps.append(seconds)
            clock.advance(seconds)
            return await real_sleep(0, result)

        monkeypatch.setattr(asyncio, "sleep", sleep)  # the asyncio module the pacer sleeps through
        return sleeps

    return install


def _run(coro: Coroutine[Any, Any, Any], timeout: float = 5.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def test_acquire_paces_with_fake_clock(fake_sleep: Callable[[FakeClock], list[float]]) -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(rpm=60, clock=clock)  # burst 1, then one request per 60/59 s
    sleeps = fake_sleep(clock)
    admitted: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        admitted.append(clock())

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(6)))

    started = time.monotonic()
    _run(main())
    assert time.monotonic() - started < 2.0  # nothing really waited
    assert len(admitted) == 6
    assert admitted[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    assert all(gap == pytest.approx(60 / 59, rel=1e-6) for gap in gaps)
    assert admitted[-1] == pytest.approx(5 * 60 / 59, rel=1e-6)
    assert pacer.waited == pytest.approx(sum(sleeps))
    assert pacer.waited == pytest.approx(admitted[-1], rel=1e-6)


def test_acquire_waits_out_a_pause_even_without_budgets(
    fake_sleep: Callable[[FakeClock], list[float]],
) -> None:
    clock = FakeClock(10.0)
    pacer = Pacer(clock=clock)
    sleeps = fake_sleep(clock)
    _run(pacer.acquire())
    assert sleeps == []  # unlimited and not paused: no wait at all
    pacer.pause(3.0)
    _run(pacer.acquire())
    assert clock() == pytest.approx(13.0)
    assert sum(sleeps) == pytest.approx(3.0)


def test_acquire_tokens_with_fake_clock(fake_sleep: Callable[[FakeClock], list[float]]) -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(tpm=6000, clock=clock)  # burst 200 tokens, refill 5800/60 per second
    fake_sleep(clock)

    async def main() -> list[float]:
        times = []
        for _ in range(5):
            await pacer.acquire(100)
            times.append(clock())
        return times

    times = _run(main())
    assert times[:2] == [0.0, 0.0]  # the burst
    rate = 5800 / 60
    assert times[2] == pytest.approx(100 / rate)
    assert times[4] == pytest.approx(300 / rate)


def test_acquire_real_time_small_budget() -> None:
    """The real clock and real sleeps: rpm=1200 gives a burst of 10, then ~19.8 per second."""
    pacer = Pacer(rpm=1200)

    async def main() -> list[float]:
        start = time.monotonic()
        stamps: list[float] = []

        async def one() -> None:
            await pacer.acquire()
            stamps.append(time.monotonic() - start)

        await asyncio.gather(*(one() for _ in range(16)))
        return sorted(stamps)

    stamps = _run(main(), timeout=10.0)
    assert len(stamps) == 16
    assert stamps[9] < 0.5  # the burst goes at once
    expected = 6 / (1190 / 60)  # six more at the refill rate
    assert stamps[-1] >= expected * 0.95
    assert stamps[-1] < expected + 1.5
    assert pacer.waited > 0
