"""Helm values for one run, from the same plan the local executor runs."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from skillmix.backends.factory import parallel_jobs
from skillmix.config import StudentSpec
from skillmix.errors import SkillmixError
from skillmix.k8s.estimate import (
    CLIENT_MARGIN_SECONDS,
    gpu_fraction,
    job_deadline_seconds,
    unit_decode_seconds,
)
from skillmix.k8s.profiles import ClusterProfile
from skillmix.k8s.task_values import task_generation_values
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.plan import (
    GenerateTask,
    ModelGenerateTask,
    TaskGenerateTask,
    generation_jobs,
    plan_tasks,
)
from skillmix.vocab import Unit

MAX_RELEASE = 53  # Helm's limit for release names


def split_image(image: str) -> tuple[str, str]:
    """``registry:5000/repo/name:tag`` -> (``registry:5000/repo/name``, ``tag``); no tag -> latest."""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def release_name(run_id: str) -> str:
    """A DNS-1123 release name from the run id (Helm allows at most 53 characters)."""
    name = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-") or "run"
    if len(name) <= MAX_RELEASE:
        return name
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{name[: MAX_RELEASE - 9].rstrip('-')}-{digest}"


def run_uri_for(profile: ClusterProfile, run_id: str) -> str:
    return f"{profile.store.rstrip('/')}/{run_id}"


def _secret_env(profile: ClusterProfile, env: str, cluster: str, why: str) -> dict[str, str]:
    ref = profile.secrets.get(env)
    if ref is None:
        raise SkillmixError(
            f"cluster profile {cluster!r} names no Secret for {env} (needed by {why})",
            hint=f"add `secrets: {{{env}: {{name: <secret-name>, key: {env}}}}}` to the profile",
        )
    return {"env": env, "secretName": ref.name, "key": ref.key or env}


# Sizing of a vLLM container per GPU it serves (the profile's vllm_resources and a student's
# kubernetes.resources override any of these). Loading reads the weights through host memory,
# so memory requests are large; CPU is requested but not limited (throttling stalls the server).
VLLM_CPU_PER_GPU = 4
VLLM_MEMORY_GI_PER_GPU = 32
VLLM_SCRATCH_GI = 10  # logs, compile caches (Triton, torch.compile) in /tmp and the image layer
MODEL_VOLUME_GI_PER_GPU = 50  # the HF_HOME emptyDir without a model cache volume


def _quantity_mi(value: str) -> int:
    """A Kubernetes quantity in MiB (rounded up)."""
    # deferred: importing kubernetes loads its whole client (~0.4 s); rendering needs none
    from kubernetes.utils.quantity import parse_quantity

    mib: int = math.ceil(parse_quantity(value) / 2**20)
    return mib


def _gi(amount: float) -> str:
    """``amount`` GiB as a quantity, rounded up to whole GiB."""
    return f"{max(1, math.ceil(amount))}Gi"


def gpu_resource(spec: StudentSpec, profile: ClusterProfile) -> str:
    """The extended resource a student's GPUs are requested as."""
    return spec.kubernetes.gpu_resource or profile.gpu.resource_name


def shm_size(spec: StudentSpec, profile: ClusterProfile) -> str:
    """/dev/shm of a vLLM pod: the student's, else the profile's scaled to a MIG slice."""
    if spec.kubernetes.shm_size:
        return spec.kubernetes.shm_size
    share = gpu_fraction(gpu_resource(spec, profile))
    if share >= 1:
        return profile.shm_size
    return _gi(_quantity_mi(profile.shm_size) / 1024 * share)


def _merge_resources(*layers: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"requests": {}, "limits": {}}
    for layer in layers:
        for key, amounts in (layer or {}).items():
            out.setdefault(key, {}).update(amounts or {})
    return {k: v for k, v in out.items() if v}


def vllm_sizing(
    spec: StudentSpec, profile: ClusterProfile, *, cache_volume: bool
) -> tuple[dict[str, dict[str, Any]], str]:
    """The vLLM container's requests/limits besides GPUs (scaled with its GPU count), and the
    sizeLimit of its HF_HOME emptyDir ("" with a model cache volume). The pod's ephemeral
    storage covers that emptyDir: the kubelet evicts a pod whose emptyDirs and containers
    together outgrow the containers' ephemeral-storage limits."""
    # a MIG slice is a share of a GPU: CPU, memory and disk scale with that share
    gpus = spec.vllm.gpu_count * gpu_fraction(gpu_resource(spec, profile))
    volume = ""
    if not cache_volume:
        volume = spec.kubernetes.model_volume_size or _gi(MODEL_VOLUME_GI_PER_GPU * gpus)
    mi = VLLM_SCRATCH_GI * 1024 + (_quantity_mi(volume) if volume else 0)
    storage = f"{mi // 1024}Gi" if mi % 1024 == 0 else f"{mi}Mi"
    memory = _gi(VLLM_MEMORY_GI_PER_GPU * gpus)
    sized = {
        "requests": {
            "cpu": str(max(1, math.ceil(VLLM_CPU_PER_GPU * gpus))),
            "memory": memory,
            "ephemeral-storage": storage,
        },
        "limits": {"memory": memory, "ephemeral-storage": storage},
    }
    return _merge_resources(sized, profile.vllm_resources, spec.kubernetes.resources), volume


def student_values(
    ctx: RunContext, profile: ClusterProfile | None = None
) -> dict[str, dict[str, Any]]:
    """Each student's serving and pod settings; unset Kubernetes settings fall back to the
    chart's global ones (the profile's gpu.* for vLLM pods)."""
    profile = profile or ClusterProfile(store="s3://unused")
    out: dict[str, dict[str, Any]] = {}
    for s in ctx.experiment.students:
        kube = s.kubernetes
        entry: dict[str, Any] = {
            "backend": s.backend,
            "servedModelName": s.model,
            "replicas": s.replicas,
            "serving": ctx.experiment.serving_of(s.name),
        }
        if s.backend == "vllm":
            resources, volume = vllm_sizing(s, profile, cache_volume=bool(profile.model_cache_pvc))
            entry.update(
                model=s.vllm.model or s.model,
                tensorParallelSize=s.vllm.tensor_parallel_size,
                gpus=s.vllm.gpu_count,
                extraArgs=list(s.vllm.args),
                resources=resources,
                modelVolumeSize=volume,
            )
            optional = {
                "imageTag": s.vllm.image_tag,
                "env": dict(s.vllm.env) or None,
                "gpuResource": kube.gpu_resource,
                "shmSize": shm_size(s, profile),
                "securityContext": kube.security_context,
            }
            entry.update({k: v for k, v in optional.items() if v is not None})
        elif s.backend == "mock":
            entry["quality"] = s.quality  # resolved on the spec (config.MOCK_DEFAULT_QUALITY)
        pod = {
            "nodeSelector": kube.node_selector,
            "tolerations": kube.tolerations,
            "affinity": kube.affinity,
            "runtimeClassName": kube.runtime_class,
            "priorityClassName": kube.priority_class_name,
            "kueuePriorityClass": kube.kueue_priority_class or profile.kueue_priority_class,
            "podAnnotations": dict(kube.pod_annotations) or None,
            "podLabels": dict(kube.pod_labels) or None,
        }
        entry.update({k: v for k, v in pod.items() if v is not None})
        out[s.name] = entry
    return out


def coordinate_args(
    uri: str,
    *,
    attempt: int,
    interval: float,
    timeout: int,
    stuck_seconds: int,
    unschedulable_seconds: int,
) -> list[str]:
    """The coordinator's ``skillmix task coordinate`` arguments."""
    return [
        *("task", "coordinate", "--run", uri, "--attempt", str(attempt)),
        *("--interval", f"{interval:g}", "--timeout", str(timeout)),
        *("--stuck-seconds", str(stuck_seconds)),
        *("--unschedulable-seconds", str(unschedulable_seconds)),
    ]


def build_values(
    ctx: RunContext,
    profile: ClusterProfile,
    cluster: str,
    *,
    attempt: int,
    generation: list[Unit],
    grading: list[Unit],
    reasoning: Sequence[TaskGenerateTask] = (),
    aggregation: bool = True,
    sidecar_port: int = 8000,
) -> dict[str, Any]:
    """Values for the chart. Only Secret names go in: every key stays in its Secret.

    Every container command of the skillmix image but the mock sidecar's comes from the plan's
    tasks (``generation[i].args``, ``grading[i].args`` / ``waitArgs``, ``aggregation.args`` /
    ``waitArgs``): the chart only places them."""
    grader = ctx.experiment.grader
    if grader.backend == "vllm" and not grader.base_url:
        raise SkillmixError(
            f"grader {grader.name}: a vllm grader needs base_url (an in-cluster Service) on Kubernetes"
        )
    work = _Work(
        ctx,
        profile,
        attempt,
        [Unit(*u) for u in generation],
        [Unit(*u) for u in grading],
        sidecar_port,
    )
    values = _cluster_values(ctx, profile, cluster, attempt, sidecar_port) | work.values()
    if reasoning:  # the experiment's tasks (absent otherwise: values as before tasks)
        values["taskGeneration"] = task_generation_values(
            ctx,
            profile,
            list(reasoning),
            uri=work.uri,
            attempt=attempt,
            sidecar_url=work.sidecar_url,
        )
    values["aggregation"]["enabled"] = aggregation
    values["coordinator"]["enabled"] = (
        bool(grading) or aggregation or work.gated_students or bool(profile.max_gpus)
    )
    # the coordinator outlives the longest chain of work (a generation Job, a grading Job,
    # the aggregation); queueing is bounded only by the profile's backstop
    d = profile.deadlines
    longest = max(
        [0]
        + [g["deadlineSeconds"] for g in values["generation"]]
        + [g["deadlineSeconds"] for g in values["modelGeneration"]]
        + [g["deadlineSeconds"] for g in values.get("taskGeneration", [])]
    )
    coordinator_deadline = max(
        d.coordinator_seconds, longest + d.grading_seconds + d.aggregation_seconds
    )
    values["jobs"]["activeDeadlineSeconds"]["coordinator"] = coordinator_deadline
    values["coordinator"]["args"] = coordinate_args(
        work.uri,
        attempt=attempt,
        interval=profile.coordinator_interval_seconds,
        timeout=coordinator_deadline,
        stuck_seconds=d.stuck_pod_seconds,
        unschedulable_seconds=d.unschedulable_seconds,
    )
    if profile.client_resources:
        values["client"] = {"resources": profile.client_resources}
    return values


def _api_key_values(ctx: RunContext, profile: ClusterProfile, cluster: str) -> list[dict[str, Any]]:
    """Each key only for the clients that use it: the grader's in grading containers, a
    student's in its generation containers."""
    api_keys: dict[str, dict[str, Any]] = {}
    for spec in ctx.model_specs():
        env = spec.resolved_api_key_env()
        if env and spec.backend != "mock":
            entry = api_keys.setdefault(
                env,
                {**_secret_env(profile, env, cluster, f"{spec.name}"), "grader": False},
            )
            if spec is ctx.experiment.grader:
                entry["grader"] = True
            else:
                entry.setdefault("students", []).append(spec.name)
    return list(api_keys.values())


def _cluster_values(
    ctx: RunContext, profile: ClusterProfile, cluster: str, attempt: int, sidecar_port: int
) -> dict[str, Any]:
    """The values that the cluster profile decides (images, secrets, GPUs, Kueue, policies,
    deadlines): a table from the profile's fields to the chart's keys."""
    e = ctx.experiment
    repo, tag = split_image(profile.image)
    vllm_repo, vllm_tag = split_image(profile.vllm_image)
    uses_vllm = any(s.backend == "vllm" for s in e.students)
    hf = profile.secrets.get("HF_TOKEN")
    per_model_key = any(
        e.serving_of(s.name) == "per-model" and s.backend != "openai" for s in e.students
    )
    d = profile.deadlines
    return {
        "run": {
            "id": ctx.run_id,
            "uri": run_uri_for(profile, ctx.run_id),
            "attempt": attempt,
            "seed": e.seed,
        },
        "image": {"repository": repo, "tag": tag, "pullPolicy": profile.image_pull_policy},
        "imagePullSecrets": list(profile.image_pull_secrets),
        "vllm": {
            "image": {"repository": vllm_repo, "tag": vllm_tag, "pullPolicy": "IfNotPresent"},
            "port": sidecar_port,
            "usageStats": profile.vllm_usage_stats,
            "shmSize": profile.shm_size,
            "resources": profile.vllm_resources,
            **(
                {"securityContext": profile.vllm_security_context}
                if profile.vllm_security_context is not None
                else {}
            ),
        },
        "modelCache": {
            "enabled": bool(profile.model_cache_pvc) and uses_vllm,
            "claimName": profile.model_cache_pvc or "",
            "mountPath": profile.model_cache_path,
            "offline": profile.model_cache_offline and bool(profile.model_cache_pvc),
        },
        "hfToken": {
            "secretName": hf.name if (hf and uses_vllm) else "",
            "key": (hf.key or "HF_TOKEN") if hf else "HF_TOKEN",
        },
        "store": {
            "endpointUrl": profile.s3.endpoint_url or "",
            "region": profile.s3.region,
            "credentialsSecret": profile.s3.credentials_secret or "",
        },
        "apiKeys": _api_key_values(ctx, profile, cluster),
        "gpu": {
            "resourceName": profile.gpu.resource_name,
            "nodeSelector": profile.gpu.node_selector,
            "tolerations": profile.gpu.tolerations,
            "affinity": profile.gpu.affinity,
            "runtimeClassName": profile.gpu.runtime_class or "",
        },
        "kueue": {
            "queueName": profile.kueue_queue or "",
            "priorityClass": profile.kueue_priority_class or "",
        },
        "pods": {
            "labels": dict(profile.labels),
            "priorityClassName": profile.priority_class_name or "",
        },
        "gpuCap": profile.max_gpus or 0,
        "modelKey": {
            # per-model servers require a key (per attempt; the launch creates the Secret)
            "secretName": model_key_secret(ctx.run_id, attempt) if per_model_key else "",
            "key": MODEL_KEY,
        },
        "networkPolicy": {
            "enabled": profile.network_policy.enabled,
            "egress": network_egress(ctx, profile),
        },
        "serviceAccount": {
            "create": profile.service_account.create,
            "name": profile.service_account.name,
            "annotations": dict(profile.service_account.annotations),
        },
        "jobs": {
            "backoffLimit": profile.backoff_limit,
            "ttlSecondsAfterFinished": d.ttl_seconds,
            "activeDeadlineSeconds": {
                "generation": d.generation_seconds,
                "grading": d.grading_seconds,
                "aggregation": d.aggregation_seconds,
            },
        },
    }


class _Work:
    """The Jobs' values of one launch attempt: each generation and grading Job's container
    arguments, deadline and budget share, from the plan's tasks."""

    def __init__(
        self,
        ctx: RunContext,
        profile: ClusterProfile,
        attempt: int,
        generation: list[Unit],
        grading: list[Unit],
        sidecar_port: int,
    ) -> None:
        e = ctx.experiment
        self.ctx, self.profile, self.attempt = ctx, profile, attempt
        self.grading = grading
        self.uri = run_uri_for(profile, ctx.run_id)
        self.plan = plan_tasks(e, sharded=True)
        self.jobs = generation_jobs(e, generation)
        self.grade_tasks = {t.unit: t for t in self.plan.grade}
        self.sidecar_url = f"http://localhost:{sidecar_port}/v1"
        self.load_budget = profile.deadlines.model_load_seconds
        grader = e.grader
        # a mock grader without base_url is a sidecar of each grading pod (as the chart decides)
        self.grader_url = grader.base_url or (self.sidecar_url if grader.backend == "mock" else "")
        # the coordinator runs at most P grading Jobs at once: with an endpoint they share, each
        # gets 1/P of the grader's budget; a mock grader sidecar in each pod is a server of its own
        cap = profile.parallel_jobs_per_budget
        self.own_grader = self.grader_url == self.sidecar_url
        self.grading_parallel = (
            min(max(1, len(grading)), cap)
            if self.own_grader
            else parallel_jobs(len(grading), grader, cap=cap)
        )
        self.budget_share = 1 if self.own_grader else self.grading_parallel
        # API-served students: their generation Jobs share the student's budget the same way
        self.student_parallel: dict[str, int] = {}
        for s in e.students:
            if s.backend in ("vllm", "mock"):
                continue
            n_jobs = sum(1 for t in self.jobs if t.student == s.name)
            self.student_parallel[s.name] = parallel_jobs(
                n_jobs, s, cap=cap, pods_per_job=s.replicas
            )
        self.gated_students = False

    def student_url(self, student: str) -> str:
        spec = self.ctx.experiment.student(student)
        return self.sidecar_url if spec.backend in ("vllm", "mock") else spec.base_url or ""

    def generation_deadline(self, t: GenerateTask | ModelGenerateTask) -> int:
        """The Job's activeDeadlineSeconds: the load budget (pods with a model server) plus
        the plan's estimate of each unit's work with a margin (a per-model Job runs its units
        in turn). It runs only while the Job is released and admitted: suspended or queued
        in Kueue, no time counts."""
        units = t.units if isinstance(t, ModelGenerateTask) else (t.unit,)
        d = self.profile.deadlines
        return job_deadline_seconds(
            [unit_decode_seconds(self.ctx, u.student, u.k) for u in units],
            load_seconds=self.load_budget if self.student_url(t.student) == self.sidecar_url else 0,
            margin=d.generation_margin,
            per_unit_max=d.generation_seconds,
        )

    def generation_args(self, t: GenerateTask | ModelGenerateTask) -> list[str]:
        url = self.student_url(t.student)
        own = url == self.sidecar_url
        args = t.container_args(self.uri, attempt=self.attempt, base_url=url, own_server=own)
        spec = self.ctx.experiment.student(t.student)
        if own:  # wait for the sidecar's /health under the model-load budget (exit 3)
            args += ["--model-load-timeout", str(self.load_budget)]
            if spec.backend == "vllm":  # the chart's model-log volume
                args += ["--model-log", "/var/run/skillmix-model/model.log"]
        else:  # P Jobs at once, each pod 1/(P x shards) of the student's budget
            args += ["--budget-share", str(self.student_parallel[t.student] * spec.replicas)]
        # the client stops itself (exit 4, its log uploaded) just before the Job's deadline
        limit = max(60, self.generation_deadline(t) - CLIENT_MARGIN_SECONDS)
        return [*args, "--time-limit", str(limit)]

    def generation_entry(self, t: GenerateTask | ModelGenerateTask) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "args": self.generation_args(t),
            "deadlineSeconds": self.generation_deadline(t),
        }
        spec = self.ctx.experiment.student(t.student)
        max_gpus = self.profile.max_gpus
        if max_gpus and spec.backend == "vllm":
            # the GPU cap: the coordinator starts at most max_gpus GPUs' worth at once
            weight = spec.replicas * spec.vllm.gpu_count
            if weight > max_gpus:
                raise SkillmixError(
                    f"student {spec.name}: a generation Job needs {weight} GPUs "
                    f"({spec.replicas} pods x {spec.vllm.gpu_count}), more than the cluster "
                    f"profile's max_gpus {max_gpus}",
                    hint="raise max_gpus, or lower the student's replicas or GPUs",
                )
            entry["gpuWeight"] = weight
        return entry

    def grade_entry(self, unit: Unit, timeout: int) -> dict[str, Any]:
        task = self.grade_tasks[unit]
        args = task.container_args(
            self.uri, attempt=self.attempt, budget_share=self.budget_share, base_url=self.grader_url
        )
        if self.own_grader:
            args += ["--model-load-timeout", str(self.load_budget)]
        wait = task.wait_args(self.uri, attempt=self.attempt, timeout=timeout)
        return _unit_entry(unit, args=args, waitArgs=wait)

    def students(self) -> dict[str, Any]:
        """Each student's values; API students whose Jobs outnumber their budget's share are
        gated (the coordinator starts at most ``parallelism`` at once)."""
        students = student_values(self.ctx, self.profile)
        for name, parallel in self.student_parallel.items():
            if parallel < sum(1 for t in self.jobs if t.student == name):
                students[name]["parallelism"] = parallel
                self.gated_students = True
        return students

    def values(self) -> dict[str, Any]:
        """students, generation, modelGeneration, grader, grading, aggregation, coordinator."""
        grader = self.ctx.experiment.grader
        d = self.profile.deadlines
        return {
            "students": self.students(),
            "generation": [
                _unit_entry(t.unit, **self.generation_entry(t))
                for t in self.jobs
                if isinstance(t, GenerateTask)
            ],
            # serving per-model: one Job per student over its units (each still a store unit)
            "modelGeneration": [
                {
                    "student": t.student,
                    "units": [{"k": u.k, "round": u.round} for u in t.units],
                    **self.generation_entry(t),
                }
                for t in self.jobs
                if isinstance(t, ModelGenerateTask)
            ],
            "grader": {
                "backend": "mock" if grader.backend == "mock" else "openai",
                "servedModelName": grader.model,
                # resolved on the spec (mock only), as for the local executor; else the default
                **({"quality": grader.quality} if grader.quality is not None else {}),
                "baseUrl": grader.base_url or "",
                "parallelism": self.grading_parallel,
            },
            "grading": [
                self.grade_entry(u, max(60, d.grading_seconds - 600)) for u in self.grading
            ],
            "aggregation": {
                "enabled": True,
                "args": self.plan.aggregate.container_args(self.uri),
                "waitArgs": self.plan.aggregate.wait_args(
                    self.uri, attempt=self.attempt, timeout=max(60, d.aggregation_seconds - 600)
                ),
            },
            "coordinator": {
                "enabled": True,
                "hold": hold_mode(self.profile),
                "serviceAccountName": self.profile.coordinator_service_account,
                "args": [],  # build_values: its timeout follows the Jobs' deadlines
                "resources": {
                    "requests": {"cpu": "50m", "memory": "128Mi"},
                    "limits": {"memory": "512Mi"},
                },
            },
        }


def _unit_entry(unit: Unit, **fields: Any) -> dict[str, Any]:
    return {"student": unit.student, "k": unit.k, "round": unit.round, **fields}


MODEL_KEY = "api-key"  # the key of the model-server key in its Secret


def model_key_secret(run_id: str, attempt: int) -> str:
    """The per-attempt Secret of the key per-model servers require."""
    return f"{release_name(run_id)[:40].rstrip('-')}-model-key-a{attempt}"


def network_egress(ctx: RunContext, profile: ClusterProfile) -> list[dict[str, Any]]:
    """The run's allowed egress: the profile's rules, else DNS, and TCP 443 and 6443 (model
    APIs, S3, the Hugging Face Hub; the Kubernetes API, which the coordinator calls) plus the
    ports of the S3 endpoint and of every model's base URL, to any address."""
    if profile.network_policy.egress is not None:
        return [dict(rule) for rule in profile.network_policy.egress]
    ports = {443, 6443}
    for url in [profile.s3.endpoint_url, *(m.base_url for m in ctx.model_specs())]:
        if url:
            parts = urlsplit(url)
            ports.add(parts.port or (80 if parts.scheme == "http" else 443))
    return [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"ports": [{"protocol": "TCP", "port": port} for port in sorted(ports)]},
    ]


def hold_mode(profile: ClusterProfile) -> str:
    """How the Jobs held back until their inputs exist are held (one owner of the choice):

    - ``suspend``: no Kueue; created suspended, released by unsuspending them;
    - ``gate``: Kueue with its AdmissionGatedBy feature gate; created with the
      ``kueue.x-k8s.io/admission-gated-by`` annotation, released by removing it;
    - ``defer``: Kueue otherwise; Kueue owns ``spec.suspend`` and its LocalQueueDefaulting or
      manageJobsWithoutQueueName would admit or strand a held Job, so the coordinator creates
      each one only when it is released (the launch stores their manifests)."""
    if not profile.kueue_queue:
        return "suspend"
    return "gate" if profile.kueue_admission_gate else "defer"
