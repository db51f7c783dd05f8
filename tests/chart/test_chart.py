"""The skillmix Helm chart: lint, Kubernetes schema validation, structure, secrets, values schema.

Renders come from `helm template` (cached per values file); manifests are validated strictly
against Kubernetes 1.33 and the newest version kubernetes-validate ships.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, cast

import jsonschema
import kubernetes_validate
import pytest
import yaml

from skillmix.pipeline.plan import AggregateTask, GenerateTask, GradeTask
from tests.chart.helpers import CHART, RELEASE, VALUES_DIR, VALUES_FILES, Helm, Render

pytestmark = pytest.mark.tools
RenderFn = Callable[..., Render]

K8S_VERSIONS = sorted({"1.33.0", kubernetes_validate.latest_version()})
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_JOB_NAME = 56
GPU = "nvidia.com/gpu"
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
COMMON_LABELS = {
    "app.kubernetes.io/name": "skillmix",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/managed-by": "skillmix",
    "app.kubernetes.io/part-of": "skillmix",
}


# ----------------------------------------------------------------------------- helpers


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], job["spec"]["template"]["spec"])


def init_containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], pod(job).get("initContainers", []))


def all_containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = pod(job)["containers"]
    return init_containers(job) + containers


def container(job: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in all_containers(job) if c["name"] == name]
    assert len(found) == 1, f"{job['metadata']['name']}: {len(found)} containers named {name}"
    return found[0]


def sidecar(job: dict[str, Any]) -> dict[str, Any] | None:
    found = [c for c in init_containers(job) if c["name"] == "model"]
    return found[0] if found else None


def skillmix_containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    """client, wait and the mock sidecar: every container running the skillmix image."""
    return [c for c in all_containers(job) if c["command"] == ["skillmix"]]


def store_containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers that use the artifact store: every skillmix container but the sidecar."""
    return [c for c in skillmix_containers(job) if c["name"] != "model"]


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def job_by_student(r: Render, component: str, student: str) -> list[dict[str, Any]]:
    return [
        j for j in r.jobs(component) if j["metadata"]["labels"]["skillmix.io/student"] == student
    ]


def gpu_resources(c: dict[str, Any]) -> set[str]:
    res = c.get("resources", {})
    return {name for part in ("requests", "limits") for name in res.get(part, {}) if "gpu" in name}


def generation_entry(student: str, k: int, round: int, run_uri: str) -> dict[str, Any]:
    """A generation values entry with its args, as build_values writes it (from the plan)."""
    args = GenerateTask(student, k, round).container_args(run_uri, attempt=1)
    return {"student": student, "k": k, "round": round, "args": args}


def grading_entry(student: str, k: int, round: int, run_uri: str) -> dict[str, Any]:
    """A grading values entry with its args and waitArgs, as build_values writes it."""
    t = GradeTask(student, k, round)
    return {
        "student": student,
        "k": k,
        "round": round,
        "args": t.container_args(run_uri, attempt=1, budget_share=1),
        "waitArgs": t.wait_args(run_uri, attempt=1, timeout=3600),
    }


def values_defaults() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load((CHART / "values.yaml").read_text()))


def schema() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((CHART / "values.schema.json").read_text()))


# ----------------------------------------------------------------------------- lint


def test_lint_default_values(helm: Helm) -> None:
    result = helm.lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_lint_values_file(helm: Helm, values_file: str) -> None:
    result = helm.lint(values_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_all_values_files_are_tested() -> None:
    expected = {"vllm-tp1", "vllm-tp2", "api-student", "mock", "replicas", "kueue"}
    assert {name.removesuffix(".yaml") for name in VALUES_FILES} >= expected


# ----------------------------------------------------------------------------- kubernetes schemas


def test_validator_is_strict() -> None:
    bogus = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "x"},
        "bogusField": True,
    }
    for version in K8S_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bogus, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates(rendered: Render, version: str) -> None:
    docs = rendered.docs
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} @ {version}: {path}: {exc}")


def test_only_jobs_and_a_service_account(rendered: Render) -> None:
    kinds = [d["kind"] for d in rendered.docs]
    assert set(kinds) <= {"Job", "ServiceAccount", "NetworkPolicy"}, kinds
    assert kinds.count("ServiceAccount") <= 2  # the pods' and the coordinator's
    for doc in rendered.docs:
        versions = {"Job": "batch/v1", "NetworkPolicy": "networking.k8s.io/v1"}
        assert doc["apiVersion"] == versions.get(doc["kind"], "v1")
        assert "namespace" not in doc["metadata"]  # helm/kubectl set it


# ----------------------------------------------------------------------------- every Job


def test_job_common_fields(rendered: Render) -> None:
    deadlines = values_defaults()["jobs"]["activeDeadlineSeconds"]
    for job in rendered.jobs():
        spec = job["spec"]
        component = job["metadata"]["labels"]["app.kubernetes.io/component"]
        indexed = spec.get("completionMode") == "Indexed"
        # Indexed Jobs count retries per shard: one flaky shard does not spend the others'
        assert spec["backoffLimitPerIndex" if indexed else "backoffLimit"] == 2
        assert ("backoffLimit" in spec) is not indexed
        if component == "generation":
            # every generation Job has a deadline: its own (from the plan) or the default
            assert spec["activeDeadlineSeconds"] >= 1
        else:
            assert spec["activeDeadlineSeconds"] == deadlines[component]
        assert spec["ttlSecondsAfterFinished"] == 86400
        rules = spec["podFailurePolicy"]["rules"]
        on_codes = [(r["action"], r["onExitCodes"]) for r in rules if "onExitCodes" in r]
        # 2: bad input, 3: the model server never became healthy; 4: the client's time limit
        assert ("FailJob", {"containerName": "client", "operator": "In", "values": [2, 3]}) in (
            on_codes
        )
        per_index = "FailIndex" if indexed else "FailJob"
        assert (per_index, {"containerName": "client", "operator": "In", "values": [4]}) in (
            on_codes
        )
        has_wait = any(c["name"] == "wait" for c in init_containers(job))
        assert any(codes["containerName"] == "wait" for _, codes in on_codes) == has_wait
        ignore = [r for r in rules if r["action"] == "Ignore"]
        disrupted = {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        }
        # a coordinator pod ended by SIGTERM (deleted, evicted) is replaced, not counted
        terminated = {
            "action": "Ignore",
            "onExitCodes": {"containerName": "client", "operator": "In", "values": [143]},
        }
        assert ignore == ([terminated, disrupted] if component == "coordinator" else [disrupted])
        p = pod(job)
        assert p["restartPolicy"] == "Never"
        assert p["enableServiceLinks"] is False
        # only the coordinator talks to the API
        assert p["automountServiceAccountToken"] is (component == "coordinator")
        # volumes belong to the group of the user that writes them (vLLM's in vLLM pods)
        vllm = any(c["name"] == "model" and "vllm" in c["image"] for c in init_containers(job))
        assert p["securityContext"] == {
            "fsGroup": 1000 if vllm else 10001,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert "runAsNonRoot" not in p["securityContext"]
        assert p["serviceAccountName"]


def test_skillmix_containers_are_hardened(rendered: Render) -> None:
    for job in rendered.jobs():
        names = {c["name"] for c in skillmix_containers(job)}
        assert "client" in names
        volumes = {v["name"]: v for v in pod(job)["volumes"]}
        assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
        for c in skillmix_containers(job):
            where = f"{job['metadata']['name']}/{c['name']}"
            assert c["securityContext"] == HARDENED, where
            assert c["resources"].get("requests"), where
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], where
            e = env(c)
            assert e["HOME"]["value"] == "/tmp", where
            if c["name"] != "model":
                assert e["SKILLMIX_RUN"]["value"].startswith("s3://"), where
            assert c["imagePullPolicy"] in {"Always", "IfNotPresent", "Never"}
            assert c["image"].startswith(("ghcr.io/skillmix/skillmix:", "registry.example.com/"))


def test_client_never_gets_gpus(rendered: Render) -> None:
    for job in rendered.jobs():
        for c in skillmix_containers(job):
            assert not gpu_resources(c), f"{job['metadata']['name']}/{c['name']}"


def test_labels(rendered: Render) -> None:
    for doc in rendered.jobs():
        labels = doc["metadata"]["labels"]
        for key, value in COMMON_LABELS.items():
            assert labels[key] == value
        assert labels["helm.sh/chart"] == "skillmix-0.1.0"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["skillmix.io/run"]
        for key, value in labels.items():
            assert isinstance(value, str), (key, value)
            prefix, _, name = key.rpartition("/")
            assert LABEL_NAME.match(name) and len(name) <= 63, key
            assert not prefix or DNS1123_SUBDOMAIN.match(prefix), key
            assert value == "" or (LABEL_NAME.match(value) and len(value) <= 63), (key, value)
    runs = {d["metadata"]["labels"]["skillmix.io/run"] for d in rendered.jobs()}
    assert len(runs) == 1
    # the ServiceAccounts are the profile's, shared by runs: no run label
    for doc in rendered.docs:
        if doc["kind"] == "ServiceAccount":
            assert "skillmix.io/run" not in doc["metadata"]["labels"]
    for job in rendered.jobs():
        labels = job["metadata"]["labels"]
        component = labels["app.kubernetes.io/component"]
        phase = {
            "generation": "generate",
            "grading": "grade",
            "aggregation": "aggregate",
            "coordinator": "coordinate",
        }
        assert labels["skillmix.io/phase"] == phase[component]
        assert labels["skillmix.io/attempt"].isdigit()
        if component not in ("aggregation", "coordinator"):
            assert labels["skillmix.io/student"]
        per_model = labels.get("skillmix.io/serving") == "per-model"
        if component == "grading" or (component == "generation" and not per_model):
            assert labels["skillmix.io/k"].isdigit()
            assert labels["skillmix.io/round"].isdigit()
        if per_model:  # one Job per student
            assert "skillmix.io/k" not in labels and "skillmix.io/round" not in labels
        pod_labels = job["spec"]["template"]["metadata"]["labels"]
        job_only = (
            "kueue.x-k8s.io/queue-name",
            "kueue.x-k8s.io/priority-class",
            "skillmix.io/gated",
        )
        user = {"team"}  # a student's podLabels (per-model.yaml)
        assert {k: v for k, v in pod_labels.items() if k not in user} == {
            k: v for k, v in labels.items() if k not in job_only
        }


def test_job_names(rendered: Render, helm: Helm, request: pytest.FixtureRequest) -> None:
    names = [j["metadata"]["name"] for j in rendered.jobs()]
    assert len(names) == len(set(names))
    for name in names:
        assert len(name) <= MAX_JOB_NAME and DNS1123_LABEL.match(name), name
    # stable: an uncached render gives the same names
    values_file = request.node.callspec.params["rendered"]
    again = helm.template(values_file, cached=False)
    assert [j["metadata"]["name"] for j in again.jobs()] == names


def test_job_names_carry_the_unit(render: RenderFn) -> None:
    r = render("mock.yaml")
    names = sorted(j["metadata"]["name"] for j in r.jobs())
    assert names == [
        "quickstart-5e6f7a8b-agg-a1",
        "quickstart-5e6f7a8b-coo-a1",
        "quickstart-5e6f7a8b-gen-strong-k2-r1-a1",
        "quickstart-5e6f7a8b-gen-weak-k2-r1-a1",
        "quickstart-5e6f7a8b-grd-strong-k2-r1-a1",
        "quickstart-5e6f7a8b-grd-weak-k2-r1-a1",
    ]


def test_attempts_get_distinct_job_names(render: RenderFn) -> None:
    first = {j["metadata"]["name"] for j in render("mock.yaml").jobs()}
    second_render = render("mock.yaml", extra={"run": {"attempt": 2}})
    second = {j["metadata"]["name"] for j in second_render.jobs()}
    assert len(second) == len(first)
    assert not first & second
    assert all(j["metadata"]["labels"]["skillmix.io/attempt"] == "2" for j in second_render.jobs())


def test_long_and_lossy_student_names_stay_valid_and_unique(render: RenderFn) -> None:
    long_a = "a" * 58 + "-one"  # 62 characters, shares 58 with long_b
    long_b = "a" * 58 + "-two"
    students = {
        long_a: {"backend": "openai"},
        long_b: {"backend": "openai"},
        "Llama.3": {"backend": "openai"},  # lower-cased + sanitised: collides with llama-3
        "llama-3": {"backend": "openai"},
        "llama_3": {"backend": "openai"},
    }
    uri = "s3://skillmix-runs/api-models-0a1b2c3d"
    extra = {
        "run": {"id": "A-Very_Long.Experiment-Name-For-Testing-Purposes-0123abcd"},
        "students": students,
        "generation": [generation_entry(s, 2, 1, uri) for s in students],
        "grading": [grading_entry(s, 2, 1, uri) for s in students],
    }
    r = render("api-student.yaml", extra=extra)
    names = [j["metadata"]["name"] for j in r.jobs()]
    assert len(names) == 2 * len(students) + 2  # + aggregation and coordinator
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= MAX_JOB_NAME and DNS1123_LABEL.match(name), name
    # the plain name keeps its readable form; the run is shortened to 11 + 8 characters
    assert "a-very-long-0123abcd-gen-llama-3-k2-r1-a1" in names
    # labels keep the student name as is
    students_labelled = {j["metadata"]["labels"].get("skillmix.io/student") for j in r.jobs()}
    assert students_labelled >= set(students)
    # Indexed pods' hostnames ({job}-{index}) stay within 63 characters
    assert max(len(n) for n in names) + len("-63") <= 63


# ----------------------------------------------------------------------------- vLLM


@pytest.mark.parametrize(("values_file", "tp"), [("vllm-tp1.yaml", 1), ("vllm-tp2.yaml", 2)])
def test_vllm_native_sidecar(render: RenderFn, values_file: str, tp: int) -> None:
    r = render(values_file)
    gen = r.jobs("generation")
    assert gen
    for job in gen:
        model = sidecar(job)
        assert model is not None
        assert init_containers(job)[0] is model
        assert model["restartPolicy"] == "Always"
        assert model["image"] == "vllm/vllm-openai:v0.11.0"
        # bash runs vLLM (exec: it stays the main process) with its output also in the model
        # log the client reads (tests/chart/test_commands.py checks the log's path on both sides)
        bash, script, name = model["command"][0:2], model["command"][2], model["command"][3:]
        assert bash == ["/bin/bash", "-c"] and name == ["vllm"]
        assert 'exec python3 -m vllm.entrypoints.openai.api_server "$@" > >(tee -p ' in script
        assert script.endswith(" 2>&1")
        args = model["args"]
        assert args[args.index("--tensor-parallel-size") + 1] == str(tp)
        # loopback only: the client is in the same pod, no other pod can use the GPUs
        assert args[args.index("--host") + 1] == "127.0.0.1"
        assert args[args.index("--port") + 1] == "8000"
        assert model["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
        # no startupProbe: it would keep the client from starting (and from failing the Job
        # with exit 3) while a model that never loads is restarted forever
        assert "startupProbe" not in model
        assert LOOPBACK_HEALTH in model["readinessProbe"]["exec"]["command"][-1]
        env = {e["name"]: e.get("value") for e in model["env"]}
        assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"
        res = model["resources"]
        assert res["requests"][GPU] == tp and res["limits"][GPU] == tp
        assert "memory" in res["requests"]  # vllm.resources merged with the GPUs
        assert gpu_resources(container(job, "client")) == set()
        volumes = {v["name"]: v for v in pod(job)["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in model["volumeMounts"]
        client = container(job, "client")
        assert "--base-url" in client["args"]


def test_vllm_tp2_settings(render: RenderFn) -> None:
    r = render("vllm-tp2.yaml")
    for job in r.jobs("generation"):
        model = sidecar(job)
        assert model is not None
        args = model["args"]
        assert args[:4] == [
            "--model",
            "meta-llama/Meta-Llama-3-70B-Instruct",
            "--served-model-name",
            "llama3-70b",
        ]
        assert args[-4:] == ["--max-model-len", "8192", "--gpu-memory-utilization", "0.92"]
        assert "startupProbe" not in model
        e = env(model)
        assert e["HF_TOKEN"] == {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
        }
        assert e["HF_HOME"]["value"] == "/models/hf"
        assert {"name": "model-cache", "mountPath": "/models/hf"} in model["volumeMounts"]
        volumes = {v["name"]: v for v in pod(job)["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hf-model-cache"}
        assert volumes["dshm"]["emptyDir"]["sizeLimit"] == "32Gi"
        p = pod(job)
        assert p["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
        assert p["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert "nodeAffinity" in p["affinity"]
        assert p["runtimeClassName"] == "nvidia"


def test_gpu_scheduling_only_on_vllm_generation_pods(render: RenderFn) -> None:
    r = render("vllm-tp2.yaml")
    for job in r.jobs():
        p = pod(job)
        is_gen = job["metadata"]["labels"]["app.kubernetes.io/component"] == "generation"
        for key in ("nodeSelector", "tolerations", "affinity", "runtimeClassName"):
            assert (key in p) == is_gen, (job["metadata"]["name"], key)
        if not is_gen:
            assert all(not gpu_resources(c) for c in all_containers(job))


def test_vllm_omits_optional_settings_when_unset(render: RenderFn) -> None:
    r = render("vllm-tp1.yaml")
    for job in r.jobs("generation"):
        model = sidecar(job)
        assert model is not None
        env = {e["name"]: e.get("value") for e in model["env"]}
        # no HF token, no model cache (the weights go to an emptyDir at HF_HOME), no extra env
        assert env == {
            "HOME": "/tmp",
            "USER": "vllm",
            "XDG_CACHE_HOME": "/tmp/.cache",
            "VLLM_NO_USAGE_STATS": "1",  # no telemetry leaves the cluster
            "DO_NOT_TRACK": "1",
            "HF_HOME": "/models/hf",
            "SKILLMIX_MODEL_LOG": "/var/run/skillmix-model/model.log",
        }
        assert [m["name"] for m in model["volumeMounts"]] == [
            "dshm",
            "model-cache",
            "vllm-tmp",
            "model-log",
        ]
        p = pod(job)
        volumes = {v["name"] for v in p["volumes"]}
        assert volumes == {"tmp", "dshm", "model-cache", "vllm-tmp", "model-log"}
        [cache] = [v for v in p["volumes"] if v["name"] == "model-cache"]
        assert cache == {"name": "model-cache", "emptyDir": {}}  # no modelVolumeSize given
        for key in ("nodeSelector", "tolerations", "affinity", "runtimeClassName"):
            assert key not in p
        assert model["resources"]["requests"][GPU] == 1
        args = model["args"]
        assert args[args.index("--tensor-parallel-size") + 1] == "1"
        assert args[-2:] == ["--port", "8000"]  # no extra args
        assert p["imagePullSecrets"] == [{"name": "ghcr-pull"}]


def test_gpus_can_exceed_tensor_parallel_size(render: RenderFn) -> None:
    r = render("vllm-tp2.yaml", extra={"students": {"llama3-70b": {"gpus": 4}}})
    for job in r.jobs("generation"):
        model = sidecar(job)
        assert model is not None
        assert model["resources"]["limits"][GPU] == 4
        args = model["args"]
        assert args[args.index("--tensor-parallel-size") + 1] == "2"


# ----------------------------------------------------------------------------- API students


def test_api_students_have_no_sidecar_and_no_gpu(render: RenderFn) -> None:
    r = render("api-student.yaml")
    for job in r.jobs():
        assert sidecar(job) is None
        p = pod(job)
        for key in ("nodeSelector", "tolerations", "affinity", "runtimeClassName"):
            assert key not in p
        assert all(not gpu_resources(c) for c in all_containers(job))
        assert {v["name"] for v in p["volumes"]} == {"tmp"}
    for job in r.jobs("generation"):
        assert "initContainers" not in pod(job)


def test_api_student_base_url_only_when_set(render: RenderFn) -> None:
    r = render("api-student.yaml")
    (plain,) = job_by_student(r, "generation", "gpt-4o-mini")
    (gateway,) = job_by_student(r, "generation", "local-gateway")
    assert "--base-url" not in container(plain, "client")["args"]
    args = container(gateway, "client")["args"]
    assert args[args.index("--base-url") + 1] == "https://llm-gateway.internal.example.com/v1"


def test_api_keys_reach_only_the_clients_that_use_them(render: RenderFn) -> None:
    """The grader's key only in grading clients, a student's key only in its generation
    clients; never in wait, aggregation or coordinator containers."""
    r = render("api-student.yaml")
    openai = {"secretKeyRef": {"name": "openai-api-key", "key": "api-key"}}
    gateway = {"secretKeyRef": {"name": "gateway-credentials", "key": "token"}}
    keys = {"OPENAI_API_KEY", "GATEWAY_TOKEN"}
    for job in r.jobs("grading"):
        e = env(container(job, "client"))
        assert e["OPENAI_API_KEY"]["valueFrom"] == openai and "GATEWAY_TOKEN" not in e
        assert not keys & set(env(container(job, "wait")))
    (mini,) = job_by_student(r, "generation", "gpt-4o-mini")
    e = env(container(mini, "client"))
    assert e["OPENAI_API_KEY"]["valueFrom"] == openai and "GATEWAY_TOKEN" not in e
    (gw,) = job_by_student(r, "generation", "local-gateway")
    e = env(container(gw, "client"))
    assert e["GATEWAY_TOKEN"]["valueFrom"] == gateway and "OPENAI_API_KEY" not in e
    for job in r.jobs("aggregation") + r.jobs("coordinator"):
        for c in all_containers(job):
            assert not keys & set(env(c)), c["name"]
    # key defaults to the variable name
    (gen, *_) = render("vllm-tp2.yaml").jobs("generation")
    assert env(container(gen, "client"))["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "openai-api-key",
        "key": "OPENAI_API_KEY",
    }


# ----------------------------------------------------------------------------- mock backend

LOOPBACK_HEALTH = "urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"


def test_mock_student_sidecar(render: RenderFn) -> None:
    r = render("mock.yaml")
    (job,) = job_by_student(r, "generation", "strong")
    model = sidecar(job)
    assert model is not None
    assert model["restartPolicy"] == "Always"
    assert model["command"] == ["skillmix"]
    assert model["image"] == "ghcr.io/skillmix/skillmix:0.1.0"
    assert LOOPBACK_HEALTH in model["readinessProbe"]["exec"]["command"][-1]
    assert model["args"] == [
        "mock-server",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--seed",
        "10",
        "--model",
        "mock-strong=0.95",
    ]
    assert "startupProbe" not in model
    # the model server gets no store credentials and no keys: only HOME
    assert model["env"] == [{"name": "HOME", "value": "/tmp"}]
    assert model["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert model["securityContext"] == HARDENED
    assert not gpu_resources(model)
    for key in ("nodeSelector", "tolerations", "affinity", "runtimeClassName"):
        assert key not in pod(job)


def test_mock_quality_is_optional(render: RenderFn) -> None:
    r = render("replicas.yaml")
    (job,) = job_by_student(r, "generation", "small")
    model = sidecar(job)
    assert model is not None
    assert model["args"][-2:] == ["--model", "mock-small"]
    assert model["args"][model["args"].index("--seed") + 1] == "3"


def test_mock_grader_sidecar_then_wait(render: RenderFn) -> None:
    r = render("mock.yaml")
    for job in r.jobs("grading"):
        names = [c["name"] for c in init_containers(job)]
        assert names == ["model", "wait"]
        model = sidecar(job)
        assert model is not None
        assert model["args"][-2:] == ["--model", "mock-grader=0.9"]
        assert "restartPolicy" not in container(job, "wait")
        args = container(job, "client")["args"]
        assert args[-2:] == ["--base-url", "http://localhost:8000/v1"]


def test_openai_grader_has_no_sidecar(render: RenderFn) -> None:
    r = render("vllm-tp1.yaml")
    for job in r.jobs("grading"):
        assert [c["name"] for c in init_containers(job)] == ["wait"]
        args = container(job, "client")["args"]
        assert "--base-url" not in args
        assert args[args.index("--budget-share") + 1] == "2"


def test_grader_base_url_override(render: RenderFn) -> None:
    """A mock grader with a baseUrl is served elsewhere: no sidecar (its URL is in the args,
    tests/unit/test_k8s_values.py)."""
    r = render("mock.yaml", extra={"grader": {"baseUrl": "https://grader.example.com/v1"}})
    for job in r.jobs("grading"):
        assert [c["name"] for c in init_containers(job)] == ["wait"]


def test_args_are_placed_as_given(render: RenderFn) -> None:
    """The chart builds no command: each container gets its list from the values as it is."""
    uri = "s3://elsewhere/run"
    gen, grade = generation_entry("weak", 2, 1, uri), grading_entry("weak", 2, 1, uri)
    aggregate = AggregateTask()
    extra: dict[str, Any] = {
        "generation": [gen],
        "grading": [grade],
        "aggregation": {
            "args": aggregate.container_args(uri),
            "waitArgs": aggregate.wait_args(uri, attempt=7, timeout=99),
        },
    }
    r = render("mock.yaml", extra=extra)
    (gen_job,) = r.jobs("generation")
    assert container(gen_job, "client")["args"] == gen["args"]
    (grade_job,) = r.jobs("grading")
    assert container(grade_job, "client")["args"] == grade["args"]
    assert container(grade_job, "wait")["args"] == grade["waitArgs"]
    (agg,) = r.jobs("aggregation")
    assert container(agg, "client")["args"] == ["task", "aggregate", "--run", uri]
    assert container(agg, "wait")["args"] == extra["aggregation"]["waitArgs"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"aggregation": {"args": []}}, "aggregation.args is required"),
        ({"aggregation": {"waitArgs": []}}, "aggregation.waitArgs is required"),
    ],
)
def test_enabled_aggregation_needs_its_args(
    render: RenderFn, extra: dict[str, Any], message: str
) -> None:
    result = render("mock.yaml", extra=extra)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    disabled = render(
        "mock.yaml", extra={"aggregation": {**extra["aggregation"], "enabled": False}}
    )
    assert disabled.returncode == 0 and disabled.jobs("aggregation") == []


def test_store_env_when_set(render: RenderFn) -> None:
    r = render("mock.yaml")
    for job in r.jobs():
        for c in store_containers(job):
            e = env(c)
            assert e["SKILLMIX_S3_ENDPOINT_URL"]["value"] == (
                "http://minio.minio.svc.cluster.local:9000"
            )
            assert e["AWS_DEFAULT_REGION"]["value"] == "us-east-1"
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert e[name]["valueFrom"] == {
                    "secretKeyRef": {"name": "minio-credentials", "key": name}
                }
            assert e["SKILLMIX_RUN"]["value"] == "s3://skillmix/runs/quickstart-5e6f7a8b"


def test_store_env_omitted_when_unset(render: RenderFn) -> None:
    r = render("vllm-tp2.yaml")
    for job in r.jobs():
        for c in store_containers(job):
            e = env(c)
            assert "SKILLMIX_S3_ENDPOINT_URL" not in e
            assert "AWS_ACCESS_KEY_ID" not in e and "AWS_SECRET_ACCESS_KEY" not in e
            assert e["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"


# ----------------------------------------------------------------------------- client args


def test_client_args_per_phase(render: RenderFn) -> None:
    r = render("mock.yaml")
    uri = "s3://skillmix/runs/quickstart-5e6f7a8b"
    attempt = "1"  # run.attempt in tests/chart/values/mock.yaml
    (gen,) = job_by_student(r, "generation", "weak")
    assert container(gen, "client")["args"] == [
        *("task", "generate", "--run", uri, "--student", "weak", "--k", "2", "--round", "1"),
        *("--attempt", attempt, "--base-url", "http://localhost:8000/v1"),
    ]
    (grade,) = job_by_student(r, "grading", "weak")
    assert container(grade, "wait")["args"] == [
        *("task", "wait", "--run", uri, "--phase", "generate"),
        *("--student", "weak", "--k", "2", "--round", "1"),
        *("--timeout", "36000", "--interval", "10", "--attempt", attempt),
    ]
    assert container(grade, "client")["args"] == [
        *("task", "grade", "--run", uri, "--student", "weak", "--k", "2", "--round", "1"),
        *("--budget-share", "1", "--attempt", attempt, "--base-url", "http://localhost:8000/v1"),
    ]
    (agg,) = r.jobs("aggregation")
    assert container(agg, "wait")["args"] == [
        *("task", "wait", "--run", uri, "--phase", "grade"),
        *("--timeout", "82800", "--interval", "15", "--attempt", attempt),
    ]
    assert container(agg, "client")["args"] == ["task", "aggregate", "--run", uri]
    assert agg["spec"]["activeDeadlineSeconds"] == 86400
    for job in r.jobs():
        for c in skillmix_containers(job):
            assert all(isinstance(a, str) for a in c["args"])


def test_aggregation_job_pair(render: RenderFn) -> None:
    assert len(render("mock.yaml").jobs("aggregation")) == 1
    disabled = render("mock.yaml", extra={"aggregation": {"enabled": False}})
    assert disabled.jobs("aggregation") == []
    assert disabled.jobs("generation") and disabled.jobs("grading")


# ----------------------------------------------------------------------------- replicas


def test_replicas_make_an_indexed_job(render: RenderFn) -> None:
    r = render("replicas.yaml")
    (big,) = job_by_student(r, "generation", "big")
    spec = big["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 3 and spec["parallelism"] == 3
    args = container(big, "client")["args"]
    assert args[-2:] == ["--shards", "3"]
    assert "--shard" not in args  # the index comes from JOB_COMPLETION_INDEX


def test_single_replica_is_not_indexed(render: RenderFn) -> None:
    r = render("replicas.yaml")
    (small,) = job_by_student(r, "generation", "small")
    for key in ("completionMode", "completions", "parallelism"):
        assert key not in small["spec"]
    assert "--shards" not in container(small, "client")["args"]
    # grading of a sharded student is one Job, not sharded
    for job in r.jobs("grading"):
        assert "completionMode" not in job["spec"]


# ----------------------------------------------------------------------------- kueue


def test_kueue_queue_label_and_suspend(render: RenderFn) -> None:
    r = render("kueue.yaml")
    jobs = r.jobs()
    assert len(jobs) == 3
    for job in jobs:
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-batch"
        assert job["spec"]["suspend"] is True
        assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]


def test_no_kueue_when_unset(render: RenderFn) -> None:
    for values_file in ("mock.yaml", "vllm-tp1.yaml"):
        for job in render(values_file).jobs():
            assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
            gated = job["metadata"]["labels"].get("skillmix.io/gated") == "true"
            assert ("suspend" in job["spec"]) is gated


# ----------------------------------------------------------------------------- service account


def test_service_accounts_are_the_profiles_made_without_token(render: RenderFn) -> None:
    """One account for the pods and one for the coordinator, named by the values (one per
    profile, not per run), with the same annotations, no token by default."""
    r = render(
        "mock.yaml",
        extra={"serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "x@y"}}},
    )
    accounts = {d["metadata"]["name"]: d for d in r.docs if d["kind"] == "ServiceAccount"}
    assert set(accounts) == {"skillmix-runner", "skillmix-coordinator"}
    for sa in accounts.values():
        assert sa["automountServiceAccountToken"] is False
        assert sa["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "x@y"}
    assert all(
        pod(j)["serviceAccountName"] == "skillmix-runner"
        for j in r.jobs()
        if j["metadata"]["labels"]["app.kubernetes.io/component"] != "coordinator"
    )
    default = render("vllm-tp1.yaml")
    names = {d["metadata"]["name"] for d in default.docs if d["kind"] == "ServiceAccount"}
    assert names == {"skillmix"}  # no coordinator in these values


def test_service_account_not_created_when_disabled(render: RenderFn) -> None:
    r = render("kueue.yaml")
    assert not [d for d in r.docs if d["kind"] == "ServiceAccount"]
    assert all(pod(j)["serviceAccountName"] == "skillmix" for j in r.jobs())


# ----------------------------------------------------------------------------- secrets

# What the cluster's Secrets would hold. These strings exist only here, never in values: the
# chart must reference Secrets by name and key and never see their data.
FAKE_SECRET_DATA = {
    ("openai-api-key", "api-key"): "sk-proj-SENTINEL0penAIkey7f3c9a",
    ("openai-api-key", "OPENAI_API_KEY"): "sk-SENTINEL-default-key-0b1d",
    ("gateway-credentials", "token"): "gw_SENTINEL_token_55aa",
    ("hf-token", "token"): "hf_SENTINELhuggingfacetoken123",
    ("minio-credentials", "AWS_ACCESS_KEY_ID"): "AKIASENTINEL00000000",
    ("minio-credentials", "AWS_SECRET_ACCESS_KEY"): "SENTINEL/secret+access/key0000000000000",
}


def test_secret_data_never_rendered(rendered: Render) -> None:
    for sentinel in FAKE_SECRET_DATA.values():
        assert sentinel not in rendered.stdout
        assert sentinel not in rendered.stderr
    referenced = set()
    for job in rendered.jobs():
        for c in all_containers(job):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
    assert referenced <= set(FAKE_SECRET_DATA), referenced - set(FAKE_SECRET_DATA)


def test_secret_like_env_vars_use_secret_refs(rendered: Render) -> None:
    for job in rendered.jobs():
        for c in all_containers(job):
            for e in c.get("env", []):
                if any(word in e["name"].upper() for word in SECRET_WORDS):
                    assert "value" not in e, (job["metadata"]["name"], c["name"], e["name"])
                    assert set(e["valueFrom"]) == {"secretKeyRef"}


def test_no_secret_objects_or_rbac(rendered: Render) -> None:
    kinds = {d["kind"] for d in rendered.docs}
    for kind in ("Secret", "ConfigMap", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert kind not in kinds


# ----------------------------------------------------------------------------- NOTES


def test_notes(helm: Helm) -> None:
    result = helm.notes("mock.yaml")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    run_id = "quickstart-5e6f7a8b"
    for line in (
        f"skillmix status {run_id}",
        f"skillmix logs {run_id} --follow",
        f"skillmix cancel {run_id}",
        "s3://skillmix/runs/quickstart-5e6f7a8b/report/",
        "ServiceAccount skillmix-coordinator",
        "at most 2 grading Job(s) at once",
    ):
        assert line in notes


# ----------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("extra", "mentions"),
    [
        ({"bogus": 1}, ["bogus"]),
        ({"jobs": {"bogus": 1}}, ["/jobs", "bogus"]),
        ({"jobs": {"backoffLimit": "two"}}, ["/jobs/backoffLimit"]),
        ({"students": {"strong": {"backend": "tpu"}}}, ["/students/strong/backend"]),
        ({"students": {"strong": {"bogus": True}}}, ["/students/strong", "bogus"]),
        ({"students": {"bad name": {"backend": "openai"}}}, ["bad name"]),
        ({"grader": {"backend": "tpu"}}, ["/grader/backend"]),
        ({"image": {"pullPolicy": "Sometimes"}}, ["/image/pullPolicy"]),
        ({"generation": [{"student": "strong", "k": 0, "round": 1}]}, ["/generation/0/k"]),
        ({"generation": [{"student": "strong", "k": 2}]}, ["/generation/0", "round"]),
        ({"generation": [{"student": "strong", "k": 2, "round": 1}]}, ["/generation/0", "args"]),
        (
            {"grading": [{**grading_entry("strong", 2, 1, "s3://b/r"), "waitArgs": []}]},
            ["/grading/0/waitArgs"],
        ),
        (
            {"grading": [{**grading_entry("strong", 2, 1, "s3://b/r"), "args": ["task", 2]}]},
            ["/grading/0/args/1"],
        ),
        ({"apiKeys": [{"env": "X_KEY", "secretName": "s", "value": "x"}]}, ["/apiKeys/0"]),
        ({"run": {"attempt": 0}}, ["/run/attempt"]),
    ],
    ids=lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict) else None,
)
def test_schema_rejects(render: RenderFn, extra: dict[str, Any], mentions: list[str]) -> None:
    result = render("mock.yaml", extra=extra)
    assert result.returncode != 0
    assert "schema" in result.stderr
    for text in mentions:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"run": {"id": ""}}, "run.id is required"),
        ({"run": {"uri": ""}}, "run.uri is required"),
        (
            {"generation": [generation_entry("nobody", 2, 1, "s3://b/r")]},
            'generation[0].student: unknown student "nobody"',
        ),
        (
            {"modelCache": {"enabled": True}},
            "modelCache.claimName is required when modelCache.enabled is true",
        ),
        (
            {"students": {"strong": {"servedModelName": None}}},
            "servedModelName",
        ),
    ],
)
def test_templates_fail_with_a_message(
    render: RenderFn, extra: dict[str, Any], message: str
) -> None:
    base = "vllm-tp1.yaml" if "modelCache" in extra else "mock.yaml"
    result = render(base, extra=extra)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_unknown_backend_fails_in_templates_too(render: RenderFn) -> None:
    """Without the schema (--skip-schema-validation) the templates still refuse it."""
    result = render(
        "mock.yaml",
        extra={"students": {"strong": {"backend": "tpu"}}},
        flags=("--skip-schema-validation",),
    )
    assert result.returncode != 0
    assert 'students.strong.backend: unknown backend "tpu" (allowed: vllm|openai|mock)' in (
        result.stderr
    )


def test_unknown_student_names_known_ones(render: RenderFn) -> None:
    result = render("mock.yaml", extra={"generation": [generation_entry("x", 2, 1, "s3://b/r")]})
    assert "known: strong, weak" in result.stderr


def _schema_keys(node: dict[str, Any], values: Any, path: str, out: list[str]) -> None:
    props = node.get("properties")
    if props is None or not isinstance(values, dict):
        return
    # a Kubernetes securityContext: the defaults set some of its fields, the schema knows them all
    if path.endswith("securityContext"):
        if not set(values) <= set(props):
            out.append(f"{path}: values {sorted(values)} not in schema {sorted(props)}")
        return
    if values and set(values) != set(props):
        out.append(f"{path or '.'}: values {sorted(values)} != schema {sorted(props)}")
    for key, value in values.items():
        if key in props:
            _schema_keys(props[key], value, f"{path}.{key}", out)


def test_schema_mirrors_values() -> None:
    s, values = schema(), values_defaults()
    assert s["$schema"] == "http://json-schema.org/draft-07/schema#"
    drift: list[str] = []
    _schema_keys(s, values, "", drift)
    assert not drift, drift
    jsonschema.Draft7Validator.check_schema(s)
    jsonschema.Draft7Validator(s).validate(values)


def test_schema_closes_every_object() -> None:
    open_ok = {"requests", "limits", "nodeSelector", "nodeAffinity", "podAffinity"}
    open_ok |= {"podAntiAffinity", "students", "env", "podAnnotations", "podLabels"}
    open_ok |= {"annotations", "labels"}  # string maps
    open_ok |= {"egress[]"}  # Kubernetes NetworkPolicyEgressRule objects

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and path.rsplit(".", 1)[-1] not in open_ok:
                assert node.get("additionalProperties") is False, path
            for key, value in node.get("properties", {}).items():
                walk(value, f"{path}.{key}")
            if isinstance(node.get("items"), dict):
                walk(node["items"], f"{path}[]")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], f"{path}.*")

    walk(schema(), "")


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_values_files_match_schema(values_file: str) -> None:
    data = yaml.safe_load((VALUES_DIR / values_file).read_text())
    validator = jsonschema.Draft7Validator(schema())
    merged = _merge(values_defaults(), data)
    errors = sorted(validator.iter_errors(merged), key=str)
    assert not errors, [e.message for e in errors]


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return override


def test_every_value_is_documented() -> None:
    """Each key with a value sits under a `# --` comment (on itself or on a parent key)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: list[tuple[int, bool]] = []  # (indent, documented) of open parent keys
    pending = False
    missing = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            pending = pending or stripped.startswith("# --")
            continue
        indent = len(line) - len(line.lstrip())
        while documented and documented[-1][0] >= indent:
            documented.pop()
        key, _, rest = stripped.partition(":")
        is_documented = pending or any(d for _, d in documented)
        if rest.strip() and not is_documented:
            missing.append(key)
        documented.append((indent, is_documented))
        pending = False
    assert not missing, missing


def test_helpers_are_prefixed_and_documented() -> None:
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    names = re.findall(r'define "([^"]+)"', text)
    comments = " ".join(re.findall(r"\{\{/\*(.*?)\*/\}\}", text, re.S))
    assert names
    for name in names:
        assert name.startswith("skillmix."), name
        assert f'include "{name}"' in comments, f"{name} has no usage comment"


# ----------------------------------------------------------------------------- gating


def test_gated_jobs_start_suspended_for_the_coordinator(render: RenderFn) -> None:
    """With the coordinator, grading and aggregation Jobs are created suspended (no pods, no
    running deadline) and marked for it with their pool; generation Jobs of a student without
    a parallelism start at once."""
    r = render("mock.yaml")
    for job in r.jobs("grading") + r.jobs("aggregation"):
        meta = job["metadata"]
        assert job["spec"]["suspend"] is True
        assert meta["labels"]["skillmix.io/gated"] == "true"
        assert "kueue.x-k8s.io/queue-name" not in meta["labels"]
        pool = "grade" if meta["labels"]["skillmix.io/phase"] == "grade" else "aggregate"
        assert meta["annotations"]["skillmix.io/pool"] == pool
        assert meta["annotations"]["skillmix.io/pool-size"] == ("2" if pool == "grade" else "1")
    for job in r.jobs("generation"):
        assert "suspend" not in job["spec"]
        assert "skillmix.io/gated" not in job["metadata"]["labels"]
        assert "annotations" not in job["metadata"]


def test_api_students_with_a_parallelism_are_gated_in_their_pool(render: RenderFn) -> None:
    r = render("api-student.yaml")
    (mini,) = job_by_student(r, "generation", "gpt-4o-mini")
    assert mini["spec"]["suspend"] is True
    assert mini["metadata"]["annotations"] == {
        "skillmix.io/hold": "suspend",
        "skillmix.io/pool": "generate/gpt-4o-mini",
        "skillmix.io/pool-size": "1",
        "skillmix.io/pool-weight": "1",
    }
    (gw,) = job_by_student(r, "generation", "local-gateway")
    assert "suspend" not in gw["spec"]


def test_coordinator_job_alone_gets_an_api_token(render: RenderFn) -> None:
    r = render("mock.yaml")
    (job,) = r.jobs("coordinator")
    p = pod(job)
    assert p["automountServiceAccountToken"] is True
    assert p["serviceAccountName"] == "skillmix-coordinator"
    assert "suspend" not in job["spec"]
    assert job["spec"]["activeDeadlineSeconds"] == 604800
    assert job["metadata"]["labels"]["skillmix.io/phase"] == "coordinate"
    (client,) = p["containers"]
    assert client["args"][:2] == ["task", "coordinate"]
    assert client["securityContext"] == HARDENED
    assert env(client)["SKILLMIX_POD_NAME"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    for other in r.jobs():
        if other["metadata"]["name"] != job["metadata"]["name"]:
            assert pod(other)["automountServiceAccountToken"] is False


def test_no_coordinator_no_gating(render: RenderFn) -> None:
    r = render("replicas.yaml")
    assert not r.jobs("coordinator")
    for job in r.jobs():
        assert "suspend" not in job["spec"]


@pytest.mark.parametrize("hold", ["defer", "gate"])
def test_kueue_holds_gated_jobs_its_own_way(render: RenderFn, hold: str) -> None:
    """With Kueue every Job carries the queue label and starts suspended (Kueue owns
    `spec.suspend`); a gated Job is held by Kueue's admission gate (hold gate) or marked for
    the coordinator to create (hold defer), the coordinator's own Job is queued too."""
    coordinator = {"enabled": True, "hold": hold, "args": ["task", "coordinate", "--run", "x"]}
    r = render("kueue.yaml", extra={"coordinator": coordinator})
    for job in r.jobs("grading") + r.jobs("aggregation"):
        meta = job["metadata"]
        assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-batch"
        assert meta["labels"]["skillmix.io/gated"] == "true"
        assert meta["annotations"]["skillmix.io/hold"] == hold
        gate = meta["annotations"].get("kueue.x-k8s.io/admission-gated-by")
        assert gate == ("skillmix.io/coordinator" if hold == "gate" else None)
        assert job["spec"]["suspend"] is True
    for job in r.jobs("generation"):
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-batch"
        assert job["spec"]["activeDeadlineSeconds"] == 21600  # its timer starts at admission
    (coordinator_job,) = r.jobs("coordinator")
    assert coordinator_job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-batch"
    assert coordinator_job["spec"]["suspend"] is True  # Kueue admits it


def test_a_hold_that_needs_kueue_without_a_queue_fails_naming_the_key(render: RenderFn) -> None:
    result = render(
        "api-student.yaml",
        extra={"coordinator": {"enabled": True, "hold": "defer", "args": ["task", "x"]}},
    )
    assert result.returncode != 0
    assert "coordinator.hold defer needs kueue.queueName" in result.stderr, result.stderr


def test_profile_labels_and_priority_reach_every_job_and_pod(render: RenderFn) -> None:
    r = render(
        "api-student.yaml",
        extra={
            "pods": {"labels": {"team": "nlp", "cost-centre": "42"}, "priorityClassName": "low"}
        },
    )
    for job in r.jobs():
        for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
            assert labels["team"] == "nlp" and labels["cost-centre"] == "42"
        if job["metadata"]["labels"]["app.kubernetes.io/component"] != "generation":
            assert pod(job)["priorityClassName"] == "low"


def test_the_gpu_cap_gates_vllm_jobs_by_their_gpus(render: RenderFn) -> None:
    r = render(
        "vllm-tp2.yaml",
        extra={"gpuCap": 4, "coordinator": {"enabled": True, "args": ["task", "x"]}},
    )
    for job in r.jobs("generation"):
        notes = job["metadata"]["annotations"]
        assert notes["skillmix.io/pool"] == "gpu" and notes["skillmix.io/pool-size"] == "4"
        assert job["spec"]["suspend"] is True


def test_client_pods_get_their_name_for_the_log_upload(rendered: Render) -> None:
    for job in rendered.jobs():
        client = container(job, "client")
        assert env(client)["SKILLMIX_POD_NAME"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.name"}
        }
        for c in init_containers(job):
            assert "SKILLMIX_POD_NAME" not in env(c)
        # a failed client's last lines (its error) become the pod's termination message
        assert client["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_model_servers_are_skipped_by_the_cloud_identity_webhook(rendered: Render) -> None:
    """Pods with a model sidecar ask the IRSA / EKS Pod Identity webhook to leave it without
    cloud credentials; pods without one carry no such annotation."""
    for job in rendered.jobs():
        notes = job["spec"]["template"]["metadata"].get("annotations") or {}
        has_model = any(c["name"] == "model" for c in init_containers(job))
        assert (notes.get("eks.amazonaws.com/skip-containers") == "model") is has_model
