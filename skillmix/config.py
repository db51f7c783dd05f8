"""The experiment file (YAML) as strict pydantic models, and how it becomes a run id.

Unknown keys are errors that name their path. Secrets never live here: a backend names the
environment variable that holds its key (``api_key_env``), not the key.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

from skillmix.errors import SkillmixError
from skillmix.method.points import MetricOptions, default_name_filter
from skillmix.quantity import QUANTITY, check_resources
from skillmix.task_spec import TaskSpec
from skillmix.urls import redact_url

Backend = Literal["mock", "openai", "vllm"]
# Names become folder names and Kubernetes label values: alphanumeric at both ends, <= 63 chars.
MOCK_DEFAULT_QUALITY = 0.7  # the mock backend's quality when the experiment sets none
NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
# Experiment names get "-{8 hex}" appended to form the run id, which must still fit a label.
EXPERIMENT_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,52}[A-Za-z0-9])?$"
SAMPLING_KEYS = frozenset(
    {"temperature", "top_p", "max_tokens", "seed", "presence_penalty", "frequency_penalty", "stop"}
)
DEFAULT_BASE_URLS: dict[str, str] = {"openai": "https://api.openai.com/v1"}
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
MAX_COMBINATIONS = 100_000  # M per k: a run's limit, and `skillmix sample --n`'s
# The longest system prompt, and the longest rendered user turn (with the system prompt), in
# characters: checked before a run writes anything, rather than met as HTTP 413 mid-run.
MAX_PROMPT_CHARS = 100_000


# Numbers in an experiment file are numbers: `true` or '3' where one belongs is an error, never
# read as 1 or 3 (a float field still takes an integer: `quality: 1`). The quick form's flags are
# text by nature and are validated with strict=False (see parse_experiment).
SInt = Annotated[int, Strict()]
SFloat = Annotated[float, Strict(), AllowInfNan(False)]  # .inf and .nan are never meant
# Requests in flight at once, of a student or of the grader.
Concurrency = Annotated[SInt, Field(ge=1, le=4096)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class SamplingParams(_Strict):
    """Decoding settings sent with every request (unset ones are left to the backend)."""

    temperature: SFloat | None = Field(
        None, ge=0, le=2, description="Sampling temperature (unset: the backend's default)."
    )
    top_p: SFloat | None = Field(
        None, gt=0, le=1, description="Nucleus sampling mass (unset: the backend's default)."
    )
    max_tokens: SInt | None = Field(512, ge=1, description="Most tokens per reply.")
    seed: SInt | None = Field(
        None, description="Sampling seed sent to the backend, if it takes one."
    )
    presence_penalty: SFloat | None = Field(
        None, ge=-2, le=2, description="OpenAI presence penalty (unset: the backend's default)."
    )
    frequency_penalty: SFloat | None = Field(
        None, ge=-2, le=2, description="OpenAI frequency penalty (unset: the backend's default)."
    )
    stop: list[str] | None = Field(None, description="Stop sequences (unset: none).")

    def request_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class VllmSpec(_Strict):
    """How a vLLM student is served: by the Kubernetes executor's sidecar, and locally by the
    `vllm serve` skillmix starts when the student has no base_url."""

    model: str | None = Field(
        None,
        description="Hugging Face id or path passed to --model (default: the student's model).",
    )
    tensor_parallel_size: SInt = Field(
        1, ge=1, description="vLLM --tensor-parallel-size: GPUs one model is split across."
    )
    gpus: SInt | None = Field(
        None,
        ge=1,
        description=(
            "GPUs per pod (default: tensor_parallel_size x pipeline_parallel_size, the latter "
            "from --pipeline-parallel-size in args); at least that product."
        ),
    )
    args: list[str] = Field(default_factory=list, description="Extra vLLM server arguments.")
    image_tag: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$|^sha256:[0-9a-f]{64}$",
        description=(
            "Kubernetes: tag (or sha256: digest) of the vLLM image for this student (default: "
            "the tag of the cluster profile's vllm_image)."
        ),
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra environment of the vLLM server (e.g. VLLM_ATTENTION_BACKEND); plain values, "
            "never secrets (those come from the cluster profile's Secrets)."
        ),
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name in VLLM_RESERVED_ENV:
                raise ValueError(f"{name} is set by skillmix; leave it out of vllm.env")
        return env

    @property
    def pipeline_parallel_size(self) -> int:
        """--pipeline-parallel-size (or -pp) from args; 1 when absent."""
        return _int_flag(self.args, ("--pipeline-parallel-size", "-pp")) or 1

    @property
    def min_gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def gpu_count(self) -> int:
        """GPUs per pod: ``gpus``, else tensor x pipeline parallel size."""
        return self.gpus or self.min_gpus

    @model_validator(mode="after")
    def _enough_gpus(self) -> VllmSpec:
        for flag in ("--tensor-parallel-size", "-tp"):
            if _int_flag(self.args, (flag,)) is not None:
                raise ValueError(f"set tensor_parallel_size instead of {flag} in args")
        pp = self.pipeline_parallel_size
        if self.gpus is not None and self.gpus < self.min_gpus:
            raise ValueError(
                f"gpus ({self.gpus}) must be at least tensor_parallel_size x "
                f"pipeline_parallel_size ({self.tensor_parallel_size} x {pp} = {self.min_gpus})"
            )
        return self


VLLM_RESERVED_ENV = frozenset({"HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE", "HOME"})


def _int_flag(args: list[str], names: tuple[str, ...]) -> int | None:
    """The integer value of ``--flag N`` or ``--flag=N`` in a vLLM argument list."""
    for i, arg in enumerate(args):
        for name in names:
            value: str | None = None
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
            if value is not None:
                if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
                    raise ValueError(f"{name} in vllm.args must be a positive integer")
                return int(value)
    return None


Serving = Literal["per-unit", "per-model"]


class KubernetesSpec(_Strict):
    """Kubernetes settings of one student's generation pods; each unset one falls back to the
    cluster profile (its gpu.* block for vLLM pods). Ignored by the local executor."""

    node_selector: dict[str, str] | None = Field(
        None, description="Node labels the pods must match (default: the profile's gpu.*)."
    )
    tolerations: list[dict[str, Any]] | None = Field(
        None, description="Tolerations (Kubernetes syntax; default: the profile's gpu.*)."
    )
    affinity: dict[str, Any] | None = Field(
        None, description="Affinity (Kubernetes syntax; default: the profile's gpu.*)."
    )
    runtime_class: str | None = Field(
        None, description="runtimeClassName (default: the profile's gpu.runtime_class)."
    )
    gpu_resource: str | None = Field(
        None,
        pattern=r"^[a-z0-9.-]+/[A-Za-z0-9._-]+$",
        description=(
            "Extended resource the GPUs are requested as, e.g. a MIG profile "
            "nvidia.com/mig-1g.10gb (default: the profile's gpu.resource_name)."
        ),
    )
    resources: dict[str, dict[str, str | SInt | SFloat]] | None = Field(
        None,
        description=(
            "requests/limits of the vLLM container, merged over the sized defaults (CPU, "
            "memory, ephemeral-storage scaled with the GPU count); GPUs are added by skillmix."
        ),
    )
    model_volume_size: str | None = Field(
        None,
        pattern=QUANTITY,
        description=(
            "sizeLimit of the emptyDir at HF_HOME when the profile has no model cache "
            "(default: 50Gi per GPU)."
        ),
    )
    shm_size: str | None = Field(
        None, pattern=QUANTITY, description="Size of /dev/shm (default: the profile's shm_size)."
    )
    security_context: dict[str, Any] | None = Field(
        None,
        description=(
            "securityContext of the vLLM container (default: the profile's, Pod Security "
            "restricted)."
        ),
    )
    priority_class_name: str | None = Field(
        None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", description="priorityClassName."
    )
    kueue_priority_class: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class).",
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the pods."
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of the pods (not skillmix.io/*, app.kubernetes.io/*).",
    )

    @field_validator("resources")
    @classmethod
    def _resources(
        cls, value: dict[str, dict[str, str | int | float]] | None
    ) -> dict[str, dict[str, str | int | float]] | None:
        check_resources(value or {})
        return value

    @field_validator("pod_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.startswith(("skillmix.io/", "app.kubernetes.io/", "kueue.x-k8s.io/")):
                raise ValueError(f"{name} is set by skillmix (or kueue_priority_class)")
        return value


# how a model's budget is shared, said of concurrency, rpm and tpm alike
_SHARED_BUDGET = (
    " Locally: for this model. On Kubernetes: per pod where each pod has its own model server"
    " (vllm, or mock without base_url); divided among the pods that share an endpoint"
    " (openai, or an explicit base_url): a student's replicas shards, the grader's"
    " grading Jobs (the task's --budget-share N)."
)


class ModelSpec(_Strict):
    """A model behind an OpenAI-compatible endpoint: a student or the grader."""

    name: str = Field(
        pattern=NAME_PATTERN, description="Path-safe id used in run folders and labels."
    )
    backend: Backend = Field(
        "mock",
        description="mock (the built-in mock server), openai (an OpenAI-compatible API) or vllm.",
    )
    model: str = Field(
        min_length=1, description="Model id sent to the endpoint (vLLM: the served model name)."
    )
    base_url: str | None = Field(
        None, description="Endpoint; default per backend (mock: the built-in server)."
    )
    api_key_env: str | None = Field(
        None,
        description=(
            "Environment variable holding the API key (default: OPENAI_API_KEY for openai, "
            "none for mock and vllm)."
        ),
    )
    system_prompt: str | None = Field(
        DEFAULT_SYSTEM_PROMPT,
        max_length=MAX_PROMPT_CHARS,
        description=(
            "System message of every conversation (empty: none); at most "
            f"{MAX_PROMPT_CHARS} characters, with each rendered prompt."
        ),
    )
    sampling: SamplingParams = Field(
        default_factory=SamplingParams, description="Decoding settings sent with every request."
    )
    concurrency: Concurrency = Field(
        16,
        description="Requests in flight at once (divided: concurrency // N, at least 1)."
        + _SHARED_BUDGET,
    )
    rpm: SInt = Field(
        0,
        ge=0,
        description="Requests per minute budget (0 = unlimited; divided: rpm / N)."
        + _SHARED_BUDGET,
    )
    tpm: SInt = Field(
        0,
        ge=0,
        description="Tokens per minute budget (0 = unlimited; divided: tpm / N)." + _SHARED_BUDGET,
    )
    timeout: SFloat = Field(120.0, gt=0, description="Seconds per request.")
    max_retries: SInt = Field(
        8,
        ge=0,
        le=100,
        description="HTTP retries per request (connection errors, timeouts, 408/409/429/5xx).",
    )
    quality: SFloat | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Mock backend only: skill level / grading accuracy "
            f"(default {MOCK_DEFAULT_QUALITY} for students and graders alike)."
        ),
    )
    vllm: VllmSpec = Field(
        default_factory=VllmSpec,
        description=(
            "How a vllm student is served: its Kubernetes sidecar, or locally (no base_url)"
            " the `vllm serve` skillmix starts."
        ),
    )
    replicas: SInt = Field(1, ge=1, le=64, description="Kubernetes: shards of each generation Job.")

    @field_validator("base_url")
    @classmethod
    def _printable_url(cls, value: str | None) -> str | None:
        """A URL with a control character or a space cannot be sent (httpx refuses it later,
        mid-run, with a traceback): refuse it here, where the field can be named."""
        if value is not None and re.search(r"[\x00-\x20\x7f]", value):
            raise ValueError("contains a control character or a space; give the URL alone")
        return value

    @model_validator(mode="after")
    def _backend_rules(self) -> ModelSpec:
        if self.quality is not None and self.backend != "mock":
            raise ValueError("quality only applies to the mock backend")
        if self.backend == "mock" and self.quality is None:
            # resolved once, here: both executors and the run id see the same value
            self.quality = MOCK_DEFAULT_QUALITY
        if self.api_key_env is not None and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env
        ):
            raise ValueError("api_key_env must be an environment variable name, not a key")
        return self

    def resolved_api_key_env(self) -> str | None:
        if self.api_key_env:
            return self.api_key_env
        return "OPENAI_API_KEY" if self.backend == "openai" else None

    def identity(self) -> dict[str, Any]:
        """What makes two specs produce the same replies (used in cache keys and run ids)."""
        ident: dict[str, Any] = {"backend": self.backend, "model": self.model}
        if self.backend == "mock":
            ident["quality"] = self.quality
        return ident


class StudentSpec(ModelSpec):
    serving: Serving | None = Field(
        None,
        exclude=True,  # how it ran, not what: run.json and the report are the same either way
        description=(
            "Kubernetes: per-unit (a generation Job, and a model load, per k and round) or "
            "per-model (one Job whose server loads once and runs every unit in turn); default: "
            "the experiment's serving. Recorded in the launch records, not in run.json."
        ),
    )
    kubernetes: KubernetesSpec = Field(
        default_factory=KubernetesSpec,
        description="Kubernetes settings of this student's generation pods (scheduling, sizing).",
    )


class GraderSpec(ModelSpec):
    name: str = Field(
        "grader", pattern=NAME_PATTERN, description="Path-safe id used in run folders and labels."
    )
    rounds: SInt = Field(3, ge=1, le=20, description="Independent grading rounds R.")
    style: Literal["auto", "table", "points"] = Field(
        "auto",
        description="How grader replies are read: table, points or auto (from the grading prompt).",
    )
    use_n: Literal["auto", "always", "never"] = Field(
        "auto", description="Ask for all rounds as n choices of one request (prompt paid once)."
    )
    max_parse_retries: SInt = Field(
        2, ge=0, le=10, description="Re-asks after an unreadable reply."
    )
    concurrency: Concurrency = Field(
        32,
        description=(
            "Requests in flight at once (divided: concurrency // N, at least 1)."
            " Locally: for the grader. On Kubernetes: per pod when each grading pod has its own"
            " mock grader sidecar; divided among the grading Jobs that share an endpoint"
            " (openai, or an explicit base_url; the task's --budget-share N)."
        ),
    )
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.7, max_tokens=1024),
        description="Decoding settings of grading requests.",
    )


class CatalogSpec(_Strict):
    """``builtin``, or reference-format files (either may be omitted: it then comes from builtin)."""

    skills: str | None = Field(
        None, description="Reference-format skills CSV (default: the built-in skills)."
    )
    topics: str | None = Field(
        None, description="Topics file, one per line (default: the built-in topics)."
    )


class PromptSpec(_Strict):
    dir: str | None = Field(
        None, description="Folder with generation/ and grading/; default: built-in."
    )
    generation: str = Field(
        "two-turn-v1", description="Generation prompt version (a name in dir, or a .json file)."
    )
    grading: str = Field(
        "table-v1", description="Grading prompt version (a name in dir, or a .json file)."
    )
    template_encoding: str = Field(
        "utf-8", description="Encoding of the prompt files (cp1252 reproduces the reference)."
    )


class MetricSpec(_Strict):
    mode: Literal["reference", "strict"] = Field(
        "strict",
        description=(
            "strict leaves unreadable verdicts out; reference scores them as the reference "
            "aggregator does."
        ),
    )
    vote: Literal["majority", "mean"] = Field(
        "majority", description="How grading rounds combine per rubric item."
    )
    generation_agg: Literal["max", "mean"] = Field(
        "max", description="How generation rounds combine: best of G, or mean."
    )
    filter_explicit_name: Literal["off", "substring", "word"] | None = Field(
        None,
        description=(
            "A skill the answer names outright earns no point (default: word; reference mode: off)."
        ),
    )
    filter_skills: list[str] = Field(
        default_factory=list, description="Leave out combinations that contain any of these skills."
    )
    bootstrap_samples: SInt = Field(
        2000,
        ge=0,
        le=100000,
        description="Bootstrap resamples for the 95% interval of paired differences between "
        "leaderboard rows (metric intervals are Wilson score intervals).",
    )

    def options(self):

        name_filter = self.filter_explicit_name or default_name_filter(self.mode)
        return MetricOptions(
            mode=self.mode,
            vote=self.vote,
            generation_agg=self.generation_agg,
            filter_explicit_name=name_filter,
            filter_skills=tuple(self.filter_skills),
            bootstrap_samples=self.bootstrap_samples,
        )


class Price(_Strict):
    prompt: SFloat = Field(ge=0, description="USD per 1M prompt tokens.")
    completion: SFloat = Field(ge=0, description="USD per 1M completion tokens.")


SpecT = TypeVar("SpecT", bound=ModelSpec)


class Experiment(_Strict):
    """One SKILL-MIX experiment: what to sample, whom to ask, how to grade and score."""

    name: str = Field(
        pattern=EXPERIMENT_NAME_PATTERN, description="Readable run name (<= 54 chars)."
    )
    seed: SInt = Field(
        10, ge=0, description="Seed that draws the skills and topics (reference: 10)."
    )
    order_seed: str = Field(
        "test", description="Seed of the skill order within a combination (reference: test)."
    )
    ks: list[SInt] = Field(min_length=1, description="The k values: skills per combination.")
    combinations: SInt = Field(100, ge=1, le=MAX_COMBINATIONS, description="M: combinations per k.")
    generation_rounds: SInt = Field(
        1, ge=1, le=20, description="G: generation rounds per combination."
    )
    sampling: Literal["reference", "distinct"] = Field(
        "reference",
        description="reference (the reference sampler, bit for bit) or distinct (no set twice).",
    )
    catalog: CatalogSpec = Field(
        default_factory=CatalogSpec, description="Skills and topics (default: built-in)."
    )
    prompts: PromptSpec = Field(default_factory=PromptSpec, description="Prompt versions.")
    students: list[StudentSpec] = Field(min_length=1, description="The models evaluated.")
    serving: Serving = Field(
        "per-unit",
        exclude=True,  # how it ran, not what: run.json and the report are the same either way
        description=(
            "Kubernetes: per-unit (one generation Job per student, k and round: most parallel, "
            "one model load each) or per-model (one Job per student whose server loads once: "
            "fewest GPU-hours); a student's serving overrides it. Recorded in the launch "
            "records, not in run.json."
        ),
    )
    grader: GraderSpec = Field(description="The model that grades the students' answers.")
    metrics: MetricSpec = Field(default_factory=MetricSpec, description="How scores are computed.")
    prices: dict[str, Price] = Field(
        default_factory=dict, description="Overrides of the built-in price table."
    )
    tasks: list[TaskSpec] = Field(
        default_factory=list,
        exclude_if=lambda tasks: not tasks,  # run.json of a run without tasks stays as it was
        description="Reasoning tasks asked of every student besides SKILL-MIX (rule-scored: "
        "no grader), written into the same run folder and report.",
    )
    store: str = Field("runs", description="Where runs live: a folder or s3://bucket/prefix.")

    @field_validator("store")
    @classmethod
    def _store(cls, store: str) -> str:
        if not store.strip():
            raise ValueError("must not be empty; leave the key out for runs/, or name a folder")
        return store

    @field_validator("ks")
    @classmethod
    def _ks(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError("every k must be at least 1")
        if len(set(ks)) != len(ks):
            raise ValueError("ks must not repeat")
        return sorted(ks)

    @model_validator(mode="after")
    def _unique_names(self) -> Experiment:
        names = [s.name for s in self.students]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"student names must be unique (repeated: {', '.join(duplicates)})")
        return self

    def serving_of(self, student: str) -> Serving:
        """The student's serving mode (its own, else the experiment's)."""
        return self.student(student).serving or self.serving

    def stored(self) -> Experiment:
        """The experiment as run records and reports hold it: every base URL without its
        credentials (a key belongs in the environment, see api_key_env)."""
        students = [_bare(s) for s in self.students]
        return self.model_copy(update={"students": students, "grader": _bare(self.grader)})

    def student(self, name: str) -> StudentSpec:
        for s in self.students:
            if s.name == name:
                return s
        raise SkillmixError(f"no student named {name!r} in experiment {self.name!r}")


def _bare(spec: SpecT) -> SpecT:
    """``spec`` with its base URL's credentials replaced (see :meth:`Experiment.stored`)."""
    if not spec.base_url:
        return spec
    return spec.model_copy(update={"base_url": redact_url(spec.base_url)})
