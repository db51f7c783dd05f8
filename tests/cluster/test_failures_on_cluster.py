"""How runs fail on the real control plane: what the Job controller and the scheduler do with
our pods, not what we think they do."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.loading import load_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.records import GenerationRecord
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore, generation_prefix
from skillmix.store.uri import open_store
from tests.cluster.conftest import IMAGE, Cluster, wait_for

pytestmark = pytest.mark.cluster


def experiment(tmp: Path, **changes: Any) -> tuple[Path, str]:
    doc: dict[str, Any] = {
        "name": "cluster-failures",
        "seed": 3,
        "ks": [2],
        "combinations": 6,
        "generation_rounds": 1,
        "catalog": {},
        "students": [{"name": "weak", "backend": "mock", "model": "mock-weak", "quality": 0.4}],
        "grader": {
            "name": "mock-grader",
            "backend": "mock",
            "model": "mock-grader",
            "quality": 0.9,
            "rounds": 1,
        },
        "metrics": {"bootstrap_samples": 20},
        "store": "runs",
        **changes,
    }
    path = tmp / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path, resolve_context(load_experiment(path)).run_id


def job_conditions(cluster: Cluster, name: str) -> dict[str, Any]:
    job = cluster.batch().read_namespaced_job(name, cluster.namespace)
    return {c.type: c for c in job.status.conditions or [] if c.status == "True"}


def phase_job(cluster: Cluster, run_id: str, phase: str) -> Any:
    jobs = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase={phase}")
    assert len(jobs) == 1, [j.metadata.name for j in jobs]
    return jobs[0]


def container_status(pod: Any, name: str) -> Any:
    for status in [
        *(pod.status.init_container_statuses or []),
        *(pod.status.container_statuses or []),
    ]:
        if status.name == name:
            return status
    return None


def test_a_sigkilled_client_is_retried_by_the_job_and_no_record_is_lost(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGKILL the generation client once it has written part of its unit: the pod fails
    with 137, the Job (backoffLimit 1) starts a new pod, it resumes from the parts, and the
    run completes with each combination exactly once."""
    path, run_id = experiment(
        tmp_path,
        combinations=200,
        students=[
            {
                "name": "weak",
                "backend": "mock",
                "model": "mock-weak",
                "quality": 0.4,
                "concurrency": 2,
            }
        ],
    )
    launched = cluster.popen("launch", "-f", str(path), "--wait", "--timeout", "300")
    try:
        run = RunStore(open_store(f"{cluster.store}/{run_id}"))
        prefix = generation_prefix("weak", 2, 1)

        def client_with_parts() -> Any:
            if run.manifest(prefix) is not None:
                raise AssertionError("the unit finished before the client could be killed")
            if not run.part_infos(prefix):
                return None
            for pod in cluster.pods(f"skillmix.io/run={run_id},skillmix.io/phase=generate"):
                status = container_status(pod, "client")
                if status is not None and status.state.running and status.container_id:
                    return pod, int(status.container_id.rsplit("/", 1)[1])
            return None

        pod, pid = wait_for(client_with_parts, "a generation client with parts written", 120)
        os.killpg(pid, signal.SIGKILL)
        out, err = launched.communicate(timeout=300)
    finally:
        if launched.poll() is None:
            launched.kill()
    assert launched.returncode == 0, out + err

    job = phase_job(cluster, run_id, "generate")
    assert job.status.failed == 1 and job.status.succeeded == 1
    killed = cluster.core().read_namespaced_pod(pod.metadata.name, cluster.namespace)
    assert container_status(killed, "client").state.terminated.exit_code == 137
    assert killed.status.phase == "Failed"
    manifest = run.manifest(prefix)
    assert manifest is not None
    records = run.finished_records(prefix, GenerationRecord) or []
    assert sorted(Counter(r.index for r in records).items()) == [(i, 1) for i in range(200)]


def test_exit_code_2_fails_the_job_at_once_through_the_pod_failure_policy(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Bad input in a pod (here: the run's run.json removed after launch) exits 2, and the
    Job controller's podFailurePolicy fails the Job without a retry."""
    path, run_id = experiment(tmp_path)
    launched = cluster.popen("launch", "-f", str(path), "--wait", "--timeout", "120")
    try:
        # launch writes run.json before it creates the Jobs; the clients start seconds later
        wait_for(lambda: cluster.jobs(f"skillmix.io/run={run_id}"), "the Jobs", 60)
        open_store(f"{cluster.store}/{run_id}").delete_prefix("run.json")
        out, err = launched.communicate(timeout=150)
    finally:
        if launched.poll() is None:
            launched.kill()
    # `launch --wait` ends with exit 1 and the Job's reason
    assert launched.returncode == 1, out + err
    assert "Job(s) failed" in err and "PodFailurePolicy" in err, err

    def failed_job() -> tuple[str, Any] | None:
        # the first client to read run.json after it went: generation's, or (when generation
        # read it just before) a grading or the coordinator's own
        for job in cluster.jobs(f"skillmix.io/run={run_id}"):
            failed = job_conditions(cluster, job.metadata.name).get("Failed")
            if failed is not None:
                return job.metadata.name, failed
        return None

    name, failed = wait_for(failed_job, "a Job to fail", 90)
    assert failed.reason == "PodFailurePolicy"
    [pod] = cluster.pods(f"job-name={name}")  # no second pod: the rule is FailJob
    assert container_status(pod, "client").state.terminated.exit_code == 2
    # rule 0 (the coordinator's: 1, after its rule ignoring SIGTERM)
    assert failed.message.startswith(
        f"Container client for pod {cluster.namespace}/{pod.metadata.name} failed with exit code 2 "
        "matching FailJob rule at index "
    )
    status = cluster.skillmix("status", run_id)
    assert "PodFailurePolicy" in " ".join(status.stdout.split())


# the process kubelet's vLLM stand-in (tests/cluster/vllm_stand_in): serves the mock backend,
# or fails to start as its model id says (stand-in/gated, stand-in/hub-503, ...)
STAND_IN_VLLM = "skillmix-test/vllm:stand-in"


def _gpu_profile(
    cluster: Cluster, *, tolerate: bool, image: str = IMAGE, load_seconds: int = 10
) -> None:
    """The profile with a vLLM image the kubelet runs: ours by default, where `python3 -m
    vllm...` fails at once in the sidecar with an error no cause is known for; or the vLLM
    stand-in."""
    doc = yaml.safe_load(cluster.profile_file.read_text())
    profile = doc["clusters"]["local"]
    profile["vllm_image"] = image
    if tolerate:
        profile["gpu"] = {
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "node_selector": {"nvidia.com/gpu.present": "true"},
        }
    profile["deadlines"]["model_load_seconds"] = load_seconds
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    # the namespace stays Pod Security `restricted`: the vLLM container runs as uid 1000


VLLM_STUDENT = {
    "name": "qwen",
    "backend": "vllm",
    "model": "qwen",
    "vllm": {"model": "Qwen/Qwen2.5-0.5B-Instruct"},
}


def test_a_sidecar_that_never_becomes_healthy_fails_the_job_within_the_load_budget(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A model server that never passes /health for a reason the client does not know (here
    the image has no vLLM: `No module named vllm...` in the model log): the kubelet restarts
    the native sidecar with back-off forever, but the client waits for /health only within the
    model-load budget (10 s here), exits 3, and the podFailurePolicy fails the Job at once: the
    GPU is not held until activeDeadlineSeconds. The client's last line names the reason, and
    its log reaches the store. The real scheduler put the pod on the GPU node through the
    toleration."""
    _gpu_profile(cluster, tolerate=True)
    path, run_id = experiment(tmp_path, students=[VLLM_STUDENT])
    cluster.skillmix("launch", "-f", str(path), check=True)
    name = phase_job(cluster, run_id, "generate").metadata.name
    failed = wait_for(lambda: job_conditions(cluster, name).get("Failed"), "the Job to fail", 90)
    assert failed.reason == "PodFailurePolicy"
    [pod] = cluster.pods(f"job-name={name}")  # FailJob: no second pod
    assert pod.spec.node_name == "gpu-node"
    client = container_status(pod, "client")
    assert client.state.terminated.exit_code == 3
    assert "failed with exit code 3 matching FailJob rule" in failed.message
    # within the load budget plus a small margin of the client's start
    ran = client.state.terminated.finished_at - client.state.terminated.started_at
    assert 10 <= ran.total_seconds() <= 10 + 15, ran
    model = container_status(pod, "model")
    assert model.restart_count >= 1 or model.last_state.terminated is not None
    # the reason in the pod's status (FallbackToLogsOnError: the log's tail)
    assert "model server never became healthy" in client.state.terminated.message
    log = cluster.kubectl("logs", pod.metadata.name, "-c", "client")
    assert "model server never became healthy" in log.splitlines()[-1], log
    # the client's own log, uploaded to the store at exit (outlives the pod)
    stored = open_store(f"{cluster.store}/{run_id}").read_bytes(
        RunLayout.pod_log(pod.metadata.name)
    )
    assert "model server never became healthy" in stored.decode()
    # the sidecar holds no store credentials
    [sidecar] = [c for c in pod.spec.init_containers if c.name == "model"]
    assert not {e.name for e in sidecar.env or []} & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def stand_in_student(model: str) -> dict[str, Any]:
    return {"name": "qwen", "backend": "vllm", "model": "qwen", "vllm": {"model": model}}


def launch_and_wait(cluster: Cluster, path: Path, timeout: int = 240) -> tuple[int, str]:
    """`launch --wait`: its exit code and stderr."""
    done = cluster.skillmix(
        "launch", "-f", str(path), "--wait", "--timeout", str(timeout), timeout=timeout + 30
    )
    return done.returncode, done.stderr


def generation_pod(cluster: Cluster, run_id: str) -> Any:
    [pod] = cluster.pods(f"skillmix.io/run={run_id},skillmix.io/phase=generate")
    return pod


def failed_generation(cluster: Cluster, run_id: str) -> tuple[Any, Any]:
    """The failed generation Job's Failed condition and its one pod (FailJob: no second)."""
    name = phase_job(cluster, run_id, "generate").metadata.name
    failed = wait_for(lambda: job_conditions(cluster, name).get("Failed"), "the Job to fail", 120)
    assert failed.reason == "PodFailurePolicy"
    assert "failed with exit code 3 matching FailJob rule" in failed.message
    [pod] = cluster.pods(f"job-name={name}")
    return failed, pod


def test_a_gpu_pod_of_the_vllm_stand_in_completes_a_unit_on_the_gpu_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The chart's vLLM sidecar as rendered (bash, vLLM's command and arguments, the model
    log) runs the stand-in on the GPU node: it serves the student's served model name, the
    client completes the generation unit and the run goes on to its report."""
    _gpu_profile(cluster, tolerate=True, image=STAND_IN_VLLM, load_seconds=60)
    path, run_id = experiment(tmp_path, students=[stand_in_student("Qwen/Qwen2.5-0.5B-Instruct")])
    code, err = launch_and_wait(cluster, path)
    assert code == 0, err
    run = RunStore(open_store(f"{cluster.store}/{run_id}"))
    manifest = run.manifest(generation_prefix("qwen", 2, 1))
    assert manifest is not None and manifest.failed == 0
    pod = generation_pod(cluster, run_id)
    assert pod.spec.node_name == "gpu-node"
    [model] = [c for c in pod.spec.init_containers if c.name == "model"]
    assert model.resources.limits["nvidia.com/gpu"] == "1"
    assert container_status(pod, "model").restart_count == 0
    assert container_status(pod, "client").state.terminated.exit_code == 0
    log = cluster.kubectl("logs", pod.metadata.name, "-c", "model")
    assert "'model': 'Qwen/Qwen2.5-0.5B-Instruct'" in log
    assert "Application startup complete." in log


def test_a_gated_model_fails_the_job_at_once_naming_the_fix(
    cluster: Cluster, tmp_path: Path
) -> None:
    """vLLM cannot download a gated model (huggingface_hub's GatedRepoError): the client reads
    it in the model log, exits 3 well before the load budget (120 s) with the cause and the
    fix in its termination message, and the Job fails at once."""
    _gpu_profile(cluster, tolerate=True, image=STAND_IN_VLLM, load_seconds=120)
    path, run_id = experiment(tmp_path, students=[stand_in_student("stand-in/gated")])
    cluster.skillmix("launch", "-f", str(path), check=True)
    _, pod = failed_generation(cluster, run_id)
    client = container_status(pod, "client").state.terminated
    assert client.exit_code == 3
    assert (client.finished_at - client.started_at).total_seconds() < 40
    last = client.message.strip().splitlines()[-1]
    assert "model server failed to start: model stand-in/gated is gated" in last, last
    assert "set secrets.HF_TOKEN in the cluster profile" in last, last
    log = cluster.kubectl("logs", pod.metadata.name, "-c", "model")
    assert "huggingface_hub.errors.GatedRepoError: 401 Client Error." in log


def test_a_hub_429_on_the_first_start_is_retried_and_the_unit_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The Hub answers the pod's first start 429 Too Many Requests (transient): the kubelet
    restarts the sidecar, the client gives it one more chance, the restarted server loads and
    the unit completes."""
    _gpu_profile(cluster, tolerate=True, image=STAND_IN_VLLM, load_seconds=60)
    path, run_id = experiment(tmp_path, students=[stand_in_student("stand-in/hub-429-once")])
    code, err = launch_and_wait(cluster, path)
    assert code == 0, err
    run = RunStore(open_store(f"{cluster.store}/{run_id}"))
    assert run.manifest(generation_prefix("qwen", 2, 1)) is not None
    pod = generation_pod(cluster, run_id)
    assert container_status(pod, "client").state.terminated.exit_code == 0
    assert container_status(pod, "model").restart_count >= 1  # the first start failed
    first = cluster.kubectl("logs", pod.metadata.name, "-c", "model", "--previous")
    assert "HfHubHTTPError: 429 Client Error: Too Many Requests for url" in first


def test_a_hub_503_fails_the_job_after_the_one_retry(cluster: Cluster, tmp_path: Path) -> None:
    """Every start meets the Hub's 503 (transient): the client gives the restarted server one
    more chance, then exits 3 naming the transient cause, long before the two load budgets
    (120 s each) it could have waited."""
    _gpu_profile(cluster, tolerate=True, image=STAND_IN_VLLM, load_seconds=120)
    path, run_id = experiment(tmp_path, students=[stand_in_student("stand-in/hub-503")])
    cluster.skillmix("launch", "-f", str(path), check=True)
    _, pod = failed_generation(cluster, run_id)
    client = container_status(pod, "client").state.terminated
    assert client.exit_code == 3
    assert (client.finished_at - client.started_at).total_seconds() < 90
    last = client.message.strip().splitlines()[-1]
    cause = "model stand-in/hub-503 could not be downloaded: the Hugging Face Hub answered 503"
    assert cause in last, last
    assert "again after one retry" in last, last
    assert container_status(pod, "model").restart_count >= 1
    log = cluster.kubectl("logs", pod.metadata.name, "-c", "client")
    assert "transient: waiting" in log, log


def test_a_gpu_pod_without_the_toleration_is_unschedulable(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The real scheduler's verdict on the GPU node's taint, as `status` will have to show."""
    _gpu_profile(cluster, tolerate=False)
    path, run_id = experiment(tmp_path, students=[VLLM_STUDENT])
    cluster.skillmix("launch", "-f", str(path), check=True)
    name = phase_job(cluster, run_id, "generate").metadata.name

    def unschedulable() -> Any:
        for pod in cluster.pods(f"job-name={name}"):
            for c in pod.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False":
                    return c
        return None

    condition = wait_for(unschedulable, "the scheduler's verdict", 60)
    assert condition.reason == "Unschedulable"
    assert "untolerated taint" in condition.message and "nvidia.com/gpu" in condition.message


def test_a_missing_secret_is_a_create_container_config_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The kubelet cannot build the container's env: the pod waits (it never fails), as on a
    cluster, with the reason in the container's status. The S3 credentials are only in the
    containers that use the store: the model sidecar starts, the client cannot."""
    doc = yaml.safe_load(cluster.profile_file.read_text())
    doc["clusters"]["local"]["s3"]["credentials_secret"] = "no-such-secret"
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    path, run_id = experiment(tmp_path)
    cluster.skillmix("launch", "-f", str(path), check=True)
    name = phase_job(cluster, run_id, "generate").metadata.name

    def waiting() -> Any:
        for pod in cluster.pods(f"job-name={name}"):
            client = container_status(pod, "client")
            waiting = client.state.waiting if client is not None else None
            if waiting is not None and waiting.reason == "CreateContainerConfigError":
                return pod, waiting
        return None

    pod, state = wait_for(waiting, "CreateContainerConfigError", 60)
    assert state.message == 'secret "no-such-secret" not found'
    assert pod.status.phase == "Pending"
    assert container_status(pod, "model").state.running is not None
    assert "Failed" not in job_conditions(cluster, name)


def test_an_image_the_node_cannot_pull_waits_in_err_image_pull(
    cluster: Cluster, tmp_path: Path
) -> None:
    doc = yaml.safe_load(cluster.profile_file.read_text())
    doc["clusters"]["local"]["image"] = "registry.invalid/someone/else:1.0"
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    path, run_id = experiment(tmp_path)
    cluster.skillmix("launch", "-f", str(path), check=True)
    name = phase_job(cluster, run_id, "generate").metadata.name

    def pulling() -> Any:
        for pod in cluster.pods(f"job-name={name}"):
            model = container_status(pod, "model")
            waiting = model.state.waiting if model is not None else None
            if waiting is not None and waiting.reason in ("ErrImagePull", "ImagePullBackOff"):
                return pod
        return None

    pod = wait_for(pulling, "ErrImagePull", 60)
    assert pod.status.phase == "Pending"
    events = [
        e
        for e in cluster.core().list_namespaced_event(cluster.namespace).items
        if e.involved_object.name == pod.metadata.name and e.reason == "Failed"
    ]
    assert any("registry.invalid/someone/else:1.0" in e.message for e in events)


def _volume_job(name: str, secret: str) -> dict[str, Any]:
    """A Job whose container prints a key of a Secret mounted as a volume."""
    code = "import os; print(open(os.environ['SECRET_DIR'] + '/KEY').read())"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"skillmix.io/run": name}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"skillmix.io/run": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumes": [{"name": "s", "secret": {"secretName": secret}}],
                    "containers": [
                        {
                            "name": "client",
                            "image": IMAGE,
                            "command": ["python3", "-c", code],
                            "env": [{"name": "SECRET_DIR", "value": "/etc/s"}],
                            "volumeMounts": [{"name": "s", "mountPath": "/etc/s"}],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def test_secret_volumes_are_mounted_and_a_missing_one_keeps_the_pod_waiting(
    cluster: Cluster,
) -> None:
    import json

    cluster.kubectl("create", "secret", "generic", "vol-secret", "--from-literal=KEY=s3cret-value")
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(_volume_job("vol-ok", "vol-secret")))
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(_volume_job("vol-missing", "nope")))
    wait_for(
        lambda: any(p.status.phase == "Succeeded" for p in cluster.pods("job-name=vol-ok")),
        "the pod with the Secret volume to finish",
        60,
    )
    [pod] = cluster.pods("job-name=vol-ok")
    assert cluster.kubectl("logs", pod.metadata.name).strip() == "s3cret-value"

    def failed_mount() -> Any:
        pods = cluster.pods("job-name=vol-missing")
        names = {p.metadata.name for p in pods}
        return [
            e
            for e in cluster.core().list_namespaced_event(cluster.namespace).items
            if e.involved_object.name in names and e.reason == "FailedMount"
        ]

    [event, *_] = wait_for(failed_mount, "FailedMount", 60)
    assert 'secret "nope" not found' in event.message
    [waiting] = cluster.pods("job-name=vol-missing")
    assert waiting.status.phase == "Pending"
