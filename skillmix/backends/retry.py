"""Which failures deserve another try, and how long to wait: pure functions, tested alone."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

RetryKind = Literal["rate_limit", "transient"]
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?!s))?\s*(?:(\d+(?:\.\d+)?)s)?\s*(?:(\d+(?:\.\d+)?)ms)?\s*$"
)


class MalformedResponse(ValueError):
    """The endpoint answered 200 with a body that is not a chat completion (a proxy's HTML
    page, a truncated body): worth another try."""


@dataclass(frozen=True)
class RetryDecision:
    kind: RetryKind
    retry_after: float | None = None  # seconds the server asked us to wait


def parse_duration(value: str | None) -> float | None:
    """Seconds from ``Retry-After`` style values: ``"2"``, ``"1.5"``, ``"6m0s"``, ``"120ms"``."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        ms = parse_duration(lowered["retry-after-ms"])
        if ms is not None:
            return ms / 1000
    return parse_duration(lowered.get("retry-after"))


def classify_status(status: int, headers: Mapping[str, str] | None = None) -> RetryDecision | None:
    if status == 429:
        return RetryDecision("rate_limit", retry_after_from_headers(headers))
    if status in RETRY_STATUSES:
        return RetryDecision("transient", retry_after_from_headers(headers))
    return None


def classify_retry(exc: BaseException) -> RetryDecision | None:
    """Retry on connection errors, timeouts and the statuses in RETRY_STATUSES (408, 409, 429,
    500, 502, 503, 504); not on other 4xx input errors or other 5xx (e.g. 501)."""
    import openai  # deferred: openai takes ~1 s to import; report/aggregate never call a server

    if isinstance(exc, openai.APIStatusError):
        return classify_status(
            exc.status_code, exc.response.headers if exc.response is not None else None
        )
    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
        return RetryDecision("transient")
    if isinstance(exc, MalformedResponse):
        return RetryDecision("transient")  # a 200 whose body is not a chat completion
    return None


def backoff_delay(
    attempt: int,
    decision: RetryDecision,
    *,
    base: float = 0.5,
    cap: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is a floor, never ignored."""
    draw = rng.uniform if rng is not None else random.uniform
    exponential = min(cap, base * (2**attempt))
    delay = draw(0, exponential)
    if decision.retry_after is not None:
        delay = max(delay, decision.retry_after + draw(0, 0.25))
    # never below the server's Retry-After, and keep its jitter so limited clients spread out
    return min(delay, max(cap, (decision.retry_after or 0.0) + 0.25))
