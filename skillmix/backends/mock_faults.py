"""What the mock server does wrong on purpose: seeded per-request faults and RPM/TPM limits.

Both are pure so that tests can check them without a server or a clock. A request's faults
(:func:`injection_for`) are a function of the seed, the request and its try number: two runs
that send the same requests see the same faults, and the next try of a request draws afresh,
so a retry can succeed. The try number comes from the client when it sends
:data:`ATTEMPT_HEADER` (skillmix's client does, with :data:`SAMPLE_HEADER` naming the logical
request), else from the server's count of identical requests it has seen. Only the rate limits
depend on time, and :class:`RateLimiter` takes the clock as an argument.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from skillmix.backends.mock_replies import MALFORMED_VARIANTS, rng_from

SAMPLE_HEADER = "X-Skillmix-Sample"
"""Sent by skillmix's client to the mock: its name for a logical request (round, index, re-ask)."""
ATTEMPT_HEADER = "X-Skillmix-Attempt"
"""Sent with it: the try number of that request (tries answered 429 or 503 are not counted:
the mock answers those before injecting anything)."""
RATE_WINDOW_SECONDS = 60.0
"""The sliding window of the RPM/TPM limits."""

# ----------------------------------------------------------------------------- seeded faults


@dataclass(frozen=True)
class Injection:
    """The faults the mock server injects into one request (see :func:`injection_for`)."""

    drop: bool = False
    fail: bool = False
    stall: bool = False
    jitter: float = 0.0
    """A uniform draw in [0, 1): the share of ``jitter_ms`` added to the latency."""
    malformed: Mapping[int, int] = field(default_factory=dict)
    """Choice index -> malformed variant (grading replies only)."""


@dataclass(frozen=True)
class InjectionRates:
    """The server's fault rates, each a fraction of requests in [0, 1]."""

    drop: float = 0.0
    fail: float = 0.0
    stall: float = 0.0
    malformed: float = 0.0


def injection_for(
    seed: int, request: str, attempt: int, n: int, rates: InjectionRates
) -> Injection:
    """The faults of one try of one request: a pure function of the server seed, the request
    (``request``: a digest of the request and of the client's name for it) and the try number.

    The same (seed, request, attempt) always gets the same faults, so identical runs see the
    same sequence, while the next try of a request draws afresh and can succeed.
    """
    rng = rng_from({"v": 1, "stream": "inject", "seed": seed, "request": request, "try": attempt})
    u_drop, u_fail, u_stall, jitter = (rng.random() for _ in range(4))
    malformed: dict[int, int] = {}
    for index in range(n):
        u_bad, variant = rng.random(), rng.randrange(MALFORMED_VARIANTS)
        if u_bad < rates.malformed:
            malformed[index] = variant
    return Injection(
        drop=u_drop < rates.drop,
        fail=u_fail < rates.fail,
        stall=u_stall < rates.stall,
        jitter=jitter,
        malformed=malformed,
    )


# ----------------------------------------------------------------------------- rate limits


def format_reset(seconds: float) -> str:
    """A duration as the x-ratelimit-reset-* headers write it: ``1.2s``, ``0.04s``, ``0s``."""
    text = f"{max(0.0, seconds):.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


@dataclass(frozen=True)
class RateDecision:
    """The limiter's answer for one request, with the values of the x-ratelimit-* headers."""

    allowed: bool
    reason: Literal["requests", "tokens"] | None
    retry_after: float
    """Seconds until the request would be admitted (0 when allowed)."""
    limit_requests: int
    remaining_requests: int
    reset_requests: float
    limit_tokens: int
    remaining_tokens: int
    reset_tokens: float
    too_large: bool = False
    """The request alone exceeds the token limit: waiting cannot help."""

    def headers(self) -> dict[str, str]:
        """The x-ratelimit-* (and, when refused, Retry-After) headers a client paces itself by."""
        out: dict[str, str] = {}
        if self.limit_requests:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(self.remaining_requests)
            out["x-ratelimit-reset-requests"] = format_reset(self.reset_requests)
        if self.limit_tokens:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens)
            out["x-ratelimit-reset-tokens"] = format_reset(self.reset_tokens)
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out


class RateLimiter:
    """Requests per minute and tokens per minute over a sliding window.

    The clock is a parameter (``now``, monotonic seconds) so the arithmetic can be tested
    without sleeping. A request is counted (with its tokens) only when it is admitted.
    ``reset_*`` is the time until the oldest admitted request leaves the window.
    """

    def __init__(self, rpm: int = 0, tpm: int = 0, window: float = RATE_WINDOW_SECONDS) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self._entries: deque[tuple[float, int]] = deque()
        self._tokens = 0

    @property
    def enabled(self) -> bool:
        """Whether any limit is set (0 = unlimited), so the server can skip the bookkeeping."""
        return bool(self.rpm or self.tpm)

    def _evict(self, now: float) -> None:
        horizon = now - self.window
        entries = self._entries
        while entries and entries[0][0] <= horizon:
            self._tokens -= entries.popleft()[1]

    def acquire(self, tokens: int, now: float) -> RateDecision:
        """Admit (and count) a request of ``tokens`` tokens at ``now``, or say how long to wait."""
        self._evict(now)
        entries = self._entries
        reason: Literal["requests", "tokens"] | None = None
        wait = 0.0
        too_large = False
        if self.rpm and len(entries) + 1 > self.rpm:
            reason = "requests"
            wait = entries[len(entries) - self.rpm][0] + self.window - now
        if self.tpm and self._tokens + tokens > self.tpm:
            if tokens > self.tpm:
                too_large = True
                token_wait = self.window
            else:
                need = self._tokens + tokens - self.tpm
                freed = 0
                token_wait = 0.0
                for stamp, size in entries:
                    freed += size
                    if freed >= need:
                        token_wait = stamp + self.window - now
                        break
            if reason is None or token_wait > wait:
                reason = "tokens"
            wait = max(wait, token_wait)
        allowed = reason is None
        if allowed:
            entries.append((now, tokens))
            self._tokens += tokens
        reset = entries[0][0] + self.window - now if entries else 0.0
        return RateDecision(
            allowed=allowed,
            reason=reason,
            retry_after=max(0.0, wait),
            limit_requests=self.rpm,
            remaining_requests=max(0, self.rpm - len(entries)) if self.rpm else 0,
            reset_requests=max(0.0, reset),
            limit_tokens=self.tpm,
            remaining_tokens=max(0, self.tpm - self._tokens) if self.tpm else 0,
            reset_tokens=max(0.0, reset),
            too_large=too_large,
        )
