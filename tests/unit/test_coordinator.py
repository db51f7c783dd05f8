"""The coordinator's decisions against a scripted API (the cluster tests run it for real):
pools by count and by GPUs, the three ways a Job is held (suspend, Kueue's admission gate,
deferred creation), stuck pods failing their Jobs with the reason, GPU time recorded, API
errors retried."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skillmix.config import Experiment
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.k8s.cluster import KubeClient
from skillmix.k8s.coordinator import Coordinator, Timing
from skillmix.pipeline.context import resolve_context
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store
from skillmix.vocab import ADMISSION_GATE_ANNOTATION, FAILURE_ANNOTATION

RUN = "coord-1"
NOW = 1_000_000.0


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeApi:
    """Jobs and pods as the API's JSON; watches replay what changed since the last one."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"jobs": {}, "pods": {}}
        self.events: dict[str, list[tuple[str, dict[str, Any]]]] = {"jobs": [], "pods": []}
        self.version = 1
        self.created: list[str] = []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.failures = 0  # the next calls that fail as an unreachable API
        self.warnings: list[dict[str, Any]] = []
        self.lists = 0

    # the cluster side ------------------------------------------------------------------
    def put(self, resource: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        name = obj["metadata"]["name"]
        kind = "MODIFIED" if name in self.objects[resource] else "ADDED"
        self.objects[resource][name] = obj
        self.events[resource].append((kind, copy.deepcopy(obj)))

    def _fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise RunFailedError("list jobs: cannot reach the Kubernetes API: ConnectionRefused")

    # ClusterApi --------------------------------------------------------------------------
    def list_raw(self, resource: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        self._fail()
        self.lists += 1
        self.events[resource] = []
        return [copy.deepcopy(o) for o in self.objects[resource].values()], str(self.version)

    def watch_raw(
        self, resource: str, selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
        self._fail()
        events, self.events[resource] = self.events[resource], []
        for kind, obj in events:
            yield kind, obj, obj["metadata"]["resourceVersion"]

    def create_job_yaml(self, name: str, text: str) -> bool:
        import yaml

        self._fail()
        self.created.append(name)
        doc = yaml.safe_load(text)
        doc.setdefault("status", {})
        self.put("jobs", doc)
        return True

    def patch_job(self, name: str, body: dict[str, Any]) -> None:
        self._fail()
        self.patches.append((name, body))
        job = copy.deepcopy(self.objects["jobs"][name])
        annotations = job["metadata"].setdefault("annotations", {})
        for key, value in (body.get("metadata") or {}).get("annotations", {}).items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        job["spec"].update(body.get("spec") or {})
        self.put("jobs", job)

    def warning_events(self) -> list[dict[str, Any]]:
        return self.warnings


def job(
    name: str,
    phase: str,
    unit: tuple[str, int, int] | None = None,
    *,
    gated: bool = True,
    hold: str = "suspend",
    pool: str = "",
    size: int = 0,
    weight: int = 1,
    suspended: bool | None = None,
    done: str = "",
) -> dict[str, Any]:
    labels = {"skillmix.io/run": RUN, "skillmix.io/attempt": "0", "skillmix.io/phase": phase}
    if unit:
        labels |= {
            "skillmix.io/student": unit[0],
            "skillmix.io/k": str(unit[1]),
            "skillmix.io/round": str(unit[2]),
        }
    annotations = {}
    if gated:
        labels["skillmix.io/gated"] = "true"
        annotations = {
            "skillmix.io/hold": hold,
            "skillmix.io/pool": pool,
            "skillmix.io/pool-size": str(size),
            "skillmix.io/pool-weight": str(weight),
        }
        if hold == "gate":
            annotations[ADMISSION_GATE_ANNOTATION] = "skillmix.io/coordinator"
    status: dict[str, Any] = {}
    if done:
        status["conditions"] = [{"type": done, "status": "True"}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"suspend": gated and hold == "suspend" if suspended is None else suspended},
        "status": status,
    }


def pod(
    name: str,
    job_name: str,
    *,
    phase: str = "Pending",
    gpus: int = 0,
    created: float = NOW - 10,
    started: float | None = None,
    finished: float | None = None,
    waiting: str = "",
    unschedulable: bool = False,
    student: str = "s",
) -> dict[str, Any]:
    requests = {"cpu": "1"} | ({"nvidia.com/gpu": str(gpus)} if gpus else {})
    statuses = []
    if waiting:
        statuses.append(
            {"name": "model", "state": {"waiting": {"reason": waiting, "message": "x"}}}
        )
    if finished is not None:
        statuses.append(
            {
                "name": "client",
                "state": {"terminated": {"exitCode": 0, "finishedAt": iso(finished)}},
            }
        )
    status: dict[str, Any] = {"phase": phase, "containerStatuses": statuses}
    if started is not None:
        status["startTime"] = iso(started)
    if unschedulable:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes",
            }
        ]
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": iso(created),
            "labels": {
                "batch.kubernetes.io/job-name": job_name,
                "skillmix.io/phase": "generate",
                "skillmix.io/student": student,
            },
        },
        "spec": {"containers": [{"name": "client", "resources": {"requests": requests}}]},
        "status": status,
    }


def coordinator(tmp_path: Path, api: FakeApi, **timing: float) -> Coordinator:
    e = Experiment.model_validate(
        {
            "name": "coord",
            "ks": [2],
            "generation_rounds": 2,
            "students": [{"name": "s", "backend": "mock", "model": "m"}],
            "grader": {"name": "g", "backend": "mock", "model": "mg"},
        }
    )
    return Coordinator(
        RunStore(open_store(str(tmp_path))),
        resolve_context(e),
        0,
        api=api,
        run_id=RUN,
        timing=Timing(**timing),
        clock=lambda: NOW,
    )


def finish(api: FakeApi, name: str, condition: str = "Complete") -> None:
    obj = copy.deepcopy(api.objects["jobs"][name])
    obj["status"]["conditions"] = [{"type": condition, "status": "True"}]
    api.put("jobs", obj)


def test_each_pool_stays_within_its_size(tmp_path: Path) -> None:
    """Gated generation Jobs (no inputs needed) in one pool of size 2: two released, the third
    only once one has finished; a second pass releases nothing new."""
    api = FakeApi()
    for r in (1, 2, 3):
        api.put("jobs", job(f"gen-{r}", "generate", ("s", 2, r), pool="generate/s", size=2))
    c = coordinator(tmp_path, api)
    first = c.step()
    assert first.released == ["gen-1", "gen-2"] and first.gated_left == 1 and not first.stuck
    assert [n for n, _ in api.patches] == ["gen-1", "gen-2"]
    assert api.patches[0][1] == {"spec": {"suspend": False}}
    assert c.step().released == []
    finish(api, "gen-1")
    assert c.step().released == ["gen-3"]
    assert api.lists == 2  # jobs and pods listed once; then only watched


def test_the_gpu_pool_counts_gpus_and_pods_that_still_hold_them(tmp_path: Path) -> None:
    """Under a cap of 3 GPUs, Jobs of 2 GPUs go one at a time (2 + 2 > 3); a finished Job whose
    pod has not ended yet still holds its GPUs."""
    api = FakeApi()
    for r in (1, 2):
        api.put("jobs", job(f"gen-{r}", "generate", ("s", 2, r), pool="gpu", size=3, weight=2))
    c = coordinator(tmp_path, api)
    assert c.step().released == ["gen-1"]
    api.put("pods", pod("gen-1-abc", "gen-1", phase="Running", gpus=2, started=NOW - 5))
    finish(api, "gen-1")
    assert c.step().released == []  # its pod still runs
    api.put(
        "pods",
        pod("gen-1-abc", "gen-1", phase="Succeeded", gpus=2, started=NOW - 5, finished=NOW - 1),
    )
    assert c.step().released == ["gen-2"]


def test_grading_waits_for_its_generation_job_and_a_failed_one_is_stuck(tmp_path: Path) -> None:
    api = FakeApi()
    api.put("jobs", job("gen", "generate", ("s", 2, 1), gated=False))
    api.put("jobs", job("grd", "grade", ("s", 2, 1), pool="grade", size=1))
    # its own Job, running: not work that could still produce inputs
    api.put("jobs", job("coo", "coordinate", gated=False))
    c = coordinator(tmp_path, api)
    result = c.step()
    assert result.released == [] and not result.stuck and not result.done
    finish(api, "gen", "Failed")  # no manifest will ever come
    result = c.step()
    assert result.gated_left == 1 and not api.patches
    assert "can never start" in result.stuck and "gen" in result.stuck


def test_a_deferred_job_is_created_once_from_the_stored_manifest(tmp_path: Path) -> None:
    """With Kueue (hold defer) the launch stores the Job instead of creating it: the
    coordinator creates it on release, once, even before its watch shows the new Job."""
    import yaml

    api = FakeApi()
    api.put(
        "jobs", job("gen", "generate", ("s", 2, 1), gated=False, suspended=True, done="Complete")
    )
    deferred = job("grd", "grade", ("s", 2, 1), hold="defer", pool="grade", size=1, suspended=True)
    store = open_store(str(tmp_path))
    store.write_bytes(RunLayout.launch_deferred(0), ("---\n" + yaml.safe_dump(deferred)).encode())
    c = coordinator(tmp_path, api)
    c._ready.add("grd")  # its input exists (the store's side is the cluster tests')
    assert [v.name for v in c.views() if not v.exists] == ["grd"]
    assert c.step().released == ["grd"]
    assert api.created == ["grd"]
    api.events["jobs"].clear()  # the watch has not delivered the new Job yet
    assert c.step().released == [] and api.created == ["grd"]


def test_kueue_admission_gate_is_removed_to_release(tmp_path: Path) -> None:
    api = FakeApi()
    api.put("jobs", job("gen", "generate", ("s", 2, 1), hold="gate", pool="generate/s", size=1))
    c = coordinator(tmp_path, api)
    assert c.step().released == ["gen"]
    assert api.patches == [
        ("gen", {"metadata": {"annotations": {ADMISSION_GATE_ANNOTATION: None}}})
    ]
    assert ADMISSION_GATE_ANNOTATION not in api.objects["jobs"]["gen"]["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"waiting": "ImagePullBackOff", "started": NOW - 700}, "stuck in ImagePullBackOff"),
        (
            {"waiting": "CreateContainerConfigError", "started": NOW - 700},
            "CreateContainerConfigError",
        ),
        ({"unschedulable": True, "created": NOW - 2000}, "unschedulable for 2000s: 0/2 nodes"),
    ],
)
def test_a_stuck_pod_fails_its_job_with_the_reason(
    tmp_path: Path, spec: dict[str, Any], reason: str
) -> None:
    api = FakeApi()
    api.put("jobs", job("gen", "generate", ("s", 2, 1), gated=False))
    api.put("pods", pod("gen-abc", "gen", gpus=1, **spec))
    c = coordinator(tmp_path, api, stuck_seconds=600, unschedulable_seconds=1800)
    assert c.step().failed == ["gen"]
    [(name, body)] = api.patches
    assert name == "gen" and body["spec"] == {"activeDeadlineSeconds": 1}
    assert reason in body["metadata"]["annotations"][FAILURE_ANNOTATION]
    assert c.step().failed == []  # once


def test_a_pod_stuck_for_less_than_the_bound_is_left_alone(tmp_path: Path) -> None:
    api = FakeApi()
    api.put("jobs", job("gen", "generate", ("s", 2, 1), gated=False))
    api.put("pods", pod("gen-a", "gen", waiting="ErrImagePull", started=NOW - 100))
    api.put("pods", pod("gen-b", "gen", unschedulable=True, created=NOW - 1000))
    c = coordinator(tmp_path, api, stuck_seconds=600, unschedulable_seconds=1800)
    assert c.step().failed == [] and api.patches == []


def test_a_multi_attach_volume_fails_its_job(tmp_path: Path) -> None:
    api = FakeApi()
    api.put("jobs", job("gen", "generate", ("s", 2, 1), gated=False))
    api.put("pods", pod("gen-a", "gen", started=NOW - 700))
    api.warnings = [
        {
            "reason": "FailedAttachVolume",
            "message": 'Multi-Attach error for volume "pvc-1" Volume is already used by pod x',
            "involvedObject": {"kind": "Pod", "name": "gen-a"},
        }
    ]
    c = coordinator(tmp_path, api, stuck_seconds=600)
    assert c.step().failed == ["gen"]
    assert "Multi-Attach" in api.patches[0][1]["metadata"]["annotations"][FAILURE_ANNOTATION]


def test_gpu_time_of_ended_generation_pods_is_recorded_once(tmp_path: Path) -> None:
    api = FakeApi()
    api.put("jobs", job("gen", "generate", ("s", 2, 1), gated=False, done="Complete"))
    api.put(
        "pods", pod("gen-a", "gen", phase="Succeeded", gpus=2, started=NOW - 100, finished=NOW - 10)
    )
    api.put("pods", pod("cpu-a", "gen", phase="Succeeded", gpus=0, started=NOW - 100, finished=NOW))
    c = coordinator(tmp_path, api)
    c.step()
    store = open_store(str(tmp_path))
    assert store.list_keys("usage") == [RunLayout.pod_usage("gen-a")]
    record = json.loads(store.read_bytes(RunLayout.pod_usage("gen-a")))
    assert record["gpus"] == 2 and record["seconds"] == 90 and record["outcome"] == "Succeeded"
    assert record["units"] == [{"student": "s", "k": 2, "round": 1}]
    c.step()  # not written twice (create-only would refuse it)


def launched(c: Coordinator) -> Coordinator:
    """The launch's marker that it created every object of the attempt."""
    c.run.store.write_bytes(RunLayout.launch_created(c.attempt), b"")
    return c


def test_it_ends_only_once_the_launch_has_created_every_job(tmp_path: Path) -> None:
    """Every Job created so far has finished, but the launch is still creating the rest
    (or was cut off and will resume): the run is not over."""
    api = FakeApi()
    api.put("jobs", job("gen", "generate", ("s", 2, 1), gated=False, done="Complete"))
    c = coordinator(tmp_path, api)
    said: list[str] = []
    c.say = said.append
    with pytest.raises(RunFailedError, match="waiting for the launch of attempt 0"):
        c.run_until_done(interval=0.01, timeout=0.3, sleep=lambda _s: None)
    assert sum("has not created every Job yet" in line for line in said) == 1  # said once
    assert not any("every Job of attempt 0 has finished" in line for line in said)

    launched(c).run_until_done(interval=0.01, timeout=5, sleep=lambda _s: None)


def test_api_errors_are_retried_and_a_long_outage_ends_it(tmp_path: Path) -> None:
    api = FakeApi()
    api.put("jobs", job("gen", "generate", ("s", 2, 1), gated=False, done="Complete"))
    api.failures = 3
    slept: list[float] = []
    launched(coordinator(tmp_path, api)).run_until_done(interval=1, timeout=60, sleep=slept.append)
    assert slept == [1.0, 2.0, 4.0]  # backoff, then it carried on and saw everything finished

    api.failures = 10**6
    with pytest.raises(RunFailedError, match="the Kubernetes API failed for"):
        coordinator(tmp_path, api).run_until_done(
            interval=1, timeout=60, sleep=lambda _s: None, outage_seconds=0
        )


def test_coordinate_outside_a_pod_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(SkillmixError) as caught:
        KubeClient.in_cluster()
    assert caught.value.exit_code == 2
    assert "no in-cluster Kubernetes configuration" in caught.value.one_line()
    assert "ServiceAccount token" in caught.value.one_line()


def test_the_mirror_follows_watches_from_threads_and_wakes_on_a_change() -> None:
    """In a pod the Jobs and pods are followed by two watcher threads: a change wakes the
    coordinator at once instead of at its next pass; a watcher's API error reaches it."""
    import time

    from skillmix.k8s.mirror import Mirror

    api = FakeApi()
    api.put("jobs", job("gen", "generate", ("s", 2, 1), gated=False))
    mirror = Mirror(api, "x")
    mirror.start()
    try:
        assert set(mirror.jobs) == {"gen"}
        mirror.wait(0)  # the initial lists
        began = time.monotonic()
        api.put("jobs", job("grd", "grade", ("s", 2, 1)))
        mirror.wait(10)
        assert time.monotonic() - began < 5
        with mirror.lock:
            assert set(mirror.jobs) == {"gen", "grd"}
        api.failures = 1
        deadline = time.monotonic() + 10
        with pytest.raises(RunFailedError, match="cannot reach the Kubernetes API"):
            while time.monotonic() < deadline:
                mirror.wait(1)
    finally:
        mirror.stop()
