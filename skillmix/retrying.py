"""One way to retry a call: a named :class:`RetryPolicy` per use (which errors, how many tries,
how long in all, how long to wait) and :func:`retry` (or :func:`retry_async`), which applies
it. The Kubernetes client, the S3 store, the coordinator and the model client retry through
it, so the policies can be read side by side instead of hiding in hand-written loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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


class _Tries:
    """The state of one retried call: the tries so far and when the first one failed."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.attempt = 0
        self.first_failure: float | None = None

    def wait_after(self, exc: Exception) -> float:
        """The wait before the next try; raises (``exc``, or ``give_up``'s error) when ``exc``
        is not worth another try or the policy's bounds are reached."""
        policy = self.policy
        now = self.clock()
        self.first_failure = now if self.first_failure is None else self.first_failure
        elapsed = now - self.first_failure
        if not policy.retry_on(exc):
            raise exc
        tries_spent = policy.attempts is not None and self.attempt + 1 >= policy.attempts
        time_spent = policy.within is not None and elapsed >= policy.within
        if tries_spent or time_spent:
            if policy.give_up is not None:
                raise policy.give_up(exc, elapsed) from None
            raise exc
        wait = policy.delay(exc, self.attempt)
        self.attempt += 1
        return wait


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
    tries = _Tries(policy, clock)
    while True:
        try:
            return fn()
        except Exception as exc:
            wait, error = tries.wait_after(exc), exc
        if on_retry is not None:
            on_retry(error, wait)
        (sleep or time.sleep)(wait)


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """:func:`retry` for a coroutine function: ``await fn()`` until it succeeds or the
    policy's bounds are reached, waiting with :func:`asyncio.sleep`."""
    tries = _Tries(policy, clock)
    while True:
        try:
            return await fn()
        except Exception as exc:
            wait, error = tries.wait_after(exc), exc
        if on_retry is not None:
            on_retry(error, wait)
        await asyncio.sleep(wait)
