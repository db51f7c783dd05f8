"""Cluster profiles (``--cluster NAME``): where and how a run's Jobs run.

Profiles live in ``skillmix.yaml`` in the working directory (or ``$SKILLMIX_CONFIG``), else in
the user config dir (``$XDG_CONFIG_HOME/skillmix/skillmix.yaml``). They name Secrets; they
never contain credentials.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skillmix import settings
from skillmix.errors import SkillmixError
from skillmix.limits import EXPERIMENT_BYTES, read_at_most
from skillmix.loading import format_validation_error, load_yaml
from skillmix.quantity import check_resources

PROFILE_FILE = "skillmix.yaml"
K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
RESERVED_LABEL_PREFIXES = ("skillmix.io/", "app.kubernetes.io/", "kueue.x-k8s.io/", "helm.sh/")


IMAGE = r"^[^\s]+$"  # an image reference: not empty, no spaces (repository[:tag][@digest])
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class _Strict(BaseModel):
    # as strict as experiment files: "3" is not 3, "yes" is not true
    model_config = ConfigDict(extra="forbid", strict=True)


class S3Settings(_Strict):
    endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="S3 endpoint for MinIO and other non-AWS stores (http(s)://host[:port]).",
    )
    region: str = Field(
        "us-east-1", description="S3 region, set as AWS_DEFAULT_REGION in the run's pods."
    )
    credentials_secret: str | None = Field(
        None,
        description="Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (empty: workload identity).",
    )


class SecretRef(_Strict):
    name: str = Field(pattern=K8S_NAME, description="Name of the Secret in the namespace.")
    key: str | None = Field(
        None, description="Key in the Secret (default: the environment variable's name)."
    )


class GpuSettings(_Strict):
    resource_name: str = Field(
        "nvidia.com/gpu", description="Extended resource that vLLM pods request GPUs as."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels GPU pods must match."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations of GPU pods (Kubernetes syntax)."
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict, description="Affinity of GPU pods (Kubernetes syntax)."
    )
    runtime_class: str | None = Field(
        None, description="runtimeClassName of GPU pods (e.g. nvidia; default: none)."
    )


class Deadlines(_Strict):
    generation_seconds: int = Field(
        21600,
        ge=60,
        description="Time limit of each generation pod's client from its start (--time-limit, "
        "exit 4); the Jobs' activeDeadlineSeconds only with Kueue (its timer starts at "
        "admission), so time spent Pending for a GPU is not counted.",
    )
    grading_seconds: int = Field(
        43200,
        ge=60,
        description="activeDeadlineSeconds of grading Jobs (their wait: 10 minutes less).",
    )
    aggregation_seconds: int = Field(
        86400,
        ge=60,
        description="activeDeadlineSeconds of the aggregation Job (its wait: 10 minutes less).",
    )
    ttl_seconds: int = Field(
        86400, ge=0, description="ttlSecondsAfterFinished: finished Jobs are deleted after it."
    )
    model_load_seconds: int = Field(
        1800,
        ge=10,
        description="Model-load budget: how long a client waits for its model sidecar's "
        "/health (vLLM or mock) before it exits 3 and the Job fails.",
    )
    generation_margin: float = Field(
        4.0,
        ge=1.0,
        le=100.0,
        description="Generation Jobs' activeDeadlineSeconds: the model-load budget plus, per "
        "unit, this many times the plan's estimate of the unit's work (at least 900 s, at most "
        "generation_seconds). Time spent suspended or waiting for Kueue never counts.",
    )
    stuck_pod_seconds: int = Field(
        600,
        ge=5,
        description="A pod waiting this long where no retry helps (ErrImagePull, "
        "ImagePullBackOff, InvalidImageName, CreateContainerConfigError, a Multi-Attach volume) "
        "fails its Job with that reason, giving back its GPU (the coordinator does it).",
    )
    unschedulable_seconds: int = Field(
        1800,
        ge=5,
        description="A pod the scheduler could not place for this long fails its Job with the "
        "scheduler's message (the coordinator does it).",
    )
    coordinator_seconds: int = Field(
        604800,
        ge=600,
        description="Backstop of the coordinator Job (activeDeadlineSeconds; at least the "
        "longest chain of the run's Job deadlines): it ends by itself once every Job of its "
        "attempt has finished or nothing can progress, so this bounds only a run whose Jobs wait "
        "in a queue that long.",
    )


class ServiceAccountSettings(_Strict):
    """The identity of the run's pods. Cloud workload identity (EKS IRSA, EKS Pod Identity, GKE
    Workload Identity) binds to a fixed ServiceAccount name (an IAM role's trust policy, a GCP
    IAM binding), so every run of a profile uses the same accounts: skillmix creates them once
    (``create``) with the profile's annotations and keeps them across runs, or uses existing
    ones. The run's coordinator has its own account (``coordinator_service_account``), created
    the same way with the same annotations, so it reaches the store too."""

    create: bool = Field(
        True,
        description="Create the ServiceAccounts when missing (the run's, `name`, and the "
        "coordinator's), with `annotations`; they are kept across runs and never deleted by "
        "skillmix. false: they must exist.",
    )
    name: str = Field(
        "skillmix",
        pattern=K8S_NAME,
        description="ServiceAccount of every pod of a run but the coordinator's (no API token "
        "is mounted; no RBAC rights): the name to bind cloud workload identity to.",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of the ServiceAccounts skillmix creates (e.g. "
        "eks.amazonaws.com/role-arn, iam.gke.io/gcp-service-account); an existing one is never "
        "changed (launch warns when it lacks one).",
    )

    @model_validator(mode="after")
    def _annotations_need_create(self) -> ServiceAccountSettings:
        if not self.create and self.annotations:
            raise ValueError(
                "service_account.annotations apply only to ServiceAccounts skillmix creates "
                "(create: true); annotate the existing ones instead"
            )
        return self


class NetworkPolicySettings(_Strict):
    """The NetworkPolicy every run gets: its pods take no ingress (model servers listen on
    loopback) and reach only what the run needs."""

    enabled: bool = Field(
        True,
        description="Create a NetworkPolicy per launch attempt selecting the run's pods "
        "(enforced where the cluster's network plugin supports NetworkPolicy).",
    )
    egress: list[dict[str, Any]] | None = Field(
        None,
        description="Egress rules (Kubernetes NetworkPolicyEgressRule syntax) replacing the "
        "default: DNS (port 53), TCP 443 and 6443 (model APIs, S3, the Hugging Face Hub, the "
        "Kubernetes API for the coordinator) and the ports of the profile's S3 endpoint and the "
        "experiment's base URLs, to any address.",
    )


class ClusterProfile(_Strict):
    """One cluster: kube context, namespace, images, store, Secrets, GPU scheduling."""

    context: str | None = Field(None, description="kubeconfig context (default: the current one).")
    kubeconfig: str | None = Field(
        None, description="kubeconfig path (default: $KUBECONFIG or ~/.kube/config)."
    )
    namespace: str = Field(
        "default", pattern=K8S_NAME, description="Namespace of the run's Jobs and pods."
    )
    image: str = Field(
        "ghcr.io/skillmix/skillmix:0.1.0",
        pattern=IMAGE,
        description="skillmix image (repository:tag).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of the skillmix image."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of Secrets used to pull the images."
    )
    vllm_image: str = Field(
        "vllm/vllm-openai:v0.11.0",
        pattern=IMAGE,
        description="Image of vLLM sidecars (repository:tag).",
    )
    store: str = Field(
        description="Run store: s3://bucket/prefix (pods cannot see a local folder)."
    )
    s3: S3Settings = Field(default_factory=S3Settings, description="How pods reach an s3:// store.")
    secrets: dict[str, SecretRef] = Field(
        default_factory=dict,
        description="Environment variable -> Secret holding it (OPENAI_API_KEY, HF_TOKEN...).",
    )
    gpu: GpuSettings = Field(
        default_factory=GpuSettings, description="Scheduling of GPU (vLLM) pods."
    )
    kueue_queue: str | None = Field(
        None,
        pattern=K8S_NAME,
        description="Kueue LocalQueue: Jobs get kueue.x-k8s.io/queue-name and start suspended; "
        "Kueue admits them within the ClusterQueue's quota. Phases held back until their inputs "
        "exist are created by the coordinator on release (or, with kueue_admission_gate, "
        "created at once and held by Kueue's admission gate).",
    )
    kueue_priority_class: str | None = Field(
        None,
        pattern=K8S_NAME,
        description="Kueue WorkloadPriorityClass of every Job of the run (label "
        "kueue.x-k8s.io/priority-class; a student's own kubernetes.kueue_priority_class wins).",
    )
    kueue_admission_gate: bool = Field(
        False,
        description="The cluster runs Kueue with the AdmissionGatedBy feature gate (alpha, off "
        "by default): held-back Jobs are created at launch with the "
        "kueue.x-k8s.io/admission-gated-by annotation and released by removing it. Off: the "
        "coordinator creates them when their inputs exist, which works whatever Kueue's "
        "configuration (a gate Kueue does not know is silently ignored).",
    )
    kueue_wait_for_pods_ready_seconds: int | None = Field(
        None,
        ge=1,
        description="The cluster's Kueue waitForPodsReady.timeout, when enabled (Kueue's "
        "default: 300): Kueue evicts a Job whose pods are not all ready by then, so the plan "
        "warns when the model-load budget (deadlines.model_load_seconds) exceeds it.",
    )
    max_gpus: int | None = Field(
        None,
        ge=1,
        description="GPU cap of the run without Kueue: at most this many GPUs' worth of "
        "generation pods exist at once; the coordinator starts the rest as earlier ones finish "
        "(`skillmix status` shows them queued). With Kueue, the ClusterQueue's quota does this.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of every Job and pod of a run (team, cost centre...); keys under "
        "skillmix.io/, app.kubernetes.io/ and kueue.x-k8s.io/ are set by skillmix.",
    )
    priority_class_name: str | None = Field(
        None,
        pattern=K8S_NAME,
        description="PriorityClass of every pod of a run (a student's own "
        "kubernetes.priority_class_name wins for its generation pods).",
    )
    model_cache_pvc: str | None = Field(
        None, description="PVC mounted as the Hugging Face cache (HF_HOME) of vLLM sidecars."
    )
    model_cache_path: str = Field(
        "/models/hf", description="Where the model cache PVC is mounted (HF_HOME)."
    )
    model_cache_offline: bool = Field(
        False,
        description=(
            "The model cache is filled (`skillmix cache warm`): vLLM sidecars run with "
            "HF_HUB_OFFLINE=1 and never download."
        ),
    )
    vllm_security_context: dict[str, Any] | None = Field(
        None,
        description=(
            "securityContext of vLLM containers (default: Pod Security restricted, uid 1000; "
            "a student's kubernetes.security_context overrides it)."
        ),
    )
    deadlines: Deadlines = Field(
        default_factory=Deadlines, description="Time limits of the run's Jobs."
    )
    backoff_limit: int = Field(
        2, ge=0, le=20, description="backoffLimit of every Job: pod failures retried."
    )
    client_resources: dict[str, Any] = Field(
        default_factory=dict,
        description="Resources of client containers (default: the chart's requests and limits).",
    )
    vllm_resources: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Resources of vLLM sidecars besides GPUs, merged over the sized defaults (4 CPUs, "
            "32Gi memory per GPU; ephemeral storage for the model volume)."
        ),
    )
    service_account: ServiceAccountSettings = Field(
        default_factory=ServiceAccountSettings,
        description="ServiceAccounts of the run's pods, one per profile (created once with "
        "annotations, or existing).",
    )
    network_policy: NetworkPolicySettings = Field(
        default_factory=NetworkPolicySettings,
        description="The run's NetworkPolicy (no ingress; egress to what the run needs).",
    )
    vllm_usage_stats: bool = Field(
        False,
        description="Let vLLM send its usage statistics (default off: the vLLM containers get "
        "VLLM_NO_USAGE_STATS=1 and DO_NOT_TRACK=1).",
    )
    shm_size: str = Field(
        "16Gi", description="Size of /dev/shm in vLLM pods (tensor parallel workers share it)."
    )
    parallel_jobs_per_budget: int = Field(
        8,
        ge=1,
        le=1000,
        description="Jobs that share one model's budget (grading Jobs: the grader's; an API "
        "student's generation Jobs) run at most this many at once, each with 1/N of the "
        "budget (and at most the model's concurrency at once); the coordinator starts them.",
    )
    coordinator_service_account: str = Field(
        "skillmix-coordinator",
        pattern=K8S_NAME,
        description="ServiceAccount of the run's coordinator pod (the only pod with an API "
        "token), bound to the skillmix-coordinator Role of k8s/rbac-coordinator.yaml; created "
        "like service_account, with its annotations.",
    )
    coordinator_interval_seconds: float = Field(
        10.0, ge=0.5, le=300, description="Seconds between the coordinator's passes."
    )

    @model_validator(mode="after")
    def _labels_are_kubernetes_labels(self) -> ClusterProfile:
        for key, value in self.labels.items():
            if key.startswith(RESERVED_LABEL_PREFIXES):
                raise ValueError(f"labels: {key} is set by skillmix; pick another key")
            if not LABEL_KEY.fullmatch(key):
                raise ValueError(
                    f"labels: {key!r} is not a Kubernetes label key ([prefix/]name, name at "
                    "most 63 characters of [A-Za-z0-9._-])"
                )
            if not LABEL_VALUE.fullmatch(value):
                raise ValueError(
                    f"labels.{key}: {value!r} is not a Kubernetes label value (at most 63 "
                    "characters of [A-Za-z0-9._-], starting and ending alphanumeric)"
                )
        if self.kueue_admission_gate and not self.kueue_queue:
            raise ValueError("kueue_admission_gate needs kueue_queue (the LocalQueue)")
        return self

    @model_validator(mode="after")
    def _offline_needs_a_cache(self) -> ClusterProfile:
        if self.model_cache_offline and not self.model_cache_pvc:
            raise ValueError(
                "model_cache_offline needs model_cache_pvc (the cache `skillmix cache warm` filled)"
            )
        return self

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: dict[str, SecretRef]) -> dict[str, SecretRef]:
        for env in value:
            if not re.fullmatch(ENV_NAME, env):
                raise ValueError(f"{env!r} is not an environment variable name")
        return value

    @field_validator("client_resources", "vllm_resources")
    @classmethod
    def _quantities(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_resources(value)
        return value


class ProfileFile(_Strict):
    default: str | None = Field(
        None, description="Profile used without --cluster (default: the only profile, if one)."
    )
    clusters: dict[str, ClusterProfile] = Field(
        default_factory=dict, description="Cluster profiles by name."
    )


def profile_paths() -> list[Path]:
    explicit = settings.profile_file()
    if explicit:
        return [explicit]
    return [Path.cwd() / PROFILE_FILE, settings.config_home() / "skillmix" / PROFILE_FILE]


def load_profiles(path: Path | None = None) -> tuple[ProfileFile, Path | None]:
    candidates = [path] if path else profile_paths()
    for candidate in candidates:
        if candidate.is_file():
            try:
                raw = read_at_most(candidate, EXPERIMENT_BYTES, "a cluster profile file")
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SkillmixError(f"{candidate}: not a UTF-8 text file") from None
            except OSError as exc:
                raise SkillmixError(f"{candidate}: cannot read: {exc.strerror}") from None
            data = load_yaml(text, str(candidate)) or {}
            try:
                return ProfileFile.model_validate(data), candidate
            except ValidationError as exc:
                raise SkillmixError(format_validation_error(exc, str(candidate))) from None
        if path is not None:
            raise SkillmixError(f"{candidate}: profile file not found")
    return ProfileFile(), None


def get_profile(name: str | None, path: Path | None = None) -> tuple[str, ClusterProfile]:
    profiles, where = load_profiles(path)
    if not profiles.clusters:
        searched = ", ".join(str(p) for p in ([path] if path else profile_paths()))
        raise SkillmixError(
            "no cluster profiles found",
            hint=f"create {PROFILE_FILE} with a `clusters:` section (searched {searched})",
        )
    chosen = (
        name
        or profiles.default
        or (next(iter(profiles.clusters)) if len(profiles.clusters) == 1 else None)
    )
    if chosen is None:
        raise SkillmixError(
            "several cluster profiles exist; pick one with --cluster",
            hint=f"known: {', '.join(profiles.clusters)}",
        )
    if chosen not in profiles.clusters:
        raise SkillmixError(
            f"no cluster profile named {chosen!r} in {where}",
            hint=f"known: {', '.join(sorted(profiles.clusters))}",
        )
    return chosen, profiles.clusters[chosen]
