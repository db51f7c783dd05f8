"""One way to retry a call: a named :class:`RetryPolicy` per use (which errors, how many tries,
how long in all, how long to wait) and :func:`retry`, which applies it. The Kubernetes client,
the S3 store and the coordinator retry through it, so the policies can be read side by side
instead of hiding in three hand-written loops."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How one kind of call is retried.

    ``retry_on`` picks the errors worth another try (any other is raised at once);
    ``delay(error, attempt)`` is the wait before the next try (``attempt`` counts from 0);
    ``attempts`` bounds the tries in all, ``within`` the seconds since the first failure
    (None: no bound of that kind). ``give_up(error, seconds)``, when set, is what is raised
    instead of the last error once the bounds are reached."""

    name: str
    retry_on: Callable[[BaseException], bool]
    delay: Callable[[BaseException, int], float]
    attempts: int | None = None
    within: float | None = None
    give_up: Callable[[BaseException, float], BaseException] | None = None


def retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """``fn()``, tried again after the errors ``policy`` retries until it succeeds or the
    policy's bounds are reached. ``on_retry(error, delay)`` runs before each wait (counting,
    logging); ``sleep`` defaults to :func:`time.sleep`, looked up at call time."""
    attempt = 0
    first_failure: float | None = None
    while True:
        try:
            return fn()
        except Exception as exc:
            if not policy.retry_on(exc):
                raise
            now = clock()
            if first_failure is None:
                first_failure = now
            tries_spent = policy.attempts is not None and attempt + 1 >= policy.attempts
            time_spent = policy.within is not None and now - first_failure >= policy.within
            if tries_spent or time_spent:
                if policy.give_up is not None:
                    raise policy.give_up(exc, now - first_failure) from None
                raise
            wait = policy.delay(exc, attempt)
            if on_retry is not None:
                on_retry(exc, wait)
            (sleep or time.sleep)(wait)
            attempt += 1
