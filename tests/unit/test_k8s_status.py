"""The pure parts of `status` and `launch`: reasons from pod and Workload JSON (the shapes the
real API serves; the cluster tests produce the kubelet's own), the pre-flight's choice of
Pods, the retry delay and the order `logs --follow` streams pods in."""

from __future__ import annotations

from typing import Any

from skillmix.cli.cluster import _follow_order
from skillmix.k8s.api import _retry_delay
from skillmix.k8s.create import representative_pods
from skillmix.k8s.jobs import JobState
from skillmix.k8s.status import diagnose, kueue_reasons
from skillmix.vocab import QUEUE_LABEL


def pod(name: str, job: str, phase: str = "Pending", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"batch.kubernetes.io/job-name": job}},
        "status": {"phase": phase, **status},
    }


def test_an_oom_killed_container_is_named_with_the_fix() -> None:
    p = pod(
        "p1",
        "j1",
        "Running",
        containerStatuses=[
            {
                "name": "client",
                "state": {"running": {}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            }
        ],
    )
    reasons = diagnose([p], [], [JobState("j1", {})])
    assert reasons == {"j1": ["client: OOMKilled (exit 137); raise its memory limit"]}


def test_a_crash_loop_names_the_exit_code_and_the_last_log_lines() -> None:
    p = pod(
        "p1",
        "j1",
        initContainerStatuses=[
            {
                "name": "model",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                "lastState": {"terminated": {"exitCode": 1}},
            }
        ],
    )
    asked: list[tuple[str, str]] = []

    def fetch(pod_name: str, container: str) -> str:
        asked.append((pod_name, container))
        return "loading\n" + "\n".join(f"line {i}" for i in range(10)) + "\nOSError: gated repo\n"

    [text] = diagnose([p], [], [JobState("j1", {})], fetch_log=fetch)["j1"]
    assert text.startswith("model: CrashLoopBackOff: back-off 20s (last exit 1) | last log lines:")
    assert text.endswith("line 6 / line 7 / line 8 / line 9 / OSError: gated repo")
    assert asked == [("p1", "model")]


def test_events_speak_for_pods_that_show_nothing_and_for_jobs() -> None:
    pending = pod("p1", "j1")
    done = pod("p2", "j2", "Succeeded")
    events = [
        {
            "involvedObject": {"kind": "Pod", "name": "p1"},
            "reason": "FailedMount",
            "message": 'secret "x" not found',
        },
        {
            "involvedObject": {"kind": "Pod", "name": "p2"},
            "reason": "Failed",
            "message": "ignored: the pod succeeded",
        },
        {
            "involvedObject": {"kind": "Job", "name": "j3"},
            "reason": "FailedCreate",
            "message": "Error creating: pods is forbidden: exceeded quota: q",
        },
    ]
    jobs = [JobState("j1", {}), JobState("j2", {}), JobState("j3", {})]
    assert diagnose([pending, done], events, jobs) == {
        "j1": ['FailedMount: secret "x" not found'],
        "j3": ["FailedCreate: Error creating: pods is forbidden: exceeded quota: q"],
    }


def test_kueue_says_why_a_queued_job_is_not_admitted() -> None:
    queued = JobState("j1", {QUEUE_LABEL: "gpus"}, suspended=True)
    orphan = JobState("j2", {QUEUE_LABEL: "nope"}, suspended=True)
    admitted = JobState("j3", {QUEUE_LABEL: "gpus"}, suspended=True)

    def workload(job: str, conditions: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "metadata": {"ownerReferences": [{"kind": "Job", "name": job}]},
            "status": {"conditions": conditions},
        }

    workloads = [
        workload(
            "j1",
            [
                {
                    "type": "QuotaReserved",
                    "status": "False",
                    "message": "couldn't assign flavors: insufficient nvidia.com/gpu",
                }
            ],
        ),
        workload("j3", [{"type": "Admitted", "status": "True"}]),
    ]
    assert queued.state == "Suspended"
    assert "LocalQueue 'nope' does not exist" in kueue_reasons([orphan], workloads, {"nope"})["j2"]
    assert kueue_reasons([queued, orphan, admitted], workloads) == {
        "j1": "Kueue: not admitted in queue 'gpus': couldn't assign flavors: insufficient nvidia.com/gpu",
        "j2": "Kueue: no Workload for queue 'nope' yet (does LocalQueue nope exist?)",
    }


def job_doc(
    name: str, args: list[str], account: str = "run-sa", image: str = "i:1"
) -> dict[str, Any]:
    return {
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {"skillmix.io/run": "r", "unit": name}},
                "spec": {
                    "serviceAccountName": account,
                    "containers": [
                        {
                            "name": "client",
                            "image": image,
                            "args": args,
                            "env": [{"name": "K", "value": name}],
                        }
                    ],
                },
            }
        },
    }


def test_the_preflight_sends_one_pod_per_distinct_template() -> None:
    docs = [
        {"kind": "ServiceAccount", "metadata": {"name": "run-sa"}},
        job_doc("a", ["--k", "2"]),
        job_doc("b", ["--k", "3"]),  # only its arguments, env values and labels differ
        job_doc("c", ["--k", "2"], image="vllm:1"),
        job_doc("d", ["--k", "2"], account="existing"),
    ]
    pods = representative_pods(docs)
    assert [p["metadata"]["annotations"]["skillmix.io/preflight-for"] for p in pods] == [
        "a",
        "c",
        "d",
    ]
    assert all(p["kind"] == "Pod" and p["metadata"]["name"].endswith("-preflight") for p in pods)
    # the account this launch creates does not exist yet: the dry run uses `default`
    assert [p["spec"]["serviceAccountName"] for p in pods] == ["default", "default", "existing"]
    assert docs[1]["spec"]["template"]["spec"]["serviceAccountName"] == "run-sa"  # untouched


class _Exc:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def test_the_retry_delay_honours_retry_after() -> None:
    assert _retry_delay(_Exc({"Retry-After": "3"}), 0) == 3.0
    assert _retry_delay(_Exc({"Retry-After": "9999"}), 0) == 30.0  # capped
    for attempt in range(8):
        assert 0 <= _retry_delay(_Exc({}), attempt) <= min(30.0, 0.25 * 2**attempt)


def test_follow_streams_running_and_failed_pods_first_and_names_the_rest() -> None:
    pods = [
        pod("a-done", "j", "Succeeded"),
        pod("b-pending", "j", "Pending"),
        pod("c-failed", "j", "Failed"),
        pod("d-running", "j", "Running"),
        pod("e-running", "j", "Running"),
    ]
    chosen, left = _follow_order(pods, 3)
    assert chosen == ["d-running", "e-running", "c-failed"]
    assert left == ["b-pending", "a-done"]


def test_parallel_creation_stops_at_the_first_error() -> None:
    """One worker: the item after a non-transient error is never sent, and the error is
    raised (the launch then stops, resumable)."""
    import pytest

    from skillmix.errors import SkillmixError
    from skillmix.k8s.cluster import KubeClient
    from skillmix.k8s.profiles import ClusterProfile

    kube = KubeClient(ClusterProfile(store="s3://b/r"), api_client=object())
    sent: list[int] = []

    def send(item: int) -> str:
        sent.append(item)
        if item == 2:
            raise SkillmixError("create Job 2: rejected")
        return str(item)

    with pytest.raises(SkillmixError, match="create Job 2"):
        kube._parallel(send, [1, 2, 3, 4], concurrency=1)
    assert sent == [1, 2]
    assert sorted(kube._parallel(send, [5, 6, 7], concurrency=3)) == ["5", "6", "7"]


def test_split_manifests_reads_kind_name_and_unit_without_parsing() -> None:
    from skillmix.k8s.helm import split_manifests

    rendered = """---
# Source: skillmix/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: "run-1"
  labels:
    skillmix.io/run: "run-1"
---
# Source: skillmix/templates/generation-jobs.yaml
apiVersion: batch/v1
kind: Job
metadata:
  name: run-1-gen-weak-k2-r1-a1
  labels:
    skillmix.io/phase: "generate"
    skillmix.io/student: "weak"
spec:
  template:
    metadata:
      labels:
        skillmix.io/phase: "not this one"
---
{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "flow",
 "labels": {"skillmix.io/phase": "aggregate"}}}
---
# Source: an empty template
"""
    docs = split_manifests(rendered)
    assert [(d.kind, d.name, d.group) for d in docs] == [
        ("ServiceAccount", "run-1", ("ServiceAccount", "", "")),
        ("Job", "run-1-gen-weak-k2-r1-a1", ("Job", "generate", "weak")),
        ("Job", "flow", ("Job", "aggregate", "")),  # not plain: parsed
    ]
    assert docs[1].doc["spec"]["template"]["metadata"]["labels"]["skillmix.io/phase"] == (
        "not this one"
    )


def test_gated_coordinator_and_per_model_rows() -> None:
    """A Job the coordinator has not released yet is 'Gated' (not a stuck 'Suspended'); a
    per-model generation Job (no k/round labels) shows how many of its student's units are
    done; the coordinator sorts after the phases it drives."""
    from skillmix.k8s.status import _job_row, _ordered

    phase = "skillmix.io/phase"
    gated = JobState(
        "g",
        {phase: "grade", "skillmix.io/gated": "true", "skillmix.io/student": "a"},
        suspended=True,
    )
    plain = JobState("s", {phase: "grade", "skillmix.io/student": "a"}, suspended=True)
    per_model = JobState("m", {phase: "generate", "skillmix.io/student": "a"}, active=1)
    coordinator = JobState("c", {phase: "coordinate"}, active=1)
    detail = {"generate:a:2:1": "5/5", "generate:a:3:1": "2/5", "generate:b:2:1": "5/5"}
    assert _job_row(gated, detail, [])["state"] == "Gated"
    assert "coordinator" in _job_row(gated, detail, [])["reason"]
    assert _job_row(plain, detail, [])["state"] == "Suspended"
    assert _job_row(per_model, detail, [])["progress"] == "1/2 units"
    # a reasoning task's Job has a student and no k either, but is no per-model Job
    task = JobState(
        "t", {phase: "generate", "skillmix.io/student": "a", "skillmix.io/task": "aime24"}
    )
    assert _job_row(task, detail, [])["progress"] == "task aime24"
    order = [s.name for s in _ordered([coordinator, gated, per_model])]
    assert order == ["m", "g", "c"]
