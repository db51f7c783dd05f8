"""``run.json``: an evaluation run or a reference import, a union on ``kind`` (files written
before ``kind`` existed get it inferred from their keys)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
)

from skillmix.artifacts.base import (
    Artifact,
    CatalogSource,
    GradingPromptVersion,
    PromptVersion,
    Versioned,
)
from skillmix.config import Experiment


class CatalogSkill(Artifact):
    name: str = Field(description="Skill name (the key used in records).")
    category: str = Field("", description="Skill category from the catalog.")
    definition: str = Field(description="Definition shown to students and graders.")
    example: str = Field(description="Example shown to students and graders.")


class RunCatalog(CatalogSource):
    skills: list[CatalogSkill] = Field(description="Every skill of the catalog, in order.")
    topics: list[str] = Field(description="Every topic of the catalog, in order.")


class PromptTemplateJson(PromptVersion):
    turns: list[str] = Field(description="The template's user turns.")


class GradingTemplateJson(GradingPromptVersion):
    turns: list[str] = Field(description="The template's user turns.")


class RunPrompts(Artifact):
    generation: PromptTemplateJson = Field(description="The student prompt template.")
    grading: GradingTemplateJson = Field(description="The grader prompt template.")


class EvaluationRun(Versioned):
    """``run.json`` of an evaluation: everything a task needs, no secrets."""

    kind: Literal["evaluation"] = Field("evaluation", description="Run kind (discriminator).")
    run_id: str = Field(description="Experiment name plus a hash of every result setting.")
    created_at: str | None = Field(None, description="UTC time the run was first started.")
    skillmix_version: str = Field("", description="skillmix version that wrote the file.")
    sharded: bool = Field(False, description="True for Kubernetes runs (sharded generation).")
    experiment: Experiment = Field(description="The resolved experiment (config schema).")
    catalog: RunCatalog = Field(description="The catalog's skills and topics.")
    prompts: RunPrompts = Field(description="The prompt templates.")


class ReferenceImportRun(Versioned):
    """``run.json`` of a folder written by ``skillmix import-reference``."""

    kind: Literal["reference-import"] = Field(
        "reference-import", description="Run kind (discriminator)."
    )
    created_at: str = Field("", description="UTC time of the import.")
    skillmix_version: str = Field("", description="skillmix version that wrote the file.")
    root: str = Field(description="The imported reference tree (absolute path).")
    seed: int = Field(description="The imported seed.")
    ks: list[int] = Field(default_factory=list, description="k values found.")
    students: list[str] = Field(default_factory=list, description="Students imported.")
    graders: list[str] = Field(default_factory=list, description="Graders imported.")
    generation_rounds: list[int] = Field(
        default_factory=list, description="Generation rounds found."
    )
    grading_rounds: list[int] = Field(default_factory=list, description="Grading rounds found.")
    generation_prompt_versions: list[str] = Field(
        default_factory=list, description="Generation prompt versions (folder names)."
    )
    grading_prompt_versions: list[str] = Field(
        default_factory=list, description="Grading prompt versions (folder names)."
    )
    generations: int = Field(0, description="Generation records written.")
    grades: int = Field(0, description="Grade records written.")
    issues: list[str] = Field(default_factory=list, description="Problems found in the tree.")


def _infer_kind(data: Any) -> Any:
    """Files written before ``kind`` existed: a reference import has ``root``, else evaluation."""
    if isinstance(data, dict) and "kind" not in data:
        kind = "reference-import" if "root" in data and "experiment" not in data else "evaluation"
        return {**data, "kind": kind}
    return data


RunJson = Annotated[
    EvaluationRun | ReferenceImportRun,
    Field(discriminator="kind"),
    BeforeValidator(_infer_kind),
]
RUN_JSON_ADAPTER: TypeAdapter[EvaluationRun | ReferenceImportRun] = TypeAdapter(RunJson)
