"""One retry helper, one policy per use: the Kubernetes API calls, S3's create-only puts and
the coordinator's passes retry as they did when each had its own loop."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kubernetes.client.exceptions import ApiException

from skillmix.backends.client import ChatClient
from skillmix.config import ModelSpec
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.k8s.api import API_RETRY, MAX_RETRIES
from skillmix.k8s.cluster import KubeClient
from skillmix.k8s.profiles import ClusterProfile
from skillmix.retrying import RetryPolicy, retry, retry_async
from skillmix.store.base import KeyExists
from skillmix.store.s3 import CONFLICT_RETRIES, S3Store


class Flaky:
    """Raises each of ``errors`` in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *_args: Any, **_kwargs: Any) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retry_counts_tries_and_waits_by_the_policy() -> None:
    policy = RetryPolicy(
        "test", retry_on=lambda e: isinstance(e, OSError), delay=lambda _e, n: n, attempts=3
    )
    slept: list[float] = []
    seen: list[float] = []
    fn = Flaky(OSError("a"), OSError("b"))
    assert retry(fn, policy, sleep=slept.append, on_retry=lambda _e, d: seen.append(d)) == "ok"
    assert fn.calls == 3 and slept == seen == [0, 1]
    fn = Flaky(OSError("a"), OSError("b"), OSError("c"))
    with pytest.raises(OSError, match="c"):
        retry(fn, policy, sleep=slept.append)
    assert fn.calls == 3
    fn = Flaky(ValueError("not retried"))
    with pytest.raises(ValueError):
        retry(fn, policy, sleep=slept.append)
    assert fn.calls == 1


def test_a_time_bound_gives_up_with_the_policy_error() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(
        "test",
        retry_on=lambda e: isinstance(e, OSError),
        delay=lambda _e, n: 2.0**n,
        within=5.0,
        give_up=lambda e, s: RuntimeError(f"down {s:.0f}s: {e}"),
    )
    fn = Flaky(*(OSError("x") for _ in range(10)))
    with pytest.raises(RuntimeError, match="down 7s: x"):
        retry(fn, policy, sleep=sleep, clock=lambda: now[0])
    assert fn.calls == 4  # failures at 0, 1, 3, 7 seconds


def test_retry_async_follows_the_same_policy() -> None:
    policy = RetryPolicy(
        "test", retry_on=lambda e: isinstance(e, OSError), delay=lambda _e, _n: 0.0, attempts=3
    )
    seen: list[str] = []

    async def call(fn: Flaky) -> str:
        async def once() -> str:
            return fn()

        return await retry_async(once, policy, on_retry=lambda e, _d: seen.append(str(e)))

    fn = Flaky(OSError("a"), OSError("b"))
    assert asyncio.run(call(fn)) == "ok" and fn.calls == 3 and seen == ["a", "b"]
    fn = Flaky(OSError("a"), OSError("b"), OSError("c"))
    with pytest.raises(OSError, match="c"):
        asyncio.run(call(fn))
    fn = Flaky(ValueError("not retried"))
    with pytest.raises(ValueError):
        asyncio.run(call(fn))
    assert fn.calls == 1


def test_the_model_client_retries_through_the_helper() -> None:
    """No hand-written retry loop is left: the chat client's policy is a RetryPolicy whose
    tries are the model's max_retries + 1."""
    spec = ModelSpec(name="s", backend="openai", model="m", max_retries=4)
    client = ChatClient(spec, base_url="http://127.0.0.1:9/v1", api_key="x")
    assert isinstance(client.retry_policy, RetryPolicy) and client.retry_policy.attempts == 5
    asyncio.run(client.close())
    source = inspect.getsource(ChatClient._request)
    assert "retry_async(" in source and "while True" not in source


def kube() -> KubeClient:
    return KubeClient(ClusterProfile(store="s3://b/r"), api_client=object(), sleep=lambda _s: None)


def test_kubernetes_calls_retry_429_and_5xx_then_say_why() -> None:
    assert API_RETRY.attempts == MAX_RETRIES + 1
    k = kube()
    fn = Flaky(ApiException(status=503), ApiException(status=429))
    assert k._call("list Jobs", fn) == "ok"
    assert (fn.calls, k.retries) == (3, 2)
    fn = Flaky(*(ApiException(status=500) for _ in range(MAX_RETRIES + 1)))
    with pytest.raises(RunFailedError, match="list Jobs: Kubernetes API error 500"):
        k._call("list Jobs", fn)
    assert fn.calls == MAX_RETRIES + 1
    fn = Flaky(ApiException(status=409))
    assert isinstance(k._call("create Job j", fn, ok_statuses=(409,)), ApiException)
    fn = Flaky(ApiException(status=403))
    with pytest.raises(SkillmixError, match="forbidden"):
        k._call("create Job j", fn)
    assert fn.calls == 1


class FakeS3:
    def __init__(self, *errors: BaseException) -> None:
        self.put = Flaky(*errors)

    def put_object(self, **kwargs: Any) -> Any:
        return self.put(**kwargs)


def conflict() -> ClientError:
    return ClientError(
        {"Error": {"Code": "ConditionalRequestConflict"}, "ResponseMetadata": {}}, "PutObject"
    )


def test_s3_create_only_puts_retry_conflicts(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("skillmix.store.s3.time.sleep", slept.append)
    client = FakeS3(conflict(), conflict())
    S3Store("b", "p", client=client).write_bytes("k", b"x", if_absent=True)
    assert client.put.calls == 3 and slept == [0.05, 0.1]
    slept.clear()
    client = FakeS3(*(conflict() for _ in range(CONFLICT_RETRIES + 1)))
    with pytest.raises(KeyExists, match="already being written"):
        S3Store("b", "p", client=client).write_bytes("k", b"x", if_absent=True)
    assert client.put.calls == CONFLICT_RETRIES + 1 and slept == [0.05, 0.1, 0.2, 0.4]
    taken = ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
    client = FakeS3(taken)
    with pytest.raises(KeyExists, match="already exists"):
        S3Store("b", "p", client=client).write_bytes("k", b"x", if_absent=True)
    assert client.put.calls == 1
