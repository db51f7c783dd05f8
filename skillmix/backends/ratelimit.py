"""Client-side pacing to a requests/tokens-per-minute budget.

Servers usually enforce limits over a sliding minute, so a plain token bucket can overshoot
by its burst. The pacer therefore refills at (budget - burst) per minute: in any 60 s window
it sends at most the budget. Server hints (``x-ratelimit-remaining-*`` = 0 with a reset time,
or a 429's ``Retry-After``) pause every caller until the window resets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from skillmix.backends.retry import parse_duration


class Bucket:
    """A token bucket with continuous refill. ``now`` is injectable for tests."""

    def __init__(self, per_minute: float, *, burst: float | None = None) -> None:
        self.per_minute = per_minute
        self.capacity = burst if burst is not None else max(1.0, min(10.0, per_minute / 60.0))
        self.rate = max(per_minute - self.capacity, per_minute * 0.5) / 60.0
        self.level = self.capacity
        self.updated: float | None = None

    def _refill(self, now: float) -> None:
        if self.updated is not None:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0 if now). Oversized amounts wait for a full bucket."""
        self._refill(now)
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


class Pacer:
    """Paces requests of one endpoint to its RPM/TPM budget (0 = unlimited)."""

    def __init__(
        self, rpm: float = 0, tpm: float = 0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.requests = Bucket(rpm) if rpm > 0 else None
        self.tokens = Bucket(tpm, burst=max(1.0, tpm / 30.0)) if tpm > 0 else None
        self.clock = clock
        self.paused_until = 0.0
        self.waited = 0.0
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def delay_for(self, tokens: float, now: float) -> float:
        delay = max(0.0, self.paused_until - now)
        if self.requests is not None:
            delay = max(delay, self.requests.wait_time(1, now))
        if self.tokens is not None:
            delay = max(delay, self.tokens.wait_time(tokens, now))
        return delay

    async def acquire(self, tokens: float = 0) -> None:
        """Wait until a request of ``tokens`` estimated tokens fits the budget, then take it."""
        if not self.enabled and self.paused_until <= self.clock():
            return
        async with self._lock:  # first come, first served
            while True:
                now = self.clock()
                delay = self.delay_for(tokens, now)
                if delay <= 0:
                    break
                self.waited += delay
                await asyncio.sleep(delay)
            now = self.clock()
            if self.requests is not None:
                self.requests.take(1, now)
            if self.tokens is not None:
                self.tokens.take(tokens, now)

    def settle(self, estimated: float, actual: float) -> None:
        """Correct the token debit once the real usage is known."""
        if self.tokens is not None:
            if actual > estimated:
                self.tokens.take(actual - estimated, self.clock())
            else:
                self.tokens.give_back(estimated - actual)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Pause until the server's window resets when it says nothing is left."""
        lowered = {k.lower(): v for k, v in headers.items()}
        for kind in ("requests", "tokens"):
            remaining = lowered.get(f"x-ratelimit-remaining-{kind}")
            if remaining is None:
                continue
            try:
                left = float(remaining)
            except ValueError:
                continue
            if left <= 0:
                reset = parse_duration(lowered.get(f"x-ratelimit-reset-{kind}"))
                if reset:
                    self.pause(reset)
