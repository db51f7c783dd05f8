"""Building model clients: the one factory the local executor and the container tasks share.

Budgets (``concurrency``, ``rpm``, ``tpm`` of a model spec) are the model's whole budget. The
local executor runs one client per model, so it gets all of it (``budget_share`` 1). On
Kubernetes several pods use the same model at once (a student's ``replicas`` shards of one
generation Job, the grading Jobs that share the grader), so each pod's client gets its share:
the budget divided by the number of pods that share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skillmix.backends.cache import ResponseCache
from skillmix.backends.client import ChatClient, resolve_api_key, resolve_endpoint, sdk_client
from skillmix.config import ModelSpec
from skillmix.store.base import ArtifactStore


@dataclass(frozen=True)
class Budget:
    """One client's budget: requests and tokens per minute (0 = unlimited), requests in flight."""

    rpm: float
    tpm: float
    concurrency: int


def budget_share_of(spec: ModelSpec, share: int = 1) -> Budget:
    """The part of ``spec``'s budget one of ``share`` parallel workers may use: rpm/share,
    tpm/share (unlimited stays unlimited) and concurrency/share, at least 1."""
    share = max(1, share)
    return Budget(
        rpm=spec.rpm / share if spec.rpm else 0,
        tpm=spec.tpm / share if spec.tpm else 0,
        concurrency=max(1, spec.concurrency // share),
    )


def parallel_jobs(jobs: int, spec: ModelSpec, *, cap: int, pods_per_job: int = 1) -> int:
    """How many of ``jobs`` Jobs that share ``spec``'s budget run at once (P): at most
    ``cap``, and at most as many as leave every pod one request in flight
    (``concurrency // pods_per_job``); at least 1. Each Job then gets 1/P of the budget (its
    pods 1/(P x pods_per_job)) instead of 1/jobs with most of it idle: the coordinator starts
    the next Job when one ends, so the whole budget stays in use."""
    per_job = max(1, spec.concurrency // max(1, pods_per_job))
    return max(1, min(jobs, cap, per_job))


def make_client(
    spec: ModelSpec,
    root: ArtifactStore,
    *,
    base_url: str | None = None,
    mock_url: str | None = None,
    seed: int = 0,
    budget_share: int = 1,
    cache: ResponseCache | None = None,
    sdk: Any = None,
    use_cache: bool = True,
) -> ChatClient:
    """A client for ``spec`` with its share of the budget, caching replies under ``root``.

    ``base_url`` overrides the spec's endpoint (in a pod: the vLLM or mock sidecar); otherwise
    the endpoint is resolved from the spec, ``mock_url`` serving mock models without one."""

    budget = budget_share_of(spec, budget_share)
    return ChatClient(
        spec,
        base_url=base_url or resolve_endpoint(spec, mock_url),
        api_key=resolve_api_key(spec),
        cache=(cache if cache is not None else ResponseCache(root)) if use_cache else None,
        rpm=budget.rpm,
        tpm=budget.tpm,
        concurrency=budget.concurrency,
        seed=seed,
        sdk=sdk,
    )


def make_clients(
    specs: list[ModelSpec],
    root: ArtifactStore,
    mock_url: str | None = None,
    *,
    seed: int = 0,
    budget_share: int = 1,
    use_cache: bool = True,
) -> dict[str, ChatClient]:
    """One client per model spec (by name), sharing the store's response cache, and one SDK
    client (connection pool) per endpoint, key and timeout: thousands of students on one
    server cost one pool, not thousands."""

    cache = ResponseCache(root)
    sdks: dict[tuple[str, str, float], Any] = {}
    clients = {}
    for spec in specs:
        key = (resolve_endpoint(spec, mock_url), resolve_api_key(spec), spec.timeout)
        if key not in sdks:
            sdks[key] = sdk_client(*key)
        clients[spec.name] = make_client(
            spec,
            root,
            mock_url=mock_url,
            seed=seed,
            budget_share=budget_share,
            cache=cache,
            sdk=sdks[key],
            use_cache=use_cache,
        )
    return clients


__all__ = ["Budget", "budget_share_of", "make_client", "make_clients", "parallel_jobs"]
