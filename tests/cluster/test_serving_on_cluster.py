"""Serving modes and vLLM pods on the real control plane: a per-model run (one generation Job
per student) gives the per-unit run's report byte for byte; the vLLM pods pass Pod Security
`restricted`; a student's own scheduling settings reach the real scheduler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.store.uri import open_store
from tests.cluster.conftest import IMAGE, Cluster, wait_for

pytestmark = pytest.mark.cluster

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def write_experiment(tmp: Path, serving: str, **changes: Any) -> Path:
    doc: dict[str, Any] = {
        "name": "serving-modes",
        "seed": 5,
        "ks": [2],
        "combinations": 4,
        "generation_rounds": 2,
        "serving": serving,
        "students": [
            {"name": "strong", "backend": "mock", "model": "mock-s", "quality": 0.9, "replicas": 2},
            {"name": "weak", "backend": "mock", "model": "mock-w", "quality": 0.4},
        ],
        "grader": {
            "name": "judge",
            "backend": "mock",
            "model": "judge",
            "quality": 0.9,
            "rounds": 1,
        },
        "metrics": {"bootstrap_samples": 20},
        **changes,
    }
    path = tmp / f"{serving}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def launch_and_wait(cluster: Cluster, path: Path) -> str:
    out = cluster.skillmix("launch", "-f", str(path), "--wait", "--timeout", "300", timeout=360)
    assert out.returncode == 0, out.stdout + out.stderr
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("run id:")]
    return line.split(":", 1)[1].strip()


def test_per_model_run_gives_the_per_unit_report(cluster: Cluster, tmp_path: Path) -> None:
    """Both modes launched in turn into the same run folder (the first one's Jobs, run and
    response cache removed in between): same Job count per mode as planned, same report bytes."""
    run_id = launch_and_wait(cluster, write_experiment(tmp_path, "per-unit"))
    store = open_store(cluster.store)
    run = store.child(run_id)
    report = {k: run.read_bytes(k) for k in run.list_keys("report")}
    assert "report/summary.json" in report
    gen_jobs = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=generate")
    assert len(gen_jobs) == 4  # per unit: 2 students x 2 rounds

    cluster.skillmix("cancel", run_id, check=True)
    wait_for(lambda: not cluster.jobs(f"skillmix.io/run={run_id}"), "the Jobs to go")
    store.delete_prefix(run_id)
    store.delete_prefix("_cache")  # the second run asks its sidecars again

    path = write_experiment(tmp_path, "per-model")
    assert launch_and_wait(cluster, path) == run_id  # serving is not part of the run id
    gen_jobs = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=generate")
    # per model: one Job per student, Indexed over its replicas, each pod running both rounds
    assert sorted(
        (j.metadata.labels["skillmix.io/student"], j.spec.completions) for j in gen_jobs
    ) == [
        ("strong", 2),
        ("weak", 1),
    ]
    assert {j.metadata.labels["skillmix.io/serving"] for j in gen_jobs} == {"per-model"}
    assert all("skillmix.io/k" not in j.metadata.labels for j in gen_jobs)
    # every unit got its own manifest (grading Jobs, one per unit, waited for them)
    grade_jobs = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=grade")
    assert len(grade_jobs) == 4
    again = {k: run.read_bytes(k) for k in run.list_keys("report")}
    assert again.keys() == report.keys()
    # byte for byte but for when each run was created and reported (the pods' clocks; the
    # local test of the same pods' commands pins them and compares every byte)
    first, second = stamps(report), stamps(again)
    assert first != second
    for key in sorted(report):
        assert blank(again[key], second) == blank(report[key], first), key


def stamps(report: dict[str, bytes]) -> list[bytes]:
    summary = json.loads(report["report/summary.json"])
    return [summary["created_at"].encode(), summary["reported_at"].encode()]


def blank(data: bytes, stamps: list[bytes]) -> bytes:
    for stamp in stamps:
        data = data.replace(stamp, b"<time>")
    return data


def rendered_pods(cluster: Cluster, path: Path) -> list[dict[str, Any]]:
    """The generation pods of a run as the chart renders them (Jobs' pod templates)."""
    out = cluster.skillmix("render", "-f", str(path), check=True, timeout=120)
    pods = []
    for doc in yaml.safe_load_all(out.stdout):
        if doc and doc["kind"] == "ServiceAccount":  # the pods name it: it must exist
            cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
        if not doc or doc["kind"] != "Job":
            continue
        if doc["metadata"]["labels"]["skillmix.io/phase"] != "generate":
            continue
        template = doc["spec"]["template"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": doc["metadata"]["name"],
                    "namespace": cluster.namespace,
                    "labels": template["metadata"]["labels"],
                },
                "spec": template["spec"],
            }
        )
    return pods


def gpu_profile(cluster: Cluster) -> None:
    doc = yaml.safe_load(cluster.profile_file.read_text())
    profile = doc["clusters"]["local"]
    profile["vllm_image"] = IMAGE  # fails at once in the sidecar: no GPU here
    profile["deadlines"]["model_load_seconds"] = 10
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))


def vllm_student(**changes: Any) -> dict[str, Any]:
    return {
        "name": "qwen",
        "backend": "vllm",
        "model": "qwen",
        "vllm": {"model": "Qwen/Qwen2.5-0.5B-Instruct"},
        "kubernetes": {"tolerations": [GPU_TOLERATION]},
        **changes,
    }


def test_vllm_pods_pass_pod_security_restricted(cluster: Cluster, tmp_path: Path) -> None:
    """The namespace enforces `restricted` (the fixture): the API server admits the vLLM pods
    of both modes as rendered (server-side dry run), and rejects one whose student asks for
    root, naming the rule."""
    gpu_profile(cluster)
    for serving in ("per-unit", "per-model"):
        path = write_experiment(tmp_path, serving, students=[vllm_student()])
        pods = rendered_pods(cluster, path)
        assert pods and all(
            any(c["name"] == "model" for c in p["spec"]["initContainers"]) for p in pods
        )
        out = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(pods)
        )
        assert "created (server dry run)" in out, out
    root = vllm_student(
        kubernetes={
            "tolerations": [GPU_TOLERATION],
            "security_context": {"runAsUser": 0, "allowPrivilegeEscalation": False},
        }
    )
    path = write_experiment(tmp_path, "per-model", students=[root])
    pods = rendered_pods(cluster, path)
    with pytest.raises(AssertionError) as refused:
        cluster.kubectl("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(pods))
    assert 'violates PodSecurity "restricted:latest"' in str(refused.value)
    assert "runAsNonRoot" in str(refused.value)


def test_a_students_own_gpu_settings_reach_the_scheduler(cluster: Cluster, tmp_path: Path) -> None:
    """No global gpu.* at all: the per-model vLLM Job of a student with its own toleration and
    node selector lands on the GPU node in the restricted namespace, with the sized requests;
    a student asking for a MIG profile the node lacks is unschedulable for that resource."""
    gpu_profile(cluster)
    students = [
        vllm_student(
            kubernetes={
                "tolerations": [GPU_TOLERATION],
                "node_selector": {"nvidia.com/gpu.present": "true"},
                "pod_labels": {"team": "evals"},
            }
        ),
        vllm_student(
            name="mig",
            kubernetes={"tolerations": [GPU_TOLERATION], "gpu_resource": "nvidia.com/mig-1g.10gb"},
        ),
    ]
    path = write_experiment(tmp_path, "per-model", students=students)
    cluster.skillmix("launch", "-f", str(path), check=True)

    def pod_of(student: str) -> Any:
        pods = cluster.pods(f"skillmix.io/phase=generate,skillmix.io/student={student}")
        return pods[0] if pods else None

    def placed() -> Any:
        pod = pod_of("qwen")
        return pod if pod is not None and pod.spec.node_name else None

    pod = wait_for(placed, "the scheduler to place the vLLM pod", 60)
    assert pod.spec.node_name == "gpu-node"
    assert pod.metadata.labels["team"] == "evals"
    [model] = [c for c in pod.spec.init_containers if c.name == "model"]
    assert model.resources.requests["nvidia.com/gpu"] == "1"
    assert model.resources.requests["cpu"] == "4" and model.resources.limits["memory"] == "32Gi"
    assert model.security_context.run_as_non_root is True
    [cache] = [v for v in pod.spec.volumes if v.name == "model-cache"]
    assert cache.empty_dir.size_limit == "50Gi"

    def unschedulable() -> Any:
        pod = pod_of("mig")
        for c in (pod.status.conditions or []) if pod is not None else []:
            if c.type == "PodScheduled" and c.status == "False":
                return c
        return None

    condition = wait_for(unschedulable, "the scheduler's verdict on the MIG pod", 60)
    assert "Insufficient nvidia.com/mig-1g.10gb" in condition.message


def test_cache_warm_creates_its_download_job_in_the_restricted_namespace(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`skillmix cache warm` as the launcher: the Job controller creates its pod (Pod
    Security `restricted` admits it) with the cache PVC at HF_HOME and no GPU."""
    doc = yaml.safe_load(cluster.profile_file.read_text())
    doc["clusters"]["local"]["model_cache_pvc"] = "hf-cache"
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    path = write_experiment(tmp_path, "per-model", students=[vllm_student()])
    out = cluster.skillmix("cache", "warm", "-f", str(path), check=True)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in out.stderr
    [job] = cluster.jobs("app.kubernetes.io/component=cache-warm")
    pod = wait_for(lambda: cluster.pods(f"job-name={job.metadata.name}"), "the download pod")[0]
    [c] = pod.spec.containers
    assert c.args == ["Qwen/Qwen2.5-0.5B-Instruct"]
    assert not any("gpu" in name for name in (c.resources.requests or {}))
    assert c.security_context.run_as_non_root is True
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "hf-cache"
