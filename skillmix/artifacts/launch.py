"""``launches/attempt-NNN.json`` (what a launch attempt rendered, and why) and
``usage/pods/<pod>.json`` (the GPU time a generation pod held)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from skillmix.artifacts.base import (
    Artifact,
    GenerationRound,
    NumberOfSkills,
    StudentName,
    Versioned,
)
from skillmix.vocab import Unit


class JobRecord(Artifact):
    phase: str = Field(description="generate, grade, aggregate or coordinate.")
    student: str = Field(description="Student name ('-' for aggregate).")
    k: int | None = Field(description="Number of skills (None for aggregate).")
    round: int | None = Field(description="Generation round (None for aggregate).")
    pods: int = Field(description="Pods of the Job.")
    gpus_per_pod: int = Field(description="GPUs each pod requests.")
    backend: str = Field(description="Backend of the model the Job calls.")


class ServingEstimateRecord(Artifact):
    gpu_hours: float = Field(description="Rough GPU-hours of the generation to do.")
    load_share: float = Field(description="Share of those GPU-hours spent loading models.")
    loads: int = Field(description="Model loads (vLLM pods started).")


class LaunchPlanRecord(Artifact):
    run_id: str = Field(description="The run id.")
    run: str = Field(description="The run folder (s3:// URI).")
    cluster: str = Field(description="Cluster profile name.")
    namespace: str = Field(description="Kubernetes namespace.")
    release: str = Field(description="Helm release name.")
    attempt: int = Field(description="Launch attempt (1-based).")
    jobs: list[JobRecord] = Field(description="Jobs this attempt creates.")
    gpus: int = Field(description="GPUs requested by all pods together.")
    estimated_gpu_hours: float = Field(description="Rough GPU-hours (upper bound).")
    estimated_api_cost_usd: float | None = Field(
        description="Rough API cost (upper bound); None without a price."
    )
    finished_units: int = Field(description="Units already finished before this attempt.")
    total_units: int = Field(description="Units of the whole plan.")
    serving_estimates: dict[str, ServingEstimateRecord] = Field(
        default_factory=dict,
        description="GPU-hours of the generation to do under each serving mode (per-unit, per-model).",
    )
    gpu_hours_by_student: dict[str, float] = Field(
        default_factory=dict,
        description="The estimated GPU-hours of each vLLM student's generation this attempt does "
        "(the report shows them beside the GPU time measured from the pods).",
    )


class UnitRef(Artifact):
    student: StudentName
    k: NumberOfSkills
    round: GenerationRound


class _HelmValues(BaseModel):
    """Part of the Helm values a launch rendered: the keys skillmix reads are typed, every
    other key is kept as it is, and the JSON written is the JSON read (same keys, same order,
    no defaults added), because a resumed launch renders the release from it again."""

    model_config = ConfigDict(
        extra="allow", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )
    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        model = handler(data)
        if isinstance(data, dict):
            model._order = list(data)
        return model

    @model_serializer(mode="wrap")
    def _as_read(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        present = {fields[n].alias or n for n in self.model_fields_set if n in fields}
        present |= set(self.model_extra or {})
        order = [k for k in self._order if k in present]
        order += [k for k in data if k in present and k not in order]
        return {k: data[k] for k in order if k in data}


class RoundValues(_HelmValues):
    """One unit of a per-model generation Job (the student is the Job's)."""

    k: NumberOfSkills
    round: GenerationRound


class UnitValues(RoundValues):
    """A Job entry of ``generation`` or ``grading``: a (k, round) of its own student (its args
    and deadlines kept as extras)."""

    student: StudentName


class ModelGenerationValues(_HelmValues):
    """A ``modelGeneration`` entry: one generation Job of a student over its units in turn."""

    student: StudentName
    units: list[RoundValues] = Field(description="The (k, round) units the Job runs in turn.")


class ReleaseValues(_HelmValues):
    """The Helm values a launch attempt rendered its release from; typed where skillmix reads
    them back (which units the attempt does), every other value kept untouched."""

    generation: list[UnitValues] = Field(
        default_factory=list, description="Generation Jobs, one per (student, k, round) unit."
    )
    grading: list[UnitValues] = Field(
        default_factory=list, description="Grading Jobs, one per (student, k, round) unit."
    )
    model_generation: list[ModelGenerationValues] = Field(
        default_factory=list,
        alias="modelGeneration",
        description="Per-model serving: one generation Job per student over its units.",
    )

    def as_dict(self) -> dict[str, Any]:
        """The values as read (what ``helm template`` is given again)."""
        return self.model_dump(mode="json")


class LaunchRecord(Versioned):
    """An audit record of one launch attempt; its values hold Secret names only."""

    attempt: int = Field(description="Launch attempt (1-based).")
    launched_at: str = Field("", description="UTC time of the launch.")
    plan: LaunchPlanRecord | None = Field(None, description="What the attempt planned.")
    values: ReleaseValues = Field(description="The Helm values the release was rendered from.")

    def units(self, phase: str) -> list[Unit]:
        """The units this attempt (re)does in ``phase``."""
        v = self.values
        if phase != "generate":
            return [Unit(u.student, u.k, u.round) for u in v.grading]
        units = [Unit(u.student, u.k, u.round) for u in v.generation]
        # serving per-model: a Job per student over its units
        return units + [Unit(j.student, u.k, u.round) for j in v.model_generation for u in j.units]


class PodUsage(Versioned):
    """The GPU time one generation pod held (``usage/pods/<pod>.json``), measured by the run's
    coordinator from the pod's start and finish times: what the run cost, beside the plan's
    estimate."""

    pod: str = Field(description="Pod name.")
    job: str = Field(description="Name of the pod's Job.")
    attempt: int = Field(description="Launch attempt of the Job.")
    student: str = Field(description="Student whose generation the pod ran.")
    units: list[UnitRef] = Field(
        default_factory=list, description="The (student, k, round) units of its Job."
    )
    gpus: float = Field(
        description="GPUs the pod requested (a MIG slice counts as its share of a GPU)."
    )
    gpu_resource: str = Field("", description="Extended resource the GPUs were requested as.")
    started_at: str = Field(description="UTC time the pod started (status.startTime).")
    finished_at: str = Field(description="UTC time its last container ended (or it was deleted).")
    seconds: float = Field(ge=0, description="finished_at - started_at, in seconds.")
    outcome: str = Field(description="Succeeded, Failed or Deleted.")

    @property
    def gpu_seconds(self) -> float:
        return self.gpus * self.seconds
