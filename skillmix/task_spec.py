"""An experiment's reasoning tasks (``tasks:``): each task asked of every student, beside the
SKILL-MIX phases, into the same run folder and report. The task itself (dataset, template,
scorer) is ``tasks.config.TaskConfig``; this is what an experiment says about running it."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, Strict

SInt = Annotated[int, Strict()]
TASK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class TaskSpec(BaseModel):
    """One reasoning task of an experiment (``skillmix tasks`` lists the built-in ones)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    name: str = Field(
        pattern=TASK_NAME_PATTERN,
        description="A built-in task (math500, aime24, gpqa_diamond, ...) or the name in `config`.",
    )
    config: str | None = Field(
        None, description="A task file (as --task-config), relative to the experiment file."
    )
    n: SInt = Field(1, ge=1, le=1024, description="Responses per problem (pass@k up to n).")
    dataset_file: str | None = Field(
        None,
        description="JSONL or Parquet rows in place of the Hugging Face dataset (offline use), "
        "relative to the experiment file.",
    )
    revision: str | None = Field(None, description="Hugging Face dataset revision (commit).")
    shards: SInt = Field(
        1,
        ge=1,
        le=64,
        validation_alias=AliasChoices("shards", "num_replicas"),
        description="Kubernetes: pods that split the problems (SkyThought's num_replicas, "
        "accepted as a synonym); the results do not depend on it.",
    )
