"""Phases that start only when their inputs exist, on the real control plane: the in-cluster
coordinator (its own ServiceAccount, the Role of k8s/rbac-coordinator.yaml, the standard
in-cluster configuration) releases suspended Jobs, within the budget pools."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from skillmix.loading import load_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore, generation_prefix
from skillmix.store.uri import open_store
from tests.cluster.conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster


def _finished(job: Any) -> bool:
    return any(
        c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or []
    )


def _released(job: Any) -> bool:
    return not job.spec.suspend


def test_a_slow_generation_does_not_run_down_the_grading_deadline(
    cluster: Cluster, tmp_path: Path
) -> None:
    """An API student behind a slow endpoint (6 s per request, one request in flight): its
    two generation units take over a minute, longer than the grading Jobs' 60 s deadline.
    `launch` without --wait; the coordinator releases each grading Job only once its unit's
    generation manifest exists (until then it is suspended: no pod, no running deadline), at
    most one grading Job and one generation Job at a time (the profile's
    parallel_jobs_per_budget 1: each gets the whole budget), and the run completes."""
    with MockServer(MockServerConfig(latency_ms=6000)) as server:
        run_id = _launch_api_run(
            cluster, tmp_path, server, "cluster-phases", 5, grading_seconds=60
        )  # no --wait
        run = RunStore(open_store(f"{cluster.store}/{run_id}"))
        selector = f"skillmix.io/run={run_id}"

        seen_suspended: set[str] = set()
        released_at: dict[str, float] = {}
        most = {"grade": 0, "generate": 0}
        deadline = time.monotonic() + 300
        while not run.store.exists(RunLayout.summary_key()):
            assert time.monotonic() < deadline, "the run did not finish in 300 s"
            jobs = cluster.jobs(selector)
            for phase in most:
                mine = [j for j in jobs if j.metadata.labels["skillmix.io/phase"] == phase]
                active = [j for j in mine if _released(j) and not _finished(j)]
                most[phase] = max(most[phase], len(active))
            for job in jobs:
                labels = job.metadata.labels
                if labels["skillmix.io/phase"] != "grade":
                    continue
                name = job.metadata.name
                prefix = generation_prefix(
                    labels["skillmix.io/student"],
                    int(labels["skillmix.io/k"]),
                    int(labels["skillmix.io/round"]),
                )
                if job.spec.suspend:
                    seen_suspended.add(name)
                    if cluster.pods(f"job-name={name}"):  # suspended: no pods, unless the
                        # coordinator released it between the two reads
                        [now] = [j for j in cluster.jobs(selector) if j.metadata.name == name]
                        assert not now.spec.suspend, f"{name} has pods while suspended"
                elif name not in released_at:
                    released_at[name] = time.monotonic()
                    # released only once its inputs exist in the store
                    assert run.manifest(prefix) is not None, f"{name} released before its input"
            time.sleep(0.5)

    by_name = {j.metadata.name: j for j in cluster.jobs(selector)}
    grading = [j for j in by_name.values() if j.metadata.labels["skillmix.io/phase"] == "grade"]
    assert len(grading) == 2
    assert {j.metadata.name for j in grading} <= seen_suspended  # both waited suspended
    for job in grading:
        conditions = {c.type for c in job.status.conditions or [] if c.status == "True"}
        assert "Complete" in conditions, (job.metadata.name, job.status.conditions)
    # the pools: never two grading (or generation) Jobs at once
    assert most == {"grade": 1, "generate": 1}
    generation = sorted(
        (j for j in by_name.values() if j.metadata.labels["skillmix.io/phase"] == "generate"),
        key=lambda j: j.status.start_time,
    )
    # the generation phase outlasted the grading deadline: a grading Job created running
    # would have timed out
    span = generation[-1].status.completion_time - generation[0].status.start_time
    assert span.total_seconds() > 60, span
    [coordinator] = [
        j for j in by_name.values() if j.metadata.labels["skillmix.io/phase"] == "coordinate"
    ]
    assert "Complete" in {c.type for c in coordinator.status.conditions or []}
    # every client's own log is in the store, the coordinator's included
    logs = run.store.list_keys("logs/pods")
    coordinator_pods = cluster.pods(f"job-name={coordinator.metadata.name}")
    assert RunLayout.pod_log(coordinator_pods[0].metadata.name) in logs
    text = run.store.read_bytes(RunLayout.pod_log(coordinator_pods[0].metadata.name)).decode()
    assert "released" in text and "every Job of attempt 1 has finished" in text


def test_an_evicted_or_deleted_coordinator_resumes_without_counting_failures(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The coordinator's pod is evicted (the Eviction API: DisruptionTarget), then deleted
    (SIGTERM: exit 143), with the profile's backoff_limit at 0: neither counts as a failure,
    each replacement recomputes everything from the Jobs and the store (nothing is released
    twice) and the run completes."""
    from kubernetes import client

    doc = yaml.safe_load(cluster.profile_file.read_text())
    doc["clusters"]["local"]["backoff_limit"] = 0
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    with MockServer(MockServerConfig(latency_ms=700)) as server:
        run_id = _launch_api_run(cluster, tmp_path, server, "cluster-coordinator-evict", 6)
        selector = f"skillmix.io/run={run_id},skillmix.io/phase=coordinate"
        run = RunStore(open_store(f"{cluster.store}/{run_id}"))
        gone: list[str] = []
        for how in ("evict", "delete"):

            def running_coordinator() -> Any:
                pods = [
                    p
                    for p in cluster.pods(selector)
                    if p.status.phase == "Running" and p.metadata.name not in gone
                ]
                return pods[0] if pods else None

            pod = wait_for(running_coordinator, "a running coordinator pod", 90)
            time.sleep(1.0)  # let it get to work
            if how == "evict":
                eviction = client.V1Eviction(
                    metadata=client.V1ObjectMeta(
                        name=pod.metadata.name, namespace=cluster.namespace
                    )
                )
                cluster.core().create_namespaced_pod_eviction(
                    pod.metadata.name, cluster.namespace, eviction
                )
            else:
                cluster.kubectl("delete", "pod", pod.metadata.name, "--wait=false")
            gone.append(pod.metadata.name)
        deadline = time.monotonic() + 240
        while not run.store.exists(RunLayout.summary_key()):
            assert time.monotonic() < deadline, "the run did not finish in 240 s"
            time.sleep(1)

    def all_complete() -> bool:
        return all(
            "Complete" in {c.type for c in j.status.conditions or [] if c.status == "True"}
            for j in cluster.jobs(f"skillmix.io/run={run_id}")
        )

    wait_for(all_complete, "every Job of the run (the coordinator's too) to complete", 60)
    [coordinator] = cluster.jobs(selector)
    # two pods ended by eviction or SIGTERM, none counted against backoffLimit 0
    assert coordinator.status.succeeded == 1 and not coordinator.status.failed
    assert coordinator.spec.backoff_limit == 0
    pods = {p.metadata.name for p in cluster.pods(selector)}
    assert not pods & set(gone[:-1])


def test_a_mock_sidecar_that_stays_unhealthy_fails_the_job_within_the_load_budget(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A model server that runs but never answers /health with 200 (a load slower than the
    budget): no restarts, no crash loop, yet the client gives up after the model-load budget
    (10 s) with exit 3 and the Job fails through its podFailurePolicy. The Jobs are the chart's,
    created as `launch` creates them, with `--startup-delay 600` added to the mock sidecar."""
    import json

    from skillmix.k8s.launch import plan_launch, prepare_launch, record_launch, rendered_manifests
    from skillmix.loading import load_experiment as load

    doc = yaml.safe_load(cluster.profile_file.read_text())
    doc["clusters"]["local"]["deadlines"]["model_load_seconds"] = 10
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    spec = {
        "name": "cluster-unhealthy-mock",
        "seed": 4,
        "ks": [2],
        "combinations": 3,
        "generation_rounds": 1,
        "catalog": {},
        "students": [{"name": "m", "backend": "mock", "model": "mock-m"}],
        "grader": {"name": "g", "backend": "mock", "model": "mock-g", "rounds": 1},
        "store": "runs",
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    name, profile, ctx, run = prepare_launch(load(path), "local")
    lp = plan_launch(ctx, profile, name, run)
    record_launch(run, ctx, lp)
    docs = [d.doc for d in rendered_manifests(lp)]
    [gen] = [
        d
        for d in docs
        if d["kind"] == "Job" and d["metadata"]["labels"]["skillmix.io/phase"] == "generate"
    ]
    [model] = [c for c in gen["spec"]["template"]["spec"]["initContainers"] if c["name"] == "model"]
    model["args"] += ["--startup-delay", "600"]
    # the pods' account (the profile's; the coordinator's is not needed here)
    [account] = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount"
        and d["metadata"]["name"] == gen["spec"]["template"]["spec"]["serviceAccountName"]
    ]
    for obj in (account, gen):
        cluster.kubectl("create", "-f", "-", context="launcher", stdin=json.dumps(obj))
    job_name = gen["metadata"]["name"]

    def failed() -> Any:
        job = cluster.batch().read_namespaced_job(job_name, cluster.namespace)
        return next(
            (c for c in job.status.conditions or [] if c.type == "Failed" and c.status == "True"),
            None,
        )

    condition = wait_for(failed, "the Job to fail", 90)
    assert condition.reason == "PodFailurePolicy"
    assert "exit code 3" in condition.message
    [pod] = cluster.pods(f"job-name={job_name}")
    statuses = {
        s.name: s for s in pod.status.init_container_statuses + pod.status.container_statuses
    }
    assert statuses["model"].restart_count == 0  # it never crashed: it was only never healthy
    client = statuses["client"].state.terminated
    assert client.exit_code == 3 and "HTTP 503" in client.message
    assert 10 <= (client.finished_at - client.started_at).total_seconds() <= 25


def _launch_api_run(
    cluster: Cluster,
    tmp_path: Path,
    server: MockServer,
    name: str,
    seed: int,
    *,
    grading_seconds: int | None = None,
) -> str:
    """Launch (no --wait) a one-unit-pair run whose student and grader are API models served by
    ``server``, with the profile's pools at 1 and a coordinator pass every second; its run id."""
    cluster.kubectl("create", "secret", "generic", "openai-key", "--from-literal=OPENAI_API_KEY=k")
    doc = yaml.safe_load(cluster.profile_file.read_text())
    profile = doc["clusters"]["local"]
    if grading_seconds is not None:
        profile["deadlines"]["grading_seconds"] = grading_seconds
    profile["parallel_jobs_per_budget"] = 1
    profile["coordinator_interval_seconds"] = 1
    profile["secrets"] = {"OPENAI_API_KEY": {"name": "openai-key"}}
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    api = {"backend": "openai", "base_url": server.base_url}
    spec = {
        "name": name,
        "seed": seed,
        "ks": [2],
        "combinations": 3,
        "generation_rounds": 2,
        "catalog": {},
        "students": [{"name": "slow", "model": "mock-slow", "concurrency": 1, **api}],
        "grader": {"name": "judge", "model": "mock-judge", "rounds": 1, **api},
        "metrics": {"bootstrap_samples": 20},
        "store": "runs",
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    run_id: str = resolve_context(load_experiment(path)).run_id
    cluster.skillmix("launch", "-f", str(path), check=True)
    return run_id
