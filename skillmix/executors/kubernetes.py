"""The Kubernetes executor: launch (or resume) a run as one Job per unit, from the same plan
as the local executor. The machinery (profiles, Helm values, the API client, the coordinator
that runs in the cluster) lives in :mod:`skillmix.k8s`; this is the sequence a launch follows,
so that ``skillmix launch`` only parses its flags and prints."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from skillmix import settings
from skillmix.artifacts import LaunchRecord
from skillmix.config import Experiment
from skillmix.errors import SkillmixError
from skillmix.executors.base import options_of
from skillmix.k8s.launch import (
    LaunchPlan,
    mark_created,
    plan_launch,
    prepare_launch,
    record_launch,
    rendered_manifests,
    split_deferred,
    stalled_attempt,
    store_deferred,
    unfinished_attempt,
)
from skillmix.k8s.profiles import ClusterProfile
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.task_units import frozen_problems
from skillmix.store.layout import RunLayout
from skillmix.store.runs import SUMMARY_JSON, RunStore

if TYPE_CHECKING:  # kubernetes is imported only when a launch talks to a cluster
    from skillmix.k8s.cluster import KubeClient

Say = Callable[[str], None]


@dataclass
class Launch:
    """What a launch did: its plan, and whether it created anything."""

    plan: LaunchPlan
    cluster: str
    namespace: str
    done: bool = False  # every unit finished and reported before: nothing launched
    dry_run: bool = False
    created: list[str] = field(default_factory=list)
    deferred: int = 0  # Jobs the coordinator creates once their inputs exist
    kube: KubeClient | None = None


@dataclass(frozen=True)
class KubernetesExecutor:
    """An :class:`~skillmix.executors.base.Executor` that launches (or resumes) the plan as
    Jobs on the cluster of a profile: see :func:`launch` for the options."""

    cluster: str | None
    source: str
    dry_run: bool
    replace: bool
    show_plan: Callable[[LaunchPlan, bool], None]
    say: Say
    warn: Say
    name: str = "kubernetes"

    def run(self, experiment: Experiment) -> Launch:
        return launch(experiment, **options_of(self))


def launch(
    experiment: Experiment,
    cluster: str | None,
    *,
    source: str,
    dry_run: bool,
    replace: bool,
    show_plan: Callable[[LaunchPlan, bool], None],
    say: Say,
    warn: Say,
) -> Launch:
    """Check, plan, pre-flight and create a launch attempt. ``show_plan(plan, done)`` runs
    once the plan is known, before anything is created; ``source`` names the experiment file
    in hints. A dry run makes no network call: neither the store nor the API is read."""
    from skillmix.k8s.cluster import KubeClient  # deferred: kubernetes takes ~0.5 s to import

    marks = [("start", time.perf_counter())]
    name, profile, ctx, run = prepare_launch(experiment, cluster, check_store=not dry_run)
    kube = None if dry_run else KubeClient(profile)
    version = kube.server_version() if kube is not None else None
    resume = None
    if kube is not None:
        resume = _resumable(kube, ctx, run, profile, name, source, replace, say)
    marks.append(("checks", time.perf_counter()))
    lp = plan_launch(
        ctx, profile, name, None if dry_run else run, kube_version=version, resume=resume
    )
    marks.append(("plan and helm template", time.perf_counter()))
    done = (
        not dry_run
        and resume is None
        and lp.finished_units == lp.total_units
        and not lp.values.get("taskGeneration")
        and run.store.exists(SUMMARY_JSON)
    )
    outcome = Launch(lp, name, profile.namespace, done=done, dry_run=dry_run, kube=kube)
    show_plan(lp, done)
    if done or kube is None:
        return outcome
    docs = rendered_manifests(lp)
    model_key = str(lp.values.get("modelKey", {}).get("secretName", ""))
    marks.append(("plan table and split manifests", time.perf_counter()))
    # rights, namespace, validity and admission of the pods: fail before writing anything
    try:
        kube.preflight(docs, model_key=model_key)
    finally:
        api_warnings(kube, warn)
    marks.append(("pre-flight", time.perf_counter()))
    for task in experiment.tasks:  # pods read the problems from the run, not from the Hub
        frozen_problems(run, task, experiment.seed)
    if resume is None:
        record_launch(run, ctx, lp)
    elif run.store.exists(RunLayout.launch_created(lp.attempt)):
        say(f"attempt {lp.attempt} has no working coordinator: creating a new one")
    else:
        say(f"completing attempt {lp.attempt}, whose creation stopped halfway")
    # with Kueue, Jobs held back until their inputs exist are created by the coordinator
    docs, deferred = split_deferred(docs)
    store_deferred(run, lp.attempt, deferred)
    try:
        outcome.created = kube.apply(docs, model_key=model_key)
    except SkillmixError as exc:
        if exc.hint is None:  # some objects may exist: say how this attempt completes
            exc.hint = (
                f"once fixed, the same `skillmix launch` completes attempt {lp.attempt}, "
                "or `--replace` starts over"
            )
        raise
    finally:
        api_warnings(kube, warn)
    mark_created(run, lp.attempt)
    outcome.deferred = len(deferred)
    marks.append(("create", time.perf_counter()))
    if settings.debug():
        say(
            "timings: "
            + ", ".join(f"{n} {t - p:.2f}s" for (_, p), (n, t) in itertools.pairwise(marks))
        )
    return outcome


def _resumable(
    kube: KubeClient,
    ctx: RunContext,
    run: RunStore,
    profile: ClusterProfile,
    name: str,
    source: str,
    replace: bool,
    say: Say,
) -> LaunchRecord | None:
    """The attempt to complete (unfinished or stalled), None for a new one. Unfinished Jobs of
    another attempt refuse the launch (the units would run twice); ``replace`` deletes them."""
    states, _ = kube.jobs(ctx.run_id)
    resume = None if replace else unfinished_attempt(run) or stalled_attempt(run, states)
    busy = [s for s in states if not s.finished and (resume is None or s.attempt != resume.attempt)]
    if busy and not replace:
        attempts = sorted({s.attempt for s in busy})
        raise SkillmixError(
            f"run {ctx.run_id} has {len(busy)} unfinished Job(s) of attempt "
            f"{', '.join(map(str, attempts))} in namespace {profile.namespace}; a second launch "
            "would run the same units twice",
            hint=f"wait for it (skillmix status {ctx.run_id} --cluster {name}), or cancel it and "
            f"launch again: skillmix launch -f {source} --cluster {name} --replace",
        )
    if replace and states:
        jobs = kube.delete_run(ctx.run_id, wait_seconds=120)
        say(f"--replace: deleted {jobs} Jobs of run {ctx.run_id} and waited for their pods")
    return resume


def api_warnings(kube: KubeClient, warn: Say) -> None:
    """The API server's Warning headers (Pod Security, deprecations), each once."""
    for text in kube.take_warnings():
        warn(f"Kubernetes API warning: {text}")
